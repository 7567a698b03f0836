"""Training logs: a JSONL file (one object per logged step or evaluation), TensorBoard events, and
optionally an MLflow run (mlflow_log.py)."""

from __future__ import annotations

import json
from pathlib import Path


class Tracker:
    def __init__(self, log_dir: Path, tensorboard: bool, resume_step: int | None = None, mlflow=None):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.mlflow = mlflow  # an mlflow_log.MlflowLog, or None
        self.path = log_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        self.fh = self.path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(log_dir / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        # an interrupted run may have logged steps past its last checkpoint; they will be redone
        kept = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:  # a line cut short by the interruption
                continue
        from ..files import write_text_atomic

        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, values: dict, prefix: str = "train") -> None:
        self.fh.write(json.dumps({"step": step, "split": prefix, **values}) + "\n")
        self.fh.flush()
        if self.mlflow is not None:
            self.mlflow.log(step, values, prefix)
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def mlflow_for(cfg, run_dir: Path):
    """The run's MLflow log when `tracking.mlflow` is on, else None."""
    if not cfg.tracking.mlflow:
        return None
    from .mlflow_log import MlflowLog

    return MlflowLog(cfg, run_dir)
