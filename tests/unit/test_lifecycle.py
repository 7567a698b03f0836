"""The lifecycle end to end on tiny models: head growth, L2-SP anchoring, register -> promote ->
update (replay, new label, gate) -> serve registry:NAME (hot swap under load, prediction log,
feedback) -> monitor."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import jsonl, make_config, run_cli, sentiment_rows, write_csv
from lmforge.config import load_config
from lmforge.runs import load_run_config
from lmforge.errors import UserError
from lmforge.lifecycle import Registry
from lmforge.lifecycle.gate import GateThresholds, gate_markdown, gate_report, set_scores
from lmforge.lifecycle.predlog import feedback_since, predictions_since
from lmforge.lifecycle.register import register_run
from lmforge.lifecycle.examples import read_examples
from lmforge.lifecycle.update import gate_split, update
from lmforge.predictor import Predictor
from lmforge.serve.app import create_app
from lmforge.serve.settings import ServeSettings
from lmforge.serve.slots import RegistrySlot
from lmforge.training.loop import train

TEXTS = ["the movie great was", "the plot awful was", "film very superb acting"]


def _two_label_rows(n: int, seed: int) -> list[tuple[str, str]]:
    return [r for r in sentiment_rows(n, seed) if r[1] != "neutral"]


@pytest.fixture(scope="module")
def v1_run(tmp_path_factory, tiny_model) -> Path:
    """positive / negative only: `neutral` arrives with the update."""
    tmp = tmp_path_factory.mktemp("lifecycle-v1")
    data = {"train": write_csv(tmp / "train.csv", _two_label_rows(60, 1)),
            "dev": write_csv(tmp / "dev.csv", _two_label_rows(18, 2)),
            "test": write_csv(tmp / "test.csv", _two_label_rows(18, 3))}
    return train(load_config(make_config(tmp, tiny_model, data, epochs=15)), tmp)


@pytest.fixture(scope="module")
def updated(tmp_path_factory, v1_run):
    """A registry with v1 in production and v2 = update with a new label (neutral)."""
    tmp = tmp_path_factory.mktemp("lifecycle-reg")
    registry = Registry(tmp / "registry")
    register_run(registry, "senti", v1_run)
    registry.promote("senti", 1)
    new = jsonl(tmp / "new.jsonl", [{"text": t, "label": l} for t, l in sentiment_rows(45, 7)])
    version, report = update(registry, "senti", new, epochs=15, output=tmp / "runs" / "senti-v2",
                             thresholds=GateThresholds(max_old_drop=50.0, new_floor=0.0, max_old_accuracy_drop=50.0))
    return registry, version, report, tmp


# --- head growth and anchoring ----------------------------------------------------------------------

def test_grown_head_keeps_old_predictions_identical_before_training(v1_run):
    from lmforge.models.head import fine_tuned_labels, grow_head, head_to_grow
    from lmforge.models.build import load_model
    from transformers import AutoModelForSequenceClassification

    model_dir = v1_run / "model"
    assert fine_tuned_labels(model_dir) == ["negative", "positive"]
    assert head_to_grow(model_dir, ["negative", "positive", "neutral"]) == ["negative", "positive"]
    assert head_to_grow(model_dir, ["positive", "negative", "neutral"]) is None  # order differs: no growth
    predictor = Predictor.from_run(v1_run)
    before = predictor.predict(TEXTS)
    features, _ = predictor.task.encode_for_inference(predictor.examples_from_texts(TEXTS))
    from lmforge.inference import run_model

    old_logits = run_model(predictor.model, features, predictor.tokenizer.pad_token_id)
    grown = load_model(AutoModelForSequenceClassification, model_dir)
    grow_head(grown, ["negative", "positive", "neutral"])
    new_logits = run_model(grown, features, predictor.tokenizer.pad_token_id)
    for old, new in zip(old_logits, new_logits):
        assert new.shape == (3,)
        np.testing.assert_array_equal(new[:2], old)  # old rows bit-identical
        assert new.argmax() == old.argmax()
    assert grown.config.id2label == {0: "negative", 1: "positive", 2: "neutral"}
    assert [p["label"] for p in before] == [["negative", "positive"][int(o.argmax())] for o in old_logits]


def test_anchor_keeps_weights_closer_to_the_start(tmp_path, tiny_model):
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(24, 1)), "dev": write_csv(tmp_path / "dev.csv", sentiment_rows(6, 2))}
    distances = {}
    for strength in (0.0, 50.0):
        cfg = load_config(make_config(tmp_path, tiny_model, data, epochs=3, anchor_strength=strength))
        run = train(cfg, tmp_path, output=tmp_path / f"run-{strength}")
        from safetensors.torch import load_file

        start = load_file(tiny_model / "model.safetensors")
        end = {k.removeprefix("bert."): v for k, v in load_file(run / "model" / "model.safetensors").items()}
        shared = [k for k in start if k.startswith("encoder.") and k in end]
        assert shared
        distances[strength] = sum(float(((end[k].float() - start[k].float()) ** 2).sum()) for k in shared)
    assert distances[50.0] < 0.5 * distances[0.0]


def test_logit_adjusted_loss_is_cross_entropy_on_prior_shifted_logits():
    import torch
    import torch.nn.functional as F

    from lmforge.tasks.classification import ClassificationTask

    task = ClassificationTask(["a", "b", "c"], tokenizer=None, max_length=8)
    offset = task.adjust_for_prior([{"labels": 0}] * 6 + [{"labels": 1}] * 2, tau=1.0)
    # class c never occurs: counted as one example, so its offset is finite
    np.testing.assert_allclose(offset.numpy(), np.log([6 / 9, 2 / 9, 1 / 9]), rtol=1e-6)
    logits, labels = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]]), torch.tensor([1, 0])
    expected = F.cross_entropy(logits + torch.log(torch.tensor([6 / 9, 2 / 9, 1 / 9])), labels, reduction="sum")
    assert torch.isclose(task.loss_sum(logits, {"labels": labels}), expected)
    task.adjust_for_prior([{"labels": 0}] * 6 + [{"labels": 1}] * 2, tau=0.5)
    assert torch.allclose(task.loss_offset, 0.5 * offset)
    with pytest.raises(ValueError):
        ClassificationTask(["a", "b"], None, 8, multi_label=True).adjust_for_prior([], 1.0)


def test_logit_adjustment_removes_the_preference_for_the_frequent_class(tmp_path, tiny_model):
    """Texts that say nothing about the label, 5:1 imbalanced: plain cross-entropy learns to answer the
    frequent class; the logit-adjusted loss leaves the rare class about as likely."""
    rows = [(text, "common" if i % 6 else "rare") for i, (text, _) in enumerate(sentiment_rows(60, 5))]
    data = {"train": write_csv(tmp_path / "train.csv", rows), "dev": write_csv(tmp_path / "dev.csv", rows[:12])}
    rare_share = {}
    for tau in (0.0, 1.0):
        cfg = load_config(make_config(tmp_path, tiny_model, data, epochs=2, logit_adjustment=tau))
        run = train(cfg, tmp_path, output=tmp_path / f"run-{tau}")
        probs = [p["probabilities"]["rare"] for p in Predictor.from_run(run).predict([t for t, _ in rows])]
        rare_share[tau] = float(np.mean(probs))
    assert rare_share[0.0] < 0.3
    assert rare_share[1.0] > rare_share[0.0] + 0.15


# --- gate logic ---------------------------------------------------------------------------------------

class _Fixed:
    """A stand-in predictor answering from a table (the gate only calls predict_examples)."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def predict_examples(self, examples):
        return [{"label": self.answers[ex.text], "score": 1.0} for ex in examples]


