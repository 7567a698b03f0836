"""Growing a fine-tuned classification head for new labels.

A continual update adds labels to a model that already knows some. The head's rows of the known
labels are kept exactly; rows for the new labels start with zero weights and a bias below every old
bias, so before any training the model's predictions are unchanged (old logits are bit-identical and
the new labels score lower than the best old one on every input whose best old logit is above that
bias), and the new rows learn from the first step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

NEW_ROW_BIAS_MARGIN = 2.0  # new rows' bias = min(old biases) - this
HEAD_NAMES = ("classifier", "classifier.out_proj", "score", "classifier.dense_out")
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


def fine_tuned_labels(model_path: Path, kind: str = "ForSequenceClassification") -> list[str] | None:
    """The labels of a task head of `kind` (a sequence- or token-classification head) saved in
    `model_path` (None for a plain encoder or a head with transformers' placeholder names LABEL_0, ...)."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if not any(str(a).endswith(kind) for a in config.get("architectures") or []):
        return None
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if not labels or all(_DEFAULT_LABEL.match(label) for label in labels):
        return None
    return labels


def head_to_grow(model_path: Path, labels: list[str] | None) -> list[str] | None:
    """The base head's labels when `labels` extends them (same labels first, in order, then more)."""
    old = fine_tuned_labels(model_path)
    if not old or not labels or len(labels) <= len(old) or list(labels[:len(old)]) != old:
        return None
    return old


def _head(model: nn.Module, rows: int) -> tuple[str, nn.Linear]:
    modules = dict(model.named_modules())
    for name in HEAD_NAMES:
        module = modules.get(name)
        if isinstance(module, nn.Linear) and module.out_features == rows:
            return name, module
    raise ValueError(f"{type(model).__name__}: no classification head with {rows} outputs among {', '.join(HEAD_NAMES)}")


def grow_head(model: nn.Module, labels: list[str]) -> nn.Module:
    """Extend the model's head (in place) from its current labels to `labels` (which start with them)."""
    old = model.config.num_labels
    name, linear = _head(model, old)
    grown = nn.Linear(linear.in_features, len(labels), bias=linear.bias is not None,
                      device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        grown.weight.zero_()
        grown.weight[:old] = linear.weight
        if linear.bias is not None:
            grown.bias[:old] = linear.bias
            grown.bias[old:] = linear.bias.min() - NEW_ROW_BIAS_MARGIN
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, grown)
    model.config.num_labels = len(labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    if hasattr(model, "num_labels"):
        model.num_labels = len(labels)
    return model
