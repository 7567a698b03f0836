"""Forward passes over encoded features: the one place that runs a model for predictions."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from .tasks.base import Feature, collate

INFERENCE_TOKEN_BUDGET = 8192  # padded tokens per forward pass
INFERENCE_MAX_BATCH = 128


def autocast_context(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.inference_mode()
def run_model(model, features: list[Feature], pad_id: int, *, bf16: bool = False, progress=None) -> list[np.ndarray]:
    """Logits for each feature, in input order, trimmed to the feature's own length for token tasks:
    [C] per sequence-classification feature, [L_i, C] per token-classification feature."""
    if not features:
        return []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    outputs: list[np.ndarray | None] = [None] * len(features)
    start = 0
    while start < len(order):
        longest = len(features[order[start]]["input_ids"])
        size = max(1, min(INFERENCE_MAX_BATCH, INFERENCE_TOKEN_BUDGET // longest))
        chunk = order[start:start + size]
        batch = collate([{k: v for k, v in features[i].items() if k != "labels"} for i in chunk], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_context(device, bf16):
            logits = model(**batch).logits.float().cpu().numpy()  # [B, C] or [B, L, C]
        for row, i in enumerate(chunk):
            out = logits[row]
            outputs[i] = out[: len(features[i]["input_ids"])] if out.ndim == 2 else out
        start += len(chunk)
        if progress is not None:
            progress(len(chunk))
    model.train(was_training)
    return outputs  # type: ignore[return-value]
