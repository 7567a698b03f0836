"""Few-shot and zero-shot text classification (method: fewshot / zeroshot): the sentence-embedding
classifier, its run folder, every command on it, loading it without lmforge, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import run_cli, sentiment_rows, write_csv
from lmforge.config import ConfigError, load_config
from lmforge.errors import UserError
from lmforge.models.pooled import HEAD_FILE, HEAD_INFO, SentenceClassifier
from lmforge.predictor import Predictor
from lmforge.training.loop import train
from lmforge.training.sentence_methods import draw_pairs


def _config(tmp_path: Path, model: Path, method: str, data: dict, **more) -> Path:
    cfg = {"name": method, "task": "text-classification", "model": str(model), "method": method,
           "output_dir": str(tmp_path / "runs"), "data": data,
           "fewshot": {"pairs_per_example": 16, "batch_size": 16},
           "training": {"learning_rate": 5e-3, "tensorboard": False, "warmup_ratio": 0.0, "precision": "fp32"}}
    for key, value in more.items():
        section, _, name = key.partition("__")
        cfg.setdefault(section, {})[name] = value
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory, tiny_model) -> Path:
    tmp = tmp_path_factory.mktemp("fewshot")
    rows = sentiment_rows(24, 1)  # 8 per label
    data = {"train": str(write_csv(tmp / "train.csv", rows)), "test": str(write_csv(tmp / "test.csv", sentiment_rows(30, 3)))}
    return train(load_config(_config(tmp, tiny_model, "fewshot", data)), tmp)


def test_fewshot_run_is_an_ordinary_run_that_learned(fewshot_run):
    labels = json.loads((fewshot_run / "labels.json").read_text())
    assert labels["pooling"] == "mean" and labels["labels"] == ["negative", "neutral", "positive"]
    info = json.loads((fewshot_run / "run.json").read_text())
    assert info["status"] == "complete" and info["merged"] is True and info["steps"] > 0
    assert info["head_c"] in (0.1, 1.0, 10.0, 100.0)  # fewshot.head_c: auto, cross-validated over 8 examples per label
    assert (fewshot_run / "model" / HEAD_FILE).is_file() and (fewshot_run / "model" / "modules.json").is_file()
    metrics = json.loads((fewshot_run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.7  # chance is 0.33: the label words are learnt from 8 examples each
    assert not (fewshot_run / "checkpoints").exists()


def test_fewshot_save_reload_gives_identical_predictions(fewshot_run, tmp_path):
    texts = ["the movie was great", "the film was awful", "plot acting okay"]
    first = Predictor.from_run(fewshot_run).predict(texts)
    model = SentenceClassifier.from_pretrained(fewshot_run / "model")
    model.save_pretrained(tmp_path / "again")
    again = SentenceClassifier.from_pretrained(tmp_path / "again")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert Predictor.from_run(fewshot_run).predict(texts) == first


def test_saved_model_runs_with_sentence_transformers_alone(fewshot_run):
    """The model card's recipe: sentence-transformers + safetensors, no lmforge, same probabilities."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    folder = fewshot_run / "model"
    texts = ["the movie was great", "the film was awful"]
    encoder = SentenceTransformer(str(folder), device="cpu")
    head = load_file(str(folder / HEAD_FILE))
    labels = json.loads((folder / HEAD_INFO).read_text())["labels"]
    probs = (encoder.encode(texts, convert_to_tensor=True) @ head["weight"].T + head["bias"]).softmax(-1).numpy()
    ours = Predictor.from_run(fewshot_run, bf16=False).predict(texts)
    for row, prediction in zip(probs, ours):
        assert labels[int(row.argmax())] == prediction["label"]
        np.testing.assert_allclose(row, [prediction["probabilities"][label] for label in labels], atol=1e-4)
    card = (folder / "README.md").read_text()
    assert "SentenceTransformer(folder" in card and HEAD_FILE in card


