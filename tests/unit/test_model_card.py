"""The model card and the adapter's portable record of its base model."""

from __future__ import annotations

import hashlib
import json
import shutil

from conftest import make_config, sentiment_rows, write_csv
from lmforge.config import load_config
from lmforge.model_card import portable_base
from lmforge.training.loop import train


def test_lora_run_has_a_card_and_a_portable_adapter(tmp_path, tiny_base):
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(24, 1)), "dev": write_csv(tmp_path / "dev.csv", sentiment_rows(9, 2))}
    run = train(load_config(make_config(tmp_path, tiny_base, data, method="lora", epochs=2)), tmp_path)

    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    base = adapter["base_model_name_or_path"]
    assert not base.startswith("/") and (run / "adapter" / base).resolve() == tiny_base.resolve()

    card = (run / "model" / "README.md").read_text()
    digest = hashlib.sha256((tmp_path / "train.csv").read_bytes()).hexdigest()
    for needle in ("pipeline_tag: text-classification", "## Labels", "`negative`", "`positive`", digest[:16], "| dev |",
                   "AutoModelForSequenceClassification", "## Limitations", "lora adapter"):
        assert needle in card, needle
    assert (run / "adapter" / "README.md").read_text() == card  # not peft's empty template

    # the run still loads and predicts from a new place: nothing refers to the old absolute paths
    moved = shutil.copytree(run, tmp_path / "elsewhere" / "run")
    from lmforge import Predictor

    assert Predictor.from_run(moved).predict(["the movie great was"])[0]["label"] in ("positive", "negative", "neutral")


def test_portable_base_prefers_the_packaged_short_name(tmp_path):
    assert portable_base("minilm-l6", tmp_path / "site-packages" / "gt" / "model", tmp_path / "run" / "adapter") == "minilm-l6"
    assert portable_base(str(tmp_path / "m"), tmp_path / "m", tmp_path / "run" / "adapter") == "../../m"
