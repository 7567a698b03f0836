"""Multi-label classification with MiniLM-L6: does LoRA learn, and what does threshold tuning add?

    python bench/multilabel.py [--methods lora full] [--epochs 2] [--train 600] [--set key=value ...]

Data: CLINC150 utterances (official train / val / test), joined one or two at a time from different
domains; the labels are their domains (10 labels, 1-2 per example, ~85% of the (example, label) pairs
negative). Built with a fixed seed, so every run sees the same examples. For each method the script
reports dev/test micro-F1 at the fixed 0.5 threshold and at the threshold lmforge tuned on dev, and
the share of dev examples that get no label at all.
Results: bench/results/<name>.json. About 1-2 minutes per method on 2 idle CPU cores at the defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data


def build_split(rows: list, domain_of: dict[str, str], n: int, seed: int) -> list[dict]:
    """`n` examples of one or two utterances from different domains; labels = their domains."""
    rng = random.Random(seed)
    by_domain: dict[str, list[str]] = {}
    for text, intent in rows:
        if intent in domain_of:
            by_domain.setdefault(domain_of[intent], []).append(text)
    domains = sorted(by_domain)
    out = []
    for _ in range(n):
        chosen = rng.sample(domains, rng.choice((1, 2)))
        texts = [rng.choice(by_domain[d]) for d in chosen]
        out.append({"text": " ".join(texts), "labels": sorted(chosen)})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def micro_f1(gold: list[list[str]], predicted: list[list[str]]) -> float:
    tp = sum(len(set(g) & set(p)) for g, p in zip(gold, predicted))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    return 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0


def run(method: str, epochs: float, files: dict[str, Path], tmp: Path, overrides: list[str]) -> dict:
    from lmforge.config import apply_overrides, config_from_dict
    from lmforge.predictor import Predictor
    from lmforge.files import read_json
    from lmforge.training.loop import train

    raw = {"name": f"multilabel-{method}", "task": "text-classification", "model": "minilm-l6", "method": method,
           "data": {"train": str(files["train"]), "dev": str(files["dev"]), "test": str(files["test"]),
                    "label_field": "labels", "multi_label": True, "max_length": 64},
           "training": {"epochs": epochs, "tensorboard": False, "batch_size": 16}}
    cfg = config_from_dict(apply_overrides(raw, overrides))
    start = time.perf_counter()
    out = train(cfg, tmp, output=tmp / cfg.name)
    wall = time.perf_counter() - start
    info, metrics, labels = read_json(out / "run.json"), read_json(out / "metrics.json"), read_json(out / "labels.json")
    result = {"learning_rate": cfg.training.learning_rate, "head_learning_rate": cfg.training.head_learning_rate,
              "train_seconds": info["train_seconds"], "wall_seconds": round(wall, 1), "steps": info["steps"],
              "best_step": info["best_step"], "trained_parameters": info["trained_parameters"],
              "threshold": labels.get("threshold", 0.5), "threshold_info": info.get("threshold"), "overrides": overrides}
    # the same run scored at the fixed 0.5 threshold and at the tuned one, on dev and test
    for split in ("dev", "test"):
        rows = [json.loads(line) for line in files[split].read_text().splitlines()]
        gold = [r["labels"] for r in rows]
        for name, threshold in (("at_0.5", 0.5), ("tuned", result["threshold"])):
            predictor = Predictor.from_run(out, threshold=threshold) if "threshold" in labels else Predictor.from_run(out)
            predicted = [p["labels"] for p in predictor.predict([r["text"] for r in rows])]
            result[f"{split}_micro_f1_{name}"] = round(micro_f1(gold, predicted), 4)
            result[f"{split}_empty_share_{name}"] = round(sum(not p for p in predicted) / len(predicted), 4)
    result["metrics"] = metrics
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["lora", "full"])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--train", type=int, default=600, help="training examples")
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. training.head_learning_rate=1e-2")
    parser.add_argument("--name", default="multilabel", help="results file name under bench/results/")
    args = parser.parse_args()
    clinc = shared_data() / "clinc150"
    data = json.loads((clinc / "data_full.json").read_text())
    domain_of = {intent: domain for domain, intents in json.loads((clinc / "domains.json").read_text()).items()
                 for intent in intents}
    results: dict = {"dataset": "CLINC150 utterances joined 1-2 at a time; labels = their domains (10)",
                     "model": "minilm-l6", "epochs": args.epochs,
                     "examples": {"train": args.train, "dev": args.dev, "test": args.test}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"train": write_jsonl(tmp / "train.jsonl", build_split(data["train"], domain_of, args.train, 1)),
                 "dev": write_jsonl(tmp / "dev.jsonl", build_split(data["val"], domain_of, args.dev, 2)),
                 "test": write_jsonl(tmp / "test.jsonl", build_split(data["test"], domain_of, args.test, 3))}
        for method in args.methods:
            print(f"== {method}", flush=True)
            results[method] = run(method, args.epochs, files, tmp, args.set)
            print(method, {k: v for k, v in results[method].items() if k != "metrics"}, flush=True)
    save(args.name, results)


if __name__ == "__main__":
    main()