def test_every_command_works_on_a_fewshot_run(fewshot_run, tmp_path):
    texts = tmp_path / "in.txt"
    texts.write_text("the movie was great\nthe film was awful\n")
    r = run_cli("predict", fewshot_run, texts)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["label"] for line in r.stdout.splitlines()] == \
        [p["label"] for p in Predictor.from_run(fewshot_run).predict(["the movie was great", "the film was awful"])]
    test_file = write_csv(tmp_path / "eval.csv", sentiment_rows(9, 5))
    r = run_cli("evaluate", fewshot_run, "--data", test_file)
    assert r.returncode == 0, r.stderr
    assert json.loads((fewshot_run / "eval" / "eval.csv" / "report.json").read_text())["num_examples"] == 9
    r = run_cli("explain", fewshot_run, "--text", "the movie was great", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["words"]
    r = run_cli("export", fewshot_run, "--data", test_file, "--quantize", "none")
    assert r.returncode == 0, r.stderr
    onnx = Predictor.from_run(fewshot_run, backend="onnx").predict(["the movie was great"])
    assert onnx[0]["label"] == Predictor.from_run(fewshot_run).predict(["the movie was great"])[0]["label"]


def test_fewshot_run_serves(fewshot_run):
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.settings import ServeSettings

    with TestClient(create_app(Predictor.from_run(fewshot_run), ServeSettings()), raise_server_exceptions=False) as client:
        r = client.post("/v1/predict", json={"texts": ["the movie was great"]})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("negative", "neutral", "positive")


def test_registry_update_of_a_fewshot_run(fewshot_run, tmp_path):
    reg = tmp_path / "registry"
    assert run_cli("registry", "add", "fs", fewshot_run, "--registry", reg).returncode == 0
    assert run_cli("registry", "promote", "fs", "1", "--registry", reg).returncode == 0
    new = write_csv(tmp_path / "new.csv", sentiment_rows(18, 7))
    r = run_cli("update", "fs", "--data", new, "--registry", reg, "--output", tmp_path / "upd", "--new-floor", "0")
    assert r.returncode in (0, 3), r.stderr  # 3: the gate refused the candidate (stated, not a crash)
    labels = json.loads((tmp_path / "upd" / "labels.json").read_text())
    assert labels["pooling"] == "mean"
    assert (tmp_path / "upd" / "model" / HEAD_FILE).is_file()


def test_zeroshot_from_label_descriptions(tmp_path, tiny_model):
    descriptions = {"sport": "football match goal", "weather": "rain storm cold"}
    path = _config(tmp_path, tiny_model, "zeroshot", {"train": None, "labels": ["sport", "weather"], "label_descriptions": descriptions})
    run = train(load_config(path), tmp_path)
    assert json.loads((run / "run.json").read_text())["trained_parameters"] == 0
    predictor = Predictor.from_run(run)
    out = predictor.predict(["football match goal", "rain storm cold"])
    assert [p["label"] for p in out] == ["sport", "weather"]  # a text identical to a description: cosine 1
    r = run_cli("init", "--task", "text-classification", "--method", "zeroshot", "--labels", "refund, card lost",
                "-o", tmp_path / "zs.yaml")
    assert r.returncode == 0, r.stderr
    cfg = load_config(tmp_path / "zs.yaml")
    assert cfg.method == "zeroshot" and cfg.data.labels == ["refund", "card lost"] and cfg.data.train is None


def test_data_train_lists_and_plus_override(tmp_path, tiny_model):
    a = write_csv(tmp_path / "a.csv", sentiment_rows(12, 1))
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps({"text": t, "label": y, "suggest": {"rank": 1}}) + "\n" for t, y in sentiment_rows(6, 2)))
    cfg_path = _config(tmp_path, tiny_model, "fewshot", {"train": str(a)})
    cfg = load_config(cfg_path, ["data.train=+" + str(b)])
    assert cfg.data.train == [str(a), str(b)]
    from lmforge.data.load import load_splits

    assert len(load_splits(cfg, tmp_path).train) == 18
    with pytest.raises(ConfigError, match="listed twice"):
        load_config(cfg_path, ["data.train=+" + str(a)])


@pytest.mark.parametrize("data, more, message", [
    ({"labels": ["negative", "neutral", "positive", "furious"]}, {}, "'furious' have no training examples"),
    ({"train": "one_each"}, {}, "at least two examples of a label"),
    ({"text_pair_field": "other"}, {}, "classifies single texts"),
])
def test_fewshot_bad_input_is_a_clear_error(tmp_path, tiny_model, data, more, message):
    train_file = write_csv(tmp_path / "train.csv", sentiment_rows(12, 1))
    if data.get("train") == "one_each":
        data["train"] = str(write_csv(tmp_path / "one.csv", sentiment_rows(3, 1)))
    path = _config(tmp_path, tiny_model, "fewshot", {"train": str(train_file), **data}, **more)
    with pytest.raises((UserError, ConfigError), match=message):
        train(load_config(path), tmp_path)


