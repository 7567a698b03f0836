"""The prediction log and feedback, in the registry's SQLite database.

The server hands each (sampled) prediction to `PredictionLog.record`, which only puts it on an
in-memory queue; one writer thread inserts queued rows in batches, so a slow disk never delays a
response. When more than `max_pending` rows wait, new ones are dropped and counted (`dropped`).
Texts are stored only when allowed (`store_texts`); otherwise only their sha256.

Tables (created on first use, beside the registry's own; connections come from `lifecycle.db`, like
the registry's, so a server logging and a CLI promoting never fail on each other's locks):
    predictions(id, model, version, version_tag, time, label, confidence, latency_ms, length, oov, text_hash, text)
    feedback(prediction_id -> predictions.id, label, time)
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from . import db

log = logging.getLogger("lmforge.predlog")

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER, version_tag TEXT, time REAL NOT NULL,
    label TEXT, confidence REAL, latency_ms REAL, length INTEGER, oov REAL, text_hash TEXT, text TEXT);
CREATE INDEX IF NOT EXISTS predictions_model_time ON predictions(model, time);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT PRIMARY KEY REFERENCES predictions(id), label TEXT NOT NULL, time REAL NOT NULL);
"""
COLUMNS = ("id", "model", "version", "version_tag", "time", "label", "confidence", "latency_ms", "length", "oov",
           "text_hash", "text")


