"""Forward passes over encoded features: the one place that runs a model for predictions.

A *forward function* maps one padded batch (`input_ids`, `attention_mask`, optional
`token_type_ids`; int64 tensors [B, L]) to logits as a float32 numpy array ([B, C] or [B, L, C]).
`torch_forward` runs the PyTorch model; `lmforge.export.onnx.onnx_forward` an exported ONNX graph.
Both go through `run_batches`, so batching, ordering and trimming are shared.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch

from .tasks.base import Feature, collate

INFERENCE_TOKEN_BUDGET = 8192  # padded tokens per forward pass
INFERENCE_MAX_BATCH = 128

Forward = Callable[[dict[str, torch.Tensor]], np.ndarray]


def autocast_context(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def torch_forward(model, bf16: bool = False) -> Forward:
    device = next(model.parameters()).device

    @torch.inference_mode()
    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        was_training = model.training
        model.eval()
        try:
            with autocast_context(device, bf16):
                return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
        finally:
            model.train(was_training)

    return forward


def run_batches(features: list[Feature], pad_id: int, forward: Forward, *, progress=None) -> list[np.ndarray]:
    """Logits for each feature, in input order, trimmed to the feature's own length for token tasks:
    [C] per sequence-classification feature, [L_i, C] per token-classification feature.
    Features are sorted by length so each batch pads little; batches hold at most
    INFERENCE_TOKEN_BUDGET padded tokens."""
    if not features:
        return []
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    outputs: list[np.ndarray | None] = [None] * len(features)
    start = 0
    while start < len(order):
        longest = len(features[order[start]]["input_ids"])
        size = max(1, min(INFERENCE_MAX_BATCH, INFERENCE_TOKEN_BUDGET // longest))
        chunk = order[start:start + size]
        batch = collate([{k: v for k, v in features[i].items() if k != "labels"} for i in chunk], pad_id)
        logits = forward(batch)  # [B, C] or [B, L, C]
        for row, i in enumerate(chunk):
            out = logits[row]
            outputs[i] = out[: len(features[i]["input_ids"])] if out.ndim == 2 else out
        start += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return outputs  # type: ignore[return-value]


def run_model(model, features: list[Feature], pad_id: int, *, bf16: bool = False, progress=None) -> list[np.ndarray]:
    """`run_batches` with the PyTorch model."""
    return run_batches(features, pad_id, torch_forward(model, bf16), progress=progress)
