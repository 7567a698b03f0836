"""The CLI as a user meets it: init -> validate -> train -> evaluate -> predict, and clear errors
with exit code 2 (no traceback, no half-written run folder)."""

from __future__ import annotations

import json

import yaml

from conftest import make_config, run_cli, sentiment_rows, write_conll


def test_classification_end_to_end(tmp_path, tiny_model, cls_data):
    cfg = tmp_path / "intents.yaml"
    r = run_cli("init", "--task", "text-classification", "--model", tiny_model, "--train", cls_data["train"],
                "--dev", cls_data["dev"], "--test", cls_data["test"], "-o", cfg)
    assert r.returncode == 0, r.stderr
    assert "inferred text column: 'text'" in r.stderr and "inferred label column: 'label'" in r.stderr
    text = cfg.read_text()
    assert text.startswith(f"# lmforge train {cfg.name}")
    assert "# peak learning rate" in text  # every key carries its description
    assert run_cli("validate", cfg).returncode == 0
    r = run_cli("train", cfg, "training.epochs=20", "training.learning_rate=5e-3", "training.precision=fp32", "--output", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] >= 0.9
    r = run_cli("evaluate", run, "--data", cls_data["test"])
    assert r.returncode == 0, r.stderr
    report = run / "eval" / "test.csv"
    for name in ("report.md", "report.json", "confusion_matrix.png", "reliability.png", "predictions.jsonl"):
        assert (report / name).is_file(), name
    assert (report / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fresh = sentiment_rows(6, 9)  # unseen sentences from the fixture's template
    inputs = tmp_path / "in.txt"
    inputs.write_text(fresh[0][0] + "\n\n" + "\n".join(text for text, _ in fresh[1:]) + "\n")  # a blank line is skipped
    r = run_cli("predict", run, inputs, "-o", tmp_path / "out.jsonl")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == [text for text, _ in fresh]
    assert sum(row["label"] == label for row, (_, label) in zip(rows, fresh)) >= 5
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-4


def test_ner_end_to_end_with_jsonl_predict(tmp_path, tiny_model, ner_data):
    cfg = tmp_path / "ner.yaml"
    r = run_cli("init", "--task", "token-classification", "--model", tiny_model, "--train", ner_data["train"], "-o", cfg)
    assert r.returncode == 0, r.stderr
    assert "NER tag scheme: iob2" in r.stderr
    # the tiny model's word embeddings are random: unlike a pretrained encoder's (frozen by default), they must learn
    r = run_cli("train", cfg, "training.epochs=20", "training.learning_rate=5e-3", "training.freeze_embeddings=false",
                "--output", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": "Alice visited Paris."}) + "\n")
    r = run_cli("predict", tmp_path / "run", inputs)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    found = {(e["type"], e["text"], e["start"], e["end"]) for e in row["entities"]}
    # the fixture has no punctuation, so whatever "." gets is not asserted; the names and offsets are
    assert {("PER", "Alice", 0, 5), ("LOC", "Paris", 14, 19)} <= found


def test_unknown_key_and_bad_value_exit_2_naming_keys(tmp_path, tiny_model, cls_data):
    cfg = make_config(tmp_path, tiny_model, cls_data)
    raw = yaml.safe_load(cfg.read_text())
    raw["training"]["learnin_rate"] = 0.1
    raw["training"]["epochs"] = -1
    cfg.write_text(yaml.safe_dump(raw))
    r = run_cli("validate", cfg)
    assert r.returncode == 2
    assert "training.learnin_rate: unknown key" in r.stderr and "training.epochs" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("train", make_config(tmp_path, tiny_model, cls_data), "training.batch_size=zero")
    assert r.returncode == 2 and "training.batch_size" in r.stderr


def test_bad_data_exit_2_and_no_run_folder(tmp_path, tiny_model, cls_data):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine text,positive\n,negative\nthird,positive,extra\n")
    cfg = make_config(tmp_path, tiny_model, {"train": bad, "dev": cls_data["dev"]})
    r = run_cli("train", cfg)
    assert r.returncode == 2
    assert f"{bad}:3" in r.stderr and f"{bad}:4" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_ner_tags_name_file_and_line(tmp_path, tiny_model, ner_data):
    bad = write_conll(tmp_path / "bad.txt", [[("alice", "B-PER"), ("visited", "O"), ("paris", "I-LOC")]] * 3, docs_of=0)
    cfg = make_config(tmp_path, tiny_model, {"train": bad, "dev": ner_data["dev"]}, task="token-classification")
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["scheme"] = "iob2"
    cfg.write_text(yaml.safe_dump(raw))
    r = run_cli("validate", cfg)
    assert r.returncode == 2 and f"{bad}:3" in r.stderr and "I-LOC" in r.stderr


def test_unseen_dev_label_is_error_or_mapped(tmp_path, tiny_model, cls_data):
    dev = tmp_path / "dev2.csv"
    dev.write_text("text,label\nthe movie was good,positive\nthe movie was ok,mixed\n")
    cfg = make_config(tmp_path, tiny_model, {"train": cls_data["train"], "dev": dev})
    r = run_cli("validate", cfg)
    assert r.returncode == 2 and f"{dev}:3" in r.stderr and "'mixed'" in r.stderr
    assert run_cli("validate", cfg, "data.label_map={mixed: neutral}").returncode == 0


def test_unknown_model_lists_available(tmp_path, cls_data):
    cfg = make_config(tmp_path, tmp_path / "nope", cls_data)
    raw = yaml.safe_load(cfg.read_text())
    raw["model"] = "bert-base-uncased"
    cfg.write_text(yaml.safe_dump(raw))
    r = run_cli("validate", cfg)
    assert r.returncode == 2 and "minilm-l6" in r.stderr and "bert-base-uncased" in r.stderr


def test_existing_run_folder_is_not_overwritten(tmp_path, tiny_model, cls_data):
    cfg = make_config(tmp_path, tiny_model, cls_data, epochs=1)
    assert run_cli("train", cfg).returncode == 0
    r = run_cli("train", cfg)
    assert r.returncode == 2 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert run_cli("train", cfg, "--overwrite").returncode == 0
    r = run_cli("evaluate", tmp_path, "--data", cls_data["dev"])
    assert r.returncode == 2 and "not an lmforge run folder" in r.stderr


def test_validate_reports_the_same_first_batch_loss_each_run(tmp_path, tiny_model, cls_data):
    """validate seeds the model it builds with training.seed: its first-batch loss does not change from one
    run to the next (the head's initialisation and the dropout masks were unseeded)."""
    import torch

    from lmforge.validate import validate_config

    cfg = make_config(tmp_path, tiny_model, cls_data)
    first = validate_config(cfg, [])["first batch loss"]
    torch.manual_seed(12345)  # whatever state the process's generator is in
    assert validate_config(cfg, [])["first batch loss"] == first
    assert validate_config(cfg, ["training.seed=7"])["first batch loss"] != first
