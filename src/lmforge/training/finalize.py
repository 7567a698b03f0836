"""The end of a run: best weights restored, standard artefacts written atomically, dev and test
evaluated through the same `Predictor` users load, and the run marked complete."""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from ..config import SENTENCE_METHODS
from ..models.build import load_model
from ..runs import METRICS, RUN_INFO, RunFolder
from ..tasks import get_task
from ..files import read_json, replace_dir, write_json_atomic
from . import checkpoint as ckpt


def finalize_run(run_dir: Path, p, raw_model, ckpt_root: Path, state: dict, bf16: bool, console: Console,
                 trainable: int, total_params: int, device=None, dev_outputs: tuple[int, list] | None = None) -> None:
    """`dev_outputs`: (step, dev logits) from the loop's last best evaluation. When the saved model is
    exactly the weights of that step (full fine-tuning, not averaged), its dev logits are these,
    bit for bit (the same `run_batches` passes over the same features), and dev is not run again."""
    averaged = ckpt.load_average(ckpt_root, raw_model, state["step"], p.cfg.training.average_last) if p.cfg.training.average_last else []
    best = None if averaged else ckpt.load_best(ckpt_root, raw_model, state.get("best_step"))
    info = read_json(run_dir / RUN_INFO)
    if averaged:  # the saved model is the mean of these evaluations' weights, not one of them
        info["averaged_steps"] = averaged
    # recorded before model/ is written, so that a reader never applies an adapter to a merged model
    info["merged"] = p.cfg.method in ("full", *SENTENCE_METHODS) or (p.cfg.method in ("lora", "ia3") and p.cfg.peft.merge)
    write_json_atomic(run_dir / RUN_INFO, info)
    save_artefacts(run_dir, p, raw_model, info["merged"])
    info.update(best_step=best["step"] if best else state["step"], steps=state["step"],
                train_seconds=round(state["train_seconds"], 2), trained_parameters=trainable, total_parameters=total_params,
                real_tokens=state["real_tokens"], tokens_per_second=round(state["real_tokens"] / max(state["train_seconds"], 1e-9), 1),
                precision="bf16" if bf16 else "fp32", dev_seconds=round(state.get("dev_seconds", 0.0), 2),
                dev_passes=state.get("dev_passes", 0))
    write_json_atomic(run_dir / RUN_INFO, info)
    reusable = dev_outputs is not None and not averaged and p.cfg.method == "full" and dev_outputs[0] == info["best_step"]
    metrics = evaluate_splits(run_dir, p, console, device, dev_logits=dev_outputs[1] if reusable else None)
    if "threshold" in metrics:  # multi-label: how the decision threshold was chosen, and any warning
        info["threshold"] = metrics["threshold"]
    if "transitions" in metrics:  # NER: the weight of the training tag bigrams in decoding
        info["transitions"] = metrics["transitions"]
    metrics["training"] = {k: info[k] for k in ("steps", "best_step", "train_seconds", "dev_seconds", "dev_passes", "tokens_per_second", "trained_parameters",
                                                   "precision")}
    if averaged:
        metrics["training"]["averaged_steps"] = averaged
    write_json_atomic(run_dir / METRICS, metrics)
    from ..model_card import finish_artefacts

    finish_artefacts(run_dir, p.cfg, p.model_path, metrics, info,
                     {"train": len(p.splits.train), "dev": len(p.splits.dev or []), "test": len(p.splits.test or [])})
    info["status"] = "complete"
    write_json_atomic(run_dir / RUN_INFO, info)
    if p.cfg.tracking.mlflow:
        from .mlflow_log import finish_mlflow

        finish_mlflow(run_dir)
    shutil.rmtree(ckpt_root, ignore_errors=True)
    console.print(f"[green]done[/]: {run_dir}  " + "  ".join(f"{split} {k}={v:.4f}" for split, vals in metrics.items()
                                                          if split in ("dev", "test") for k, v in vals.items()))


def save_artefacts(run_dir: Path, p, raw_model, merged: bool) -> None:
    """Write model/ (plain transformers) and, for peft methods, adapter/. `merged`: model/ alone
    reproduces predictions (full fine-tuning, or a LoRA/IA3 adapter merged in)."""
    method = p.cfg.method
    model_tmp = run_dir / ".model.tmp"
    shutil.rmtree(model_tmp, ignore_errors=True)
    if method in ("full", *SENTENCE_METHODS):
        raw_model.save_pretrained(str(model_tmp))
    else:
        adapter_tmp = run_dir / ".adapter.tmp"
        shutil.rmtree(adapter_tmp, ignore_errors=True)
        raw_model.save_pretrained(str(adapter_tmp))
        replace_dir(adapter_tmp, RunFolder(run_dir).adapter_dir)
        if merged:
            raw_model.merge_and_unload().save_pretrained(str(model_tmp))
        else:  # prefix tuning cannot be merged: model/ is the base with the trained head, used with adapter/
            base_with_head(p, raw_model).save_pretrained(str(model_tmp))
    p.tokenizer.save_pretrained(str(model_tmp))
    replace_dir(model_tmp, RunFolder(run_dir).model_dir)


