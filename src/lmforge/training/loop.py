"""The training loop: one explicit loop for every task and method, on accelerate.

Global batches are planned identically on every process (see data/batching.py); each process runs
its shard, and the loss is normalised by the number of loss units (examples or labelled tokens) in
the whole global step, so N processes compute exactly the gradient one process would.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console

from ..config import ProjectConfig, dump_config, is_builtin_dataset, load_run_config
from ..data.batching import plan_batches, shard
from ..errors import UserError
from ..inference import autocast_context, run_model
from ..models.build import bf16_supported, count_parameters
from ..runs import CONFIG, LABELS, RUN_INFO, check_run_dir
from ..files import read_json, write_json_atomic, write_text_atomic
from ..tasks.base import collate
from . import checkpoint as ckpt
from .finalize import finalize_run
from .progress import TrainProgress
from .setup import Prepared, build_model, prepare
from .tracking import Tracker


def resolved_config(cfg: ProjectConfig, base: Path) -> ProjectConfig:
    """The config with every path made absolute, as saved in the run folder."""
    data = cfg.data.model_copy(update={k: str(cfg.resolve_path(getattr(cfg.data, k), base).resolve())
                                       for k in ("train", "dev", "test") if getattr(cfg.data, k) and not is_builtin_dataset(getattr(cfg.data, k))})
    model = cfg.model
    if (base / model).is_dir():
        model = str((base / model).resolve())
    return cfg.model_copy(update={"data": data, "model": model,
                                  "output_dir": str(cfg.resolve_path(cfg.output_dir, base).resolve())})


def train(cfg: ProjectConfig | None = None, base: Path | None = None, *, output: Path | None = None,
          max_steps: int | None = None, resume: Path | None = None, overwrite: bool = False,
          console: Console | None = None) -> Path:
    """Train from a config (or continue the run in `resume`). Returns the run folder."""
    from accelerate import Accelerator

    console = console or Console(stderr=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    _set_threads(cfg.training.num_threads if cfg else None, world)

    if resume is not None:
        run_dir = check_run_dir(Path(resume))
        cfg = load_run_config(run_dir)
        info = read_json(run_dir / RUN_INFO)
        if info.get("status") == "complete":
            raise UserError(f"{run_dir} finished training already; nothing to resume")
        max_steps = info.get("max_steps_override", max_steps)
        base = run_dir
        _set_threads(cfg.training.num_threads, world)
    else:
        assert cfg is not None and base is not None
        cfg = resolved_config(cfg, base)
        run_dir = Path(output) if output else Path(cfg.output_dir) / cfg.name
    max_steps = max_steps or cfg.training.max_steps

    p = prepare(cfg, base)  # every data problem is reported before anything is written
    if resume is None:
        _check_target(run_dir, overwrite)  # on every process, so that all of them stop with the message
        accelerator.wait_for_everyone()  # ... and before rank 0 creates the folder the others check
        if rank == 0:
            _create_run_dir(run_dir, overwrite, p, max_steps)
        accelerator.wait_for_everyone()
    return _run(p, run_dir, accelerator, max_steps, resume is not None, console)


def _set_threads(requested: int | None, world: int) -> None:
    if requested:
        torch.set_num_threads(requested)
    elif world > 1:  # N processes x all cores each oversubscribes the machine (3x slower measured)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))


def _check_target(run_dir: Path, overwrite: bool) -> None:
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} exists and is not a folder; choose another run folder with --output")
    if not any(run_dir.iterdir()):
        return
    is_run = (run_dir / CONFIG).is_file() and (run_dir / LABELS).is_file()
    if not overwrite:
        raise UserError(f"run folder {run_dir} already exists. Continue it with `lmforge train --resume {run_dir}`, "
                        "choose another with --output or name=..., or replace it with --overwrite")
    if not is_run:
        raise UserError(f"{run_dir} is not empty and is not an lmforge run folder; --overwrite only replaces run folders")


def _create_run_dir(run_dir: Path, overwrite: bool, p: Prepared, max_steps: int | None) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)  # _check_target made sure it is a run folder and --overwrite was given
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG, dump_config(p.cfg))
    write_json_atomic(run_dir / LABELS, p.task.to_json())
    info = {"status": "training", "max_steps_override": max_steps, "base_model_path": str(p.model_path),
            "data": {"train_examples": len(p.splits.train), "train_sequences": len(p.train_features),
                     "dev_examples": len(p.splits.dev), "dev_is_holdout": p.splits.dev_is_holdout,
                     "test_examples": len(p.splits.test) if p.splits.test is not None else 0,
                     "truncated_train": p.truncated_train, "scheme": p.splits.scheme}}
    write_json_atomic(run_dir / RUN_INFO, info)


def _total_steps(lengths: list[int], plan_args: dict, epochs: float, accumulation: int, varies: bool) -> int:
    """Optimizer steps in `epochs` passes. With a token budget the number of batches differs a little
    from epoch to epoch, so each epoch's plan is counted."""
    def per_epoch(epoch: int) -> int:
        return math.ceil(len(plan_batches(lengths, **plan_args, epoch=epoch)) / accumulation)

    if not varies:
        return math.ceil(epochs * per_epoch(0))
    whole = int(epochs)
    total = sum(per_epoch(e) for e in range(whole))
    return total + math.ceil((epochs - whole) * per_epoch(whole))


