"""The training loop: one explicit loop for every task and method, on accelerate.

`train` starts a run from a config, `resume` continues an interrupted one. Both prepare the data,
build the model and optimizer, and then drive `steps.train_steps` (a generator yielding after each
optimizer step) through the consumers in consumers.py: loss logging, dev selection with early
stopping, and checkpointing.

Global batches are planned identically on every process (see data/batching.py); each process runs
its shard, and the loss is normalised by the number of loss units (examples or labelled tokens) in
the whole global step, so N processes compute exactly the gradient one process would.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from ..config import SENTENCE_METHODS, ProjectConfig, dump_config, is_builtin_dataset
from ..errors import UserError
from ..files import read_json, write_json_atomic, write_text_atomic
from ..models.build import count_parameters, uses_bf16
from ..runs import CONFIG, LABELS, RUN_INFO, RunFolder, check_run_dir, load_run_config, mark_run, process_fields
from ..tasks import get_task
from ..tasks.registry import LARGE_SET_DROPOUT_REASON, LARGE_SET_REASON, LARGE_SET_TOKENS_REASON
from . import checkpoint as ckpt
from .bf16_copy import blocker, on_by_default
from .consumers import Checkpointer, DevSelection, StepLogger, sharded_logits
from .dropout import use_fast_dropout
from .finalize import finalize_run
from .progress import TrainProgress
from .setup import SMALL_DEV_REASON, SMALL_SET_REASON, Prepared, build_model, dev_cadence, prepare
from .state import TrainState
from .steps import Stepper, anchor, compiled, optimizer, plan_arguments, schedule, total_steps, train_steps
from .tracking import Tracker, mlflow_for


def resolved_config(cfg: ProjectConfig, base: Path) -> ProjectConfig:
    """The config with every path made absolute, as saved in the run folder."""
    update = {k: str(cfg.resolve_path(getattr(cfg.data, k), base).resolve())
              for k in ("train", "dev", "test") if isinstance(getattr(cfg.data, k), str) and not is_builtin_dataset(getattr(cfg.data, k))}
    if isinstance(cfg.data.train, list):
        update["train"] = [str(path.resolve()) for path in cfg.train_paths(base)]
    data = cfg.data.model_copy(update=update)
    model = cfg.model
    if (base / model).is_dir():
        model = str((base / model).resolve())
    return cfg.model_copy(update={"data": data, "model": model,
                                  "output_dir": str(cfg.resolve_path(cfg.output_dir, base).resolve())})


def train(cfg: ProjectConfig, base: Path, *, output: Path | None = None, max_steps: int | None = None,
          overwrite: bool = False, console: Console | None = None) -> Path:
    """Train from a config whose relative paths are relative to `base`. Returns the run folder
    (`output`, or <output_dir>/<name>)."""
    accelerator = _accelerator()
    if cfg.method in SENTENCE_METHODS and accelerator.num_processes > 1:
        raise UserError(f"method {cfg.method} runs in one process (minutes on a CPU); start it without --nproc/torchrun")
    _set_threads(cfg.training.num_threads, accelerator.num_processes)
    cfg = resolved_config(cfg, base)
    run_dir = Path(output) if output else Path(cfg.output_dir) / cfg.name
    max_steps = max_steps or cfg.training.max_steps
    p = prepare(cfg, base)  # every data problem is reported before anything is written
    _check_target(run_dir, overwrite)  # on every process, so that all of them stop with the message
    accelerator.wait_for_everyone()  # ... and before rank 0 creates the folder the others check
    if accelerator.process_index == 0:
        _create_run_dir(run_dir, overwrite, p, max_steps)
    accelerator.wait_for_everyone()
    if cfg.method in SENTENCE_METHODS:
        from .sentence_methods import run_sentence_method

        return _watched(run_dir, accelerator, lambda: run_sentence_method(p, run_dir, console or Console(stderr=True), max_steps))
    return _watched(run_dir, accelerator, lambda: _run(p, run_dir, accelerator, max_steps, False, console or Console(stderr=True)))


def resume(run_dir: Path, *, console: Console | None = None) -> Path:
    """Continue an interrupted run from its latest checkpoint (from step 0 when none was written),
    with the config and step limit it started with. Returns the run folder."""
    accelerator = _accelerator()
    run_dir = check_run_dir(Path(run_dir))
    cfg = load_run_config(run_dir)
    info = read_json(run_dir / RUN_INFO)
    if info.get("status") == "complete":
        raise UserError(f"{run_dir} finished training already; nothing to resume")
    if cfg.method in SENTENCE_METHODS:
        raise UserError(f"{run_dir}: a {cfg.method} run is not checkpointed (it takes minutes); start it again with "
                        f"`lmforge train CONFIG --overwrite`")
    _set_threads(cfg.training.num_threads, accelerator.num_processes)
    max_steps = info.get("max_steps_override") or cfg.training.max_steps
    p = prepare(cfg, run_dir)  # every data problem is reported before training continues
    if accelerator.process_index == 0:
        mark_run(run_dir, status="training", **process_fields())
    return _watched(run_dir, accelerator, lambda: _run(p, run_dir, accelerator, max_steps, True, console or Console(stderr=True)))


def _watched(run_dir: Path, accelerator, work):
    """Run `work`, recording in run.json how it ended when it did not complete: `interrupted` (Ctrl-C)
    or `failed` (with the error), so that the studio and `lmforge runs` tell them from a live run."""
    try:
        return work()
    except (KeyboardInterrupt, SystemExit) as stop:
        if accelerator.process_index == 0 and not (isinstance(stop, SystemExit) and stop.code in (0, None)):
            mark_run(run_dir, status="interrupted")
            _close_mlflow(run_dir, "KILLED")
        raise
    except BaseException as error:
        if accelerator.process_index == 0:
            mark_run(run_dir, status="failed", error=str(error)[:500] or type(error).__name__)
            _close_mlflow(run_dir, "FAILED")
        raise


def _close_mlflow(run_dir: Path, status: str) -> None:
    """End the run's MLflow run, if it has one, without hiding the error that ended training."""
    try:
        from .mlflow_log import finish_mlflow

        finish_mlflow(run_dir, status)
    except Exception:  # noqa: BLE001 - MLflow trouble must not mask the training error
        pass


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


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
                     "truncated_train": p.truncated_train, "scheme": p.splits.scheme,
                     "unknown_tokens": p.unknown_tokens[0], "tokens": p.unknown_tokens[1]},
            **process_fields()}
    write_json_atomic(run_dir / RUN_INFO, info)


