"""The run folder: what a training run leaves behind, and atomic writes into it.

    runs/<name>/
      config.yaml      resolved config (absolute paths)       labels.json   task, labels, multi-label threshold
      model/           plain transformers model + tokenizer   adapter/      peft adapter (peft methods)
      metrics.json     dev/test headline metrics              eval/<split>/ report.md, report.json, plots
      run.json         status, parameters, data summary       logs/         metrics.jsonl, tensorboard/
      checkpoints/     resumable training state (removed when training completes)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import UserError

CONFIG = "config.yaml"
LABELS = "labels.json"
RUN_INFO = "run.json"
METRICS = "metrics.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    return json.loads(path.read_text(encoding="utf-8"))


def check_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in (CONFIG, LABELS, RUN_INFO)):
        raise UserError(f"{run_dir} is not an lmforge run folder (no {CONFIG} / {LABELS} / {RUN_INFO}); give the folder `lmforge train` wrote")
    return run_dir


def check_complete(run_dir: Path) -> Path:
    check_run_dir(run_dir)
    if not (run_dir / "model" / "config.json").is_file():
        raise UserError(f"{run_dir} has no trained model yet (training did not finish); continue it with `lmforge train --resume {run_dir}`")
    return run_dir
