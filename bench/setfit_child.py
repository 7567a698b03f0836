"""One SetFit run for bench/fewshot.py, in a child process; prints one JSON line (the last line of stdout).

    PYTHONPATH=bench/.setfit-env/site-packages .venv/bin/python bench/setfit_child.py \
        --model MINILM_FOLDER --train few.csv --test test.csv --seed 0 [--num-iterations 20 ...]

Runs on lmforge's interpreter (same torch / transformers / sentence-transformers builds) with SetFit
and its extra packages from bench/.setfit-env/site-packages (bench/setfit_env.sh); nothing is fetched from
the Hugging Face Hub (HF_HUB_OFFLINE=1): the body is the local sentence-transformers folder lmforge uses.

Files: CSV with columns text,label (what bench/fewshot.py writes). Settings (defaults = SetFit's,
and the ones lmforge fewshot is compared at): CosineSimilarityLoss, num_iterations pairs of each
kind per example, 1 epoch, batch 16, body learning rate 2e-5, warmup 0.1, weight decay 0.01,
max_length 128 (lmforge's data.max_length), scikit-learn LogisticRegression() head.

Timing: `train_seconds` runs from loading the model to the end of `trainer.train()` (the contrastive
stage and the head fit), which is what lmforge's run.json train_seconds spans (its model build,
contrastive stage and head fit); `fit_seconds` is `trainer.train()` alone. Test prediction is not timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


def read(path: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="sentence-transformers folder (lmforge's minilm-l6)")
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-iterations", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    import numpy as np
    import setfit
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    x_train, y_train_names = read(args.train)
    x_test, y_test_names = read(args.test)
    labels = sorted(set(y_train_names))
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(y_test_names) - set(index))
    if unknown:
        sys.exit(f"test labels not in train: {unknown[:10]}")
    y_train = [index[name] for name in y_train_names]
    y_test = np.array([index[name] for name in y_test_names])

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        model = SetFitModel.from_pretrained(args.model)  # default head: LogisticRegression()
        targs = TrainingArguments(output_dir=out, batch_size=args.batch_size, num_epochs=args.epochs,
                                  num_iterations=args.num_iterations, body_learning_rate=args.learning_rate,
                                  max_length=args.max_length, seed=args.seed, report_to="none",
                                  save_strategy="no", logging_strategy="no", show_progress_bar=False)
        trainer = Trainer(model=model, args=targs, train_dataset=Dataset.from_dict({"text": x_train, "label": y_train}))
        fit_start = time.perf_counter()
        trainer.train()
        end = time.perf_counter()
        predictions = np.asarray(model.predict(x_test, batch_size=64, show_progress_bar=False))
    accuracy = float((predictions.astype(int) == y_test).mean())
    print(json.dumps({"test_accuracy": round(accuracy, 4), "train_seconds": round(end - start, 2),
                      "fit_seconds": round(end - fit_start, 2), "train_examples": len(x_train),
                      "test_examples": len(x_test), "pairs": 2 * args.num_iterations * len(x_train),
                      "steps": -(-2 * args.num_iterations * len(x_train) // args.batch_size) * args.epochs,
                      "setfit": setfit.__version__, "torch_threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
