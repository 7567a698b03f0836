"""Logged predictions as columns (numpy arrays): what the monitoring report is computed from.

Reading 100,000 logged predictions as one dict per row, then walking those dicts once per statistic,
took over a second; as columns the report of the same rows takes a few tens of milliseconds.
`TrafficColumns.from_rows` builds the columns from dicts (the report's documented input),
`read_columns` straight from the prediction log, and `TrafficStore` keeps each model's columns
in memory, reading only the rows logged since its last look (the studio's Monitor page).

Numbers that are not finite (None, NaN, infinity, booleans, text that is not a number) are NaN;
labels and versions are codes into a list of their texts (`str()` of the value), -1 for a missing label.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NUMERIC = ("time", "confidence", "latency_ms", "length", "oov")


def _number(value: Any) -> float:
    """float(value) when it is a finite number (or text of one), else NaN (booleans are not numbers)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def numbers(values: Sequence[Any], *, plain: bool = False) -> np.ndarray:
    """A float64 column, NaN where a value is not a finite number. One numpy conversion when the values
    are numbers and None (`plain`: known to hold no booleans, as values read from SQLite); value by
    value otherwise."""
    array = None
    if plain or not any(isinstance(v, (bool, np.bool_, str, bytes)) for v in values):
        try:
            array = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
    if array is None or array.ndim != 1:
        array = np.fromiter((_number(v) for v in values), dtype=np.float64, count=len(values))
    array[~np.isfinite(array)] = np.nan
    return array


def codes(values: Sequence[Any], names: list[str], *, none: bool, plain: bool = False) -> np.ndarray:
    """Codes of str(value) in `names` (extended in place, in order of first appearance); None -> -1 when
    `none`, else the code of 'None'. `plain`: values read from SQLite (no booleans), whose distinct
    values are looked up once each."""
    index = {text: i for i, text in enumerate(names)}

    def code(value: Any) -> int:
        if value is None and none:
            return -1
        text = str(value)
        found = index.get(text)
        if found is None:
            found = index[text] = len(names)
            names.append(text)
        return found

    if plain:  # SQLite gives str, int, float, bytes or None: equal values have equal str()
        lookup = {value: code(value) for value in dict.fromkeys(values)}
        return np.fromiter(map(lookup.__getitem__, values), dtype=np.int32, count=len(values))
    return np.fromiter(map(code, values), dtype=np.int32, count=len(values))


