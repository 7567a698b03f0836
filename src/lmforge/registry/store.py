"""The model registry: versions of named models in one SQLite database, artefacts in folders beside it.

    <root>/registry.db                   versions, events (audit log); other modules add their own tables
    <root>/artefacts/<name>/v<N>/run/    a copy of the run folder (no checkpoints/, logs/, eval/), read-only
    <root>/artefacts/<name>/v<N>/...     extras written by `prepare` (replay data, reference statistics)

A version exists once its row commits: the folder is built in a staging folder, hashed, made read-only,
then renamed into place inside the same `BEGIN IMMEDIATE` transaction that inserts the row. Every state
change is one such transaction, so concurrent processes serialize on the database.
"""

from __future__ import annotations

import getpass
import json
import operator
import os
import re
import shutil
import socket
import sqlite3
import stat
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import UserError
from ..runs import CONFIG, METRICS, check_complete
from ..files import files_under, read_json, sha256_folder

STAGES = ("candidate", "production", "archived")
DEFAULT_ROOT_ENV = "LMFORGE_REGISTRY"
DB_NAME = "registry.db"
ARTEFACTS = "artefacts"
STAGING_PREFIX = ".staging-"
SKIPPED_DIRS = ("checkpoints", "logs", "eval")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fullmatch: `$` would let a trailing newline through
NAME_RULE = "1-100 characters: ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
MAX_VERSION = 2**62  # SQLite integers are 64-bit; the CLI takes the same range
REF_RE = re.compile(r"(?P<name>[^:]*)(?::v?(?P<version>[0-9]{1,19}))?")

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    stage TEXT NOT NULL CHECK (stage IN ('candidate', 'production', 'archived')),
    path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    parent INTEGER,
    created_at TEXT NOT NULL,
    promoted_at TEXT,
    promoted_by TEXT,
    gate TEXT,
    forced INTEGER NOT NULL DEFAULT 0,
    info TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (name, version),
    FOREIGN KEY (name, parent) REFERENCES versions(name, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_one_production ON versions(name) WHERE stage = 'production';
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('add', 'promote', 'rollback', 'archive')),
    from_stage TEXT,
    to_stage TEXT,
    actor TEXT,
    time TEXT NOT NULL,
    note TEXT,
    FOREIGN KEY (name, version) REFERENCES versions(name, version)
);
CREATE INDEX IF NOT EXISTS events_name ON events(name, id);
"""


@dataclass(frozen=True)
class Version:
    """One registered version of a model (a row of `versions`)."""

    name: str
    version: int
    stage: str
    path: Path
    content_hash: str
    config: dict
    metrics: dict
    parent: int | None
    created_at: str
    promoted_at: str | None
    promoted_by: str | None
    gate: dict | None
    forced: bool
    info: dict

    @property
    def run_dir(self) -> Path:
        """The copy of the run folder inside the version folder."""
        return self.path / "run"

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"


# -- helpers -----------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    """`value` for an error message: repr (no raw control characters or surrogates), at most about 60 characters."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"{'-' if value < 0 else ''}<a {value.bit_length()}-bit number>"  # repr fails past 4,300 digits
    text = repr(value)
    size = f"{len(value):,} characters" if isinstance(value, (str, bytes)) else f"{len(text):,} characters shown"
    return text if len(text) <= 60 else f"{text[:50]}... ({size})"


def parse_ref(text: str) -> tuple[str, int | None]:
    """"intents" -> ("intents", None); "intents:3" or "intents:v3" -> ("intents", 3)."""
    match = REF_RE.fullmatch(str(text).strip())
    version = None if match is None or match["version"] is None else int(match["version"])
    if not match or not NAME_RE.fullmatch(match["name"]) or (version is not None and not 1 <= version <= MAX_VERSION):
        raise UserError(f"bad model reference {_shown(text)}: give NAME, NAME:N or NAME:vN (e.g. intents:v3); "
                        f"a name is {NAME_RULE}, N a whole number from 1 to 2**62")
    return match["name"], version


