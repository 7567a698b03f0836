"""The runs the studio shows: every run folder under the given roots, addressed by a short id.

A run's id is a hash of its resolved path, so URLs never carry a path; the studio resolves an id only
against the folders it found itself. The status a person wants (running / finished / failed /
interrupted) comes from run.json: `complete`, `failed` and `interrupted` are written by training; a
run still marked `training` is running when its process is alive on this host, and was killed
(interrupted) otherwise. Live progress is the tail of the run's metrics log.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import read_json
from ..runs import CONFIG, LABELS, LOGS, METRICS, RUN_INFO

MAX_DEPTH = 3  # runs/<name>, runs/<group>/<name>, ...
METRICS_LOG = "metrics.jsonl"
HEADLINE_KEYS = ("accuracy", "macro_f1", "f1", "micro_f1", "loss", "pass@1")


def run_id(path: Path) -> str:
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]


@dataclass
class RunEntry:
    id: str
    path: Path
    name: str
    task: str
    model: str
    method: str
    status: str  # running | finished | failed | interrupted
    info: dict
    metrics: dict
    started: float | None
    error: str | None = None
    headline: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        seconds = self.info.get("train_seconds")
        if isinstance(seconds, (int, float)):
            return float(seconds)
        if self.status == "running" and self.started:
            return max(0.0, time.time() - self.started)
        return None


def _alive(pid: object, host: object) -> bool:
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def status_of(info: dict) -> str:
    status = info.get("status")
    if status == "complete":
        return "finished"
    if status in ("failed", "interrupted"):
        return status
    return "running" if _alive(info.get("pid"), info.get("host")) else "interrupted"


def headline(metrics: dict) -> dict[str, float]:
    """`split metric` -> value, for the metrics a list shows (test first, then dev)."""
    out: dict[str, float] = {}
    for split in ("test", "dev"):
        values = metrics.get(split) or {}
        for key in HEADLINE_KEYS:
            if isinstance(values.get(key), (int, float)):
                out[f"{split} {key}"] = float(values[key])
    return out


RUN_FILES = frozenset((CONFIG, LABELS, RUN_INFO))  # a folder holding these three is a run


def _yaml_head(path: Path) -> dict:
    import yaml

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_entry(path: Path) -> RunEntry | None:
    """A run folder as the studio lists it; None when its files cannot be read."""
    try:
        info = read_json(path / RUN_INFO)
        labels = read_json(path / LABELS)
        metrics = read_json(path / METRICS) if (path / METRICS).is_file() else {}
    except Exception:  # noqa: BLE001 - a damaged run (unreadable, bad JSON) is left out of the list, never fails the page
        return None
    if not isinstance(info, dict) or not isinstance(labels, dict):
        return None
    cfg = _yaml_head(path / CONFIG)
    model = str(cfg.get("model", ""))
    return RunEntry(id=run_id(path), path=path, name=path.name, task=str(labels.get("task", cfg.get("task", ""))),
                    model=Path(model).name if os.sep in model else model, method=str(cfg.get("method", "full")),
                    status=status_of(info), info=info, metrics=metrics if isinstance(metrics, dict) else {},
                    started=info.get("started") if isinstance(info.get("started"), (int, float)) else None,
                    error=str(info["error"]) if info.get("error") else None,
                    headline=headline(metrics if isinstance(metrics, dict) else {}))


def _identity(path: Path | str) -> tuple[int, int] | None:
    """(device, inode) of what `path` leads to (symlinks followed), None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_runs(roots: list[Path], exclude: list[Path] | None = None) -> list[Path]:
    """Run folders under `roots` (depth <= MAX_DEPTH), skipping `exclude` (a registry's copies). One
    directory listing a folder; folders are told apart by device and inode (links and loops visited once)."""
    skip = {key for key in map(_identity, exclude or []) if key is not None}
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path, depth: int) -> None:
        key = _identity(folder)
        if key is None or key in skip or key in seen:
            return
        seen.add(key)
        try:
            with os.scandir(folder) as listing:
                children = list(listing)
            files = {c.name for c in children if c.name in RUN_FILES and c.is_file()}
            folders = sorted(c.name for c in children if not c.name.startswith(".") and c.is_dir())
        except OSError:
            return
        if files == RUN_FILES:
            found.append(folder)
            return
        if depth >= MAX_DEPTH:
            return
        for name in folders:
            walk(folder / name, depth + 1)

    for root in roots:
        if Path(root).is_dir():
            walk(Path(root), 0)
    return found


