"""Where a run stands: the numbers a checkpoint must carry for training to continue exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0  # passes over the training data completed
    group: int = 0  # next accumulation group (optimizer step) of this epoch's plan
    best: float | None = None  # best dev score so far
    best_step: int | None = None  # step whose weights scored `best`
    bad_evals: int = 0  # evaluations since the last improvement (early stopping)
    last_eval_step: int | None = None
    train_seconds: float = 0.0  # time in optimizer steps, without evaluation or checkpointing
    real_tokens: int = 0  # unpadded tokens trained on
    dev_seconds: float = 0.0  # time in dev evaluations (forward, decoding, metrics)
    dev_passes: int = 0  # dev evaluations made

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainState:
        """The state saved by `to_json` (or the plain dict that earlier checkpoints hold: same keys)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
