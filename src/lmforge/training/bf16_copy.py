"""Training steps on a bf16 copy of the model, with the optimizer on the fp32 weights (`training.bf16_weights`).

Under bf16 autocast the model keeps fp32 weights and every matrix product casts its inputs: the
weights, and the activations that the ops autocast keeps in fp32 (LayerNorm, softmax, residual sums)
hand on. On MiniLM-L6 over CoNLL-2003 batches those casts were 30 ms of a 211 ms step
(torch.profiler). Here the forward and backward run on a copy of the model whose weights are bf16,
without autocast, so activations stay bf16 throughout (LayerNorm and softmax accumulate in fp32
inside their kernels). After the backward the copy's gradients are cast onto the fp32 weights (the
"master weights" of mixed-precision training) and clipped there, AdamW updates the fp32 weights as
before, and the copy is refreshed from them.

The fp32 model stays what everything else sees: dev passes, checkpoints, resumed runs, weight
averaging and the saved model. The copy is made at the first step (after a resume has restored the
weights), so a resumed run continues exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Bf16Copy:
    """A bf16 copy of `master` for the training steps, and the moves between the two."""

    def __init__(self, master: nn.Module):
        self.model = copy.deepcopy(master).to(torch.bfloat16)
        self.model.train(master.training)
        self.pairs = [(m, c) for m, c in zip(master.parameters(), self.model.parameters()) if m.requires_grad]

    def gradients_to_master(self, max_norm: float | None = None) -> None:
        """Cast the copy's gradients onto the fp32 weights (replacing theirs; their buffers are kept
        from step to step) and clear the copy's. With `max_norm`, the fp32 gradients are then clipped by
        `torch.nn.utils.clip_grad_norm_`, exactly as an fp32 run clips them (cast and clip of MiniLM-L6's
        trained weights: 9.3 ms against 15.7 ms with norms computed from the bf16 gradients, each cast
        to fp32 on the way; medians of 25)."""
        pairs = [(master, bf16.grad) for master, bf16 in self.pairs if bf16.grad is not None]
        for master, bf16 in self.pairs:
            if bf16.grad is None:
                master.grad = None
            elif master.grad is None or master.grad.shape != master.shape:
                master.grad = torch.empty_like(master)
        if pairs:
            masters, grads = [m.grad for m, _ in pairs], [g for _, g in pairs]
            torch._foreach_copy_(masters, grads)
            if max_norm:  # on the fp32 casts (exact), as an fp32 run clips them
                torch.nn.utils.clip_grad_norm_([m for m, _ in pairs], max_norm)
        for _, bf16 in self.pairs:
            bf16.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """The copy takes the fp32 weights after an optimizer step (rounded to bf16)."""
        torch._foreach_copy_([bf16 for _, bf16 in self.pairs], [master for master, _ in self.pairs])


def blocker(world: int, compile_: bool, anchored: bool) -> str | None:
    """Why the copy cannot train this run (None: it can): DDP wraps the model it would copy,
    torch.compile compiles that model, and the L2-SP anchor's penalty puts its gradient on the fp32
    weights, which the copy's gradients replace."""
    if world > 1:
        return "with several processes"
    if compile_:
        return "with training.compile"
    if anchored:
        return "with training.anchor_strength"
    return None


def on_by_default(method: str, device: torch.device, decoder: bool, accumulation: int) -> bool:
    """Where `training.bf16_weights` left empty turns the copy on (when bf16 is used and nothing blocks
    it): full fine-tuning of an encoder on the CPU, one batch per optimizer step (accumulated
    gradients would be summed in bf16). Measured there; elsewhere bf16 autocast stays."""
    return method == "full" and device.type == "cpu" and not decoder and accumulation == 1
