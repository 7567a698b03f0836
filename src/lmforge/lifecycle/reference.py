"""What monitoring compares live traffic with, kept in every text-classification version folder:

    reference.json    the model's predictions on its evaluation sets at registration: predicted-label
                      counts, confidences, lengths (words), OOV rates, accuracy (`reference_stats`)
    data/vocab.txt    the training vocabulary, one word a line (the out-of-vocabulary rate)

`register` writes them; the server and `lmforge monitor` read them (`load_reference`, `load_vocab`).
"""

from __future__ import annotations

from pathlib import Path

from ..data.types import TextExample
from ..files import read_json
from .examples import oov_rate, words

REFERENCE_FILE = "reference.json"
VOCAB_FILE = "data/vocab.txt"


def label_and_confidence(prediction: dict) -> tuple[str | None, float | None]:
    """The (label, confidence) a classification prediction is logged and monitored by."""
    if "label" in prediction:
        return prediction["label"], float(prediction["score"])
    if "labels" in prediction:
        probs = prediction.get("probabilities") or {}
        return "|".join(prediction["labels"]) or "(none)", float(max(probs.values())) if probs else None
    return None, None


def reference_stats(predictor, examples: list[TextExample], vocab: set[str]) -> dict:
    """What monitoring compares live traffic with: the model's predictions on in-distribution data."""
    predictions = predictor.predict_examples(examples) if examples else []
    counts: dict[str, int] = {}
    confidences, lengths, oovs, correct = [], [], [], 0
    for ex, pred in zip(examples, predictions):
        label, confidence = label_and_confidence(pred)
        counts[label] = counts.get(label, 0) + 1
        confidences.append(round(confidence, 5))
        tokens = words(ex.text)
        lengths.append(len(tokens))
        oovs.append(round(oov_rate(tokens, vocab), 4))
        correct += int(ex.labels[:1] == [label])
    return {"label_counts": counts, "confidences": confidences, "lengths": lengths, "oov_rates": oovs,
            "accuracy": correct / len(examples) if examples else None, "examples": len(examples)}


def load_vocab(version_path: Path) -> frozenset[str]:
    """The training vocabulary of a version (empty when it keeps none)."""
    path = Path(version_path) / VOCAB_FILE
    return frozenset(path.read_text(encoding="utf-8").split()) if path.is_file() else frozenset()


def load_reference(version_path: Path) -> dict | None:
    """The monitoring reference of a version (None when it has none: not text classification)."""
    path = Path(version_path) / REFERENCE_FILE
    return read_json(path) if path.is_file() else None
