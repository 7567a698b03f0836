"""Batch-1 greedy decoding of the packaged SmolLM2-135M: transformers' dynamic KV cache (what lmforge's
Generator runs today) beside a static KV cache with the decode step compiled by torch.compile (inductor),
in one process, interleaved. An experiment towards issue 16's "faster decode step"; nothing in lmforge
uses the compiled path yet.

    python bench/decode_compile.py [--new-tokens 64] [--rounds 3]

Every call generates exactly --new-tokens tokens (end token ignored) for one chat-formatted prompt;
tokens/s = new tokens / wall time of the call (prefill included). The first compiled call pays the
compilation and is reported apart. Greedy tokens are compared between the two paths.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save

PROMPT = "Write a Python function that reverses a string."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="decode_compile", help="results file name under bench/results/")
    args = parser.parse_args()

    import torch
    from transformers import CompileConfig, GenerationConfig

    from lmforge.generation.generator import Generator

    g = Generator.from_pretrained("smollm2-135m")
    ids = torch.tensor([g.encode(PROMPT)])  # [1, L]
    compiled = CompileConfig(mode="default", fullgraph=False)
    compiled._compile_all_devices = True  # transformers compiles on GPUs only unless told
    paths = {"dynamic-cache": {}, "static-cache-compiled": {"cache_implementation": "static", "compile_config": compiled}}

    def run(extra: dict) -> tuple[float, list[int]]:
        cfg = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, top_k=0, num_beams=1,
                               use_cache=True, pad_token_id=g.tokenizer.pad_token_id, **extra)
        with torch.inference_mode():
            start = time.perf_counter()
            out = g.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        return args.new_tokens / (time.perf_counter() - start), out[0, ids.shape[1]:].tolist()

    first_call = {}
    tokens = {}
    for name, extra in paths.items():  # warm-up; the compiled path compiles here
        start = time.perf_counter()
        _, tokens[name] = run(extra)
        first_call[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: first call {first_call[name]} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.rounds):
        for name, extra in paths.items():
            rate, toks = run(extra)
            rates[name].append(round(rate, 2))
            assert toks == tokens[name]
        print(f"round {r + 1}: {({n: v[-1] for n, v in rates.items()})}", flush=True)
    median = {name: statistics.median(v) for name, v in rates.items()}
    ratio = median["static-cache-compiled"] / median["dynamic-cache"]
    same = tokens["dynamic-cache"] == tokens["static-cache-compiled"]
    print(f"\nbatch 1, {args.new_tokens} new tokens, precision {'bf16' if g.bf16 else 'fp32'}: dynamic {median['dynamic-cache']:.1f} tok/s, "
          f"static+compiled {median['static-cache-compiled']:.1f} tok/s = {ratio:.2f}x; first compiled call {first_call['static-cache-compiled']} s; "
          f"same tokens: {same}")
    save(args.name, {"model": "smollm2-135m", "new_tokens": args.new_tokens, "precision": "bf16" if g.bf16 else "fp32",
                     "tokens_per_s": rates, "median_tokens_per_s": median, "ratio": round(ratio, 2), "first_call_s": first_call,
                     "same_tokens": same})


if __name__ == "__main__":
    main()
