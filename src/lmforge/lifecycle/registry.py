"""The model registry: versions of named models in one SQLite database, artefacts in folders beside it.

    <root>/registry.db                   versions, events (audit log); the prediction log adds its tables
    <root>/artefacts/<name>/v<N>/run/    a copy of the run folder (no checkpoints/, logs/, eval/), read-only
    <root>/artefacts/<name>/v<N>/...     extras written by `prepare` (replay data, reference statistics)

A version exists once its row commits: the folder is built in a staging folder, hashed, made read-only,
then renamed into place inside the same `BEGIN IMMEDIATE` transaction that inserts the row (the file
side is in `artefacts`). Every state change is one such transaction, so concurrent processes serialize
on the database.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import UserError
from ..files import sha256_folder
from ..runs import CONFIG, RunFolder, check_complete
from . import db
from .artefacts import clean_staging, copy_run, make_read_only, move_into_place, new_staging
from .gate import failing_checks, gate_failed
from .versions import SCHEMA, Version, check_name, check_version

DEFAULT_ROOT_ENV = "LMFORGE_REGISTRY"
DB_NAME = "registry.db"
ARTEFACTS = "artefacts"


# -- helpers -----------------------------------------------------------------------------------------


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


def _flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as {"a.b.c": value}; booleans, strings and lists are skipped."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix[:-1]] = float(data)
    return out


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
            db.create_tables(conn, SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.db_path} is not a usable registry database: {exc}; give another --registry folder") from None
        finally:
            conn.close()

    # -- database ------------------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection to the registry database (`db.connect`: WAL, busy timeout, foreign keys)."""
        return db.connect(self.db_path)

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with closing(self.connect()) as conn:
            return conn.execute(sql, params).fetchall()

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
        clean_staging(self.artefacts)
        staging = new_staging(self.artefacts)
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
        copy_run(run_dir, staging / "run")
        info = {"source_run": str(run_dir), **(info or {})}
        if prepare is not None:
            info.update(prepare(staging) or {})
        return info

    def _commit(self, name: str, staging: Path, *, parent: int | None, gate: dict | None, info: dict,
                actor: str | None) -> Version:
        run = staging / "run"
        config = yaml.safe_load((run / CONFIG).read_text(encoding="utf-8")) or {}
        metrics = RunFolder(run).metrics
        digest = sha256_folder(staging)  # relative path, size and bytes of every file
        make_read_only(staging)
        conn = self.connect()
        moved = False
        try:
            with db.transaction(conn):
                self._check_case_clash(conn, name)
                number = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?", (name,)).fetchone()[0]
                if parent is not None:
                    self._check_parent(conn, name, parent)
                target = self.artefacts / name / f"v{number}"
                move_into_place(staging, target)
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
        with closing(self.connect()) as conn:
            if version is not None:
                return self._version(self._row(conn, name, version))
            row = conn.execute("SELECT * FROM versions WHERE name = ? AND stage = 'production'", (name,)).fetchone()
            if row is None:
                if conn.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone() is None:
                    raise UserError(self._missing(conn, name, None))
                raise UserError(f"{name} has no production version; give a version, or promote one with "
                                f"`lmforge registry promote {name} N`")
            return self._version(row)

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
        with closing(self.connect()) as conn:
            chain = [self._version(self._row(conn, name, version))]
            while chain[-1].parent is not None and len(chain) <= 10_000:
                chain.append(self._version(self._row(conn, name, chain[-1].parent)))
            return chain

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
        return v.path.is_dir() and sha256_folder(v.path) == v.content_hash

    # -- stage changes -------------------------------------------------------------------------------

    def promote(self, name: str, version: int, *, force: bool = False, actor: str | None = None) -> Version:
        """Make `version` production; the previous production version is archived."""
        check_name(name)
        version = check_version(version)
        with closing(self.connect()) as conn:
            with db.transaction(conn):
                row = self._row(conn, name, version)
                gate = None if row["gate"] is None else json.loads(row["gate"])
                self._check_promotable(row, gate, force)
                previous = self._archive_production(conn, name)
                forced = gate_failed(gate) and force
                conn.execute("UPDATE versions SET stage = 'production', promoted_at = ?, promoted_by = ?, forced = ? "
                             "WHERE name = ? AND version = ?", (now(), actor or default_actor(), int(forced), name, version))
                notes = ([f"v{previous} archived"] if previous is not None else []) + (["forced despite failed gate"] if forced else [])
                self._event(conn, name, version, "promote", row["stage"], "production", actor, "; ".join(notes) or None)
            return self._version(self._row(conn, name, version))

    def _check_promotable(self, row: sqlite3.Row, gate: dict | None, force: bool) -> None:
        ref = f"{row['name']}:v{row['version']}"
        if row["stage"] == "production":
            raise UserError(f"{ref} is already in production")
        if gate_failed(gate) and not force:
            failing = failing_checks(gate)
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

    def _rollback_pair(self, conn: sqlite3.Connection, name: str) -> tuple[int, int]:
        """(current production version, the version a rollback makes production); UserError when none."""
        stack = self._production_stack(conn, name)
        if len(stack) < 2:
            if conn.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone() is None:
                raise UserError(self._missing(conn, name, None))
            current = f"v{stack[-1]} is the first production version" if stack else "no version was ever promoted"
            raise UserError(f"{name}: nothing to roll back to ({current}); promote another version instead")
        return stack[-1], stack[-2]

    def rollback_plan(self, name: str) -> tuple[int, int]:
        """What `rollback` would do now: (version archived, version made production again)."""
        check_name(name)
        with closing(self.connect()) as conn:
            return self._rollback_pair(conn, name)

    def rollback(self, name: str, *, actor: str | None = None) -> Version:
        """Back to the version that was production before the current one; returns it."""
        check_name(name)
        with closing(self.connect()) as conn:
            with db.transaction(conn):
                current, target = self._rollback_pair(conn, name)
                self._archive_production(conn, name)
                conn.execute("UPDATE versions SET stage = 'production', promoted_at = ?, promoted_by = ? "
                             "WHERE name = ? AND version = ?", (now(), actor or default_actor(), name, target))
                self._event(conn, name, current, "rollback", "production", "archived", actor, f"v{target} is production again")
            return self._version(self._row(conn, name, target))

    def archive(self, name: str, version: int, *, actor: str | None = None) -> Version:
        """Mark a candidate (not the production version) as archived."""
        check_name(name)
        version = check_version(version)
        with closing(self.connect()) as conn:
            with db.transaction(conn):
                row = self._row(conn, name, version)
                ref = f"{name}:v{version}"
                if row["stage"] == "production":
                    raise UserError(f"{ref} is in production; roll back or promote another version first")
                if row["stage"] == "archived":
                    raise UserError(f"{ref} is already archived")
                conn.execute("UPDATE versions SET stage = 'archived' WHERE name = ? AND version = ?", (name, version))
                self._event(conn, name, version, "archive", row["stage"], "archived", actor)
            return self._version(self._row(conn, name, version))