def _connect(db_path: Path) -> sqlite3.Connection:
    """A `db.connect` connection, with the prediction log's tables created if they are missing."""
    conn = db.connect(db_path)
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                        "('predictions', 'feedback')").fetchone()[0] < 2:
            db.create_tables(conn, SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class UnknownPrediction(LookupError):
    """Feedback names a prediction id that was never logged (sampled out, or from another model)."""


class PredictionLog:
    def __init__(self, db_path: Path, model: str, *, sample_rate: float = 1.0, store_texts: bool = False,
                 max_pending: int = 10_000, batch_size: int = 500):
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample rate {sample_rate}: give a fraction between 0 and 1")
        self.db_path, self.model = Path(db_path), model
        self.sample_rate, self.store_texts = sample_rate, store_texts
        self.max_pending, self.batch_size = max_pending, batch_size
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._random = random.Random()
        _connect(self.db_path).close()  # the tables exist before the first request

    # -- the request side (never blocks) -----------------------------------------------------------
    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def record(self, row: dict[str, Any]) -> bool:
        """Queue one prediction row (keys: id, version, version_tag, label, confidence, latency_ms, length,
        oov, text). False when it was dropped because too many rows wait."""
        if self._queue.qsize() >= self.max_pending:
            self.dropped += 1
            return False
        text = row.pop("text", None)
        row = {**row, "model": self.model, "time": row.get("time", time.time()),
               "text_hash": text_hash(text) if text is not None else None,
               "text": text if self.store_texts else None}
        self._queue.put(row)
        return True

    # -- the writer thread ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="lmforge-predlog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def flush(self, timeout: float = 10.0) -> None:
        """Return once every row queued before this call is in the database."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _write_loop(self) -> None:
        conn = _connect(self.db_path)
        try:
            running = True
            while running:
                item = self._queue.get()
                rows, events = [], []
                while True:
                    if item is None:
                        running = False
                    elif isinstance(item, threading.Event):
                        events.append(item)
                    else:
                        rows.append(item)
                    if len(rows) >= self.batch_size or self._queue.empty():
                        break
                    item = self._queue.get_nowait()
                if rows:
                    self._insert(conn, rows)
                for event in events:
                    event.set()
        finally:
            conn.close()

    def _insert(self, conn: sqlite3.Connection, rows: list[dict]) -> None:
        marks = ", ".join("?" for _ in COLUMNS)
        try:
            with db.transaction(conn):
                conn.executemany(f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}) VALUES ({marks})",
                                 [tuple(r.get(c) for c in COLUMNS) for r in rows])
        except sqlite3.Error:  # the log must never take the server down; the rows are lost and counted
            log.exception("could not write %d prediction log rows", len(rows))
            self.dropped += len(rows)

    # -- feedback --------------------------------------------------------------------------------------
    def add_feedback(self, prediction_id: str, label: str) -> dict:
        """Attach a corrected label to a logged prediction (replacing earlier feedback on it)."""
        self.flush()
        return add_feedback(self.db_path, self.model, prediction_id, label)


def add_feedback(db_path: Path, model: str, prediction_id: str, label: str) -> dict:
    conn = _connect(db_path)
    try:
        row = conn.execute("SELECT label, version, version_tag FROM predictions WHERE id = ? AND model = ?",
                           (prediction_id, model)).fetchone()
        if row is None:
            raise UnknownPrediction(prediction_id)
        conn.execute("INSERT OR REPLACE INTO feedback (prediction_id, label, time) VALUES (?, ?, ?)",
                     (prediction_id, label, time.time()))
        return {"prediction_id": prediction_id, "predicted": row[0], "label": label, "version": row[1],
                "model_version": row[2]}
    finally:
        conn.close()


def predictions_since(db_path: Path, model: str, since: float, *, version: int | None = None,
                      limit: int | None = None) -> list[dict]:
    """Logged predictions of `model` after `since` (unix seconds), oldest first (the newest `limit`)."""
    conn = _connect(db_path)
    conn.row_factory = None  # plain tuples: building 100k sqlite3.Row objects took most of the time
    try:
        sql = f"SELECT {', '.join(COLUMNS)} FROM predictions WHERE model = ? AND time >= ?"
        args: list = [model, since]
        if version is not None:
            sql += " AND version = ?"
            args.append(version)
        sql += " ORDER BY time DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = [dict(zip(COLUMNS, r)) for r in conn.execute(sql, args)]
    finally:
        conn.close()
    rows.reverse()
    return rows


def log_marker(db_path: Path) -> tuple[int, int]:
    """(largest prediction rowid, feedback rows): changes whenever a prediction or feedback is logged."""
    conn = _connect(db_path)
    try:
        return tuple(conn.execute("SELECT (SELECT COALESCE(MAX(rowid), 0) FROM predictions), "
                                  "(SELECT COUNT(*) FROM feedback)").fetchone())  # type: ignore[return-value]
    finally:
        conn.close()


def unconfident(db_path: Path, model: str, below: float, *, limit: int = 500) -> list[dict]:
    """Logged predictions of `model` with a stored text, confidence below `below` and no feedback yet,
    least confident first (what is most worth a person's label)."""
    conn = _connect(db_path)
    try:
        sql = (f"SELECT {', '.join('p.' + c for c in COLUMNS)} FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.id "
               "WHERE p.model = ? AND p.text IS NOT NULL AND p.confidence < ? AND f.prediction_id IS NULL "
               f"ORDER BY p.confidence, p.time DESC LIMIT {int(limit)}")
        return [dict(zip(COLUMNS, r)) for r in conn.execute(sql, (model, below))]
    finally:
        conn.close()


def feedback_since(db_path: Path, model: str, since: float, *, version: int | None = None) -> list[dict]:
    """Feedback on `model`'s predictions made after `since`: prediction id, predicted and corrected
    label, the prediction's text (None when texts were not stored) and version."""
    conn = _connect(db_path)
    try:
        # CROSS JOIN keeps feedback (a few rows a person wrote) the outer loop: driven from the predictions'
        # (model, time) index instead, the query walked every logged prediction of the window
        sql = ("SELECT f.prediction_id, p.label, f.label, f.time, p.text, p.text_hash, p.version FROM feedback f "
               "CROSS JOIN predictions p ON p.id = f.prediction_id WHERE p.model = ? AND p.time >= ?")
        args: list = [model, since]
        if version is not None:
            sql += " AND p.version = ?"
            args.append(version)
        keys = ("prediction_id", "predicted", "label", "time", "text", "text_hash", "version")
        return [dict(zip(keys, r)) for r in conn.execute(sql + " ORDER BY f.time", args)]
    finally:
        conn.close()