def _stamp(path: Path) -> tuple:
    """What changes when a run's listed files change (their mtimes and sizes)."""
    out = []
    for name in (CONFIG, LABELS, RUN_INFO, METRICS):
        try:
            st = (path / name).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class Catalog:
    """The runs under the roots, found again on every listing; a run's files are re-read only when
    they changed (a listing of 200 runs then costs 200 x 4 stat calls)."""

    def __init__(self, roots: list[Path], exclude: list[Path] | None = None):
        self.roots = [Path(r) for r in roots]
        self.exclude = exclude or []
        self._cache: dict[Path, tuple[tuple, RunEntry | None]] = {}

    def _entry(self, path: Path) -> RunEntry | None:
        stamp = _stamp(path)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            entry = cached[1]
            if entry is not None and entry.info.get("status") not in ("complete", "failed", "interrupted"):
                entry.status = status_of(entry.info)  # a live run's process may have gone since
            return entry
        entry = read_entry(path)
        self._cache[path] = (stamp, entry)
        return entry

    def entries(self) -> list[RunEntry]:
        entries = [self._entry(path) for path in find_runs(self.roots, self.exclude)]
        return sorted((e for e in entries if e is not None), key=lambda e: -(e.started or 0))

    def get(self, rid: str) -> RunEntry | None:
        for path in find_runs(self.roots, self.exclude):
            if run_id(path) == rid:
                return self._entry(path)
        return None


def read_log(path: Path) -> list[dict]:
    """The run's metrics log (logs/metrics.jsonl): one dict a line; a torn last line is skipped."""
    log = path / LOGS / METRICS_LOG
    rows = []
    try:
        with log.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        return []
    return rows


def _last_train_row(path: Path, tail_bytes: int = 8192) -> dict | None:
    log = path / LOGS / METRICS_LOG
    try:
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("split") == "train":
            return row
    return None


def progress(entry: RunEntry) -> dict:
    """Step, total, loss, tokens/s and ETA of a run from the end of its log."""
    row = _last_train_row(entry.path) or {}
    step, total = row.get("step"), entry.info.get("total_steps")
    out = {"id": entry.id, "status": entry.status, "step": step, "total_steps": total, "loss": row.get("loss"),
           "tokens_per_s": row.get("tokens_per_s"), "eta_s": None, "elapsed_s": entry.duration}
    if entry.status == "running" and isinstance(step, int) and isinstance(total, int) and step > 0 and entry.started:
        rate = (time.time() - entry.started) / step
        out["eta_s"] = max(0.0, rate * (total - step))
    return out


def curves(rows: list[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Chart series from the log: {"loss": {"train": [...]}, "dev": {metric: [...]}, "lr": ..., "tokens/s": ...}."""
    charts: dict[str, dict[str, list[tuple[float, float]]]] = {"train loss": {}, "dev metrics": {}, "learning rate": {},
                                                                 "tokens/s": {}}
    for row in rows:
        step = row.get("step")
        if not isinstance(step, (int, float)):
            continue
        if row.get("split") == "train":
            for key, chart in (("loss", "train loss"), ("lr", "learning rate"), ("tokens_per_s", "tokens/s")):
                if isinstance(row.get(key), (int, float)):
                    charts[chart].setdefault(key, []).append((float(step), float(row[key])))
        elif row.get("split") == "dev":
            for key, value in row.items():
                if key not in ("step", "split", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    charts["dev metrics"].setdefault(key, []).append((float(step), float(value)))
    return {name: series for name, series in charts.items() if series}
