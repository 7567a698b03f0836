"""Files that matter: atomic writes (readers never see half a file), sha256 digests, JSON reads.

Every module that writes a run, a report, a registry entry or a cache goes through here, so there is
one atomic writer and one hasher."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

BLOCK = 1 << 20


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same filesystem: the final rename is atomic); on success it
    is fsynced, given the umask's permissions (mkstemp makes 0600 files) and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place (an existing one is replaced)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def update_digest(digest, path: Path) -> int:
    """Feed a file's bytes into `digest`; returns its size."""
    size = 0
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
            size += len(block)
    return size


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size in bytes) of one file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = update_digest(digest, path)
    return digest.hexdigest(), size


def files_under(folder: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every regular file under `folder`, sorted by relative path."""
    return sorted((p.relative_to(folder).as_posix(), p) for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def sha256_folder(folder: Path) -> str:
    """sha256 over every file of `folder`: its relative path, its size and its bytes."""
    digest = hashlib.sha256()
    for rel, path in files_under(folder):
        digest.update(rel.encode("utf-8") + b"\0" + str(path.stat().st_size).encode() + b"\0")
        update_digest(digest, path)
    return digest.hexdigest()
