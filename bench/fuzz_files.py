"""Soak test: malformed data files through `lmforge init`, `validate` and `train --max-steps 1`.

    python bench/fuzz_files.py [--n 50] [--seed 0] [--train-every 10] [--name fuzz_files]

Generates N damaged files of each kind (classification CSV/TSV/JSONL, NER CoNLL/JSONL, generation
JSONL; the generators of tests/malformed_files.py, shared with tests/unit/test_data_fuzz.py) and
runs the commands in process on tiny random-init models built in a temporary folder. Tallies exit
0, exit 2, exit 1 (a bug), tracebacks and run folders left behind by a failed train; every bug is
listed with its kind, damage and seed so that `malformed_file(random.Random(seed), kind)`
reproduces the file. Results: bench/results/<name>.json. About 0.3-2 s per file on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import malformed_files as mf  # noqa: E402


def run(n: int, seed: int, train_every: int = 10, folder: Path | None = None) -> dict:
    """`n` damaged files of each kind (file i of a kind uses seed `seed * 1_000_003 + i`); `train
    --max-steps 1` on every `train_every`-th file (0: never). Returns the tally and the bugs found."""
    from conftest import build_tiny_decoder, build_tiny_model

    with tempfile.TemporaryDirectory(prefix="lmforge-fuzz-") as tmp:
        root = Path(folder or tmp)
        models = {"encoder": build_tiny_model(root / "tiny-bert"), "decoder": build_tiny_decoder(root / "tiny-llama")}
        outcomes: list[mf.Outcome] = []
        by_command: dict[str, list[mf.Outcome]] = {}
        bugs: list[dict] = []
        damage_seen: dict[str, int] = {}
        start = time.perf_counter()
        for i in range(n):
            for kind in mf.KINDS:
                case_seed = seed * 1_000_003 + i
                content, damage = mf.malformed_file(random.Random(case_seed), kind)
                for name in damage:
                    damage_seen[name] = damage_seen.get(name, 0) + 1
                model = models["decoder" if kind == "sft-jsonl" else "encoder"]
                train = bool(train_every) and i % train_every == 0
                results = mf.check_file(root / f"{kind}-{i}", kind, content, model, train=train)
                outcomes += results
                for o in results:
                    by_command.setdefault(o.command, []).append(o)
                    if o.bug:
                        bugs.append({"kind": kind, "seed": case_seed, "damage": damage, "command": o.command, "exit": o.code,
                                     "run_folder_left": o.run_folder_left, "stderr": o.stderr[-1500:]})
        seconds = time.perf_counter() - start
    return {"files": n * len(mf.KINDS), "files_per_kind": n, "seed": seed, "train_every": train_every,
            "seconds": round(seconds, 1), "outcomes": mf.tally(outcomes),
            "by_command": {c: mf.tally(os) for c, os in by_command.items()},
            "damage_applied": dict(sorted(damage_seen.items())), "bugs": bugs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="damaged files of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-every", type=int, default=10, help="train --max-steps 1 on every k-th file (0: never)")
    parser.add_argument("--name", default="fuzz_files", help="results file name")
    args = parser.parse_args()
    result = run(args.n, args.seed, args.train_every)
    print(json.dumps({k: v for k, v in result.items() if k not in ("bugs", "damage_applied")}, indent=2))
    for bug in result["bugs"][:20]:
        print(f"BUG {bug['kind']} seed {bug['seed']} {bug['damage']}: {bug['command']} exit {bug['exit']}\n{bug['stderr']}")
    from common import save

    save(args.name, result)
    sys.exit(1 if result["bugs"] else 0)


if __name__ == "__main__":
    main()
