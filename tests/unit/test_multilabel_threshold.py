"""Multi-label decision threshold: tuned on dev after training, stored in the run, used by every
prediction path, overridable, and loud when the model predicts nothing (issue 11, defect 12)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import jsonl, make_config
from lmforge.config import load_config
from lmforge.data.types import TextExample
from lmforge.errors import UserError
from lmforge.evaluation.classification_metrics import micro_f1_at, multilabel_report, tune_threshold
from lmforge.predictor import Predictor
from lmforge.training.loop import train
from lmforge.training.threshold import choose_threshold

KEYWORDS = {"weather": "rain", "banking": "card", "travel": "flight", "food": "table", "film": "movie", "books": "book"}


# --- tuning ---------------------------------------------------------------------------------------

def test_tune_threshold_hand_computed():
    # 0.5 predicts nothing; any cut between 0.2 and 0.25 predicts exactly the three positives
    probs = np.array([[0.30, 0.10], [0.20, 0.25], [0.05, 0.40]])
    truth = np.array([[1, 0], [0, 1], [0, 1]])
    tuned = tune_threshold(probs, truth)
    assert tuned["threshold"] == pytest.approx(0.225)  # the midpoint of the cut, not a dev score
    assert tuned["micro_f1"] == 1.0 and tuned["micro_f1_at_0.5"] == 0.0
    assert tuned["trivial_micro_f1"] == pytest.approx(2 * 3 / (6 + 3))
    assert micro_f1_at(probs, truth, tuned["threshold"]) == 1.0


def test_tune_threshold_is_the_exact_optimum():
    rng = np.random.default_rng(0)
    truth = rng.random((80, 7)) < 0.2
    probs = np.clip(0.25 * truth + rng.random((80, 7)) * 0.5, 0, 1).round(3)  # ties included
    tuned = tune_threshold(probs, truth)
    grid = max(micro_f1_at(probs, truth, t) for t in np.unique(probs))
    assert tuned["micro_f1"] == pytest.approx(grid)
    assert micro_f1_at(probs, truth, tuned["threshold"]) == pytest.approx(tuned["micro_f1"])


def test_tune_threshold_without_positives_keeps_half():
    assert tune_threshold(np.full((3, 2), 0.7), np.zeros((3, 2)))["threshold"] == 0.5


def test_multilabel_report_counts_empty_predictions_and_ranks():
    report = multilabel_report([["x"], ["y"], ["x", "y"]], [[], ["y"], []], ["x", "y"],
                               np.array([[0.4, 0.1], [0.2, 0.3], [0.45, 0.35]]))
    assert report["empty_predictions"] == pytest.approx(2 / 3)
    assert report["average_precision"] == pytest.approx(1.0)  # every right label outranks every wrong one


class _Scores:
    """A stand-in predictor: fixed probabilities (choose_threshold calls scores and reads task.labels)."""

    def __init__(self, probs, labels=("x", "y")):
        self.task = SimpleNamespace(labels=list(labels))
        self.probs = np.asarray(probs)

    def scores(self, examples):
        return self.probs


def _dev(*label_sets):
    return [TextExample(text=f"t{i}", labels=list(labels)) for i, labels in enumerate(label_sets)]


def test_choose_threshold_records_and_warns_when_the_model_predicts_nothing():
    dev = _dev(["x"], ["y"], ["x"], ["y"])
    learned = choose_threshold(_Scores([[0.3, 0.1], [0.1, 0.3], [0.35, 0.05], [0.2, 0.4]]), dev)
    assert learned["dev_micro_f1_at_0.5"] == 0.0 and learned["dev_micro_f1_tuned"] == 1.0
    assert learned["dev_empty_share_at_0.5"] == 1.0 and learned["dev_empty_share"] == 0.0
    assert learned["warnings"] == []
    # scores that do not depend on the text: tuning can only answer every label, or nothing
    flat = choose_threshold(_Scores(np.full((4, 2), 0.2)), dev)
    assert any("no better than answering every label" in w for w in flat["warnings"])
    # six labels; one example scored sharply, three with every label at 0.05: taking those in would add
    # 18 answers for 3 right ones, so the best threshold leaves them empty
    labels = ["x", "a", "b", "c", "d", "e"]
    empty = choose_threshold(_Scores([[0.9] + [0.0] * 5] + [[0.05] * 6] * 3, labels), _dev(["x"], ["x"], ["x"], ["x"]))
    assert empty["dev_empty_share"] == 0.75 and empty["dev_micro_f1_tuned"] == pytest.approx(0.4)
    assert len(empty["warnings"]) == 1 and "75% of the dev examples get no label at all" in empty["warnings"][0]


# --- a run: tuned, stored, used everywhere ---------------------------------------------------------

def _rows(n: int, seed: int) -> list[dict]:
    """Six labels, one keyword each; most examples carry one label, so ~80% of the pairs are negative."""
    rng = np.random.default_rng(seed)
    names = sorted(KEYWORDS)
    rows = []
    for i in range(n):
        labels = sorted(set(rng.choice(names, size=1 + (i % 4 == 0), replace=False)))
        words = [KEYWORDS[label] for label in labels] + ["the", "very", "today"][: 1 + i % 3]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory, tiny_model) -> tuple[Path, list[dict]]:
    """Trained only a little: the right labels score above the wrong ones but mostly below 0.5."""
    tmp = tmp_path_factory.mktemp("ml-threshold")
    dev_rows = _rows(40, 2)
    data = {"train": jsonl(tmp / "train.jsonl", _rows(120, 1)), "dev": jsonl(tmp / "dev.jsonl", dev_rows)}
    path = make_config(tmp, tiny_model, data, epochs=EPOCHS, learning_rate=LR)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(multi_label=True, label_field="labels")
    path.write_text(yaml.safe_dump(cfg))
    return train(load_config(path), tmp), dev_rows


EPOCHS, LR = 3, 5e-3


def test_run_tunes_the_threshold_on_dev_and_predictor_uses_it(ml_run):
    run, dev_rows = ml_run
    labels = json.loads((run / "labels.json").read_text())
    info = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    record = info["threshold"]
    assert labels["threshold"] == record["value"] == metrics["threshold"]["value"]
    assert record["chosen_on"] == "dev" and record["dev_examples"] == len(dev_rows)
    # at 0.5 the model answers (almost) nothing; the tuned threshold recovers the labels it ranks right
    assert record["dev_empty_share_at_0.5"] > 0.5
    assert record["dev_micro_f1_tuned"] > record["dev_micro_f1_at_0.5"] + 0.3
    assert metrics["dev"]["micro_f1"] == pytest.approx(record["dev_micro_f1_tuned"], abs=1e-4)
    predictor = Predictor.from_run(run, bf16=False)
    assert predictor.task.threshold == record["value"]
    texts = [r["text"] for r in dev_rows]
    scores = predictor.scores(predictor.examples_from_texts(texts))  # [N, C], unrounded
    for pred, row in zip(predictor.predict(texts), scores):
        assert pred["labels"] == [label for label, p in zip(predictor.task.labels, row) if p >= record["value"]]
    report = json.loads((run / "eval" / "dev" / "report.json").read_text())
    assert report["threshold"] == record["value"]
    assert "Decision threshold" in (run / "eval" / "dev" / "report.md").read_text()


def test_threshold_override_and_its_errors(ml_run, cls_run):
    run, dev_rows = ml_run
    texts = [r["text"] for r in dev_rows]
    everything = Predictor.from_run(run, bf16=False, threshold=0.0).predict(texts)
    assert all(len(p["labels"]) == len(KEYWORDS) for p in everything)
    nothing = Predictor.from_run(run, bf16=False, threshold=1.0).predict(texts)
    assert all(p["labels"] == [] for p in nothing)
    with pytest.raises(UserError, match="between 0 and 1"):
        Predictor.from_run(run, threshold=1.5)
    with pytest.raises(UserError, match="multi-label runs only"):
        Predictor.from_run(cls_run, threshold=0.3)


def test_run_without_a_stored_threshold_predicts_at_half(ml_run, tmp_path):
    """Runs trained before tuning existed have no threshold in labels.json: they keep 0.5."""
    import shutil

    run, dev_rows = ml_run
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    labels = json.loads((old / "labels.json").read_text())
    del labels["threshold"]
    (old / "labels.json").write_text(json.dumps(labels))
    assert Predictor.from_run(old).task.threshold == 0.5


# --- the head starts at the label prior ------------------------------------------------------------

def _prepared(tmp_path: Path, model: Path, method: str = "full"):
    from lmforge.training.setup import prepare

    rows = _rows(120, 1)
    data = {"train": jsonl(tmp_path / "train.jsonl", rows), "dev": jsonl(tmp_path / "dev.jsonl", _rows(20, 2))}
    path = make_config(tmp_path, model, data, method=method)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(multi_label=True, label_field="labels")
    path.write_text(yaml.safe_dump(cfg))
    return prepare(load_config(path), tmp_path), rows


@pytest.mark.parametrize("method", ["full", "lora"])
def test_new_multilabel_head_starts_at_the_label_prior(tmp_path, tiny_model, method):
    """A zero bias makes a short run spend its steps learning that most pairs are negative (on the real
    MiniLM with LoRA: every dev prediction empty); the head starts at each label's log-odds instead."""
    import torch

    from lmforge.training.setup import build_model

    p, rows = _prepared(tmp_path, tiny_model, method)
    counts = np.array([sum(label in r["labels"] for r in rows) for label in p.task.labels])
    prior = (counts + 1) / (len(rows) + 2)
    model = build_model(p)
    heads = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name.endswith("classifier")
             or name.endswith("classifier.modules_to_save.default")]
    assert heads
    for head in heads:
        np.testing.assert_allclose(head.bias.detach().numpy(), np.log(prior / (1 - prior)), rtol=1e-5)


def test_a_trained_head_with_the_same_labels_keeps_its_bias(tmp_path, ml_run):
    from safetensors.torch import load_file

    from lmforge.training.setup import build_model

    run, _ = ml_run
    p, _ = _prepared(tmp_path, run / "model")
    trained = load_file(run / "model" / "model.safetensors")["classifier.bias"]
    assert np.array_equal(build_model(p).classifier.bias.detach().numpy(), trained.numpy())
