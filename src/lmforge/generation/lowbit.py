"""Exact 4-bit packing of Linear layers, for fast CPU decoding of models that came from GGUF.

Decoding one token reads every weight once, so at batch 1 a small decoder is bound by memory
traffic: SmolLM2-135M reads 270 MB per token in bf16 (~25-28 tokens/s here) and only ~70 MB with
4-bit weights. The packaged SmolLM2 *is* a 4-bit model (Q4_1: groups of 32 weights, each
`d * q + m` with q in 0..15; the tied embedding / LM head is Q8_0: `d * q`, q in -127..127), and
its de-quantized fp32 weights still lie exactly on those grids. `pack_exact_lowbit` finds the Linear
layers whose weights lie on such a grid and gives them torch's int4 CPU kernel
(`_weight_int4pack_mm_for_cpu`, bf16 activations); an 8-bit grid is split into two 4-bit halves
(q = 16 * hi + lo). Nothing is approximated beyond bf16 rounding of the group scales, the same
order as casting the weights to bf16. Layers off the grid (fine-tuned or merged weights) are left
alone, so this is safe to run on any model.

The int4 kernel wins for a few rows only, so prompts and large batches still use the bf16 weight,
kept as well. Where it stops winning was chosen end to end, decoding (bench/int4_rows.py, *bf16
machine*, 2026-12-05): greedy continuous batches of 8 rows x 256 tokens ran at 333 tokens/s with
these limits against 211 with 4 rows for every layer (1.58x), 16 rows 415 against 359 (1.15x).
Timing one layer at a time misleads here: repeated calls keep a layer's bf16 weight in cache, which a
real decode step (every layer once) does not, so in isolation bf16 already ties at 8 rows. The
two-part LM head (49152 x 576) computes twice per row; it loses clearly from 8 rows (4,186 vs 2,568 us).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUP = 32  # weights per quantization group along the input dimension (GGUF's block size)
MAX_INT4_ROWS = {1: 16, 2: 4}  # by parts: above this many rows per call the bf16 GEMM is faster than the int4 kernel
TOLERANCE = 1e-3  # largest reconstruction error accepted as "on the grid", in units of the group step


class PackedLinear(nn.Module):
    """A Linear whose weight is exactly the sum of 4-bit group-quantized parts."""

    def __init__(self, linear: nn.Linear, parts: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # shared (e.g. tied with the embedding): used for many rows
        self.bias = linear.bias
        for i, (packed, scales_and_zeros) in enumerate(parts):
            self.register_buffer(f"packed{i}", packed, persistent=False)  # uint8 [out, in / 2]
            self.register_buffer(f"scales{i}", scales_and_zeros, persistent=False)  # bf16 [in / GROUP, out, 2]
        self.parts = parts  # the same tensors, for a lean forward (this runs ~200 times per token)
        self.max_int4_elements = MAX_INT4_ROWS[min(len(parts), 2)] * self.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16 or x.numel() > self.max_int4_elements or not x.is_cpu:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, self.in_features)  # [rows, in]
        if not flat.is_contiguous():
            flat = flat.contiguous()
        packed, scales = self.parts[0]
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, GROUP, scales)  # [rows, out]
        for packed, scales in self.parts[1:]:
            y += torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, GROUP, scales)
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], self.out_features)


def pack_exact_lowbit(model: nn.Module) -> list[str]:
    """Replace every Linear whose fp32 weight lies on a 4-bit affine or 8-bit symmetric group grid
    by a `PackedLinear`. Call before casting the model to bf16. Returns the names replaced."""
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear) or not _packable(child):
                continue
            parts = grid_parts(child.weight.detach())
            if parts is not None:
                setattr(module, child_name, PackedLinear(child, parts))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced


def _packable(linear: nn.Linear) -> bool:
    w = linear.weight
    # the kernel needs whole groups along the input and output rows in multiples of 16
    return w.device.type == "cpu" and w.dtype == torch.float32 and w.shape[1] % GROUP == 0 and w.shape[0] % 16 == 0


def grid_parts(weight: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The int4-packed parts of a weight [out, in] that lies exactly on a grid, else None.
    A cheap look at the first 16 rows rejects most off-grid weights before the full check."""
    for fit in (_affine4, _symmetric8):
        if fit(weight[:16]) is not None:
            parts = fit(weight)
            if parts is not None:
                return [_pack(q, scale, zero) for q, scale, zero in parts]
    return None


def _affine4(w: torch.Tensor):
    """w = scale * q + minimum, q in 0..15, per group (GGUF Q4_1 and similar)."""
    g = w.float().view(w.shape[0], -1, GROUP)  # [out, groups, GROUP]
    low, high = torch.aminmax(g, dim=-1, keepdim=True)
    scale = (high - low) / 15
    q = _on_grid((g - low).div_(torch.where(scale > 0, scale, torch.ones_like(scale))))
    if q is None:
        return None
    # the kernel computes (q - 8) * scale + zero
    return [(q.view_as(w), scale.squeeze(-1), (low + 8 * scale).squeeze(-1))]


def _symmetric8(w: torch.Tensor):
    """w = scale * q, q in -127..127, per group (GGUF Q8_0), as two 4-bit parts: q = 16 * hi + lo."""
    g = w.float().view(w.shape[0], -1, GROUP)
    low, high = torch.aminmax(g, dim=-1, keepdim=True)
    scale = torch.maximum(-low, high) / 127
    q = _on_grid(g / torch.where(scale > 0, scale, torch.ones_like(scale)))
    if q is None:
        return None
    hi = torch.div(q, 16, rounding_mode="floor")  # -8..7
    lo = q.sub_(hi * 16)  # 0..15
    return [(hi.add_(8).view_as(w), (16 * scale).squeeze(-1), torch.zeros_like(scale).squeeze(-1)),
            (lo.view_as(w), scale.squeeze(-1), (8 * scale).squeeze(-1))]


def _on_grid(ratio: torch.Tensor) -> torch.Tensor | None:
    """round(ratio) when every element is within TOLERANCE of an integer, else None. Consumes `ratio`."""
    q = ratio.round()
    if ratio.sub_(q).abs_().amax() > TOLERANCE:
        return None
    return q


def _pack(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)  # [out, in / 2]
    scales_and_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()  # [groups, out, 2]
    return packed, scales_and_zeros
