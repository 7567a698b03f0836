"""SST-2 (GLUE version) dev accuracy with MiniLM-L6, full fine-tuning and LoRA, lmforge defaults.

    python bench/sst2.py [--methods full lora] [--epochs 2]

Goal (issue #2): >= 90.0 dev accuracy; LoRA within 1.0 point of full. Published: MiniLM-L6 91.5.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data


def run(method: str, epochs: float, tmp: Path, overrides: list[str]) -> dict:
    from lmforge.config import apply_overrides, config_from_dict
    from lmforge.files import read_json
    from lmforge.training.loop import train

    data = shared_data() / "sst2" / "glue"
    raw = {"name": f"sst2-{method}", "task": "text-classification", "model": "minilm-l6", "method": method,
           "data": {"train": str(data / "train.tsv"), "dev": str(data / "dev.tsv"), "text_field": "sentence"},
           "training": {"epochs": epochs, "tensorboard": False, "batch_size": 32}}
    cfg = config_from_dict(apply_overrides(raw, overrides))
    start = time.perf_counter()
    out = train(cfg, tmp, output=tmp / cfg.name)
    wall = time.perf_counter() - start
    info, metrics = read_json(out / "run.json"), read_json(out / "metrics.json")
    return {"dev_accuracy": round(metrics["dev"]["accuracy"], 4), "dev_ece": round(metrics["dev"]["ece"], 4),
            "train_seconds": info["train_seconds"], "wall_seconds": round(wall, 1), "steps": info["steps"],
            "trained_parameters": info["trained_parameters"], "learning_rate": cfg.training.learning_rate,
            "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. training.learning_rate=1e-3 peft.dropout=0")
    parser.add_argument("--name", default="sst2", help="results file name under bench/results/")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            print(f"== {method}", flush=True)
            results[method] = run(method, args.epochs, Path(tmp), args.set)
            print(method, results[method], flush=True)
    if "full" in results and "lora" in results:
        results["lora_minus_full"] = round(results["lora"]["dev_accuracy"] - results["full"]["dev_accuracy"], 4)
    save(args.name, {"epochs": args.epochs, "results": results})


if __name__ == "__main__":
    main()
