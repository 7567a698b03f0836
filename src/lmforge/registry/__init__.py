"""The model registry: versions of named models (SQLite) with their artefacts (local folders)."""

from __future__ import annotations

from .store import DEFAULT_ROOT_ENV, MAX_VERSION, STAGES, Registry, Version, check_name, check_version, parse_ref

__all__ = ["DEFAULT_ROOT_ENV", "MAX_VERSION", "STAGES", "Registry", "Version", "check_name", "check_version", "parse_ref"]
