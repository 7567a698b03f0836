"""The files side of a registered version: its folder is built in a staging folder (a copy of the run
without checkpoints/, logs/ and eval/, plus the extras `prepare` writes), made read-only, and renamed
into `<root>/artefacts/<name>/v<N>/` by the registry inside the transaction that inserts its row.

A process killed during an add leaves either a staging folder (removed by the next add once its
process is gone) or a version folder without a row (replaced by the next add of that number)."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

from ..runs import CHECKPOINTS, EVAL, LOGS
from ..files import files_under

STAGING_PREFIX = ".staging-"
SKIPPED_DIRS = (CHECKPOINTS, LOGS, EVAL)  # a version keeps what predicts, not how it got there


def new_staging(artefacts: Path) -> Path:
    """A fresh staging folder path under `artefacts`, named after this process (see `clean_staging`)."""
    return artefacts / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"


def copy_run(run_dir: Path, target: Path) -> None:
    """Copy a run folder, leaving out its top-level checkpoints/, logs/ and eval/ (symlinks are followed)."""
    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n in SKIPPED_DIRS] if Path(directory) == run_dir else []

    shutil.copytree(run_dir, target, ignore=ignore, symlinks=False)


def make_read_only(folder: Path) -> None:
    for _, path in files_under(folder):
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def move_into_place(staging: Path, target: Path) -> None:
    if target.exists():  # a folder without a row: left by a process killed before its commit
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)


def clean_staging(artefacts: Path) -> None:
    """Remove staging folders of processes that are gone (killed during an add)."""
    for folder in artefacts.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True