def _ex(text, label):
    from lmforge.data.types import TextExample

    return TextExample(text=text, labels=[label])


def test_gate_passes_and_fails_on_thresholds():
    old = [_ex("a1", "a"), _ex("a2", "a"), _ex("b1", "b"), _ex("b2", "b")]
    new = [_ex("c1", "c"), _ex("c2", "c")]
    parent = _Fixed({"a1": "a", "a2": "a", "b1": "b", "b2": "b"})
    keeps = _Fixed({"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "c2": "c"})
    forgets = _Fixed({"a1": "a", "a2": "c", "b1": "b", "b2": "b", "c1": "c", "c2": "c"})
    good = gate_report(parent, keeps, {"dev": old}, new)
    assert good["passed"] and [c["passed"] for c in good["checks"]] == [True, True, True]
    assert [c["name"] for c in good["checks"]] == ["old:dev accuracy", "old:dev macro-F1", "new"]
    bad = gate_report(parent, forgets, {"dev": old}, new)
    assert not bad["passed"] and bad["failed"] == ["old:dev accuracy", "old:dev macro-F1"]
    # union labels {a, b, c}: the parent scores 1 on each (c: never gold, never answered); the candidate
    # a: recall 1/2 -> F1 2/3, b: 1, c: answered once, never gold -> 0; macro 5/9 -> a drop of 44.44 points
    assert bad["sets"]["dev"]["macro_f1_drop_points"] == pytest.approx(44.44, abs=0.01)
    assert bad["sets"]["dev"]["accuracy_drop_points"] == 25.0
    assert bad["sets"]["dev"]["answered_with_new_label"] == 1
    assert bad["old_classes"][0] == {"label": "a", "parent_f1": 1.0, "candidate_f1": pytest.approx(0.66667, abs=1e-4),
                                     "drop_points": pytest.approx(33.33, abs=0.01)}
    lenient = gate_report(parent, forgets, {"dev": old}, new, GateThresholds(max_old_drop=50, new_floor=1.0,
                                                                                max_old_accuracy_drop=30))
    assert lenient["passed"]
    strict_new = gate_report(parent, keeps, {"dev": old}, [_ex("c1", "c"), _ex("a1", "c")], GateThresholds(new_floor=0.9))
    assert not strict_new["passed"] and strict_new["checks"][-1]["name"] == "new"


def test_gate_fails_a_candidate_that_answers_old_examples_with_a_new_label():
    """Issue 11 defect 16: 3 of 200 old examples (10 classes) answered with the new label. Macro-F1 over
    the gold classes loses only 0.77 points (the gate passed); accuracy loses 1.5 and the union-label
    macro-F1, which charges the new label's wrong answers, 9.8: the gate fails."""
    classes = [f"k{i}" for i in range(10)]
    old = [_ex(f"{c}-{j}", c) for c in classes for j in range(20)]
    parent = _Fixed({ex.text: ex.labels[0] for ex in old})
    strays = {"k0-0", "k1-0", "k2-0"}
    candidate = _Fixed({ex.text: "new" if ex.text in strays else ex.labels[0] for ex in old} | {"n1": "new", "n2": "new"})
    gold = [ex.labels[0] for ex in old]
    after = [candidate.answers[ex.text] for ex in old]
    gold_only_drop = (1 - set_scores(gold, after)["macro_f1"]) * 100
    assert gold_only_drop == pytest.approx(0.77, abs=0.01) and gold_only_drop <= GateThresholds().max_old_drop
    report = gate_report(parent, candidate, {"dev": old}, [_ex("n1", "new"), _ex("n2", "new")])
    assert not report["passed"]
    assert report["failed"] == ["old:dev accuracy", "old:dev macro-F1"]
    scores = report["sets"]["dev"]
    assert scores["accuracy_drop_points"] == 1.5 and scores["answered_with_new_label"] == 3
    assert scores["labels_scored"] == 11
    assert scores["macro_f1_drop_points"] == pytest.approx(100 * (1 - (7 + 3 * 38 / 39) / 11), abs=0.01)
    markdown = gate_markdown(report, "update")
    assert "Failed: old:dev accuracy, old:dev macro-F1." in markdown
    assert "| dev | 200 | 100.00 | 98.50 | 1.50 |" in markdown


def test_set_scores_macro_over_gold_classes_only():
    scores = set_scores(["a", "a", "b"], ["a", "c", "b"])  # c is never gold: not in the macro average
    assert set(scores["per_class_f1"]) == {"a", "b"}
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4)


# --- update ------------------------------------------------------------------------------------------

def test_update_grows_the_head_replays_and_registers_a_candidate(updated):
    registry, version, report, tmp = updated
    assert version.version == 2 and version.stage == "candidate" and version.parent == 1
    labels = json.loads((version.run_dir / "labels.json").read_text())["labels"]
    assert labels == ["negative", "positive", "neutral"]  # old order kept, the new label appended
    assert report["new_labels"] == ["neutral"]
    assert report["replayed"] == report["new_examples"]["train"]  # default: as many old as new
    assert report["logit_adjustment"] == 1.0
    assert load_run_config(version.run_dir).training.logit_adjustment == 1.0
    assert {c["name"] for c in report["checks"]} == {"old:dev accuracy", "old:dev macro-F1", "old:test accuracy",
                                                     "old:test macro-F1", "new"}
    assert version.gate["passed"] == report["passed"]
    assert (version.run_dir / "gate.md").read_text().startswith("# update of senti:v1")
    eval_sets = sorted(p.name for p in (version.path / "data" / "eval").iterdir())
    assert eval_sets == ["added-after-v1.jsonl", "dev.jsonl", "test.jsonl"]
    predictor = Predictor.from_run(version.run_dir)
    assert predictor.predict(["the movie okay was"])[0]["label"] in labels
    assert [v.version for v in registry.lineage("senti", 2)] == [2, 1]


def test_gate_split_is_disjoint_stratified_and_stable():
    examples = [_ex(f"a{i}", "a") for i in range(7)] + [_ex(f"b{i}", "b") for i in range(4)] + [_ex("c0", "c")]
    selection, gate = gate_split(examples)
    assert {ex.text for ex in selection}.isdisjoint(ex.text for ex in gate)
    assert len(selection) + len(gate) == len(examples)
    assert sorted(ex.labels[0] for ex in selection) == ["a"] * 3 + ["b"] * 2  # per label, the smaller half
    assert [ex.text for ex in gate if ex.labels[0] == "c"] == ["c0"]  # a label's only example is the gate's
    again = gate_split(list(examples))
    assert [ex.text for ex in again[0]] == [ex.text for ex in selection]


def _rows_of(path: Path) -> list[tuple[str, str]]:
    return [(r["text"], r["label"]) for r in map(json.loads, path.read_text().splitlines())]


def test_update_chooses_its_checkpoint_on_examples_the_gate_never_scores(updated):
    """Issue 11 defect 16: the checkpoint used to be chosen on the very sets the gate then scored."""
    registry, version, report, tmp = updated
    data_dir = Path(report["checkpoint_selection"]["file"]).parent
    selection_rows = _rows_of(data_dir / "dev.jsonl")
    stored = {p.stem: p for p in sorted((version.path / "data" / "eval").glob("*.jsonl"))}
    gate_files = {p.stem: p for p in (data_dir / "gate").glob("*.jsonl")}
    assert set(gate_files) == {"dev", "test", "new"}
    expected_selection = []
    for set_name, gate_name in (("dev", "dev"), ("test", "test"), ("added-after-v1", "new")):
        examples = read_examples(stored[set_name])
        chosen, gated = gate_split(examples)
        expected_selection += [(ex.text, ex.labels[0]) for ex in chosen]
        assert _rows_of(gate_files[gate_name]) == [(ex.text, ex.labels[0]) for ex in gated]
        assert report["sets"][gate_name]["candidate"]["examples"] == len(gated)
        # disjoint by position within each set (texts of the fixture repeat across examples)
        assert len(chosen) + len(gated) == len(examples) and chosen and gated
    assert selection_rows == expected_selection
    assert report["checkpoint_selection"]["examples"] == len(selection_rows)
    assert report["new_examples"]["gate"] == len(_rows_of(gate_files["new"]))


def test_failed_gate_blocks_promotion_unless_forced(updated, tmp_path):
    registry, version, report, tmp = updated
    new = jsonl(tmp_path / "more.jsonl", [{"text": t, "label": l} for t, l in sentiment_rows(30, 9)])
    v3, report3 = update(registry, "senti", new, epochs=1, output=tmp_path / "runs" / "v3",
                         thresholds=GateThresholds(max_old_drop=1.0, new_floor=1.01))
    assert report3["passed"] is False
    with pytest.raises(UserError, match="force"):
        registry.promote("senti", v3.version)
    forced = registry.promote("senti", v3.version, force=True)
    assert forced.forced and forced.stage == "production"
    registry.rollback("senti")
    assert registry.production("senti").version == 1


def test_update_errors_are_clear(tmp_path, updated):
    registry, *_ = updated
    with pytest.raises(UserError, match="no production version"):
        update(Registry(tmp_path / "empty"), "senti", tmp_path / "x.jsonl")
    with pytest.raises(UserError, match="--data"):
        update(registry, "senti", None)
    with pytest.raises(UserError, match="not found"):
        update(registry, "senti", tmp_path / "missing.jsonl")


# --- serving from the registry -------------------------------------------------------------------------

def test_registry_serving_logs_predictions_and_takes_feedback(updated):
    registry, version, report, tmp = updated
    from lmforge.lifecycle.predlog import PredictionLog

    log = PredictionLog(registry.db_path, "senti", store_texts=True)
    slot = RegistrySlot(registry, "senti", poll_s=3600)
    with TestClient(create_app(slot, ServeSettings(), prediction_log=log)) as client:
        body = client.post("/v1/predict", json={"texts": TEXTS}).json()
        assert body["model_version"] == f"senti:v{registry.production('senti').version}"
        ids = [p["prediction_id"] for p in body["predictions"]]
        assert len(set(ids)) == 3
        answer = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": "neutral"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predicted"] == body["predictions"][0]["label"] and answer.json()["stored"]
        missing = client.post("/v1/feedback", json={"prediction_id": "nope", "label": "neutral"})
        assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
        assert client.post("/v1/feedback", json={"prediction_id": ids[0]}).status_code == 422
        metrics = client.get("/metrics").text
        assert 'lmforge_monitor{stat="label_psi"}' in metrics
    rows = predictions_since(registry.db_path, "senti", 0)
    assert [r["id"] for r in rows[-3:]] == ids and rows[-1]["text"] == TEXTS[-1]
    assert all(0 <= r["confidence"] <= 1 and r["length"] == 4 for r in rows[-3:])
    feedback = feedback_since(registry.db_path, "senti", 0)
    assert feedback[-1]["label"] == "neutral" and feedback[-1]["text"] == TEXTS[0]
    # --from-feedback: the corrected label becomes a training example
    from lmforge.lifecycle.update import feedback_examples

    examples = feedback_examples(registry, "senti")
    assert (examples[-1].text, examples[-1].labels) == (TEXTS[0], ["neutral"])


