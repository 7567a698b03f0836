"""The run folder: what a training run leaves behind, read through one typed object.

    runs/<name>/
      config.yaml      resolved config (absolute paths)       labels.json   task, labels, multi-label threshold
      model/           plain transformers model + tokenizer   adapter/      peft adapter (peft methods)
      metrics.json     dev/test headline metrics              eval/<split>/ report.md, report.json, plots
      run.json         status, parameters, data summary       logs/         metrics.jsonl, tensorboard/
      checkpoints/     resumable training state (removed when training completes)
      onnx/            exported ONNX graph (`lmforge export`)     explain/<file>/ global explanations

Every reader of a run goes through `RunFolder`: the file names, what run.json and labels.json hold
(pydantic models; keys added by later versions are kept), whether the run is a decoder, whether
model/ alone reproduces predictions (`merged`), and the weights' version.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .config import ProjectConfig, config_from_dict
from .errors import UserError
from .files import read_json, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from .tasks import TaskSpec

CONFIG = "config.yaml"
LABELS = "labels.json"
RUN_INFO = "run.json"
METRICS = "metrics.json"
MODEL = "model"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
EVAL = "eval"
EXPLAIN = "explain"
ONNX = "onnx"
WEIGHTS = "model.safetensors"


class RunInfo(BaseModel):
    """run.json: written when training starts, completed when it ends."""

    model_config = ConfigDict(extra="allow")
    status: str = "training"  # training | complete | interrupted (Ctrl-C) | failed (with `error`)
    pid: int | None = None  # the training process and its host: a `training` run whose process is gone was killed
    host: str | None = None
    started: float | None = None  # unix time training (or its latest resume) started
    total_steps: int | None = None
    # model/ alone reproduces predictions (full fine-tuning, or a LoRA/IA3 adapter merged in). Runs written
    # before the key existed: False, so their adapter is applied (correct either way for an unmerged one)
    merged: bool = False
    max_steps_override: int | None = None
    base_model_path: str | None = None
    data: dict[str, Any] = {}


class TagBigrams(BaseModel):
    """labels.json "transitions" (NER): training tag bigrams and their dev-tuned weight (tasks.iob_viterbi)."""

    model_config = ConfigDict(extra="allow")
    weight: float = Field(ge=0)
    first: list[float]
    pairs: list[list[float]]


class RunLabels(BaseModel):
    """labels.json: the task and what its head predicts (`Task.to_json`)."""

    model_config = ConfigDict(extra="allow")
    task: str
    labels: list[str] = []
    multi_label: bool = False
    threshold: float | None = None  # multi-label: tuned on dev
    document_context: bool = True  # NER
    transitions: TagBigrams | None = None  # NER

    @model_validator(mode="after")
    def _square_transitions(self) -> "RunLabels":
        t, n = self.transitions, len(self.labels)
        if t is not None and (len(t.first) != n or len(t.pairs) != n or any(len(row) != n for row in t.pairs)):
            raise ValueError(f"transitions: first and pairs must be {n} and {n}x{n} numbers, one per label")
        return self


def process_fields() -> dict:
    """The training process as run.json records it (see RunInfo)."""
    import os
    import socket
    import time

    return {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}


def mark_run(run_dir: Path, **fields: Any) -> None:
    """Set keys of a run's run.json (read, update, atomic write)."""
    from .files import write_json_atomic

    path = Path(run_dir) / RUN_INFO
    info = read_json(path) if path.is_file() else {}
    info.update(fields)
    write_json_atomic(path, info)


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def open(cls, path: str | Path, *, complete: bool = True) -> "RunFolder":
        """A run folder; with `complete`, one whose training finished (model/ written)."""
        run = cls(Path(path))
        if not all((run.path / name).is_file() for name in (CONFIG, LABELS, RUN_INFO)):
            raise UserError(f"{run.path} is not an lmforge run folder (no {CONFIG} / {LABELS} / {RUN_INFO}); "
                            "give the folder `lmforge train` wrote")
        if complete and not (run.model_dir / "config.json").is_file():
            raise UserError(f"{run.path} has no trained model yet (training did not finish); continue it with "
                            f"`lmforge train --resume {run.path}`")
        return run

    # -- layout ------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def labels_path(self) -> Path:
        return self.path / LABELS

    @property
    def info_path(self) -> Path:
        return self.path / RUN_INFO

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS

    @property
    def onnx_dir(self) -> Path:
        return self.path / ONNX

    def eval_dir(self, split: str) -> Path:
        return self.path / EVAL / split

    def explain_dir(self, name: str) -> Path:
        return self.path / EXPLAIN / name

    # -- contents ----------------------------------------------------------------------------------
    @cached_property
    def config(self) -> ProjectConfig:
        return load_run_config(self.path)

    @cached_property
    def info(self) -> RunInfo:
        return _typed(RunInfo, self.info_path)

    @cached_property
    def labels(self) -> RunLabels:
        return _typed(RunLabels, self.labels_path)

    @property
    def spec(self) -> "TaskSpec":
        from .tasks import get_task

        return get_task(self.config.task)

    @property
    def is_decoder(self) -> bool:
        return self.spec.decoder

    @property
    def complete(self) -> bool:
        return self.info.status == "complete"

    @property
    def merged(self) -> bool:
        return self.info.merged

    @property
    def uses_adapter(self) -> bool:
        """Predictions need adapter/ on top of model/ (peft runs whose adapter was not merged)."""
        return self.adapter_dir.is_dir() and not self.merged

    @property
    def metrics(self) -> dict:
        return read_json(self.metrics_path) if self.metrics_path.is_file() else {}

    @cached_property
    def version(self) -> str:
        """`<run name>-<first 12 hex digits of the weights' sha256>`: changes whenever the weights do."""
        weights = self.model_dir / WEIGHTS
        name = self.config.name
        return f"{name}-{sha256_file(weights)[0][:12]}" if weights.is_file() else name


def _typed(model: type[BaseModel], path: Path):
    try:
        return model.model_validate(read_json(path))
    except ValueError as err:  # bad JSON, or pydantic's ValidationError (a ValueError too)
        raise UserError(f"{path}: not a valid {path.name} ({str(err).splitlines()[0]}); the run folder is damaged") from None


def load_run_config(run_dir: Path) -> ProjectConfig:
    """The resolved config a run folder saved (config.yaml, absolute paths)."""
    import yaml

    path = Path(run_dir) / CONFIG
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


def is_run_folder(path: Path) -> bool:
    """A run folder (config.yaml at the top, no model config.json there), not a model folder."""
    path = Path(path)
    return (path / CONFIG).is_file() and not (path / "config.json").is_file()


def check_run_dir(run_dir: Path) -> Path:
    return RunFolder.open(run_dir, complete=False).path


def check_complete(run_dir: Path) -> Path:
    return RunFolder.open(run_dir).path