@pytest.mark.parametrize("cfg, message", [
    ({"method": "zeroshot", "data": {"train": None}}, "data.labels: method zeroshot"),
    ({"method": "fewshot", "task": "token-classification"}, "method: fewshot is for text-classification"),
    ({"method": "full", "data": {"train": None}}, "data.train: a training file is needed"),
    ({"method": "zeroshot", "data": {"labels": ["a", "b"], "label_descriptions": {"c": "x"}}}, "'c' not in data.labels"),
])
def test_method_config_problems_name_their_key(tmp_path, cfg, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_cli_labels_option_is_checked(tmp_path):
    r = run_cli("init", "--task", "text-classification", "--method", "zeroshot", "--labels", "a,,b", "-o", tmp_path / "x.yaml")
    assert r.returncode == 2 and "--labels" in r.stderr and "Traceback" not in r.stderr


def test_pairs_are_seeded_balanced_and_respect_labels():
    sets = [frozenset([x]) for x in "aaabbbccc"]
    pairs = draw_pairs(sets, 4, seed=3)
    assert pairs == draw_pairs(sets, 4, seed=3) and pairs != draw_pairs(sets, 4, seed=4)
    assert len(pairs) == 2 * 4 * len(sets)
    for i, j, target in pairs:
        assert i != j and (sets[i] == sets[j]) == (target == 1.0)
    multi = [frozenset("ab"), frozenset("b"), frozenset("c"), frozenset("ac")]
    for i, j, target in draw_pairs(multi, 3, seed=0):
        assert bool(multi[i] & multi[j]) == (target == 1.0)


def test_multi_label_fewshot_and_zeroshot(tmp_path, tiny_model):
    """No dev set: the decision threshold stays at 0.5 (nothing to tune it on, no bogus warning);
    a zero-shot multi-label head needs no training examples for its bias."""
    import random

    rng = random.Random(0)
    words = {"a": "good", "b": "bad", "c": "plot"}
    rows = []
    for _ in range(24):
        labels = rng.sample("abc", rng.choice([1, 2]))
        rows.append((" ".join(words[x] for x in labels) + " movie", "|".join(labels)))
    data = {"train": str(write_csv(tmp_path / "train.csv", rows)), "test": str(write_csv(tmp_path / "test.csv", rows[:8])),
            "multi_label": True, "label_delimiter": "|"}
    run = train(load_config(_config(tmp_path, tiny_model, "fewshot", data)), tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "threshold" not in metrics and metrics["test"]["micro_f1"] > 0.6
    assert Predictor.from_run(run).task.threshold == 0.5
    zero = {**data, "train": None, "labels": ["a", "b", "c"], "label_descriptions": {"a": "good", "b": "bad", "c": "plot"}}
    run = train(load_config(_config(tmp_path, tiny_model, "zeroshot", zero)), tmp_path)
    predicted = Predictor.from_run(run).predict(["good"])[0]
    assert max(predicted["probabilities"], key=predicted["probabilities"].get) == "a"


def test_label_texts_join_the_examples(tmp_path, tiny_model):
    from lmforge.training.sentence_methods import training_examples
    from lmforge.training.setup import prepare

    data = {"train": str(write_csv(tmp_path / "train.csv", sentiment_rows(6, 1))),
            "label_descriptions": {"positive": "a great movie"}}
    cfg = load_config(_config(tmp_path, tiny_model, "fewshot", data, fewshot__label_texts=True))
    p = prepare(cfg, tmp_path)
    examples, features = training_examples(p)
    assert len(examples) == len(features) == 6 + 3
    assert [(ex.text, ex.labels) for ex in examples[6:]] == [("negative", ["negative"]), ("neutral", ["neutral"]),
                                                              ("a great movie", ["positive"])]
    assert len(p.splits.train) == 6  # the run's own example count is unchanged
    # head weights: 1 per example; a label text as many as its label's examples, or fewshot.label_text_weight
    from collections import Counter

    from lmforge.training.sentence_methods import head_weights

    counts = Counter(ex.labels[0] for ex in p.splits.train)
    assert head_weights(p, examples) == [1.0] * 6 + [float(max(1, counts[label])) for label in ("negative", "neutral", "positive")]
    fixed = prepare(load_config(_config(tmp_path, tiny_model, "fewshot", data, fewshot__label_texts=True,
                                        fewshot__label_text_weight=2.5)), tmp_path)
    assert head_weights(fixed, training_examples(fixed)[0])[6:] == [2.5, 2.5, 2.5]
    off = prepare(load_config(_config(tmp_path, tiny_model, "fewshot", data, fewshot__label_texts=False)), tmp_path)
    assert len(training_examples(off)[0]) == 6 and head_weights(off, training_examples(off)[0]) == [1.0] * 6


def test_label_text_reads_underscores_as_spaces():
    from types import SimpleNamespace

    from lmforge.training.sentence_methods import label_texts

    p = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(label_descriptions={"b": "a described label"})),
                        task=SimpleNamespace(labels=["card_arrival", "b", "__", "top_up_by_card"]))
    assert label_texts(p) == ["card arrival", "a described label", "__", "top up by card"]


