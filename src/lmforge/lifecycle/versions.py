"""What a registered version is: the registry's tables (`versions`, and `events`, the audit log),
`Version` (one row of `versions`), and the rules for the names and numbers that address one:
`intents`, `intents:3`, `intents:v3`."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

STAGES = ("candidate", "production", "archived")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fullmatch: `$` would let a trailing newline through
NAME_RULE = "1-100 characters: ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
MAX_VERSION = 2**62  # SQLite integers are 64-bit; the CLI takes the same range
REF_RE = re.compile(r"(?P<name>[^:]*)(?::v?(?P<version>[0-9]{1,19}))?")

# the registry's tables; `Version` is one row of `versions`
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
