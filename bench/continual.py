"""Continual learning on CLINC150: does `lmforge update` learn new intents without forgetting old ones?

    python bench/continual.py [--epochs 3] [--replay 1500] [--workdir /tmp/lmforge-bench/continual]

The 150 in-scope intents are split in two halves (seeded). v1 = MiniLM-L6 fully fine-tuned on the
first 75 intents (train split; dev = their val split), registered and promoted. Then, in one run:
  (a) naive:   continue from v1 on the new 75 intents' training data only (`update --replay 0`)
  (b) lmforge: `update` with a label-balanced replay sample of v1's training data (--replay examples),
               logit-adjusted loss (the default); b_plain: the same without logit adjustment (ablation)
  (c) scratch: train MiniLM from the base weights on both halves (the upper bound)
Each is scored on the official test split: accuracy on the old intents' test examples and on the new
intents'. Wall time of each training (and of the whole update, gate included) is recorded.
Results: bench/results/continual.json. Slow on 2 CPU cores (~15-20 min): run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save

CLINC = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinc150" / "data_full.json"


def write_csv(path: Path, rows: list) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def accuracy(predictor, rows: list) -> float:
    preds = predictor.predict([t for t, _ in rows])
    return round(sum(p["label"] == label for p, (_, label) in zip(preds, rows)) / len(rows), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--replay", type=int, default=1500, help="old examples replayed by (b)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmforge-bench/continual"))
    parser.add_argument("--data", type=Path, default=CLINC)
    parser.add_argument("--name", default="continual")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmforge.config import config_from_dict
    from lmforge.lifecycle.gate import GateThresholds
    from lmforge.lifecycle.register import register_run
    from lmforge.lifecycle.update import update
    from lmforge.predictor import Predictor
    from lmforge.registry import Registry
    from lmforge.training.loop import train

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = json.loads(args.data.read_text())
    intents = sorted({label for _, label in data["train"]})
    random.Random(0).shuffle(intents)
    old, new = set(intents[:75]), set(intents[75:])
    split = lambda rows, keep: [(t, label) for t, label in rows if label in keep]  # noqa: E731
    files = {"old_train": write_csv(work / "old_train.csv", split(data["train"], old)),
             "old_val": write_csv(work / "old_val.csv", split(data["val"], old)),
             "all_train": write_csv(work / "all_train.csv", data["train"]),
             "all_val": write_csv(work / "all_val.csv", data["val"])}
    new_data = work / "new_train.jsonl"
    new_data.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in split(data["train"], new)))
    tests = {"old": split(data["test"], old), "new": split(data["test"], new)}

    def config(name: str, train_file: Path, dev_file: Path) -> object:
        return config_from_dict({"name": name, "task": "text-classification", "model": "minilm-l6", "method": "full",
                                 "data": {"train": str(train_file), "dev": str(dev_file), "max_length": 64},
                                 "training": {"epochs": args.epochs, "batch_size": 16, "tensorboard": False}})

    results: dict = {"dataset": "clinc150 (in-scope intents, official train/val/test)", "old_intents": 75, "new_intents": 75,
                     "epochs": args.epochs, "model": "minilm-l6 (full fine-tuning)", "replay_b": args.replay}

    def score(key: str, run: Path, seconds: float, extra: dict | None = None) -> None:
        predictor = Predictor.from_run(run)
        results[key] = {"old_accuracy": accuracy(predictor, tests["old"]), "new_accuracy": accuracy(predictor, tests["new"]),
                        "train_wall_seconds": round(seconds, 1), **(extra or {})}
        print(key, results[key], flush=True)
        save(args.name, results)

    start = time.perf_counter()
    v1 = train(config("clinc-v1", files["old_train"], files["old_val"]), work, output=work / "runs" / "v1")
    score("v1", v1, time.perf_counter() - start)
    registry = Registry(work / "registry")
    register_run(registry, "clinc", v1)
    registry.promote("clinc", 1)
    lenient = GateThresholds(max_old_drop=100.0, new_floor=0.0)  # the bench reports; the gate is shown, not enforced
    for key, replay, tau in (("a_naive", 0, 0.0), ("b_update", args.replay, 1.0), ("b_plain", args.replay, 0.0)):
        start = time.perf_counter()
        version, report = update(registry, "clinc", new_data, replay=replay, logit_adjustment=tau,
                                 output=work / "runs" / key, thresholds=lenient)
        total = time.perf_counter() - start
        train_seconds = report["train_seconds"]
        score(key, version.run_dir, train_seconds, {"update_wall_seconds": round(total, 1), "replayed": report["replayed"],
                                                    "logit_adjustment": tau,
                                                    "gate": {c["name"]: c["detail"] for c in report["checks"]}})
    start = time.perf_counter()
    scratch = train(config("clinc-scratch", files["all_train"], files["all_val"]), work, output=work / "runs" / "scratch")
    score("c_scratch", scratch, time.perf_counter() - start)
    v1_old = results["v1"]["old_accuracy"]
    results["summary"] = {
        "old_drop_points": {k: round((v1_old - results[k]["old_accuracy"]) * 100, 2) for k in ("a_naive", "b_update", "b_plain", "c_scratch")},
        "b_time_fraction_of_c": round(results["b_update"]["train_wall_seconds"] / results["c_scratch"]["train_wall_seconds"], 3),
        "goal": "(b) loses <= 2 points on old intents, (a) far more; (b) a fraction of (c)'s time"}
    print(json.dumps(results["summary"], indent=2))
    save(args.name, results)


if __name__ == "__main__":
    main()
