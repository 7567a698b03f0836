"""The training loop's edges: what it refuses to overwrite, step limits, logs, and heads it must
re-initialise. (The step generator and resume are in test_resume.py; every task x method round
trip in test_train_roundtrip.py.)"""

from __future__ import annotations

import json
import pytest

from conftest import make_config, run_cli


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, tiny_model, cls_data):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    cfg = make_config(tmp_path, tiny_model, cls_data, epochs=1)
    r = run_cli("train", cfg, "--output", precious, "--overwrite")
    assert r.returncode == 2 and "not an lmforge run folder" in r.stderr
    assert (precious / "notes.txt").read_text() == "keep me"


def test_max_steps_from_config_is_respected_and_tensorboard_written(tmp_path, tiny_model, cls_data):
    from lmforge.config import load_config
    from lmforge.training.loop import train

    cfg = make_config(tmp_path, tiny_model, cls_data, epochs=50, max_steps=4, tensorboard=True)
    run = train(load_config(cfg), tmp_path)
    info = json.loads((run / "run.json").read_text())
    assert info["steps"] == 4
    # the last step was evaluated once (max_steps mid-epoch), and the time that took is recorded apart from training's
    assert info["dev_passes"] == 1 and 0 < info["dev_seconds"] and "dev_seconds" in json.loads((run / "metrics.json").read_text())["training"]
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_peft_on_a_fine_tuned_base_with_another_head_completes(tmp_path, tiny_base, ner_data):
    """tiny_base carries a 3-label sequence head; a 7-label token head must be re-initialised, also
    when prefix tuning rebuilds the base with the trained head at the end of the run."""
    from lmforge.config import load_config
    from lmforge.predictor import Predictor
    from lmforge.training.loop import train

    cfg = make_config(tmp_path, tiny_base, ner_data, task="token-classification", method="prefix", epochs=1)
    run = train(load_config(cfg), tmp_path)
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert len(Predictor.from_run(run).predict(["alice visited paris"])[0]["tags"]) == 3