def test_fewshot_in_bf16_learns_and_fits_its_head_on_what_the_predictor_computes(tmp_path, tiny_model):
    from lmforge.training.sentence_methods import embed_features

    rows = sentiment_rows(24, 1)
    data = {"train": str(write_csv(tmp_path / "train.csv", rows)), "test": str(write_csv(tmp_path / "test.csv", sentiment_rows(30, 3)))}
    run = train(load_config(_config(tmp_path, tiny_model, "fewshot", data, training__precision="bf16")), tmp_path)
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.7
    predictor = Predictor.from_run(run)
    assert predictor.bf16
    features, _ = predictor.task.encode_for_inference(predictor.task.examples_from_texts([text for text, _ in rows]))
    bf16 = embed_features(predictor.model, features, predictor.tokenizer.pad_token_id, precision="bf16")
    fp32 = embed_features(predictor.model, features, predictor.tokenizer.pad_token_id)
    logits = bf16 @ predictor.model.classifier.weight.detach().numpy().T + predictor.model.classifier.bias.detach().numpy()
    probabilities = predictor.scores(predictor.task.examples_from_texts([text for text, _ in rows]))
    assert np.array_equal(logits.argmax(1), probabilities.argmax(1))  # the head's inputs are the Predictor's bf16 embeddings
    assert 0 < np.abs(bf16 - fp32).max() < 0.05  # bf16 really ran, and stays close to fp32


def test_head_c_auto_is_chosen_by_cross_validation_on_the_training_examples():
    """fewshot.head_c: auto picks C among 0.1/1/10/100 by stratified k-fold accuracy on the training
    embeddings; where a class has one example there is no fold to hold out, and C stays 1."""
    import numpy as np

    from lmforge.training.sentence_methods import HEAD_CS, choose_head_c

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    x = np.concatenate([centres[k] + 0.9 * rng.normal(size=(8, 16)) for k in range(20)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit-length, as the sentence embeddings are
    y = np.repeat(np.arange(20), 8)
    chosen = choose_head_c(x, y, np.ones(len(y)), seed=0)
    assert chosen in HEAD_CS and chosen > 0.1, "20 classes on unit-length embeddings need a weaker penalty than 0.1"
    assert choose_head_c(x, y, np.ones(len(y)), seed=0) == chosen  # seeded folds
    assert choose_head_c(x[:9], y[:9], np.ones(9), seed=0) == 1.0  # class 1 has a single example


def test_a_head_on_one_or_two_examples_per_class_fits_without_warnings():
    """77 intents from 154 labels: more classes than half the examples is what few-shot data looks like,
    so scikit-learn's "could represent a regression problem" warning is not passed on to the user;
    the fit still separates the classes."""
    import warnings

    from lmforge.training.sentence_methods import logistic_fit

    rng = np.random.default_rng(0)
    y = np.array([*range(20), *range(10)])  # 20 classes in 30 examples (scikit-learn warns from 21 examples)
    x = rng.normal(size=(len(y), 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = logistic_fit(100.0, x, y, np.ones(len(y)))
    assert (clf.predict(x) == y).all()


def test_head_c_accepts_auto_or_a_positive_number(tmp_path):
    from lmforge.config import config_from_dict

    base = {"method": "fewshot", "data": {"train": "t.csv"}}
    assert config_from_dict(base).fewshot.head_c == "auto"
    assert config_from_dict({**base, "fewshot": {"head_c": 10}}).fewshot.head_c == 10
    for bad in (0, -1, "big"):
        with pytest.raises(Exception, match="head_c"):
            config_from_dict({**base, "fewshot": {"head_c": bad}})