def check_name(name: str) -> str:
    """A model name usable as a folder name on any filesystem; UserError otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UserError(f"bad model name {_shown(name)}: a model name is {NAME_RULE} (e.g. intents, clinc-v2)")
    return name


def check_version(version: int, what: str = "version") -> int:
    """A version number SQLite can hold (1 .. 2**62); UserError otherwise (also for bool, float and str)."""
    try:
        number = None if isinstance(version, bool) else operator.index(version)
    except TypeError:
        number = None
    if number is None or not 1 <= number <= MAX_VERSION:
        raise UserError(f"bad {what} {_shown(version)}: a version is a whole number from 1 to 2**62 (v1 is a model's "
                        "first version; `lmforge registry list NAME` shows them)")
    return number


def default_actor() -> str:
    """user@host of this process ("unknown" for a part that cannot be found)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        user = "unknown"
    try:
        host = socket.gethostname()
    except Exception:
        host = "unknown"
    return f"{user}@{host}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


_files = files_under


content_hash = sha256_folder  # sha256 over every file of a folder: relative path, size and bytes


def _make_read_only(folder: Path) -> None:
    for _, path in _files(folder):
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _copy_run(run_dir: Path, target: Path) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n in SKIPPED_DIRS] if Path(directory) == run_dir else []

    shutil.copytree(run_dir, target, ignore=ignore, symlinks=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a.b.c": value}; booleans, strings and lists are skipped."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix[:-1]] = float(data)
    return out


def _gate_failures(gate: dict) -> list[str]:
    checks = gate.get("checks")
    if not isinstance(checks, list):
        return []
    return [f"{c.get('name', '?')}" + (f" ({c['detail']})" if c.get("detail") else "")
            for c in checks if isinstance(c, dict) and c.get("passed") is False]


def _gate_failed(gate: dict | None) -> bool:
    return isinstance(gate, dict) and gate.get("passed") is False


# -- the registry ------------------------------------------------------------------------------------


