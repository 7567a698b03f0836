"""Every trainable path: overfit a tiny model, save, reload, and get identical predictions from
lmforge, from plain transformers (model/) and from peft (adapter/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lmforge.config import load_config
from lmforge.predictor import Predictor
from lmforge.training.loop import train

from conftest import make_config

# (task, method, epochs, learning rate, dev floor). Full fine-tuning starts from the random tiny
# model and must overfit. Sequence classification under peft adapts the tiny base trained on the
# sentiment fixture (a frozen random encoder gives a pooled [CLS] vector with no signal to adapt);
# token classification under peft adapts the random tiny model, whose token states do differ.
CASES = [
    ("text-classification", "full", 30, 5e-3, 0.9),
    ("text-classification", "lora", 15, 5e-3, 0.9),
    ("text-classification", "ia3", 15, 5e-2, 0.9),
    ("text-classification", "prefix", 15, 3e-2, 0.75),
    ("token-classification", "full", 15, 5e-3, 0.9),
    ("token-classification", "lora", 15, 5e-3, 0.5),
    ("token-classification", "ia3", 15, 5e-2, 0.1),
    ("token-classification", "prefix", 15, 3e-2, 0.1),
]


def _base(task, method, tiny_model, tiny_base):
    return tiny_base if task == "text-classification" and method != "full" else tiny_model


def _train(tmp_path, tiny_model, data, task, method, **training):
    path = make_config(tmp_path, tiny_model, data, task, method, **training)
    return train(load_config(path), path.parent)


@pytest.mark.parametrize("task,method,epochs,lr,floor", CASES)
def test_overfit_save_reload_identical(tmp_path, tiny_model, tiny_base, cls_data, ner_data, task, method, epochs, lr, floor):
    data = cls_data if task == "text-classification" else ner_data
    run = _train(tmp_path, _base(task, method, tiny_model, tiny_base), data, task, method, epochs=epochs, learning_rate=lr)
    metrics = json.loads((run / "metrics.json").read_text())
    key = "accuracy" if task == "text-classification" else "f1"
    assert metrics["dev"][key] >= floor, metrics
    losses = [r["loss"] for r in map(json.loads, (run / "logs" / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert min(losses[1:]) < losses[0] * 0.9, losses
    for name in ("config.yaml", "labels.json", "metrics.json", "run.json", "model/config.json", "model/model.safetensors",
                 "model/tokenizer.json", "eval/dev/report.md", "eval/test/report.json", "logs/metrics.jsonl"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints").exists()
    assert (run / "adapter").is_dir() == (method != "full")

    texts = ["the movie was very good", "awful plot", "book a table"] if task == "text-classification" else \
        ["alice visited paris", "bob works for acme in berlin", "the globex office in london"]
    first = Predictor.from_run(run, bf16=False).predict(texts)
    again = Predictor.from_run(run, bf16=False).predict(texts)
    assert first == again
    if task == "token-classification" and floor >= 0.9:
        assert first[0]["entities"][0] == {**first[0]["entities"][0], "type": "PER", "text": "alice", "start": 0, "end": 5}
        locs = [e for e in first[1]["entities"] if e["type"] == "LOC"]
        assert locs and texts[1][locs[0]["start"]:locs[0]["end"]] == "berlin"


@pytest.mark.parametrize("task,method", [("text-classification", "full"), ("text-classification", "lora"),
                                         ("token-classification", "full"), ("token-classification", "lora"),
                                         ("token-classification", "ia3")])
def test_plain_transformers_and_peft_load_same_predictions(tmp_path, tiny_model, tiny_base, cls_data, ner_data, task, method):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    data = cls_data if task == "text-classification" else ner_data
    run = _train(tmp_path, _base(task, method, tiny_model, tiny_base), data, task, method, epochs=3)
    predictor = Predictor.from_run(run, bf16=False)
    texts = ["the film was great", "alice visited london today"]
    ours = predictor.predict(texts)
    cls = AutoModelForSequenceClassification if task == "text-classification" else AutoModelForTokenClassification
    plain = cls.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    labels = json.loads((run / "labels.json").read_text())["labels"]
    assert [plain.config.id2label[i] for i in range(len(labels))] == labels
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = plain(**enc).logits
    if task == "text-classification":
        probs = torch.softmax(logits, -1)
        for row, pred in zip(probs, ours):
            assert labels[int(row.argmax())] == pred["label"]
            assert np.allclose([pred["probabilities"][l] for l in labels], row.numpy(), atol=1e-5)
    else:
        for i, pred in enumerate(ours):
            word_ids = enc.word_ids(i)
            firsts = [j for j, w in enumerate(word_ids) if w is not None and (j == 0 or word_ids[j - 1] != w)]
            # lmforge's decoding over the plain model's first-piece log-probabilities: the best valid IOB2 path,
            # scored with the training tag bigrams of labels.json times their tuned weight
            from lmforge.tasks.iob_viterbi import allowed_transitions, best_valid_path
            saved = json.loads((run / "labels.json").read_text())["transitions"]
            scores = (saved["weight"] * np.array(saved["first"]), saved["weight"] * np.array(saved["pairs"]))
            logp = torch.log_softmax(logits[i, firsts].double(), -1).numpy()
            plain_tags = [labels[k] for k in best_valid_path(logp, *allowed_transitions(labels), scores)]
            assert plain_tags == pred["tags"]
    if method != "full":  # the adapter loads with peft on the base model and agrees with the merged model
        from peft import PeftModel

        base_path = yaml.safe_load((run / "config.yaml").read_text())["model"]
        base = cls.from_pretrained(base_path, num_labels=len(labels), id2label=dict(enumerate(labels)), ignore_mismatched_sizes=True)
        peft_model = PeftModel.from_pretrained(base, run / "adapter").eval()
        with torch.no_grad():
            peft_logits = peft_model(**enc).logits
        assert torch.allclose(peft_logits, logits, atol=1e-4)


def test_multilabel_and_pairs(tmp_path, tiny_model):
    from conftest import jsonl

    rows = []
    for i in range(60):
        labels = []
        text = []
        if i % 2 == 0:
            text.append("rain"); labels.append("weather")
        if i % 3 == 0:
            text.append("card"); labels.append("banking")
        text.append("today")
        rows.append({"text": " ".join(text), "text2": "please", "labels": labels})
    train_path = jsonl(tmp_path / "train.jsonl", rows)
    dev_path = jsonl(tmp_path / "dev.jsonl", rows[:12])
    path = make_config(tmp_path, tiny_model, {"train": train_path, "dev": dev_path}, epochs=40, learning_rate=2e-3)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(multi_label=True, label_field="labels", text_pair_field="text2")
    path.write_text(yaml.safe_dump(cfg))
    run = train(load_config(path), tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["micro_f1"] > 0.9
    preds = Predictor.from_run(run, bf16=False).predict([("rain card today", "please"), ("today", "please")])
    assert sorted(preds[0]["labels"]) == ["banking", "weather"]
    assert preds[1]["labels"] == []


def test_ner_tag_transitions_tuned_on_dev_and_used_everywhere(tmp_path, tiny_model, ner_data):
    """A NER run stores its training tag bigrams and the dev-tuned weight in labels.json; the dev figure
    of metrics.json is the one at that weight; a run saved before bigrams existed decodes without them."""
    from lmforge.data.load import read_split
    from lmforge.tasks.iob_viterbi import WEIGHTS

    run = _train(tmp_path, tiny_model, ner_data, "token-classification", "full", epochs=3)
    labels = json.loads((run / "labels.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    chosen = metrics["transitions"]
    assert labels["transitions"]["weight"] == chosen["value"] in WEIGHTS
    assert info["transitions"] == chosen and chosen["chosen_on"] == "dev" and chosen["dev_examples"] == 10
    by_weight = chosen["dev_f1_by_weight"]
    assert set(by_weight) == {str(w) for w in WEIGHTS}
    assert by_weight[str(chosen["value"])] == max(by_weight.values())
    assert all(by_weight[str(w)] < max(by_weight.values()) for w in WEIGHTS if w < chosen["value"])  # smallest on a tie
    assert round(metrics["dev"]["f1"], 5) == by_weight[str(chosen["value"])]
    pairs = np.exp(np.array(labels["transitions"]["pairs"]))
    assert np.allclose(pairs.sum(axis=1), 1.0, atol=1e-4) and len(pairs) == len(labels["labels"])

    cfg = load_config(run / "config.yaml")
    dev, _ = read_split(cfg, ner_data["dev"])
    assert round(Predictor.from_run(run, bf16=False).evaluate(dev)[0]["f1"], 5) == by_weight[str(chosen["value"])]
    # the predictor decodes with what labels.json holds: bigrams that forbid leaving O leave no entity
    n = len(labels["labels"])
    forced = dict(labels)
    forced["transitions"] = {**labels["transitions"], "weight": 1.0, "first": [0.0] + [-1e4] * (n - 1),
                             "pairs": [[0.0] + [-1e4] * (n - 1)] * n}
    (run / "labels.json").write_text(json.dumps(forced))
    assert all(not p["entities"] for p in Predictor.from_run(run, bf16=False).predict_examples(dev))
    del labels["transitions"]  # as runs saved before this existed
    (run / "labels.json").write_text(json.dumps(labels))
    old = Predictor.from_run(run, bf16=False)
    assert old.task.tag_transitions is None
    assert round(old.evaluate(dev)[0]["f1"], 5) == by_weight["0.0"]


@pytest.mark.parametrize("damage", [{"weight": -1.0}, {"first": [0.0]}, {"pairs": [[0.0]]}, {"weight": "heavy"}])
def test_damaged_tag_transitions_are_a_clear_error(tmp_path, tiny_model, ner_data, damage):
    from lmforge.errors import UserError

    run = _train(tmp_path, tiny_model, ner_data, "token-classification", "full", epochs=1)
    labels = json.loads((run / "labels.json").read_text())
    labels["transitions"].update(damage)
    (run / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(UserError, match="labels.json: not a valid labels.json .*the run folder is damaged"):
        Predictor.from_run(run, bf16=False)


@pytest.mark.parametrize("task,precision,average_last", [("token-classification", "fp32", None), ("token-classification", "auto", None),
                                                         ("text-classification", "fp32", None), ("token-classification", "fp32", 2)])
def test_end_of_run_reuses_the_dev_logits_of_the_kept_weights(tmp_path, tiny_model, cls_data, ner_data, monkeypatch,
                                                               task, precision, average_last):
    """The loop's dev logits of the weights it keeps are what the saved model gives, bit for bit, so the
    end of the run decodes them instead of running dev again; averaged weights are run again."""
    import lmforge.predictor as predictor_module
    import lmforge.training.finalize as finalize
    import lmforge.training.transitions as transitions
    from lmforge.data.load import read_split
    from lmforge.inference import run_batches

    reused, passes = [], []
    real_encoded = finalize._encoded_dev
    monkeypatch.setattr(finalize, "_encoded_dev", lambda *a: reused.append(real_encoded(*a)) or reused[-1])
    for module in (predictor_module, transitions):  # the forward passes the end of the run makes
        monkeypatch.setattr(module, "run_batches", lambda features, *a, _real=module.run_batches, **k:
                            passes.append(len(features)) or _real(features, *a, **k))
    data = ner_data if task == "token-classification" else cls_data
    training = {"average_last": average_last} if average_last else {}
    run = _train(tmp_path, tiny_model, data, task, "full", epochs=3, precision=precision, **training)
    predictor = Predictor.from_run(run)
    dev, _ = read_split(load_config(run / "config.yaml"), data["dev"])
    features, _ = predictor.task.encode_for_inference(dev)
    if average_last:
        assert reused == [] and len(passes) == 2  # dev and test
        return
    assert len(passes) == 1  # test only
    (_, kept), = reused
    fresh = run_batches(features, predictor.tokenizer.pad_token_id, predictor.forward)
    assert len(kept) == len(fresh) and all(np.array_equal(a, b) for a, b in zip(kept, fresh))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"] == predictor.task.headline(predictor.evaluate(dev)[0])