@dataclass
class _Training:
    """The model, optimizer and step plan of a run, built once before the first step."""

    stepper: Stepper
    raw_model: Any  # the model without accelerate's DDP wrapper
    total_steps: int
    lengths: list[int]  # of each training feature
    plan_args: dict
    trainable: int
    total_params: int

    def dev_model(self):
        """What dev passes run: the steps' bf16 copy once made (the fp32 weights rounded, as a bf16
        Predictor rounds them), else the fp32 model."""
        return self.stepper.copy.model if self.stepper.copy is not None else self.raw_model


def _build(p: Prepared, accelerator, max_steps: int | None) -> _Training:
    from transformers import set_seed

    t = p.cfg.training
    set_seed(t.seed)
    model = build_model(p)
    if accelerator.device.type == "cpu":
        use_fast_dropout(model)
    trainable, total_params = count_parameters(model)
    bf16 = uses_bf16(t.precision, accelerator.device)
    lengths = [len(f["input_ids"]) for f in p.train_features]
    plan_args = plan_arguments(t)
    steps = total_steps(lengths, plan_args, t.epochs, t.gradient_accumulation_steps, t.max_tokens_per_batch is not None)
    if max_steps:
        steps = min(steps, max_steps)
    opt = optimizer(model, p.cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule(t.scheduler, int(t.warmup_ratio * steps), steps))
    model, opt = accelerator.prepare(model, opt)
    raw_model = accelerator.unwrap_model(model)
    penalty = anchor(raw_model, t.anchor_strength)
    if t.logit_adjustment:
        p.task.adjust_for_prior(p.train_features, t.logit_adjustment)
    blocked = blocker(accelerator.num_processes, t.compile, penalty is not None)
    if t.bf16_weights and blocked:
        raise UserError(f"training.bf16_weights: true cannot be used {blocked}; set it to false or leave it empty")
    on_copy = bf16 and not blocked and (t.bf16_weights if t.bf16_weights is not None else on_by_default(
        p.cfg.method, accelerator.device, get_task(p.cfg.task).decoder, t.gradient_accumulation_steps))
    stepper = Stepper(accelerator, compiled(model) if t.compile else model, opt, scheduler, p.task, p.train_features,
                      p.tokenizer.pad_token_id, bf16, t.pad_to_multiple_of, t.max_grad_norm, penalty, model if t.compile else None,
                      bf16_weights=on_copy)
    return _Training(stepper, raw_model, steps, lengths, plan_args, trainable, total_params)


