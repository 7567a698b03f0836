"""CoNLL-2003 English NER with MiniLM-L6: test entity F1 (seqeval strict) and training wall time,
for lmforge's defaults with full fine-tuning and with LoRA.

    python bench/conll.py [--methods full lora] [--epochs 3]

Reference on this machine (issue #2): transformers.Trainer recipe test F1 84.8, dev 89.1, 203 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data
from train_speed import lmforge_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--epochs", type=float, default=3)
    args = parser.parse_args()
    data = shared_data() / "conll2003"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            print(f"== {method}", flush=True)
            r = lmforge_run(data / "eng.train", data / "eng.testa", data / "eng.testb", args.epochs, Path(tmp), method)
            r.pop("run")
            results[method] = r
            print(f"{method:5s} test F1 {r['test_f1']:.4f}  dev F1 {r['dev_f1']:.4f}  train {r['train_seconds']:.0f}s  wall {r['wall_seconds']:.0f}s", flush=True)
    save("conll", {"epochs": args.epochs, "results": results})


if __name__ == "__main__":
    main()
