"""What happens after an optimizer step (see `steps.train_steps`): the loss is logged, dev is scored
(keeping the best weights and deciding early stopping), and a resumable checkpoint is written.

Every process calls each consumer at the same steps (some of them gather across processes); only
rank 0 writes files or prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from ..inference import run_model
from ..models.build import inference_attention
from ..tasks.base import LogitsOf
from . import checkpoint as ckpt
from .divergence import LossWatch
from .progress import TrainProgress
from .state import TrainState
from .steps import StepResult
from .tracking import Tracker


class StepLogger:
    """The mean loss and the real tokens per second over each window of `every` steps, to the
    metrics log and the progress bar; a warning when the loss climbs back to where it started."""

    def __init__(self, accelerator, tracker: Tracker | None, progress: TrainProgress, scheduler, every: int, total: int,
                 learning_rate: float | None = None):
        self.accelerator, self.tracker, self.progress, self.scheduler = accelerator, tracker, progress, scheduler
        self.every, self.total = every, total
        self.watch = LossWatch(learning_rate)  # warns once if the loss climbs back to where it started
        self._reset()

    def _reset(self) -> None:
        self.loss_sum, self.units, self.tokens, self.started = 0.0, 0, 0, time.perf_counter()

    def after_step(self, s: StepResult) -> None:
        self.loss_sum += s.loss_sum
        self.units += s.units
        self.tokens += s.real_tokens
        if s.step % self.every and s.step != self.total:
            return
        loss = global_mean(self.accelerator, self.loss_sum, self.units)  # a collective: every process logs
        tokens_per_s = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        if self.tracker is not None:
            self.tracker.log(s.step, {"loss": loss, "lr": self.scheduler.get_last_lr()[0], "epoch": s.epoch_progress,
                                      "tokens_per_s": tokens_per_s})
        self.progress.update(s.step, loss, tokens_per_s)
        warning = self.watch.observe(s.step, loss)
        if warning:
            self.progress.note(warning)
        self._reset()


def global_mean(accelerator, local_loss_sum: float, global_units: int) -> float:
    """Mean loss per unit over all processes (units are counted from the global plan already)."""
    if accelerator.num_processes > 1:
        local_loss_sum = float(accelerator.reduce(torch.tensor([local_loss_sum], device=accelerator.device), reduction="sum")[0])
    return local_loss_sum / max(1, global_units)


@dataclass
class DevSelection:
    """Scores dev with the task's `dev_headline`, keeps the best weights so far (by `metric`, in the
    task's direction) or, with weight averaging, the weights of the last `average_last` evaluations,
    and says when early stopping should end training."""

    task: Any
    raw_model: Any
    examples: list
    features: list  # `examples` encoded for inference, with their decoding plan
    plan: Any
    metric: str
    every: int | None  # evaluate every N steps; None: at the end of each epoch
    patience: int | None
    logits_of: LogitsOf
    bf16: bool
    ckpt_root: Path
    rank: int
    tracker: Tracker | None
    progress: TrainProgress
    average_last: int | None = None
    best_outputs: tuple[int, list] | None = None  # (step, dev logits) of the best evaluation in this process

    def due(self, s: StepResult) -> bool:
        return s.step % self.every == 0 if self.every else s.end_of_epoch

    def evaluate(self, step: int, state: TrainState) -> bool:
        """Score dev at `step` and record it in `state`; True when early stopping says stop."""
        started = time.perf_counter()
        outputs: list = []

        def logits_of(features: list) -> list:  # kept, so that the end of the run need not compute them again
            outputs.append(self.logits_of(features))
            return outputs[-1]

        scores = self.task.dev_headline(self.raw_model, self.examples, self.features, self.plan, logits_of, self.bf16)
        seconds = time.perf_counter() - started
        state.dev_seconds += seconds
        state.dev_passes += 1
        score = scores[self.metric]
        state.last_eval_step = step
        improved = self.improves(score, state.best)
        if improved:
            state.best, state.best_step, state.bad_evals = score, step, 0
            self.best_outputs = (step, outputs[0]) if len(outputs) == 1 and not self.average_last else None
            if self.rank == 0 and not self.average_last:
                ckpt.save_best(self.ckpt_root, self.raw_model, step)
        else:
            state.bad_evals += 1
        if self.rank == 0 and self.average_last:
            ckpt.save_window(self.ckpt_root, self.raw_model, step, self.average_last)
        if self.rank == 0:
            self.tracker.log(step, {**scores, "epoch": state.epoch}, prefix="dev")
            self.progress.note(f"dev {self.metric} {score:.4f}" + (" (best)" if improved else "") + f" in {seconds:.1f} s")
        return self.exhausted(state)

    def improves(self, score: float, best: float | None) -> bool:
        if best is None:
            return True
        return score < best if self.task.lower_is_better else score > best

    def exhausted(self, state: TrainState) -> bool:
        return self.patience is not None and state.bad_evals >= self.patience


def sharded_logits(accelerator, model_of: Callable[[], Any], pad_id: int, bf16: bool) -> LogitsOf:
    """The loop's forward for dev scoring: each process runs its share of the features, and every
    process gets all the logits back in input order. `model_of()`: the model to run now (the training
    steps' bf16 copy where there is one: the bf16 copy a loaded Predictor runs, with the same weights)."""
    return partial(_sharded_logits, accelerator, model_of, pad_id, bf16)


def _sharded_logits(accelerator, model_of: Callable[[], Any], pad_id: int, bf16: bool, features: list) -> list:
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(features), world))
    model = model_of()
    with inference_attention(model):  # the attention a loaded Predictor runs (SDPA), not the training one
        pairs = list(zip(mine, run_model(model, [features[i] for i in mine], pad_id, bf16=bf16)))
    if world > 1:
        from accelerate.utils import gather_object

        pairs = gather_object(pairs)
    outputs: list[Any] = [None] * len(features)
    for i, out in pairs:
        outputs[i] = out
    return outputs


class Checkpointer:
    """Writes a resumable checkpoint: rank 0 saves weights, optimizer, scheduler, every process's RNG
    state and the `TrainState`; all processes wait until it is written."""

    def __init__(self, root: Path, accelerator, raw_model, optimizer, scheduler):
        self.root, self.accelerator = root, accelerator
        self.raw_model, self.optimizer, self.scheduler = raw_model, optimizer, scheduler

    def save(self, step: int, state: TrainState) -> None:
        rngs = [ckpt.rng_state()]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rngs = gather_object(rngs)
        if self.accelerator.process_index == 0:
            ckpt.save_checkpoint(self.root, step, self.raw_model, self.optimizer, self.scheduler, rngs, state)
        self.accelerator.wait_for_everyone()
