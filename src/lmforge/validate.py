"""`lmforge validate`: everything training would check, plus one forward/backward batch; no files written."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import load_config
from .tasks.base import collate
from .training.setup import SMALL_DEV, SMALL_SET_STEPS, build_model, dev_cadence, prepare


def validate_config(path: Path, overrides: list[str]) -> dict:
    cfg = load_config(path, overrides)
    p = prepare(cfg, path.resolve().parent)
    if cfg.method == "fewshot":
        from .training.sentence_methods import check_fewshot

        check_fewshot(p)
    from transformers import set_seed

    set_seed(cfg.training.seed)  # the head's initialisation and the dropout masks as training's: the same loss each run
    model = build_model(p)
    model.train()
    first, trainable = "none (zero-shot: nothing is trained)", 0
    if p.train_features:
        batch = collate(p.train_features[: min(4, len(p.train_features))], p.tokenizer.pad_token_id)
        labels = batch.pop("labels")
        loss = p.task.loss_sum(model(**batch).logits, {"labels": labels})
        loss.backward()
        if not torch.isfinite(loss):
            from .errors import UserError

            raise UserError("the first batch gives a non-finite loss; check the data and model")
        trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
        first = f"{loss.item() / max(1, sum(p.task.loss_units(f) for f in p.train_features[:4])):.4f}"
    summary = {
        "task": cfg.task, "model": str(p.model_path), "method": f"{cfg.method} ({trainable:,} trainable parameters)",
        "train examples": len(p.splits.train), "train sequences": len(p.train_features),
        "dev examples": f"{len(p.splits.dev)}" + (" (held out from train)" if p.splits.dev_is_holdout else ""),
        "test examples": len(p.splits.test) if p.splits.test is not None else "none",
        "labels": f"{len(p.task.labels)}: " + ", ".join(p.task.labels[:12]) + (" ..." if len(p.task.labels) > 12 else ""),
        "dev metric": p.metric, "first batch loss": first,
    }
    if p.sized_epochs:  # filled from the data: say so before training takes them
        summary["epochs"] = (f"{cfg.training.epochs:g} (training.epochs empty: about {SMALL_SET_STEPS} optimizer steps on a small set"
                             f"{dev_cadence(cfg.training)})")
    if p.sized_average:
        summary["kept weights"] = (f"the mean of the last {cfg.training.average_last} dev evaluations (training.average_last empty: "
                                   f"fewer than {SMALL_DEV:,} dev examples rank epochs by noise; 0 keeps the best)")
    if p.splits.scheme:
        summary["tag scheme"] = p.splits.scheme
    unknown, tokens = p.unknown_tokens
    if tokens:
        summary["unknown tokens"] = f"{unknown / tokens:.1%} of {tokens:,} training tokens"
    for number, warning in enumerate(p.warnings, 1):
        summary[f"warning {number}" if len(p.warnings) > 1 else "warning"] = warning
    if p.truncated_train:
        summary["truncated"] = f"{p.truncated_train} training texts longer than data.max_length={cfg.data.max_length}"
    return summary