def _schedule(kind: str, warmup: int, total: int):
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


def _optimizer(model, cfg: ProjectConfig) -> torch.optim.Optimizer:
    t = cfg.training
    head_lr = t.head_learning_rate or t.learning_rate
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        is_head = _is_head(name)
        groups.setdefault((no_decay, is_head), []).append(param)
    param_groups = [{"params": ps, "weight_decay": 0.0 if nd else t.weight_decay, "lr": head_lr if head else t.learning_rate}
                    for (nd, head), ps in groups.items()]
    try:  # the fused kernel is ~8x faster than foreach on CPU (12.8 vs 107 ms for MiniLM's 22.7M parameters)
        return torch.optim.AdamW(param_groups, lr=t.learning_rate, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(param_groups, lr=t.learning_rate, foreach=True)


def _run(p: Prepared, run_dir: Path, accelerator, max_steps: int | None, resuming: bool, console: Console) -> Path:
    cfg, task, t = p.cfg, p.task, p.cfg.training
    rank, world = accelerator.process_index, accelerator.num_processes
    from transformers import set_seed

    set_seed(t.seed)
    model = build_model(p)
    trainable, total_params = count_parameters(model)
    bf16 = t.precision == "bf16" or (t.precision == "auto" and bf16_supported(accelerator.device))
    feats = p.train_features
    lengths = [len(f["input_ids"]) for f in feats]
    plan_args = dict(batch_size=t.batch_size, max_tokens=t.max_tokens_per_batch, group_by_length=t.group_by_length, seed=t.seed)
    total_steps = _total_steps(lengths, plan_args, t.epochs, t.gradient_accumulation_steps, t.max_tokens_per_batch is not None)
    if max_steps:
        total_steps = min(total_steps, max_steps)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(t.scheduler, int(t.warmup_ratio * total_steps), total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    pad_id = p.tokenizer.pad_token_id
    anchor = _anchor(raw_model, t.anchor_strength)
    if t.logit_adjustment:
        task.adjust_for_prior(feats, t.logit_adjustment)

    state = {"step": 0, "epoch": 0, "group": 0, "best": None, "best_step": None, "bad_evals": 0,
             "last_eval_step": None, "train_seconds": 0.0, "real_tokens": 0}
    ckpt_root = run_dir / "checkpoints"
    if resuming:
        path = ckpt.latest_checkpoint(ckpt_root)
        if path is None:
            console.print(f"[yellow]{run_dir}: no checkpoint was written before the interruption; starting from step 0")
        else:
            state, rngs = ckpt.load_checkpoint(path, raw_model, optimizer, scheduler)
            ckpt.set_rng_state(rngs[min(rank, len(rngs) - 1)])
            if rank == 0:
                console.print(f"resuming {run_dir} at step {state['step']} (epoch {state['epoch']})")
    tracker = Tracker(run_dir / "logs", t.tensorboard, state["step"] if resuming else None) if rank == 0 else None

    dev_feats, dev_plan = task.encode_for_inference(p.splits.dev)
    metric = p.metric

    lower_is_better = getattr(task, "lower_is_better", False)

    def evaluate() -> dict:
        if hasattr(task, "dev_scores"):  # generation: loss and perplexity of the dev completions
            scores = task.dev_scores(raw_model, dev_feats, pad_id, bf16)
            return task.headline(scores)
        mine = list(range(rank, len(dev_feats), world))
        outs = run_model(raw_model, [dev_feats[i] for i in mine], pad_id, bf16=bf16)
        pairs = list(zip(mine, outs))
        if world > 1:
            from accelerate.utils import gather_object

            pairs = gather_object(pairs)
        outputs = [None] * len(dev_feats)
        for i, out in pairs:
            outputs[i] = out
        report = task.metrics(p.splits.dev, task.decode(p.splits.dev, dev_plan, outputs))
        return task.headline(report)

    def save(step: int) -> None:
        rngs = [ckpt.rng_state()]
        if world > 1:
            from accelerate.utils import gather_object

            rngs = gather_object(rngs)
        if rank == 0:
            ckpt.save_checkpoint(ckpt_root, step, raw_model, optimizer, scheduler, rngs, state)
        accelerator.wait_for_everyone()

    def after_eval(step: int) -> bool:
        """Evaluate on dev; keep the best weights; True when early stopping says stop."""
        scores = evaluate()
        state["last_eval_step"] = step
        improved = state["best"] is None or (scores[metric] < state["best"] if lower_is_better else scores[metric] > state["best"])
        if improved:
            state.update(best=scores[metric], best_step=step, bad_evals=0)
            if rank == 0:
                ckpt.save_best(ckpt_root, raw_model, step)
        else:
            state["bad_evals"] += 1
        if rank == 0:
            tracker.log(step, {**scores, "epoch": state["epoch"]}, prefix="dev")
            progress.note(f"dev {metric} {scores[metric]:.4f}" + (" (best)" if improved else ""))
        return t.early_stopping_patience is not None and state["bad_evals"] >= t.early_stopping_patience

    if rank == 0:
        console.print(f"[bold]{cfg.name}[/]: {cfg.task}, {cfg.method}, {trainable:,} of {total_params:,} parameters trained, "
                      f"{len(feats)} train sequences, {len(p.splits.dev)} dev examples, {'bf16' if bf16 else 'fp32'}, "
                      f"{world} process(es), {total_steps} steps")
        if p.truncated_train:
            console.print(f"[yellow]{p.truncated_train} training text(s) were longer than data.max_length={cfg.data.max_length} and were truncated")
    progress = TrainProgress(total_steps, state["step"], enabled=rank == 0, console=console)
    model.train()
    patience = t.early_stopping_patience
    stop = state["step"] >= total_steps or (patience is not None and state["bad_evals"] >= patience)
    window_loss, window_units, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    try:
        while not stop:
            plan = plan_batches(lengths, **plan_args, epoch=state["epoch"])
            acc = t.gradient_accumulation_steps
            groups = [plan[i:i + acc] for i in range(0, len(plan), acc)]
            while state["group"] < len(groups) and not stop:
                step_start = time.perf_counter()
                group = groups[state["group"]]
                units = sum(task.loss_units(feats[i]) for b in group for i in b)
                real = sum(lengths[i] for b in group for i in b)
                for micro, global_batch in enumerate(group):
                    idx, padding = shard(global_batch, rank, world)
                    batch = {k: v.to(accelerator.device) for k, v in collate([feats[i] for i in idx], pad_id, multiple=t.pad_to_multiple_of).items()}
                    labels = batch.pop("labels")
                    sync = nullcontext() if micro == len(group) - 1 else accelerator.no_sync(model)
                    with sync:
                        with autocast_context(accelerator.device, bf16):
                            logits = model(**batch).logits
                        loss_sum = task.loss_sum(logits, {"labels": labels})
                        scale = 0.0 if padding else world / max(1, units)
                        objective = loss_sum * scale
                        if anchor is not None and micro == len(group) - 1:
                            objective = objective + anchor()
                        accelerator.backward(objective)
                    if not padding:
                        window_loss += loss_sum.item()
                if t.max_grad_norm:
                    accelerator.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                state["group"] += 1
                state["train_seconds"] += time.perf_counter() - step_start
                state["real_tokens"] += real
                window_units += units
                window_tokens += real
                step = state["step"]
                end_of_epoch = state["group"] >= len(groups)
                if end_of_epoch:
                    state["epoch"] += 1
                    state["group"] = 0
                if step % t.log_every_steps == 0 or step == total_steps:
                    loss_val = _global_mean(accelerator, window_loss, window_units)
                    elapsed = time.perf_counter() - window_start
                    if rank == 0:
                        tracker.log(step, {"loss": loss_val, "lr": scheduler.get_last_lr()[0], "epoch": state["epoch"] + state["group"] / len(groups),
                                           "tokens_per_s": window_tokens / max(elapsed, 1e-9)})
                    progress.update(step, loss_val, window_tokens / max(elapsed, 1e-9))
                    window_loss, window_units, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
                evaluated = False
                if (t.eval_every_steps and step % t.eval_every_steps == 0) or (not t.eval_every_steps and end_of_epoch):
                    stop = after_eval(step)
                    evaluated = True
                if step >= total_steps:
                    stop = True
                if evaluated or step % t.save_every_steps == 0 or stop:
                    save(step)
                if end_of_epoch:
                    break
    except KeyboardInterrupt:
        progress.close()
        if rank == 0:
            console.print(f"[yellow]interrupted at step {state['step']}; continue with: lmforge train --resume {run_dir}")
        raise SystemExit(130)
    progress.close()
    if state.get("last_eval_step") != state["step"]:
        # the last step was never evaluated (max_steps mid-epoch): evaluate it before choosing the best
        after_eval(state["step"])
    if tracker is not None:
        tracker.close()
    if rank == 0:
        finalize_run(run_dir, p, raw_model, ckpt_root, state, bf16, console, trainable, total_params, accelerator.device)
    else:
        _wait_for_completion(run_dir)
    return run_dir


def _is_head(name: str) -> bool:
    return any(part in ("classifier", "score") for part in name.split("."))


def _anchor(model, strength: float):
    """L2-SP (Li et al. 2018): a penalty strength/2 * ||w - w0||^2 that keeps the trained encoder weights
    near the weights training started from (the parent model in a continual update). The task head is
    free. Returns a function computing the penalty, or None when strength is 0. With DDP every process
    adds the same penalty, and the averaged gradient is its gradient."""
    if not strength:
        return None
    pairs = [(param, param.detach().clone()) for name, param in model.named_parameters()
             if param.requires_grad and not _is_head(name)]

    def penalty() -> torch.Tensor:
        total = sum(((param - start) ** 2).sum() for param, start in pairs)
        return 0.5 * strength * total

    return penalty


def _wait_for_completion(run_dir: Path) -> None:
    """Other processes stay alive until rank 0 has written the run. A file, not a collective barrier:
    a long test evaluation must not run into the process group's timeout. If rank 0 dies, torchrun
    stops this process."""
    while read_json(run_dir / RUN_INFO).get("status") != "complete":
        time.sleep(0.5)


def _global_mean(accelerator, local_loss_sum: float, global_units: int) -> float:
    """Mean loss per unit over all processes (units are counted from the global plan already)."""
    if accelerator.num_processes > 1:
        local_loss_sum = float(accelerator.reduce(torch.tensor([local_loss_sum], device=accelerator.device), reduction="sum")[0])
    return local_loss_sum / max(1, global_units)
