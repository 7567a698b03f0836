"""Dropout for training on the CPU with a third of the random-number cost.

`nn.Dropout` on the CPU draws one random number per element through `bernoulli_`: on MiniLM-L6 over
CoNLL-2003 batches its 14 calls took 24 ms of a 165 ms training step (bench/train_compile.py's
batches, torch.profiler). `FastDropout` draws 64-bit integers instead and reads each as three
independent 16-bit numbers (the top 16 bits are left out: the draw spans 2^63 values), so one draw
serves three elements; an element is dropped when its number falls below round(p * 65536), and kept
elements are scaled by 65536 / (65536 - that), so the expected value is unchanged exactly. The rate
differs from p by under 1/131072. Draws come from torch's own generator: seeds and resumed runs
(whose checkpoints restore that generator) give the same masks. On other devices `nn.Dropout` stays.
Measured end to end (bench/train_compile.py --modes eager nn-dropout --rounds 4): the whole training
step 1.05x faster on CoNLL-2003, 1.07x on SST-2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LEVELS = 65536  # values of one 16-bit number


def keep_scale(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """A tensor of `shape`: 0 where an element is dropped, LEVELS / (LEVELS - dropped levels) where kept."""
    n = math.prod(shape)
    draws = -(-n // 3)
    bits = torch.randint(-2**62, 2**62, (draws,), dtype=torch.int64, device=device)
    pieces = bits.view(torch.int16).view(draws, 4)[:, :3]  # bits 0-47 of each draw (little-endian), uniform
    dropped = round(p * LEVELS)
    keep = (pieces >= dropped - LEVELS // 2).reshape(-1)[:n].view(shape)
    scale = torch.tensor(LEVELS / (LEVELS - dropped), dtype=dtype, device=device)
    return torch.where(keep, scale, torch.zeros((), dtype=dtype, device=device))


class FastDropout(nn.Module):
    """`nn.Dropout`'s behaviour (inverted dropout, identity in eval mode) with `keep_scale`'s masks."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        return x * keep_scale(x.shape, self.p, x.dtype, x.device)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every `nn.Dropout` with a positive rate in `model` by a `FastDropout` of the same rate
    (CPU training only; the model's weights and state dict are untouched). Returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped += 1
    return swapped