def _run(p: Prepared, run_dir: Path, accelerator, max_steps: int | None, resuming: bool, console: Console) -> Path:
    t, rank = p.cfg.training, accelerator.process_index
    training = _build(p, accelerator, max_steps)
    if rank == 0:
        mark_run(run_dir, total_steps=training.total_steps)
    ckpt_root = RunFolder(run_dir).checkpoints_dir
    state = _restore(run_dir, ckpt_root, training, rank, console) if resuming else TrainState()
    tracker = (Tracker(RunFolder(run_dir).logs_dir, t.tensorboard, state.step if resuming else None, mlflow_for(p.cfg, run_dir))
               if rank == 0 else None)
    dev_feats, dev_plan = p.task.encode_for_inference(p.splits.dev)
    if rank == 0:
        _announce(p, training, accelerator.num_processes, console, capped=max_steps is not None)
    progress = TrainProgress(training.total_steps, state.step, enabled=rank == 0, console=console)
    bf16 = training.stepper.bf16
    dev = DevSelection(p.task, training.raw_model, p.splits.dev, dev_feats, dev_plan, p.metric, t.eval_every_steps,
                       t.early_stopping_patience, sharded_logits(accelerator, training.dev_model, p.tokenizer.pad_token_id, bf16),
                       bf16, ckpt_root, rank, tracker, progress, t.average_last)
    logger = StepLogger(accelerator, tracker, progress, training.stepper.scheduler, t.log_every_steps, training.total_steps,
                        t.learning_rate)
    checkpointer = Checkpointer(ckpt_root, accelerator, training.raw_model, training.stepper.optimizer, training.stepper.scheduler)
    try:
        _train_until_done(training, state, t.gradient_accumulation_steps, t.save_every_steps, logger, dev, checkpointer)
    except KeyboardInterrupt:
        progress.close()
        if rank == 0:
            console.print(f"[yellow]interrupted at step {state.step}; continue with: lmforge train --resume {run_dir}")
        raise SystemExit(130)
    progress.close()
    if state.last_eval_step != state.step:
        # the last step was never evaluated (max_steps mid-epoch): evaluate it before choosing the best
        dev.evaluate(state.step, state)
    if tracker is not None:
        tracker.close()
    if rank == 0:
        # one process ran dev in the same passes Predictor runs, so its logits of the kept weights are reusable
        kept = dev.best_outputs if accelerator.num_processes == 1 else None
        finalize_run(run_dir, p, training.raw_model, ckpt_root, state.to_json(), bf16, console, training.trainable,
                     training.total_params, accelerator.device, dev_outputs=kept)
    else:
        _wait_for_completion(run_dir)
    return run_dir


def _restore(run_dir: Path, ckpt_root: Path, training: _Training, rank: int, console: Console) -> TrainState:
    """Weights, optimizer, scheduler and this process's RNG state from the latest checkpoint."""
    path = ckpt.latest_checkpoint(ckpt_root)
    if path is None:
        console.print(f"[yellow]{run_dir}: no checkpoint was written before the interruption; starting from step 0")
        return TrainState()
    stepper = training.stepper
    state, rngs = ckpt.load_checkpoint(path, training.raw_model, stepper.optimizer, stepper.scheduler)
    ckpt.set_rng_state(rngs[min(rank, len(rngs) - 1)])
    if rank == 0:
        console.print(f"resuming {run_dir} at step {state.step} (epoch {state.epoch})")
    return state