class Registry:
    """Versions of named models: add, promote, roll back, archive, compare, verify."""

    def __init__(self, root: str | Path | None = None):
        if root is None:
            root = os.environ.get(DEFAULT_ROOT_ENV) or "registry"
        self.root = Path(root).expanduser().absolute()
        self.db_path = self.root / DB_NAME
        self.artefacts = self.root / ARTEFACTS
        try:
            self.artefacts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the registry folder {self.root}: {exc}; give another --registry folder") from exc
        try:
            conn = self.connect()
        except sqlite3.Error as exc:  # a folder SQLite cannot use: read-only, no room, not a database
            raise UserError(f"cannot open the registry database {self.db_path}: {exc}; give another --registry folder "
                            f"(or ${DEFAULT_ROOT_ENV})") from None
        try:
            with self._transaction(conn):  # not executescript: it would commit the BEGIN IMMEDIATE first
                for statement in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.db_path} is not a usable registry database: {exc}; give another --registry folder") from None
        finally:
            conn.close()

    # -- database ------------------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection: autocommit mode (explicit BEGIN), WAL, busy timeout 30 s, foreign keys on."""
        conn = sqlite3.connect(str(self.db_path), timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        for attempt in range(100):  # switching to WAL takes a lock that the busy handler does not always wait for
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    conn.close()
                    raise
                time.sleep(0.05)
        return conn

    def _transaction(self, conn: sqlite3.Connection) -> _Transaction:
        return _Transaction(conn)

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        conn = self.connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def _version(self, row: sqlite3.Row) -> Version:
        gate = row["gate"]
        return Version(
            name=row["name"], version=row["version"], stage=row["stage"], path=self.root / row["path"],
            content_hash=row["content_hash"], config=json.loads(row["config"]), metrics=json.loads(row["metrics"]),
            parent=row["parent"], created_at=row["created_at"], promoted_at=row["promoted_at"],
            promoted_by=row["promoted_by"], gate=None if gate is None else json.loads(gate), forced=bool(row["forced"]),
            info=json.loads(row["info"] or "{}"))

    def _row(self, conn: sqlite3.Connection, name: str, version: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM versions WHERE name = ? AND version = ?", (name, int(version))).fetchone()
        if row is None:
            raise UserError(self._missing(conn, name, version))
        return row

    def _missing(self, conn: sqlite3.Connection, name: str, version: int | None) -> str:
        versions = [r[0] for r in conn.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))]
        if not versions:
            names = [r[0] for r in conn.execute("SELECT DISTINCT name FROM versions ORDER BY name")]
            return (f"no registered model named {name!r} in {self.root} (registered: {', '.join(names) or 'none'}); "
                    f"add one with `lmforge registry add {name} RUN_DIR`")
        known = ", ".join(f"v{v}" for v in versions)
        return f"{name} has no version {version} (it has {known}); give one of those"

    def _event(self, conn: sqlite3.Connection, name: str, version: int, action: str, from_stage: str | None,
               to_stage: str | None, actor: str | None, note: str | None = None) -> None:
        conn.execute("INSERT INTO events (name, version, action, from_stage, to_stage, actor, time, note) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (name, version, action, from_stage, to_stage, actor or default_actor(), now(), note))

    # -- add -----------------------------------------------------------------------------------------

    def add(self, name: str, run_dir: Path, *, parent: int | None = None, gate: dict | None = None,
            info: dict | None = None, prepare: Callable[[Path], dict | None] | None = None,
            actor: str | None = None) -> Version:
        """Copy a finished run into the registry as the next candidate version of `name`."""
        check_name(name)
        parent = None if parent is None else check_version(parent, "parent version")
        run_dir = check_complete(Path(run_dir)).absolute()
        self._clean_staging()
        staging = self.artefacts / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            info = self._stage(run_dir, staging, info, prepare)
            return self._commit(name, staging, parent=parent, gate=gate, info=info, actor=actor)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _stage(self, run_dir: Path, staging: Path, info: dict | None,
               prepare: Callable[[Path], dict | None] | None) -> dict:
        """Build the version folder in `staging`; returns the merged info."""
        staging.mkdir(parents=True)
        _copy_run(run_dir, staging / "run")
        info = {"source_run": str(run_dir), **(info or {})}
        if prepare is not None:
            info.update(prepare(staging) or {})
        return info

    def _commit(self, name: str, staging: Path, *, parent: int | None, gate: dict | None, info: dict,
                actor: str | None) -> Version:
        run = staging / "run"
        config = yaml.safe_load((run / CONFIG).read_text(encoding="utf-8")) or {}
        metrics = read_json(run / METRICS) if (run / METRICS).is_file() else {}
        digest = content_hash(staging)
        _make_read_only(staging)
        conn = self.connect()
        moved = False
        try:
            with self._transaction(conn):
                self._check_case_clash(conn, name)
                number = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?", (name,)).fetchone()[0]
                if parent is not None:
                    self._check_parent(conn, name, parent)
                target = self.artefacts / name / f"v{number}"
                self._move_into_place(staging, target)
                moved = True
                self._insert_version(conn, name, number, target, digest, config, metrics, parent, gate, info, actor)
        except BaseException:
            if moved and target.exists():
                target.rename(staging)  # no row was committed: back to staging, which add removes
            raise
        else:
            return self._version(self._row(conn, name, number))
        finally:
            conn.close()

    def _check_case_clash(self, conn: sqlite3.Connection, name: str) -> None:
        """Refuse a name that differs from a registered one only in case: on a case-insensitive filesystem (macOS,
        Windows) both would share one folder, and this add would delete the other model's version as a leftover."""
        other = conn.execute("SELECT name FROM versions WHERE name != ?1 AND lower(name) = lower(?1) LIMIT 1",
                             (name,)).fetchone()
        if other is not None:
            raise UserError(f"bad model name {name!r}: {other[0]!r} is registered already and differs only in case "
                            f"(they would share a folder on case-insensitive filesystems); use {other[0]!r} or another name")

    def _check_parent(self, conn: sqlite3.Connection, name: str, parent: int) -> None:
        if conn.execute("SELECT 1 FROM versions WHERE name = ? AND version = ?", (name, int(parent))).fetchone() is None:
            raise UserError(f"parent version {parent}: " + self._missing(conn, name, parent))

    def _move_into_place(self, staging: Path, target: Path) -> None:
        if target.exists():  # a folder without a row: left by a process killed before its commit
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)

    def _insert_version(self, conn: sqlite3.Connection, name: str, number: int, target: Path, digest: str,
                        config: dict, metrics: dict, parent: int | None, gate: dict | None, info: dict,
                        actor: str | None) -> None:
        conn.execute(
            "INSERT INTO versions (name, version, stage, path, content_hash, config, metrics, parent, created_at, gate, "
            "forced, info) VALUES (?, ?, 'candidate', ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (name, number, target.relative_to(self.root).as_posix(), digest, json.dumps(config, default=str),
             json.dumps(metrics), parent, now(), None if gate is None else json.dumps(gate, default=str),
             json.dumps(info, default=str)))
        note = f"from {info.get('source_run')}" + (f", parent v{parent}" if parent is not None else "")
        self._event(conn, name, number, "add", None, "candidate", actor, note)

    def _clean_staging(self) -> None:
        """Remove staging folders of processes that are gone (killed during an add)."""
        for folder in self.artefacts.glob(f"{STAGING_PREFIX}*"):
            pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    # -- queries -------------------------------------------------------------------------------------

    def list(self, name: str | None = None) -> list[Version]:
        """Every version (of `name`, or of all models), ordered by name and version."""
        if name is None:
            rows = self._read("SELECT * FROM versions ORDER BY name, version")
        else:
            rows = self._read("SELECT * FROM versions WHERE name = ? ORDER BY version", (check_name(name),))
        return [self._version(r) for r in rows]

    def names(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT name FROM versions ORDER BY name")]

    def get(self, name: str, version: int | None = None) -> Version:
        """One version; `version` None: the production version (UserError when there is none)."""
        check_name(name)
        version = None if version is None else check_version(version)
        conn = self.connect()
        try:
            if version is not None:
                return self._version(self._row(conn, name, version))
            row = conn.execute("SELECT * FROM versions WHERE name = ? AND stage = 'production'", (name,)).fetchone()
            if row is None:
                if conn.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone() is None:
                    raise UserError(self._missing(conn, name, None))
                raise UserError(f"{name} has no production version; give a version, or promote one with "
                                f"`lmforge registry promote {name} N`")
            return self._version(row)
        finally:
            conn.close()

    def production(self, name: str) -> Version | None:
        rows = self._read("SELECT * FROM versions WHERE name = ? AND stage = 'production'", (check_name(name),))
        return self._version(rows[0]) if rows else None

    def production_marker(self, name: str) -> tuple[int | None, int]:
        """(production version or None, a counter that changes on every promote/rollback/archive); one query."""
        check_name(name)
        row = self._read(
            "SELECT (SELECT version FROM versions WHERE name = ?1 AND stage = 'production'), "
            "(SELECT COALESCE(MAX(id), 0) FROM events WHERE name = ?1 AND action != 'add')", (name,))[0]
        return row[0], row[1]

    def lineage(self, name: str, version: int) -> list[Version]:
        """[version, its parent, grandparent, ...]."""
        check_name(name)
        version = check_version(version)
        conn = self.connect()
        try:
            chain = [self._version(self._row(conn, name, version))]
            while chain[-1].parent is not None and len(chain) <= 10_000:
                chain.append(self._version(self._row(conn, name, chain[-1].parent)))
            return chain
        finally:
            conn.close()

    def history(self, name: str) -> list[dict]:
        """The events of `name`, oldest first."""
        check_name(name)
        rows = self._read("SELECT time, action, version, from_stage, to_stage, actor, note FROM events "
                          "WHERE name = ? ORDER BY id", (name,))
        return [dict(r) for r in rows]

    def diff(self, name: str, a: int, b: int) -> list[dict]:
        """Every numeric metric (and gate number) of either version: {"metric", "a", "b", "delta"}."""
        va, vb = self.get(name, check_version(a)), self.get(name, check_version(b))
        fa = {**_flatten(va.metrics), **_flatten(va.gate or {}, "gate.")}
        fb = {**_flatten(vb.metrics), **_flatten(vb.gate or {}, "gate.")}
        rows = []
        for metric in dict.fromkeys([*fa, *fb]):
            x, y = fa.get(metric), fb.get(metric)
            rows.append({"metric": metric, "a": x, "b": y, "delta": None if x is None or y is None else y - x})
        return rows

    def verify(self, name: str, version: int) -> bool:
        """Whether the version folder still has the content hash recorded when it was added."""
        v = self.get(name, check_version(version))
        return v.path.is_dir() and content_hash(v.path) == v.content_hash

    # -- stage changes -------------------------------------------------------------------------------

    def promote(self, name: str, version: int, *, force: bool = False, actor: str | None = None) -> Version:
        """Make `version` production; the previous production version is archived."""
        check_name(name)
        version = check_version(version)
        conn = self.connect()
        try:
            with self._transaction(conn):
                row = self._row(conn, name, version)
                gate = None if row["gate"] is None else json.loads(row["gate"])
                self._check_promotable(row, gate, force)
                previous = self._archive_production(conn, name)
                forced = _gate_failed(gate) and force
                conn.execute("UPDATE versions SET stage = 'production', promoted_at = ?, promoted_by = ?, forced = ? "
                             "WHERE name = ? AND version = ?", (now(), actor or default_actor(), int(forced), name, version))
                notes = ([f"v{previous} archived"] if previous is not None else []) + (["forced despite failed gate"] if forced else [])
                self._event(conn, name, version, "promote", row["stage"], "production", actor, "; ".join(notes) or None)
            return self._version(self._row(conn, name, version))
        finally:
            conn.close()

    def _check_promotable(self, row: sqlite3.Row, gate: dict | None, force: bool) -> None:
        ref = f"{row['name']}:v{row['version']}"
        if row["stage"] == "production":
            raise UserError(f"{ref} is already in production")
        if _gate_failed(gate) and not force:
            failing = _gate_failures(gate)
            detail = f": failing checks: {'; '.join(failing)}" if failing else ""
            raise UserError(f"{ref} failed its gate{detail}; use --force to promote anyway (recorded in the history)")

    def _archive_production(self, conn: sqlite3.Connection, name: str) -> int | None:
        row = conn.execute("SELECT version FROM versions WHERE name = ? AND stage = 'production'", (name,)).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE versions SET stage = 'archived' WHERE name = ? AND version = ?", (name, row[0]))
        return row[0]

    def _production_stack(self, conn: sqlite3.Connection, name: str) -> list[int]:
        """The production history replayed from the events: promote pushes, rollback pops."""
        stack: list[int] = []
        for action, version in conn.execute("SELECT action, version FROM events WHERE name = ? "
                                            "AND action IN ('promote', 'rollback') ORDER BY id", (name,)):
            if action == "promote":
                stack.append(version)
            elif stack:
                stack.pop()
        return stack

    def rollback(self, name: str, *, actor: str | None = None) -> Version:
        """Back to the version that was production before the current one; returns it."""
        check_name(name)
        conn = self.connect()
        try:
            with self._transaction(conn):
                stack = self._production_stack(conn, name)
                if len(stack) < 2:
                    if conn.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone() is None:
                        raise UserError(self._missing(conn, name, None))
                    current = f"v{stack[-1]} is the first production version" if stack else "no version was ever promoted"
                    raise UserError(f"{name}: nothing to roll back to ({current}); promote another version instead")
                current, target = stack[-1], stack[-2]
                self._archive_production(conn, name)
                conn.execute("UPDATE versions SET stage = 'production', promoted_at = ?, promoted_by = ? "
                             "WHERE name = ? AND version = ?", (now(), actor or default_actor(), name, target))
                self._event(conn, name, current, "rollback", "production", "archived", actor, f"v{target} is production again")
            return self._version(self._row(conn, name, target))
        finally:
            conn.close()

    def archive(self, name: str, version: int, *, actor: str | None = None) -> Version:
        """Mark a candidate (not the production version) as archived."""
        check_name(name)
        version = check_version(version)
        conn = self.connect()
        try:
            with self._transaction(conn):
                row = self._row(conn, name, version)
                ref = f"{name}:v{version}"
                if row["stage"] == "production":
                    raise UserError(f"{ref} is in production; roll back or promote another version first")
                if row["stage"] == "archived":
                    raise UserError(f"{ref} is already archived")
                conn.execute("UPDATE versions SET stage = 'archived' WHERE name = ? AND version = ?", (name, version))
                self._event(conn, name, version, "archive", row["stage"], "archived", actor)
            return self._version(self._row(conn, name, version))
        finally:
            conn.close()


class _Transaction:
    """`with _Transaction(conn):` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