def test_texts_are_hashed_unless_allowed(updated):
    registry, *_ = updated
    from lmforge.lifecycle.predlog import PredictionLog, text_hash

    log = PredictionLog(registry.db_path, "senti-hashed")
    slot = RegistrySlot(registry, "senti", poll_s=3600)
    with TestClient(create_app(slot, ServeSettings(), prediction_log=log)) as client:
        client.post("/v1/predict", json={"texts": ["a secret text"]})
    row = predictions_since(registry.db_path, "senti-hashed", 0)[-1]
    assert row["text"] is None and row["text_hash"] == text_hash("a secret text")


def test_hot_swap_under_load_fails_no_request(updated):
    registry, version, report, tmp = updated
    if registry.production("senti").version != 2:
        registry.promote("senti", 2, force=True)
    slot = RegistrySlot(registry, "senti", poll_s=0.05)
    seen, failures = set(), []
    stop = threading.Event()
    with TestClient(create_app(slot, ServeSettings(max_wait_ms=2))) as client:
        def hammer():
            while not stop.is_set():
                r = client.post("/v1/predict", json={"texts": TEXTS})
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    seen.add(r.json()["model_version"])
        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        registry.rollback("senti")          # -> v1 without restarting
        deadline = time.time() + 20
        while "senti:v1" not in seen and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        assert client.get("/v1/model").json()["version"] == "senti:v1"
    assert failures == []
    assert seen == {"senti:v2", "senti:v1"}
    assert slot.swaps == 1


