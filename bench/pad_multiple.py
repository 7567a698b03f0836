"""Training time with batch lengths padded to a multiple of 8 against padded to the longest example,
in fp32 and (where the CPU has native bf16) bf16, in one run.

    python bench/pad_multiple.py [--rows 20000] [--epochs 1]

MiniLM-L6 full fine-tuning on a seeded sample of SST-2 train (13.3 tokens a sentence: padding to 8
adds a quarter of the tokens a step computes, see bench/padding_share.py), GLUE dev as dev, batch 32,
otherwise lmforge defaults; each configuration trains the same examples in the same order. Reports
training seconds (dev evaluation excluded) and dev accuracy. The default `training.pad_to_multiple_of: 1`
comes from this bench (padding to 8 was the default before, for bf16 kernels: slower in both precisions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data  # noqa: E402
from multilingual import sst2_sample  # noqa: E402


def run(train: Path, precision: str, multiple: int, epochs: float, tmp: Path) -> dict:
    from lmforge.config import config_from_dict
    from lmforge.files import read_json
    from lmforge.training.loop import train as train_run

    name = f"sst2-{precision}-pad{multiple}"
    cfg = config_from_dict({"name": name, "task": "text-classification", "model": "minilm-l6",
                            "data": {"train": str(train), "dev": str(shared_data() / "sst2" / "glue" / "dev.tsv"), "text_field": "sentence"},
                            "training": {"epochs": epochs, "batch_size": 32, "tensorboard": False, "precision": precision,
                                         "pad_to_multiple_of": multiple}})
    out = train_run(cfg, tmp, output=tmp / name)
    info, metrics = read_json(out / "run.json"), read_json(out / "metrics.json")
    return {"train_seconds": info["train_seconds"], "dev_accuracy": round(metrics["dev"]["accuracy"], 4), "steps": info["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=float, default=1)
    args = parser.parse_args()
    import torch

    from lmforge.models.build import bf16_supported

    precisions = ["fp32", "bf16"] if bf16_supported(torch.device("cpu")) else ["fp32"]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        train = sst2_sample(tmp, args.rows)
        for precision in precisions:
            for multiple in (8, 1):
                key = f"{precision}/pad{multiple}"
                results[key] = run(train, precision, multiple, args.epochs, tmp)
                print(key, results[key], flush=True)
    ratios = {p: round(results[f"{p}/pad8"]["train_seconds"] / results[f"{p}/pad1"]["train_seconds"], 2) for p in precisions}
    print(f"training time pad 8 / pad 1: {ratios}")
    save("pad_multiple", {"rows": args.rows, "epochs": args.epochs, "results": results, "time_ratio_pad8_over_pad1": ratios})


if __name__ == "__main__":
    main()
