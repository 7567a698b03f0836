"""The decision threshold of a multi-label run, tuned on dev after training.

A sigmoid head trained with binary cross-entropy on data where most (example, label) pairs are
negative tends to put even the right labels below 0.5 for a while, so the fixed 0.5 answers "no
label" far too often. After training, lmforge picks the one global threshold that maximises dev
micro-F1 (`evaluation.classification_metrics.tune_threshold`), stores it in labels.json (which
`Predictor.from_run` reads, so evaluate, predict, explain and serve all use it) and records how it
was chosen in run.json and metrics.json, with warnings when the model is still degenerate.
"""

from __future__ import annotations

import numpy as np

from ..evaluation.classification_metrics import micro_f1_at, tune_threshold
from ..runs import LABELS
from ..files import read_json, write_json_atomic

MOSTLY_EMPTY = 0.5  # warn when more than this share of dev examples gets no label at the chosen threshold
TRIVIAL_MARGIN = 0.01  # warn when tuned dev micro-F1 is within this of answering every label everywhere


def choose_threshold(predictor, dev: list) -> dict:
    """Tune the threshold on the dev examples; returns what run.json / metrics.json record."""
    task = predictor.task
    probs = predictor.scores(dev)  # [N, C]
    truth = np.array([[label in ex.labels for label in task.labels] for ex in dev], dtype=bool)  # [N, C]
    tuned = tune_threshold(probs, truth)
    threshold = tuned["threshold"]
    empty = float(((probs >= threshold).sum(axis=1) == 0).mean()) if len(dev) else 0.0
    choice = {"value": threshold, "chosen_on": "dev",
              "method": "one global threshold maximising dev micro-F1 (exact search over the sorted dev scores)",
              "dev_examples": len(dev), "dev_micro_f1_at_0.5": round(tuned["micro_f1_at_0.5"], 5),
              "dev_micro_f1_tuned": round(micro_f1_at(probs, truth, threshold), 5),
              "dev_micro_f1_every_label": round(tuned["trivial_micro_f1"], 5),
              "dev_empty_share": round(empty, 5),
              "dev_empty_share_at_0.5": round(float(((probs >= 0.5).sum(axis=1) == 0).mean()) if len(dev) else 0.0, 5)}
    choice["warnings"] = _warnings(choice)
    return choice


def _warnings(choice: dict) -> list[str]:
    advice = ("train longer (training.epochs) or with larger steps (training.learning_rate, "
              "training.head_learning_rate), and check that the labels follow from the texts")
    out = []
    if choice["dev_empty_share"] > MOSTLY_EMPTY:
        out.append(f"at the tuned threshold {choice['value']:.4f}, {choice['dev_empty_share']:.0%} of the dev examples "
                   f"get no label at all: {advice}")
    if choice["dev_micro_f1_tuned"] <= choice["dev_micro_f1_every_label"] + TRIVIAL_MARGIN:
        out.append(f"dev micro-F1 {choice['dev_micro_f1_tuned']:.4f} is no better than answering every label for every "
                   f"example ({choice['dev_micro_f1_every_label']:.4f}): the model has learned the label frequencies, "
                   f"not the labels; {advice}")
    return out


def save_threshold(run_dir, choice: dict) -> None:
    """Store the threshold where the predictor reads it (labels.json). The record of how it was
    chosen goes into run.json and metrics.json with the rest of the run's figures (finalize_run)."""
    labels = read_json(run_dir / LABELS)
    labels["threshold"] = choice["value"]
    write_json_atomic(run_dir / LABELS, labels)
