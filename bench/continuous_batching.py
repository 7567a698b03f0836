"""Greedy benchmark evaluation with static batches vs continuous batching, side by side in one run.

    python bench/continuous_batching.py [--model smollm2-135m] [--benchmark mbpp] [--limit 64] [--max-new-tokens 512]

`lmforge evaluate MODEL --benchmark mbpp` both ways, each in its own process (`--no-continuous-batching`:
batches of `--static-rows` 8 that wait for their longest completion; default: `--continuous-rows` 16,
a finished one replaced by the next problem at once), the order alternated between rounds so that
neither always runs on a warmer machine.
Reported: generation seconds of each, their ratio, pass@1 of each and how many completions are
identical. Issue 16's goal: MBPP-test pass@1 evaluation wall time <= 0.5x static, identical pass@1.
Slow on 2 CPU cores: run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402


def run(model: str, benchmark: str, limit: int | None, max_new_tokens: int, continuous: bool, rows: int, out: Path) -> dict:
    """One evaluation in a fresh process (as `lmforge evaluate` runs it), so that neither way inherits the
    other's threads: PyTorch's OpenMP keeps a thread pool per thread that ran torch work (lmforge/threads.py)."""
    import subprocess

    cmd = [sys.executable, __file__, "--child", "continuous" if continuous else "static", "--model", model, "--benchmark", benchmark,
           "--max-new-tokens", str(max_new_tokens), "--rows", str(rows), "--out", str(out)] + (["--limit", str(limit)] if limit else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_here(model: str, benchmark: str, limit: int | None, max_new_tokens: int, continuous: bool, rows: int, out: Path) -> dict:
    from lmforge.codeeval.run import evaluate_benchmark

    start = time.perf_counter()
    summary = evaluate_benchmark(model, benchmark, limit=limit, max_new_tokens=max_new_tokens, output=out, continuous=continuous,
                                 rows=rows)
    completions = [json.loads(line)["completion"] for line in (out / "results.jsonl").read_text().splitlines()]
    return {"pass@1": summary["pass_at_k"]["pass@1"], "generation_s": round(summary["generation_seconds"], 1),
            "wall_s": round(time.perf_counter() - start, 1), "completions": completions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--benchmark", default="mbpp")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=1, help="rounds; each runs both, the order alternating")
    parser.add_argument("--static-rows", type=int, default=8, help="static batch size")
    parser.add_argument("--continuous-rows", type=int, default=16, help="rows of the continuous batch (lmforge's default)")
    parser.add_argument("--child", choices=["static", "continuous"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--name", help="results file name (default continuous_batching_BENCHMARK)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_here(args.model, args.benchmark, args.limit, args.max_new_tokens, args.child == "continuous", args.rows,
                                  args.out)))
        return
    results: dict[str, list[dict]] = {"static": [], "continuous": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["static", "continuous"] if r % 2 == 0 else ["continuous", "static"]
            for name in order:
                res = run(args.model, args.benchmark, args.limit, args.max_new_tokens, name == "continuous",
                          args.continuous_rows if name == "continuous" else args.static_rows, Path(tmp) / f"{name}-{r}")
                results[name].append(res)
                print(f"round {r} {name:10s}: generation {res['generation_s']:7.1f} s, wall {res['wall_s']:7.1f} s, "
                      f"pass@1 {res['pass@1']:.4f}", flush=True)
    static, continuous = results["static"], results["continuous"]
    gen_static = sum(r["generation_s"] for r in static)
    gen_cont = sum(r["generation_s"] for r in continuous)
    same = sum(a == b for a, b in zip(static[0]["completions"], continuous[0]["completions"]))
    summary = {"model": args.model, "benchmark": args.benchmark, "limit": args.limit, "max_new_tokens": args.max_new_tokens,
               "rounds": args.rounds, "static_rows": args.static_rows, "continuous_rows": args.continuous_rows,
               "static": [{k: v for k, v in r.items() if k != "completions"} for r in static],
               "continuous": [{k: v for k, v in r.items() if k != "completions"} for r in continuous],
               "generation_ratio_continuous_over_static": round(gen_cont / gen_static, 3),
               "identical_completions": f"{same}/{len(static[0]['completions'])}",
               "same_pass_at_1": all(a["pass@1"] == b["pass@1"] for a, b in zip(static, continuous))}
    print(f"continuous / static generation time: {summary['generation_ratio_continuous_over_static']:.3f} "
          f"(goal <= 0.5); identical completions {summary['identical_completions']}; same pass@1: {summary['same_pass_at_1']}")
    save(args.name or f"continuous_batching_{args.benchmark}", summary)


if __name__ == "__main__":
    main()