def test_log_truncation_survives_a_cut_line(tmp_path):
    from lmforge.training.tracking import Tracker

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n{"step": 5, "split": "train"}\n{"step": 6, "spl')
    tracker = Tracker(logs, tensorboard=False, resume_step=2)
    tracker.log(3, {"loss": 1.0})
    tracker.close()
    steps = [json.loads(line)["step"] for line in (logs / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 3]


def test_token_head_bias_starts_at_the_tag_prior(tiny_model):
    """NER heads start predicting the tag frequencies (mostly O): counts + 1, ignored positions left out."""
    import math

    from transformers import AutoModelForTokenClassification

    from lmforge.training.setup import init_tag_bias_to_prior

    model = AutoModelForTokenClassification.from_pretrained(str(tiny_model), num_labels=3)
    init_tag_bias_to_prior(model, [{"labels": [-100, 0, 0, 0, 1, -100]}, {"labels": [-100, 0, 0, -100]}], 3)
    counts = [6, 2, 1]  # O x5 + 1, B x1 + 1, I x0 + 1
    assert model.classifier.bias.tolist() == pytest.approx([math.log(c / 9) for c in counts], abs=1e-6)


def test_a_trained_token_head_keeps_its_bias(tmp_path, ner_run):
    """Training on from a fine-tuned NER model with the same tags starts from its trained head, not the prior."""
    import torch
    from safetensors.torch import load_file

    from conftest import ner_sentences, write_conll
    from lmforge.config import load_config
    from lmforge.training.setup import build_model, prepare

    data = {"train": write_conll(tmp_path / "train.txt", ner_sentences(12, 5)), "dev": write_conll(tmp_path / "dev.txt", ner_sentences(4, 6))}
    cfg = load_config(make_config(tmp_path, ner_run / "model", data, task="token-classification"))
    model = build_model(prepare(cfg, tmp_path))
    saved = load_file(str(ner_run / "model" / "model.safetensors"))["classifier.bias"]
    assert torch.equal(model.classifier.bias.detach(), saved)


def test_batches_are_padded_to_the_longest_example_unless_configured():
    from lmforge.config import config_from_dict
    from lmforge.errors import UserError

    assert config_from_dict({}).training.pad_to_multiple_of == 1
    assert config_from_dict({"training": {"pad_to_multiple_of": 8}}).training.pad_to_multiple_of == 8
    with pytest.raises((UserError, ValueError), match="pad_to_multiple_of"):
        config_from_dict({"training": {"pad_to_multiple_of": 0}})


def test_word_embeddings_are_frozen_by_default_only_for_a_large_vocabulary():
    from transformers import BertConfig, BertModel

    from lmforge.training.setup import LARGE_VOCABULARY, freeze_embeddings

    def tiny(vocab: int):
        return BertModel(BertConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))

    big, small = tiny(LARGE_VOCABULARY), tiny(1000)
    assert freeze_embeddings(None, big) is True and freeze_embeddings(None, small) is False
    assert freeze_embeddings(False, big) is False and freeze_embeddings(True, small) is True


def test_a_loss_back_at_its_start_is_called_divergence_once():
    """ChnSentiCorp's diverged run, as logged every 10 steps: 0.69 -> 0.30 -> back to 0.69 and staying."""
    from lmforge.training.divergence import LossWatch

    watch = LossWatch(1e-4)
    losses = [0.692, 0.60, 0.45, 0.30, 0.44, 0.34, 0.38, 0.69, 0.67]
    assert [watch.observe(10 * (i + 1), x) for i, x in enumerate(losses)] == [None] * len(losses)  # 2 windows back: not yet
    warning = watch.observe(100, 0.71)
    assert warning == ("warning: the training loss is back at its starting level (0.710 at step 100; it was 0.692 at step 10 "
                       "and 0.300 at step 40): training has diverged and the model may have stopped learning; lower "
                       "training.learning_rate (now 0.0001), e.g. to half, and train again")
    assert watch.observe(110, 0.70) is None  # once

    healthy = LossWatch()
    assert all(healthy.observe(s, x) is None for s, x in enumerate([2.0, 1.9, 1.95, 1.98, 2.01, 1.97, 1.0, 0.5, 0.6, 0.55]))
    noisy = LossWatch()  # back up for two windows only, then down again
    assert all(noisy.observe(s, x) is None for s, x in enumerate([1.0, 0.5, 0.97, 0.99, 0.4, 0.98, 0.3]))
    assert "the training loss is nan at step 3" in LossWatch().observe(3, float("nan"))


def test_the_step_logger_prints_the_divergence_warning():
    from types import SimpleNamespace

    from lmforge.training.consumers import StepLogger
    from lmforge.training.steps import StepResult

    notes = []
    progress = SimpleNamespace(update=lambda *a: None, note=notes.append)
    logger = StepLogger(SimpleNamespace(num_processes=1), None, progress, SimpleNamespace(get_last_lr=lambda: [1e-4]), 1, 100, 2e-5)
    for step, loss in enumerate([0.7, 0.3, 0.7, 0.7, 0.7], start=1):
        logger.after_step(StepResult(step, loss, 1, 10, False, step / 100))
    assert len(notes) == 1 and "training has diverged" in notes[0] and "(now 2e-05)" in notes[0]


def test_a_run_of_very_few_steps_is_warned_about(tmp_path, tiny_model, cls_data):
    """A handful of labels and the default epochs give a few optimizer steps: the model learns nothing
    (SST-2, 50 labels: one class predicted), so the run says so and what to change."""
    from rich.console import Console

    from lmforge.config import load_config
    from lmforge.training.loop import train

    console = Console(record=True, width=400)
    train(load_config(make_config(tmp_path, tiny_model, cls_data, epochs=1)), tmp_path, console=console)
    out = console.export_text()
    assert "give only" in out and "optimizer steps over 1 epoch(s): likely too few to learn from" in out
    assert "raise training.epochs (about" in out and "method: fewshot" in out
    console = Console(record=True, width=400)
    train(load_config(make_config(tmp_path, tiny_model, cls_data, epochs=20)), tmp_path, console=console, overwrite=True)
    assert "likely too few" not in console.export_text()
    console = Console(record=True, width=400)  # a chosen cap (max_steps, e.g. a smoke run) is not warned about
    train(load_config(make_config(tmp_path, tiny_model, cls_data, epochs=1)), tmp_path, console=console, overwrite=True, max_steps=3)
    assert "likely too few" not in console.export_text()