@dataclass
class TrafficColumns:
    """Logged predictions as columns, in the order given (oldest first when read from the log)."""

    time: np.ndarray
    confidence: np.ndarray
    latency_ms: np.ndarray
    length: np.ndarray
    oov: np.ndarray
    label: np.ndarray  # codes into `labels`, -1: no label
    labels: list[str]
    version: np.ndarray  # codes into `versions` (str of the logged version, 'None' when missing)
    versions: list[str]
    ids: list[str] | None = None  # prediction ids (for feedback that does not say what was predicted)

    def __len__(self) -> int:
        return len(self.time)

    @classmethod
    def empty(cls) -> TrafficColumns:
        nothing = np.zeros(0, dtype=np.float64)
        return cls(nothing, nothing, nothing, nothing, nothing, np.zeros(0, dtype=np.int32), [],
                   np.zeros(0, dtype=np.int32), [], [])

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping]) -> TrafficColumns:
        """Columns of prediction dicts (keys as in the log: time, label, confidence, latency_ms, length,
        oov, version, id; any may be missing)."""
        numeric = {name: numbers([r.get(name) for r in rows]) for name in NUMERIC}
        labels: list[str] = []
        versions: list[str] = []
        return cls(**numeric, label=codes([r.get("label") for r in rows], labels, none=True), labels=labels,
                   version=codes([r.get("version") for r in rows], versions, none=False), versions=versions,
                   ids=[r.get("id") for r in rows])

    @classmethod
    def from_log(cls, time_: Sequence, version: Sequence, label: Sequence, confidence: Sequence, latency_ms: Sequence,
                 length: Sequence, oov: Sequence, *, labels: list[str], versions: list[str]) -> TrafficColumns:
        """Columns of the values read from the prediction log (`read_columns`); `labels` and
        `versions` are the code lists to extend (shared with earlier columns of the same model)."""
        return cls(time=numbers(time_, plain=True), confidence=numbers(confidence, plain=True),
                   latency_ms=numbers(latency_ms, plain=True), length=numbers(length, plain=True),
                   oov=numbers(oov, plain=True), label=codes(label, labels, none=True, plain=True), labels=labels,
                   version=codes(version, versions, none=False, plain=True), versions=versions, ids=None)

    def take(self, index: np.ndarray) -> TrafficColumns:
        """The rows at `index` (an index array or boolean mask), sharing the code lists."""
        ids = None if self.ids is None else [self.ids[i] for i in np.arange(len(self))[index]]
        return TrafficColumns(self.time[index], self.confidence[index], self.latency_ms[index], self.length[index],
                              self.oov[index], self.label[index], self.labels, self.version[index], self.versions, ids)

    def append(self, other: TrafficColumns) -> TrafficColumns:
        """These rows followed by `other`'s (which must share this object's code lists)."""
        assert other.labels is self.labels and other.versions is self.versions
        ids = None if self.ids is None or other.ids is None else self.ids + other.ids
        cat = np.concatenate
        return TrafficColumns(cat([self.time, other.time]), cat([self.confidence, other.confidence]),
                              cat([self.latency_ms, other.latency_ms]), cat([self.length, other.length]),
                              cat([self.oov, other.oov]), cat([self.label, other.label]), self.labels,
                              cat([self.version, other.version]), self.versions, ids)

    def window(self, since: float, version: int | None = None) -> TrafficColumns:
        """Rows logged at or after `since` (unix seconds), of `version` when given, oldest first."""
        keep = self.time >= since
        if version is not None:
            code = self.versions.index(str(version)) if str(version) in self.versions else -2
            keep &= self.version == code
        index = np.flatnonzero(keep)
        return self.take(index[np.argsort(self.time[index], kind="stable")])

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.label[self.label >= 0], minlength=len(self.labels))
        return {self.labels[i]: int(c) for i, c in enumerate(counts) if c}

    def version_counts(self) -> dict[str, int]:
        counts = np.bincount(self.version, minlength=len(self.versions))
        return {self.versions[i]: int(c) for i, c in enumerate(counts) if c}

    def finite(self, name: str) -> np.ndarray:
        column = getattr(self, name)
        return column[np.isfinite(column)]


def read_columns(db_path: Path, model: str, *, since: float | None = None, version: int | None = None,
                 after_rowid: int = 0, labels: list[str] | None = None, versions: list[str] | None = None):
    """(TrafficColumns of `model`'s logged predictions, the largest rowid read): those after `since` (unix
    seconds) of `version` when given, oldest first; or, with `after_rowid`, those logged after that row
    in log order (`TrafficStore`'s increments). `labels`/`versions`: code lists to extend."""
    from .predlog import _connect

    conn = _connect(db_path)
    conn.row_factory = None
    try:
        # in log order: a scan of the table in rowid order (`+model` keeps SQLite off the (model, time) index,
        # which would need a sort by rowid afterwards); in a time window: that index
        sql = ("SELECT rowid, time, version, label, confidence, latency_ms, length, oov FROM predictions WHERE "
               + ("+model = ?" if since is None else "model = ?"))
        args: list = [model]
        if after_rowid:
            sql += " AND rowid > ?"
            args.append(int(after_rowid))
        if since is not None:
            sql += " AND time >= ?"
            args.append(since)
        if version is not None:
            sql += " AND version = ?"
            args.append(version)
        rows = conn.execute(sql + (" ORDER BY rowid" if since is None else " ORDER BY time"), args).fetchall()
    finally:
        conn.close()
    labels = labels if labels is not None else []
    versions = versions if versions is not None else []
    if not rows:
        empty = TrafficColumns.empty()
        empty.labels, empty.versions, empty.ids = labels, versions, None
        return empty, int(after_rowid)
    rowid, *columns = zip(*rows)
    return TrafficColumns.from_log(*columns, labels=labels, versions=versions), max(int(after_rowid), max(rowid))


@dataclass
class TrafficStore:
    """Each model's logged predictions in memory, extended with the rows logged since the last read
    (the log only grows: rows are never updated or deleted). Thread-safe."""

    db_path: Any
    _models: dict = field(default_factory=dict)  # model -> (TrafficColumns, last rowid read)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def columns(self, model: str) -> TrafficColumns:
        with self._lock:
            current, last = self._models.get(model, (None, 0))
            new, last = read_columns(self.db_path, model, after_rowid=last,
                                     labels=None if current is None else current.labels,
                                     versions=None if current is None else current.versions)
            current = new if current is None else current.append(new) if len(new) else current
            self._models[model] = (current, last)
            return current
