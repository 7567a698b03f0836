"""Continual learning on CLINC150: does `lmforge update` learn new intents without forgetting old ones?

    python bench/continual.py [--epochs 3] [--replay 1500] [--workdir /tmp/lmforge-bench/continual]
    python bench/continual.py --intents 10 --per-intent 20 --epochs 1 --replay 50 --name continual_smoke   # ~3 min check

The 150 in-scope intents are split in two halves (seeded). v1 = MiniLM-L6 fully fine-tuned on the
first 75 intents (train split; dev = their val split), registered and promoted. Then, in one run:
  (a) naive:   continue from v1 on the new 75 intents' training data only (`update --replay 0`)
  (b) lmforge: `update` with a label-balanced replay sample of v1's training data (--replay examples),
               logit-adjusted loss (the default); b_plain: the same without logit adjustment (ablation)
  (c) scratch: train MiniLM from the base weights on both halves (the upper bound)
Each is scored on the official test split: accuracy on the old intents' test examples and on the new
intents'. Wall time of each training (and of the whole update, gate included) is recorded. For the
updates, the gate's own figures (old-set accuracy drop and union-label macro-F1 drop, on the gate's half
of v1's val split, which no checkpoint was chosen on) are recorded next to the measured old-intent drop,
so one can see whether the gate tracks forgetting.
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


def limit(rows: list, intents: set[str], per_intent: int) -> list:
    """The rows of `intents`, at most `per_intent` of each (0: all), in file order."""
    seen: dict[str, int] = {}
    out = []
    for text, label in rows:
        if label in intents and (not per_intent or seen.get(label, 0) < per_intent):
            seen[label] = seen.get(label, 0) + 1
            out.append((text, label))
    return out


def gate_figures(report: dict) -> dict:
    """The gate's numbers over all its old examples (CLINC's v1 has one old set: its val split's gate half)."""
    overall = report["old_overall"]
    return {"old_examples": overall["candidate"]["examples"],
            "old_accuracy_parent": overall["parent"]["accuracy"], "old_accuracy_candidate": overall["candidate"]["accuracy"],
            "old_accuracy_drop_points": overall["accuracy_drop_points"],
            "old_macro_f1_drop_points": overall["macro_f1_drop_points"],
            "answered_with_new_label": overall["answered_with_new_label"],
            "new_macro_f1": report["sets"]["new"]["candidate"]["macro_f1"] if "new" in report["sets"] else None,
            "checkpoint_selection_examples": report["checkpoint_selection"]["examples"],
            "would_pass_default_gate": _passes_defaults(report)}


def _passes_defaults(report: dict) -> bool:
    """Whether the gate at its default thresholds would pass (the bench runs it leniently, to report)."""
    from lmforge.lifecycle.gate import GateThresholds

    d = GateThresholds()
    old_ok = all(s["accuracy_drop_points"] <= d.max_old_accuracy_drop and s["macro_f1_drop_points"] <= d.max_old_drop
                 for s in report["sets"].values() if s["kind"] == "old")
    new = report["sets"].get("new")
    return old_ok and (new is None or new["candidate"]["macro_f1"] >= d.new_floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--replay", type=int, default=1500, help="old examples replayed by (b)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmforge-bench/continual"))
    parser.add_argument("--data", type=Path, default=CLINC)
    parser.add_argument("--name", default="continual")
    parser.add_argument("--intents", type=int, default=150, help="a smoke run: this many intents (half old, half new)")
    parser.add_argument("--per-intent", type=int, default=0, help="a smoke run: at most this many train/val/test "
                                                                   "examples per intent (0: all)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmforge.config import config_from_dict
    from lmforge.lifecycle.gate import GateThresholds
    from lmforge.lifecycle.register import register_run
    from lmforge.lifecycle.update import update
    from lmforge.predictor import Predictor
    from lmforge.lifecycle import Registry
    from lmforge.training.loop import train

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = json.loads(args.data.read_text())
    intents = sorted({label for _, label in data["train"]})
    random.Random(0).shuffle(intents)
    intents = intents[:args.intents]
    half = len(intents) // 2
    old, new = set(intents[:half]), set(intents[half:])
    data = {key: limit(data[key], set(intents), args.per_intent) for key in ("train", "val", "test")}
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

    results: dict = {"dataset": "clinc150 (in-scope intents, official train/val/test)", "old_intents": len(old),
                     "new_intents": len(new), "per_intent_limit": args.per_intent or None,
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
    lenient = GateThresholds(max_old_drop=100.0, new_floor=0.0, max_old_accuracy_drop=100.0)  # shown, not enforced
    for key, replay, tau in (("a_naive", 0, 0.0), ("b_update", args.replay, 1.0), ("b_plain", args.replay, 0.0)):
        start = time.perf_counter()
        version, report = update(registry, "clinc", new_data, replay=replay, logit_adjustment=tau,
                                 output=work / "runs" / key, thresholds=lenient)
        total = time.perf_counter() - start
        train_seconds = report["train_seconds"]
        score(key, version.run_dir, train_seconds, {"update_wall_seconds": round(total, 1), "replayed": report["replayed"],
                                                    "logit_adjustment": tau,
                                                    "gate": {c["name"]: c["detail"] for c in report["checks"]},
                                                    "gate_figures": gate_figures(report)})
    start = time.perf_counter()
    scratch = train(config("clinc-scratch", files["all_train"], files["all_val"]), work, output=work / "runs" / "scratch")
    score("c_scratch", scratch, time.perf_counter() - start)
    v1_old = results["v1"]["old_accuracy"]
    old_drop = {k: round((v1_old - results[k]["old_accuracy"]) * 100, 2) for k in ("a_naive", "b_update", "b_plain", "c_scratch")}
    results["summary"] = {
        "old_drop_points": old_drop,
        # does the gate see forgetting? measured old-intent test drop vs the gate's drops on its own half of v1's val
        "gate_vs_measured": {k: {"measured_old_test_accuracy_drop": old_drop[k],
                                 "gate_old_accuracy_drop": results[k]["gate_figures"]["old_accuracy_drop_points"],
                                 "gate_old_union_macro_f1_drop": results[k]["gate_figures"]["old_macro_f1_drop_points"],
                                 "gate_answered_with_new_label": results[k]["gate_figures"]["answered_with_new_label"]}
                             for k in ("a_naive", "b_update", "b_plain")},
        "b_time_fraction_of_c": round(results["b_update"]["train_wall_seconds"] / results["c_scratch"]["train_wall_seconds"], 3),
        "goal": "(b) loses <= 2 points on old intents, (a) far more; (b) a fraction of (c)'s time"}
    print(json.dumps(results["summary"], indent=2))
    save(args.name, results)


if __name__ == "__main__":
    main()