def _announce(p: Prepared, training: _Training, world: int, console: Console, capped: bool = False) -> None:
    cfg = p.cfg
    console.print(f"[bold]{cfg.name}[/]: {cfg.task}, {cfg.method}, {training.trainable:,} of {training.total_params:,} "
                  f"parameters trained, {len(p.train_features)} train sequences, {len(p.splits.dev)} dev examples, "
                  f"{'bf16' if training.stepper.bf16 else 'fp32'}, {world} process(es), {training.total_steps} steps"
                  + (f", {p.unknown_tokens[0] / p.unknown_tokens[1]:.1%} unknown tokens" if p.unknown_tokens[1] else ""))
    if p.sized_batch and cfg.training.max_tokens_per_batch:
        console.print(f"batches of up to {cfg.training.max_tokens_per_batch:,} padded tokens ({len(p.splits.train):,} training "
                      f"examples; training.batch_size unset): {LARGE_SET_TOKENS_REASON}")
    elif p.sized_batch:
        console.print(f"batches of {cfg.training.batch_size} ({len(p.train_features):,} training sequences; training.batch_size "
                      f"unset): {LARGE_SET_REASON}")
    if p.sized_epochs:
        console.print(f"{cfg.training.epochs:g} epochs ({len(p.train_features):,} training sequences; training.epochs empty"
                      f"{dev_cadence(cfg.training)}): {SMALL_SET_REASON}")
    if p.sized_dropout:
        console.print(f"hidden dropout {cfg.training.hidden_dropout:g} ({len(p.splits.train):,} training examples; "
                      f"training.hidden_dropout empty): {LARGE_SET_DROPOUT_REASON}")
    if p.sized_average:
        console.print(f"the saved model will be the mean of the weights at the last {cfg.training.average_last} dev evaluations, "
                      f"not the best one ({len(p.splits.dev):,} dev examples; training.average_last empty): {SMALL_DEV_REASON}")
    elif cfg.training.average_last:
        console.print(f"the saved model will be the mean of the weights at the last {cfg.training.average_last} dev evaluations "
                      "(training.average_last), not the best one")
    if p.truncated_train:
        console.print(f"[yellow]{p.truncated_train} training text(s) were longer than data.max_length={cfg.data.max_length} and were truncated")
    for warning in p.warnings + ([] if capped else few_steps_warning(p, training.total_steps)):  # max_steps: a chosen cap
        console.print(f"[bold yellow]warning: {escape(warning)}")


FEW_STEPS = 50  # MiniLM-L6 on SST-2 (bench/active_learning.py): 20 steps (50 labels) learn nothing, 63 steps reach 71-76%


def few_steps_warning(p: Prepared, steps: int) -> list[str]:
    """A run of so few optimizer steps that the model is likely to learn nothing (a handful of labels)."""
    t = p.cfg.training
    if steps >= FEW_STEPS or not p.train_features:
        return []
    epochs = t.epochs * -(-100 // steps)  # about 100 steps
    hint = " or, with 2-64 examples per class, method: fewshot" if get_task(p.cfg.task).sentence_methods else ""
    return [f"{len(p.train_features)} training sequences in batches of {t.batch_size} give only {steps} optimizer steps over "
            f"{t.epochs:g} epoch(s): likely too few to learn from; raise training.epochs (about {epochs:g} for 100 steps){hint}"]


def _train_until_done(training: _Training, state: TrainState, accumulation: int, save_every: int,
                      logger: StepLogger, dev: DevSelection, checkpointer: Checkpointer) -> None:
    """Take optimizer steps until the step limit or early stopping; after each, log, evaluate when
    due, and checkpoint at every evaluation, every `save_every` steps and at the end."""
    training.stepper.model.train()
    if state.step >= training.total_steps or dev.exhausted(state):
        return
    for s in train_steps(training.stepper, state, training.lengths, training.plan_args, accumulation):
        logger.after_step(s)
        evaluated = dev.due(s)
        stop = dev.evaluate(s.step, state) if evaluated else False
        stop = stop or s.step >= training.total_steps
        if evaluated or s.step % save_every == 0 or stop:
            checkpointer.save(s.step, state)
        if stop:
            return


def _wait_for_completion(run_dir: Path) -> None:
    """Other processes stay alive until rank 0 has written the run. A file, not a collective barrier:
    a long test evaluation must not run into the process group's timeout. If rank 0 dies, torchrun
    stops this process."""
    while read_json(run_dir / RUN_INFO).get("status") != "complete":
        time.sleep(0.5)
