"""Training speed, lmforge now against lmforge at an earlier commit, side by side in one run: LoRA SFT on
MBPP train (default) or, with `--job sst2`, MiniLM-L6 full fine-tuning on SST-2.

    python bench/sft_speed.py [--job sft|sst2] [--baseline a4a395e] [--epochs 1] [--rounds 1] [--set KEY=VALUE ...]

Issue 16's goal: LoRA SFT on `mbpp:train` at >= 1.5x the tokens/s of the code when the issue was filed
(commit a4a395e, the parent of the first issue-16 commit), at equal dev loss. Each side writes its
own config with its own `lmforge init --task generation --model smollm2-135m --train mbpp:train`
(so each runs its own defaults: LoRA r=16, the same seeded 10% dev hold-out) and trains it with
`lmforge train` in a fresh process, the earlier side from `git archive BASELINE src` on PYTHONPATH.
Reported per side: training seconds, real tokens/s (run.json), steps, dev loss, peak memory; and the
ratio. `--set training.batch_size=8`: the earlier code's default batch of 16 ran out of this
machine's 24 GB (its full-vocabulary fp32 logits at every position).
Slow on 2 CPU cores (several minutes per side): run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, save, shared_data  # noqa: E402


def checkout(commit: str, into: Path) -> Path:
    """`src/` of `commit`, unpacked under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def init_args(job: str) -> tuple[list[str], list[str]]:
    """`lmforge init` arguments and `train` overrides of a job."""
    if job == "sst2":
        data = shared_data() / "sst2" / "glue"
        return (["--task", "text-classification", "--model", "minilm-l6", "--train", str(data / "train.tsv")],
                ["data.text_field=sentence", f"data.dev={data / 'dev.tsv'}"])
    return ["--task", "generation", "--model", "smollm2-135m", "--train", "mbpp:train"], []


def train(src: Path, work: Path, epochs: float, overrides: list[str], job: str = "sft") -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cli = [sys.executable, "-m", "lmforge.cli"]
    work.mkdir(parents=True)
    args, job_overrides = init_args(job)
    overrides = job_overrides + overrides
    subprocess.run([*cli, "init", *args, "-o", "sft.yaml"], cwd=work, env=env, check=True, capture_output=True)
    peak = work / "peak_kb"  # the training process's peak resident memory, from /usr/bin/time
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak), *cli, "train", "sft.yaml", f"training.epochs={epochs}",
                           *overrides], cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({src}; peak memory {peak.read_text().strip()} kB):\n{proc.stderr[-3000:]}")
    run = Path(proc.stdout.strip().splitlines()[-1])
    run = run if run.is_absolute() else work / run
    info = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    dev = {k: round(metrics["dev"][k], 4) for k in ("loss", "accuracy") if k in metrics["dev"]}
    return {"train_seconds": info["train_seconds"], "tokens_per_second": info["tokens_per_second"], "steps": info["steps"],
            "real_tokens": info.get("real_tokens"), "dev_loss": dev.get("loss"), "dev_accuracy": dev.get("accuracy"),
            "precision": info.get("precision"),
            "peak_memory_gb": round(int(peak.read_text().split()[-1]) / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="a4a395e", help="the earlier commit")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="rounds; each trains both, the order alternating")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for both sides")
    parser.add_argument("--name", default=None, help="results file name (default: sft_speed, or JOB_speed)")
    parser.add_argument("--job", choices=["sft", "sst2"], default="sft",
                        help="sft: LoRA SFT on mbpp:train; sst2: MiniLM-L6 full fine-tuning on SST-2 train (GLUE dev)")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"baseline": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"baseline": checkout(args.baseline, Path(tmp)), "now": ROOT / "src"}
        for r in range(args.rounds):
            for side in (["baseline", "now"] if r % 2 == 0 else ["now", "baseline"]):
                res = train(sources[side], Path(tmp) / f"{side}-{r}", args.epochs, args.set, args.job)
                results[side].append(res)
                print(f"round {r} {side:8s}: {res['train_seconds']:7.1f} s, {res['tokens_per_second']:7.1f} tokens/s, "
                      f"{res['steps']} steps, dev loss {res['dev_loss']}, dev accuracy {res['dev_accuracy']}, "
                      f"peak memory {res['peak_memory_gb']} GB", flush=True)
    speed = {side: sum(r["tokens_per_second"] for r in runs) / len(runs) for side, runs in results.items()}
    ratio = round(speed["now"] / speed["baseline"], 3)
    seconds = {side: sum(r["train_seconds"] for r in runs) for side, runs in results.items()}
    time_ratio = round(seconds["now"] / seconds["baseline"], 3)
    print(f"tokens/s now / {args.baseline}: {ratio:.3f} (sft goal >= 1.5); training time now / {args.baseline}: "
          f"{time_ratio:.3f} (sst2 goal <= 0.6)")
    save(args.name or ("sft_speed" if args.job == "sft" else f"{args.job}_speed"),
         {"job": args.job, "baseline": args.baseline, "epochs": args.epochs, "rounds": args.rounds, "overrides": args.set,
          "runs": results, "ratio_tokens_per_s_now_over_baseline": ratio, "ratio_train_seconds_now_over_baseline": time_ratio})


if __name__ == "__main__":
    main()
