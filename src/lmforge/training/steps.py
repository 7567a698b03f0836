"""Optimizer steps: the optimizer and its schedule, one step over an accumulation group, and
`train_steps`, the generator that takes them epoch after epoch.

`train_steps` is modelled on spaCy's `train_while_improving`: it yields after every optimizer step
with what its consumers (logging, dev evaluation, checkpointing; see consumers.py) need, and the
caller stops training by not asking for the next step. The `TrainState` it advances is up to date
at every yield, so a checkpoint written then resumes exactly there.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from ..config import ProjectConfig
from ..data.batching import plan_batches, shard
from ..inference import autocast_context
from ..tasks.base import collate
from .state import TrainState


@dataclass
class StepResult:
    """What one optimizer step did, as its consumers need it."""

    step: int
    loss_sum: float  # this process's summed loss over its (non-padding) share of the step
    units: int  # loss units (examples or labelled tokens) in the whole global step
    real_tokens: int  # unpadded tokens in the whole global step
    end_of_epoch: bool
    epoch_progress: float  # epochs done, with the fraction of the current one


@dataclass
class Stepper:
    """Everything one optimizer step over an accumulation group of global batches needs."""

    accelerator: Any
    model: Any  # as prepared by accelerate (DDP-wrapped with several processes)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    task: Any
    features: list
    pad_id: int
    bf16: bool
    pad_multiple: int = 1
    max_grad_norm: float | None = None
    anchor: Callable[[], torch.Tensor] | None = None
    eager: Any = None  # with training.compile: the uncompiled model, used if compiling fails
    bf16_weights: bool = False  # run the steps on a bf16 copy of the model (bf16_copy.Bf16Copy), made at the first step
    copy: Any = None

    def step(self, group: list[list[int]], units: int) -> float:
        try:
            return self._step(group, units)
        except Exception as error:  # noqa: BLE001 - only compiler failures are caught, the rest re-raised
            if self.eager is None or not is_compile_error(error):
                raise
            first_line = (str(error).splitlines() or [""])[0][:200]
            warnings.warn(f"training.compile: torch.compile failed ({type(error).__name__}: {first_line}); "
                          "training continues uncompiled", stacklevel=2)
            self.model, self.eager = self.eager, None
            self.optimizer.zero_grad(set_to_none=True)
            return self._step(group, units)

    def _step(self, group: list[list[int]], units: int) -> float:
        """Forward and backward over this process's share of each batch, then one optimizer step.
        The loss is scaled by world / units, so that DDP's gradient average is the gradient of the
        mean loss over the global step. Returns this process's summed loss."""
        accelerator, world = self.accelerator, self.accelerator.num_processes
        if self.bf16_weights and self.copy is None:
            from .bf16_copy import Bf16Copy

            self.copy = Bf16Copy(self.model)
        model = self.copy.model if self.copy is not None else self.model
        loss_total = 0.0
        for micro, global_batch in enumerate(group):
            idx, padding = shard(global_batch, accelerator.process_index, world)
            batch = {k: v.to(accelerator.device) for k, v in
                     collate([self.features[i] for i in idx], self.pad_id, multiple=self.pad_multiple).items()}
            labels = batch.pop("labels")
            last = micro == len(group) - 1
            with nullcontext() if last else accelerator.no_sync(model):
                with autocast_context(accelerator.device, self.bf16 and self.copy is None):
                    logits = self.task.training_logits(model, batch, labels)
                loss_sum = self.task.training_loss_sum(logits, labels)
                objective = loss_sum * (0.0 if padding else world / max(1, units))
                if self.anchor is not None and last:
                    objective = objective + self.anchor()
                accelerator.backward(objective)
            if not padding:
                loss_total += loss_sum.item()
        if self.copy is not None:  # cast onto the fp32 weights (their gradient buffers kept) and clipped there
            self.copy.gradients_to_master(self.max_grad_norm)
        elif self.max_grad_norm:
            accelerator.clip_grad_norm_([q for q in self.model.parameters() if q.requires_grad], self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        if self.copy is not None:
            self.copy.refresh()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        return loss_total


def compiled(model) -> Any:
    """The model wrapped by torch.compile (inductor), with dynamic sequence lengths and batch sizes:
    batches padded to their longest example would otherwise recompile at every new shape."""
    return torch.compile(model, dynamic=True)


def is_compile_error(error: BaseException) -> bool:
    """An error raised by torch.compile's tracing or code generation (not by the model or the data)."""
    return any(type(e).__module__.startswith(("torch._dynamo", "torch._inductor")) for e in (error, error.__cause__) if e is not None)


def train_steps(stepper: Stepper, state: TrainState, lengths: list[int], plan_args: dict,
                accumulation: int) -> Iterator[StepResult]:
    """Optimizer steps from `state` on, without end: each epoch's global batches are planned
    (identically on every process), grouped for gradient accumulation, and one step is taken per
    group. `state` is advanced before each yield."""
    while True:
        plan = plan_batches(lengths, **plan_args, epoch=state.epoch)
        groups = [plan[i:i + accumulation] for i in range(0, len(plan), accumulation)]
        for index in range(state.group, len(groups)):
            started = time.perf_counter()
            group = groups[index]
            units = sum(stepper.task.loss_units(stepper.features[i]) for b in group for i in b)
            real = sum(lengths[i] for b in group for i in b)
            loss_sum = stepper.step(group, units)
            state.step += 1
            state.group = index + 1
            state.train_seconds += time.perf_counter() - started
            state.real_tokens += real
            end_of_epoch = state.group >= len(groups)
            if end_of_epoch:
                state.epoch, state.group = state.epoch + 1, 0
            yield StepResult(state.step, loss_sum, units, real, end_of_epoch, state.epoch + state.group / len(groups))


def plan_arguments(t) -> dict:
    """How `plan_batches` cuts the training features into batches, from the training settings."""
    return dict(batch_size=t.batch_size, max_tokens=t.max_tokens_per_batch, group_by_length=t.group_by_length, seed=t.seed)


def total_steps(lengths: list[int], plan_args: dict, epochs: float, accumulation: int, varies: bool) -> int:
    """Optimizer steps in `epochs` passes. With a token budget the number of batches differs a little
    from epoch to epoch, so each epoch's plan is counted."""
    def per_epoch(epoch: int) -> int:
        return math.ceil(len(plan_batches(lengths, **plan_args, epoch=epoch)) / accumulation)

    if not varies:
        return math.ceil(epochs * per_epoch(0))
    whole = int(epochs)
    total = sum(per_epoch(e) for e in range(whole))
    return total + math.ceil((epochs - whole) * per_epoch(whole))


def schedule(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warmup, then linear or cosine decay, or constant."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def optimizer(model, cfg: ProjectConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and norms, with its own learning rate for the head, and
    (training.layer_decay) lower learning rates for the lower layers."""
    t = cfg.training
    head_lr = t.head_learning_rate or t.learning_rate
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    scales = layer_scales([name for name, _ in named], t.layer_decay)
    groups: dict[tuple[bool, float, bool], list] = {}  # (head, learning rate, no weight decay) -> parameters
    for name, param in named:
        no_decay = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        head = is_head(name)
        groups.setdefault((head, head_lr if head else t.learning_rate * scales[name], no_decay), []).append(param)
    # the body at its full rate first (the logged learning rate is the first group's), lower rates after it, the head last
    order = sorted(groups, key=lambda key: (key[0], -key[1], key[2]))
    param_groups = [{"params": groups[key], "lr": key[1], "weight_decay": 0.0 if key[2] else t.weight_decay} for key in order]
    try:  # the fused kernel is ~8x faster than foreach on CPU (12.8 vs 107 ms for MiniLM's 22.7M parameters)
        return torch.optim.AdamW(param_groups, lr=t.learning_rate, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(param_groups, lr=t.learning_rate, foreach=True)


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def layer_scales(names: list[str], decay: float | None) -> dict[str, float]:
    """Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA): with L numbered layers, layer i
    (0 at the bottom) trains at decay^(L - i) of the learning rate; what the model registers before its
    first layer (the embeddings, whatever they are called: "embeddings", "wte") at decay^(L + 1), and
    what comes after its layers (pooler, final norm, head) at the full rate. `names` in the model's
    `named_parameters` order. decay None or 1: every scale is 1."""
    layers = {name: int(m.group(1)) for name in names if (m := _LAYER.search(name))}
    if not decay or decay == 1 or not layers:
        return dict.fromkeys(names, 1.0)
    depth = 1 + max(layers.values())
    first = next(k for k, name in enumerate(names) if name in layers)
    return {name: decay ** (depth - layers[name]) if name in layers else decay ** (depth + 1) if k < first else 1.0
            for k, name in enumerate(names)}


def is_head(name: str) -> bool:
    return any(part in ("classifier", "score") for part in name.split("."))


def anchor(model, strength: float) -> Callable[[], torch.Tensor] | None:
    """L2-SP (Li et al. 2018): a penalty strength/2 * ||w - w0||^2 that keeps the trained encoder weights
    near the weights training started from (the parent model in a continual update). The task head is
    free. Returns a function computing the penalty, or None when strength is 0. With DDP every process
    adds the same penalty, and the averaged gradient is its gradient."""
    if not strength:
        return None
    pairs = [(param, param.detach().clone()) for name, param in model.named_parameters()
             if param.requires_grad and not is_head(name)]

    def penalty() -> torch.Tensor:
        total = sum(((param - start) ** 2).sum() for param, start in pairs)
        return 0.5 * strength * total

    return penalty
