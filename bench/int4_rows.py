"""Up to how many rows the exact 4-bit kernels beat the bf16 GEMM (generation/lowbit.py), per layer
kind and end to end, in one run.

    python bench/int4_rows.py [--model smollm2-135m] [--rows 1 4 8 16 32] [--batch-rows 8 16] [--new-tokens 256]

1. Per layer: microseconds per call of `_weight_int4pack_mm_for_cpu` (one part for a 4-bit layer,
   two for the 8-bit LM head) against `F.linear` on the bf16 weight, at each row count.
2. End to end: greedy continuous-batch generation of `--batch-rows` prompts x `--new-tokens` with
   lmforge's limits (MAX_INT4_ROWS) against the earlier single limit of 4 rows for every layer, each
   way in its own process. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402
from generate_concurrency import PROMPTS  # noqa: E402

LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.down_proj", "lm_head"]


def per_layer(model: str, rows: list[int]) -> dict:
    import torch
    import torch.nn.functional as F

    from lmforge.generation.generator import Generator
    from lmforge.generation.lowbit import GROUP

    g = Generator.from_pretrained(model)
    out = {}
    for name in LAYERS:
        mod = g.model.get_submodule(name)
        out[name] = {"parts": len(mod.parts), "shape": list(mod.weight.shape), "us": {}}
        for n in rows:
            x = torch.randn(n, mod.in_features, dtype=torch.bfloat16)

            def int4():
                packed, scales = mod.parts[0]
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, scales)
                for packed, scales in mod.parts[1:]:
                    y += torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, scales)

            def bf16():
                F.linear(x, mod.weight)

            timing = {}
            for kind, fn in (("int4", int4), ("bf16", bf16)):
                for _ in range(3):
                    fn()
                calls = 20 if name == "lm_head" else 100
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                timing[kind] = round((time.perf_counter() - start) / calls * 1e6, 1)
            out[name]["us"][n] = timing
            print(f"{name:34s} parts {len(mod.parts)} rows {n:3d}: int4 {timing['int4']:8.1f} us, bf16 {timing['bf16']:8.1f} us", flush=True)
    return out


def end_to_end(model: str, rows: int, new_tokens: int, limits: str) -> dict:
    """In a child process: greedy continuous generation of `rows` prompts with the given limits."""
    cmd = [sys.executable, __file__, "--child", limits, "--model", model, "--batch-rows", str(rows), "--new-tokens", str(new_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(model: str, rows: int, new_tokens: int, limits: str) -> dict:
    from lmforge.generation import lowbit

    if limits == "earlier":
        lowbit.MAX_INT4_ROWS = {1: 4, 2: 4}
    from lmforge.generation.generator import Generator
    from lmforge.threads import on_short_thread

    g = on_short_thread(lambda: Generator.from_pretrained(model))
    prompts = PROMPTS[:8] * (rows // 8) + PROMPTS[:rows % 8]  # the same 8 prompts as before, repeated
    g.generate(prompts[:2], max_new_tokens=4, continuous=True)  # warm-up
    start = time.perf_counter()
    out = g.generate(prompts, max_new_tokens=new_tokens, batch_size=rows, continuous=True)
    seconds = time.perf_counter() - start
    tokens = sum(o["tokens"] for o in out)
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--name", default="int4_rows")
    parser.add_argument("--child", choices=["earlier", "now"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.batch_rows[0], args.new_tokens, args.child)))
        return
    from lmforge.generation.lowbit import MAX_INT4_ROWS

    layers = per_layer(args.model, args.rows)
    runs = {}
    for rows in args.batch_rows:
        runs[rows] = {limits: end_to_end(args.model, rows, args.new_tokens, limits) for limits in ("earlier", "now")}
        ratio = runs[rows]["now"]["tokens_per_s"] / runs[rows]["earlier"]["tokens_per_s"]
        runs[rows]["ratio_now_over_earlier"] = round(ratio, 2)
        print(f"{rows} rows x {args.new_tokens} tokens: earlier limit (4 rows) {runs[rows]['earlier']['tokens_per_s']} tokens/s, "
              f"now {runs[rows]['now']['tokens_per_s']} tokens/s ({ratio:.2f}x)", flush=True)
    save(args.name, {"model": args.model, "max_int4_rows": {str(k): v for k, v in MAX_INT4_ROWS.items()}, "layers": layers,
                     "new_tokens": args.new_tokens, "generation": runs})


if __name__ == "__main__":
    main()
