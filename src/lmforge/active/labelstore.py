"""Labels given by people, kept in SQLite: append-only (a label is never overwritten; the latest for an
item is its label, earlier ones stay as history), with short leases so that two people labelling the
same queue at once are handed different items, and per-person skips. Several processes may share one
store (WAL, the registry's connection helper)."""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path

from ..lifecycle import db

LEASE_S = 600.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL, value TEXT NOT NULL, labeller TEXT NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS labels_item ON labels(item, id);
CREATE TABLE IF NOT EXISTS leases (item TEXT PRIMARY KEY, labeller TEXT NOT NULL, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS skips (item TEXT NOT NULL, labeller TEXT NOT NULL, PRIMARY KEY (item, labeller));
"""


class LabelStore:
    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        with closing(db.connect(self.db_path)) as conn:
            db.create_tables(conn, SCHEMA)

    def _conn(self):
        return closing(db.connect(self.db_path))

    def next_item(self, items: list[str], labeller: str, *, lease_s: float = LEASE_S) -> str | None:
        """The first of `items` nobody labelled, nobody else holds and `labeller` did not skip; leased to
        `labeller` for `lease_s` seconds. None when there is none."""
        now = time.time()
        with self._conn() as conn, db.transaction(conn):
            labelled = {r[0] for r in conn.execute("SELECT DISTINCT item FROM labels")}
            held = {r[0]: r[1] for r in conn.execute("SELECT item, labeller FROM leases WHERE until > ?", (now,))}
            skipped = {r[0] for r in conn.execute("SELECT item FROM skips WHERE labeller = ?", (labeller,))}
            mine = next((i for i in items if held.get(i) == labeller and i not in labelled), None)
            chosen = mine or next((i for i in items if i not in labelled and i not in held and i not in skipped), None)
            if chosen is not None:
                conn.execute("INSERT OR REPLACE INTO leases (item, labeller, until) VALUES (?, ?, ?)", (chosen, labeller, now + lease_s))
            return chosen

    def submit(self, item: str, value, labeller: str) -> dict:
        """Store `labeller`'s label for `item`; returns {"previous": earlier label by someone else or None}."""
        with self._conn() as conn, db.transaction(conn):
            before = conn.execute("SELECT value, labeller FROM labels WHERE item = ? ORDER BY id DESC LIMIT 1", (item,)).fetchone()
            conn.execute("INSERT INTO labels (item, value, labeller, time) VALUES (?, ?, ?, ?)",
                         (item, json.dumps(value, ensure_ascii=False), labeller, time.time()))
            conn.execute("DELETE FROM leases WHERE item = ?", (item,))
        other = before is not None and before["labeller"] != labeller
        return {"previous": json.loads(before["value"]) if other else None, "previous_by": before["labeller"] if other else None}

    def skip(self, item: str, labeller: str) -> None:
        with self._conn() as conn, db.transaction(conn):
            conn.execute("INSERT OR IGNORE INTO skips (item, labeller) VALUES (?, ?)", (item, labeller))
            conn.execute("DELETE FROM leases WHERE item = ? AND labeller = ?", (item, labeller))

    def latest(self) -> dict[str, object]:
        """item -> its latest label."""
        with self._conn() as conn:
            rows = conn.execute("SELECT item, value FROM labels WHERE id IN (SELECT MAX(id) FROM labels GROUP BY item)")
            return {r[0]: json.loads(r[1]) for r in rows}

    def mine(self, labeller: str) -> list[str]:
        """Items `labeller` labelled, most recent first (for undo)."""
        with self._conn() as conn:
            rows = conn.execute("SELECT item, MAX(id) AS last FROM labels WHERE labeller = ? GROUP BY item ORDER BY last DESC", (labeller,))
            return [r[0] for r in rows]

    def history(self) -> list[dict]:
        with self._conn() as conn:
            return [{"item": r[0], "value": json.loads(r[1]), "labeller": r[2], "time": r[3]}
                    for r in conn.execute("SELECT item, value, labeller, time FROM labels ORDER BY id")]
