"""The one way lmforge opens the registry's SQLite database (the registry and the prediction log share
it, often from several processes at once: a server logging predictions, a CLI promoting a version).

Every connection is in autocommit mode (transactions are explicit), in WAL mode (readers never block
the writer), waits up to 30 s for a lock, and enforces foreign keys. Switching to WAL takes a lock
that SQLite's busy handler does not always wait for, so `connect` retries that step itself; without
the retry a second process opening the database at the same moment fails with "database is locked".
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BUSY_TIMEOUT_S = 30
WAL_ATTEMPTS = 100
WAL_RETRY_S = 0.05


def connect(db_path: Path) -> sqlite3.Connection:
    """A new connection to `db_path` (see the module docstring); rows are `sqlite3.Row`."""
    conn = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    conn.execute("PRAGMA foreign_keys=ON")
    for attempt in range(WAL_ATTEMPTS):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                conn.close()
                raise
            time.sleep(WAL_RETRY_S)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`with transaction(conn):` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

    IMMEDIATE takes the write lock at the start (waiting for it under the busy timeout), so two writers
    serialize instead of one failing when it upgrades a read lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise
    conn.execute("COMMIT")


def create_tables(conn: sqlite3.Connection, schema: str) -> None:
    """Run the `CREATE ... IF NOT EXISTS` statements of `schema` in one transaction (not executescript,
    which would commit the BEGIN IMMEDIATE first)."""
    with transaction(conn):
        for statement in filter(str.strip, schema.split(";")):
            conn.execute(statement)
