"""The bf16 training step eager vs `torch.compile` (inductor, CPU), same model, same batches, one run;
or (mode `nn-dropout`) eager with torch's own `nn.Dropout` instead of lmforge's `FastDropout`.

    python bench/train_compile.py [--task ner|sst2] [--steps 60] [--warm 10] [--modes eager compiled nn-dropout] [--rounds 1]

Issue 16 asks to try torch.compile for the training step and keep it only if it measures faster.
Both modes build the model, optimizer and batch plan through lmforge's own loop (`loop._build`),
take `--warm` steps (the compiled mode compiles there, timed apart), then `--steps` timed optimizer
steps on the same batches. Prints ms per step, real tokens/s, the ratio, the compile time and how
far the compiled losses are from the eager ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data


def prepared(task: str, tmp: Path):
    from lmforge.config import config_from_dict
    from lmforge.training.setup import prepare

    data = shared_data()
    if task == "ner":
        spec = {"task": "token-classification", "data": {"train": str(data / "conll2003/train.iob2.txt"),
                                                          "dev": str(data / "conll2003/valid.iob2.txt")}}
    else:
        lines = (data / "sst2/glue/train.tsv").read_text(encoding="utf-8").splitlines()
        (tmp / "sst2.tsv").write_text("\n".join(lines[:20001]) + "\n", encoding="utf-8")
        spec = {"task": "text-classification", "data": {"train": str(tmp / "sst2.tsv"), "dev": str(data / "sst2/glue/dev.tsv"),
                                                         "text_field": "sentence"}}
    cfg = config_from_dict({"name": "compile", "model": "minilm-l6", **spec, "training": {"epochs": 1, "tensorboard": False}})
    return prepare(cfg, tmp)


def measure(p, mode: str, warm: int, steps: int) -> dict:
    from accelerate import Accelerator

    from lmforge.training.loop import _build
    from lmforge.training.state import TrainState
    from lmforge.training.steps import train_steps

    import lmforge.training.loop as loop

    p.cfg.training.compile = mode == "compiled"  # what `training.compile: true` builds
    fast_dropout = loop.use_fast_dropout
    if mode == "nn-dropout":  # the model keeps nn.Dropout (the code before FastDropout)
        loop.use_fast_dropout = lambda model: 0
    try:
        training = _build(p, Accelerator(cpu=True), None)
    finally:
        loop.use_fast_dropout = fast_dropout
    stepper = training.stepper
    stepper.model.train()
    state, losses, tokens = TrainState(), [], 0
    gen = train_steps(stepper, state, training.lengths, training.plan_args, 1)
    started = time.perf_counter()
    for _ in range(warm):
        next(gen)
    warm_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        s = next(gen)
        losses.append(s.loss_sum / max(1, s.units))
        tokens += s.real_tokens
    seconds = time.perf_counter() - started
    return {"ms_per_step": round(1000 * seconds / steps, 1), "tokens_per_second": round(tokens / seconds, 1),
            "warm_seconds": round(warm_seconds, 1), "losses": [round(x, 5) for x in losses], "bf16": stepper.bf16,
            "fell_back_to_eager": mode == "compiled" and stepper.eager is None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["ner", "sst2"], default="ner")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warm", type=int, default=10)
    parser.add_argument("--modes", nargs="*", default=["eager", "compiled"])
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every mode this many times, the order of the modes reversed every other round; "
                             "ms per step is the median (the first mode measured in a process tends to run slower)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p = prepared(args.task, Path(tmp))
        rounds: dict[str, list[dict]] = {mode: [] for mode in args.modes}
        for r in range(args.rounds):
            for mode in (args.modes if r % 2 == 0 else args.modes[::-1]):
                rounds[mode].append(measure(p, mode, args.warm, args.steps))
                print(f"round {r}", mode, {k: v for k, v in rounds[mode][-1].items() if k != "losses"}, flush=True)
        results = {}
        for mode, runs in rounds.items():
            results[mode] = {**runs[0], "ms_per_step": statistics.median(x["ms_per_step"] for x in runs),
                             "rounds_ms_per_step": [x["ms_per_step"] for x in runs]}
    if "eager" in results and "nn-dropout" in results:
        results["fast_dropout_speedup"] = round(results["nn-dropout"]["ms_per_step"] / results["eager"]["ms_per_step"], 3)
        print(f"FastDropout / nn.Dropout: {results['fast_dropout_speedup']}x per step")
    if "eager" in results and "compiled" in results:
        e, c = results["eager"], results["compiled"]
        results["speedup"] = round(e["ms_per_step"] / c["ms_per_step"], 3)
        results["max_loss_difference"] = max(abs(a - b) for a, b in zip(e["losses"], c["losses"]))
        print(f"compiled / eager: {results['speedup']}x per step; compile + warm-up {c['warm_seconds']} s "
              f"(eager warm-up {e['warm_seconds']} s); max loss difference {results['max_loss_difference']:.5f}")
    save(args.name or f"train_compile_{args.task}", {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