def base_with_head(p, peft_model):
    """A plain model: the base weights plus the trained task head taken from the peft wrapper."""
    from peft.utils import ModulesToSaveWrapper

    fresh = load_model(p.task.model_class(), p.model_path, ignore_mismatched_sizes=True, **p.task.model_kwargs())
    fresh_modules = dict(fresh.named_modules())
    for name, module in peft_model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            trained = module.modules_to_save[module.active_adapter if isinstance(module.active_adapter, str) else module.active_adapter[0]]
            target = name.split("base_model.model.")[-1] if "base_model.model." in name else name.removeprefix("base_model.")
            fresh_modules[target].load_state_dict(trained.state_dict())
    return fresh


def evaluate_splits(run_dir: Path, p, console: Console, device=None, dev_logits: list | None = None) -> dict:
    """Dev and test reports of the saved run, through the `Predictor` users load. `dev_logits`: that
    model's dev logits, already computed (used when they fit the dev features)."""
    from ..evaluation.report import write_report
    from ..predictor import Predictor

    spec = get_task(p.cfg.task)
    if spec.decoder:
        return _evaluate_generation(run_dir, p, device)
    predictor = Predictor.from_run(run_dir, device=device)
    metrics: dict = {}
    if p.cfg.data.multi_label and p.splits.dev:  # before any report: dev and test are scored at the tuned threshold
        metrics["threshold"] = _tune_threshold(run_dir, predictor, p.splits.dev, console)
    encoded = _encoded_dev(predictor, p.splits.dev, dev_logits) if dev_logits is not None and p.splits.dev else None
    known: dict[str, list[dict]] = {}  # predictions already made at the final settings
    if getattr(predictor.task, "tag_transitions", None) is not None and p.splits.dev:
        metrics["transitions"], known["dev"] = _tune_transitions(run_dir, predictor, p.splits.dev, console, encoded)
    elif encoded is not None:
        known["dev"] = predictor.task.decode(p.splits.dev, *encoded)
    for split, examples in (("dev", p.splits.dev), ("test", p.splits.test)):
        if not examples:
            continue
        report, _ = predictor.evaluate(examples, predictions=known.get(split))
        write_report(report, RunFolder(run_dir).eval_dir(split), style=spec.report_style(p.cfg), title=f"{p.cfg.name}: {split}")
        metrics[split] = predictor.task.headline(report)
    return metrics


def _encoded_dev(predictor, dev: list, logits: list) -> tuple | None:
    """(decoding plan, logits) of dev when `logits` has one entry of the right length per feature
    (else None: dev is run through the model again)."""
    features, plan = predictor.task.encode_for_inference(dev)
    fits = len(features) == len(logits) and all(
        out.ndim == 1 or len(out) == len(f["input_ids"]) for f, out in zip(features, logits))
    return (plan, logits) if fits else None


def _tune_threshold(run_dir: Path, predictor, dev: list, console: Console) -> dict:
    from .threshold import choose_threshold, save_threshold

    choice = choose_threshold(predictor, dev)
    save_threshold(run_dir, choice)
    predictor.task.threshold = choice["value"]
    console.print(f"multi-label threshold {choice['value']:.4f} (tuned on dev): dev micro-F1 "
                  f"{choice['dev_micro_f1_at_0.5']:.4f} at 0.5 -> {choice['dev_micro_f1_tuned']:.4f}")
    for warning in choice["warnings"]:
        console.print(f"[yellow]warning: {warning}")
    return choice


def _tune_transitions(run_dir: Path, predictor, dev: list, console: Console, encoded: tuple | None = None) -> tuple[dict, list[dict]]:
    from .transitions import choose_weight, save_weight

    choice, predictions = choose_weight(predictor, dev, encoded)
    save_weight(run_dir, choice)
    f1 = choice["dev_f1_by_weight"]
    console.print(f"tag transitions weight {choice['value']:g} (tuned on dev): dev F1 {f1['0.0']:.4f} without -> "
                  f"{f1[str(choice['value'])]:.4f}")
    return choice, predictions


def _evaluate_generation(run_dir: Path, p, device=None) -> dict:
    """Dev/test loss and perplexity of the saved model/ (the merged model users load), so the
    figures describe exactly what was written."""
    import torch

    from ..models.build import load_model, uses_bf16

    device = device or torch.device("cpu")
    model = load_model(p.task.model_class(), RunFolder(run_dir).model_dir).to(device)
    bf16 = uses_bf16(p.cfg.training.precision, device)
    metrics: dict = {}
    for split, examples in (("dev", p.splits.dev), ("test", p.splits.test)):
        if not examples:
            continue
        scores = p.task.score(model, examples, bf16)
        write_json_atomic(RunFolder(run_dir).eval_dir(split) / "report.json", scores)
        metrics[split] = p.task.headline(scores)
    return metrics