def test_serving_a_model_without_production_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no production version"):
        RegistrySlot(Registry(tmp_path / "r"), "nothing")


# --- CLI ----------------------------------------------------------------------------------------------

def test_cli_registry_update_and_monitor(tmp_path, v1_run):
    reg = tmp_path / "reg"
    r = run_cli("registry", "add", "senti", v1_run, "--registry", reg)
    assert r.returncode == 0, r.stderr
    assert "senti:v1" in r.stdout
    assert run_cli("registry", "promote", "senti", "1", "--registry", reg).returncode == 0
    # one text under three labels: no model reaches a new-data macro-F1 of 1, so the gate must fail
    new = jsonl(tmp_path / "new.jsonl", [{"text": "the film okay was", "label": ["positive", "negative", "neutral"][i % 3]}
                                         for i in range(30)])
    r = run_cli("update", "senti", "--data", new, "--epochs", "2", "--new-floor", "1.0", "--registry", reg,
                "--output", "runs/u", cwd=tmp_path)  # a relative run folder, as users type it
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "u" / "gate.md").is_file() and (tmp_path / "runs" / "u-data" / "train.jsonl").is_file()
    assert "FAILED" in r.stdout and "--force" in r.stdout
    r = run_cli("registry", "promote", "senti", "2", "--registry", reg)
    assert r.returncode == 2 and "gate" in r.stderr and "--force" in r.stderr
    r = run_cli("registry", "list", "senti", "--registry", reg, "--json")
    listed = json.loads(r.stdout)
    assert [(v["version"], v["stage"], v["gate_passed"]) for v in listed] == [(1, "production", None), (2, "candidate", False)]
    r = run_cli("registry", "diff", "senti", "1", "2", "--registry", reg)
    assert r.returncode == 0 and "dev.accuracy" in r.stdout
    r = run_cli("registry", "show", "senti", "2", "--registry", reg)
    assert "senti:v2 <- senti:v1" in r.stdout
    # traffic logged by a server, then the monitor
    from lmforge.lifecycle.predlog import PredictionLog

    registry = Registry(reg)
    log = PredictionLog(registry.db_path, "senti")
    with TestClient(create_app(RegistrySlot(registry, "senti", poll_s=3600), ServeSettings(), prediction_log=log)) as client:
        for _ in range(20):
            client.post("/v1/predict", json={"texts": ["the plot awful was", "the acting awful was"]})
    html = tmp_path / "monitor.html"
    r = run_cli("monitor", "senti", "--since", "1h", "--registry", reg, "--html", html)
    assert r.returncode in (0, 3), r.stderr
    assert "label_shift" in r.stdout and html.read_text().count("data:image/png;base64") >= 1
    r = run_cli("monitor", "senti", "--since", "yesterday", "--registry", reg)
    assert r.returncode == 2 and "--since" in r.stderr
