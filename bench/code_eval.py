"""Code correctness of SmolLM2-135M-Instruct, before and after LoRA SFT on MBPP train, in one run.

    python bench/code_eval.py [--limit N] [--epochs 2] [--skip-base] [--skip-sft] [--run RUN_DIR]

1. pass@1 (greedy) of the base model on HumanEval (164 problems, instruction prompt) and MBPP test
   (task ids 11-510, instruction prompt: problem text + its three asserts), every program run in the
   sandbox (lmforge.codeeval.sandbox);
2. LoRA SFT on MBPP train (task ids 601-974, `mbpp:train`: the same prompt, the reference solution as
   the completion), dev = MBPP validation (511-600);
3. pass@1 of the fine-tuned run on the same two benchmarks.
Wall time of each step is recorded. Runs go to --workdir (default /tmp/lmforge-bench, outside git);
results to bench/results/code_eval.json. Slow on 2 CPU cores: run it alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save


def evaluate(model: str, benchmark: str, limit: int | None, max_new_tokens: int, out: Path) -> dict:
    from lmforge.codeeval.run import evaluate_benchmark

    start = time.perf_counter()
    summary = evaluate_benchmark(model, benchmark, limit=limit, max_new_tokens=max_new_tokens, output=out)
    keep = {k: summary[k] for k in ("problems", "samples", "pass_at_k", "status_counts", "generation_seconds", "execution_seconds")}
    keep["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"{model} {benchmark}: {keep}", flush=True)
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark (default: all)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmforge-bench"))
    parser.add_argument("--run", type=Path, help="an existing SFT run to evaluate instead of training one")
    parser.add_argument("--skip-base", action="store_true")
    parser.add_argument("--skip-sft", action="store_true")
    parser.add_argument("--name", default="code_eval")
    parser.add_argument("--benchmarks", default="humaneval,mbpp", help="comma-separated (default: humaneval,mbpp)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmforge.config import config_from_dict
    from lmforge.training.loop import train

    out = args.workdir / "code-eval"
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    results: dict = {"limit": args.limit, "max_new_tokens": args.max_new_tokens, "prompts": "instruction (see lmforge.codeeval.benchmarks)",
                     "stop": "each completion ends at its first closing ``` fence (evaluate_benchmark's default)"}
    if not args.skip_base:
        results["base"] = {}
        for b in benchmarks:
            results["base"][b] = evaluate("smollm2-135m", b, args.limit, args.max_new_tokens, out / f"base-{b}")
            save(args.name, results)  # partial results survive a stopped run
    if not args.skip_sft:
        run = args.run
        if run is None:
            raw = {"name": "mbpp-lora", "task": "generation", "model": "smollm2-135m", "method": "lora",
                   "data": {"train": "mbpp:train", "dev": "mbpp:validation", "max_length": 512},
                   "training": {"epochs": args.epochs, "batch_size": 8, "tensorboard": False}}
            start = time.perf_counter()
            run = train(config_from_dict(raw), args.workdir, output=args.workdir / "mbpp-lora", overwrite=True)
            results["sft_train_wall_seconds"] = round(time.perf_counter() - start, 1)
        import json

        results["sft_run"] = {"path": str(run), "metrics": json.loads((run / "metrics.json").read_text()),
                              "config": {"epochs": args.epochs, "method": "lora", "data": "mbpp:train"}}
        save(args.name, results)
        results["sft"] = {}
        for b in benchmarks:
            results["sft"][b] = evaluate(str(run), b, args.limit, args.max_new_tokens, out / f"sft-{b}")
            save(args.name, results)
    save(args.name, results)


if __name__ == "__main__":
    main()
