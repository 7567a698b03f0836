"""The run folder: what a training run leaves behind.

    runs/<name>/
      config.yaml      resolved config (absolute paths)       labels.json   task, labels, multi-label threshold
      model/           plain transformers model + tokenizer   adapter/      peft adapter (peft methods)
      metrics.json     dev/test headline metrics              eval/<split>/ report.md, report.json, plots
      run.json         status, parameters, data summary       logs/         metrics.jsonl, tensorboard/
      checkpoints/     resumable training state (removed when training completes)
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

CONFIG = "config.yaml"
LABELS = "labels.json"
RUN_INFO = "run.json"
METRICS = "metrics.json"


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
