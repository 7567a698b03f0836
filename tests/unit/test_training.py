"""The training loop's edges: what it refuses to overwrite, step limits, logs, and heads it must
re-initialise. (The step generator and resume are in test_resume.py; every task x method round
trip in test_train_roundtrip.py.)"""

from __future__ import annotations

import json
import pytest
import yaml

from conftest import jsonl, make_config, run_cli, sentiment_rows, write_csv

from lmforge.config import config_from_dict, dump_config
from lmforge.training.loop import train as train_run


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


def test_word_embeddings_are_frozen_by_default_for_encoders_not_decoders():
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from lmforge.training.setup import freeze_embeddings

    encoder = BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                                       intermediate_size=16))
    decoder = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=16, tie_word_embeddings=True))
    assert freeze_embeddings(None, encoder) is True and freeze_embeddings(None, decoder) is False
    assert freeze_embeddings(False, encoder) is False and freeze_embeddings(True, decoder) is True


def test_ner_full_fine_tuning_on_a_large_set_drops_no_hidden_states_unless_set(tmp_path, ner_data, capsys):
    """NER full fine-tuning on 10,000+ sentences trains with hidden_dropout 0 when it is empty (as init
    writes it; announced, saved with the run); a smaller set, a peft method and an explicit rate keep the
    model's or that rate; the built model follows."""
    import torch

    from conftest import build_tiny_model, ner_sentences, write_conll
    from lmforge.errors import UserError
    from lmforge.tasks.registry import LARGE_TRAINING_SET
    from lmforge.training.setup import build_model, prepare

    tiny_model = build_tiny_model(tmp_path / "tiny", dropout=0.1)  # the model's own hidden dropout: 0.1
    large = write_conll(tmp_path / "large.txt", ner_sentences(LARGE_TRAINING_SET, 7))

    def cfg(train=large, method="full", **training):
        return config_from_dict({"name": "n", "task": "token-classification", "model": str(tiny_model), "method": method,
                                 "data": {"train": str(train), "dev": str(ner_data["dev"])}, "training": training})

    def rates(p):
        return {m.p for m in build_model(p).modules() if isinstance(m, torch.nn.Dropout)}

    p = prepare(cfg(), tmp_path)
    assert p.sized_dropout and p.cfg.training.hidden_dropout == 0.0 and rates(p) == {0.0}
    assert "hidden_dropout: 0.0" in dump_config(p.cfg)  # saved with the run: a resume trains the same model
    assert prepare(cfg(hidden_dropout=None), tmp_path).sized_dropout  # written empty, as init writes it
    small = prepare(cfg(ner_data["train"]), tmp_path)
    assert not small.sized_dropout and small.cfg.training.hidden_dropout is None and rates(small) == {0.0, 0.1}  # attention 0
    for rate in (0.1, 0.3):
        explicit = prepare(cfg(hidden_dropout=rate), tmp_path)
        assert not explicit.sized_dropout and rates(explicit) == {0.0, rate}
    assert not prepare(cfg(method="lora"), tmp_path).sized_dropout
    run = train_run(cfg(epochs=1, tensorboard=False), tmp_path, max_steps=1)
    saved = yaml.safe_load((run / "config.yaml").read_text())["training"]
    assert saved["hidden_dropout"] == 0.0 and saved["max_tokens_per_batch"] == 14 * 128  # and cut by tokens (next test)
    err = " ".join(capsys.readouterr().err.split())
    assert "hidden dropout 0 (10,000 training examples; training.hidden_dropout empty)" in err
    assert "batches of up to 1,792 padded tokens (10,000 training examples; training.batch_size unset)" in err
    with pytest.raises(UserError, match="hidden_dropout"):
        cfg(hidden_dropout=1.0)


def test_ner_full_fine_tuning_on_a_large_set_cuts_batches_by_tokens_unless_set(tmp_path, ner_data, tiny_model):
    """NER full fine-tuning on 10,000+ sentences plans batches of up to 14 x data.max_length padded
    tokens when neither batch_size nor max_tokens_per_batch is set; a smaller set, LoRA and either key
    set keep what they say; the plan really is cut by tokens."""
    from conftest import ner_sentences, write_conll
    from lmforge.data.batching import plan_batches
    from lmforge.tasks.registry import LARGE_TRAINING_SET
    from lmforge.training.setup import prepare

    large = write_conll(tmp_path / "large.txt", ner_sentences(LARGE_TRAINING_SET, 7))

    def cfg(train=large, method="full", data=None, **training):
        return config_from_dict({"name": "n", "task": "token-classification", "model": str(tiny_model), "method": method,
                                 "data": {"train": str(train), "dev": str(ner_data["dev"]), **(data or {})}, "training": training})

    p = prepare(cfg(), tmp_path)
    assert p.sized_batch and p.cfg.training.max_tokens_per_batch == 14 * 128
    assert "max_tokens_per_batch: 1792" in dump_config(p.cfg)  # saved with the run: a resume plans the same batches
    assert prepare(cfg(data={"max_length": 64}), tmp_path).cfg.training.max_tokens_per_batch == 14 * 64
    lengths = [len(f["input_ids"]) for f in p.train_features]
    plan = plan_batches(lengths, batch_size=16, max_tokens=1792, seed=1)
    assert all(max(lengths[i] for i in b) * len(b) <= 1792 for b in plan) and sorted(i for b in plan for i in b) == list(range(len(lengths)))
    for keep in (prepare(cfg(ner_data["train"]), tmp_path), prepare(cfg(method="lora"), tmp_path),
                 prepare(cfg(batch_size=16), tmp_path), prepare(cfg(max_tokens_per_batch=512), tmp_path)):
        assert not keep.sized_batch and keep.cfg.training.max_tokens_per_batch in (None, 512)
    # sentences without documents (JSONL lines, a CoNLL file without -DOCSTART-) are a sequence each:
    # a budget of 14 full sequences would hold ~80 of them, so they keep batches of 16 and the model's dropout
    sentences = ner_sentences(LARGE_TRAINING_SET, 7)
    p = prepare(cfg(write_conll(tmp_path / "single.txt", sentences, docs_of=0)), tmp_path)
    assert len(p.train_features) == LARGE_TRAINING_SET
    assert not p.sized_batch and p.cfg.training.max_tokens_per_batch is None and p.cfg.training.batch_size == 16
    assert not p.sized_dropout and p.cfg.training.hidden_dropout is None
    as_jsonl = tmp_path / "single.jsonl"  # the same sentences as JSONL lines: the same; with a doc_id per 4 lines: packed
    as_jsonl.write_text("".join(json.dumps({"tokens": [w for w, _ in s], "tags": [t for _, t in s]}) + "\n" for s in sentences))
    assert not prepare(cfg(as_jsonl), tmp_path).sized_batch
    as_jsonl.write_text("".join(json.dumps({"tokens": [w for w, _ in s], "tags": [t for _, t in s], "doc_id": i // 4}) + "\n"
                                for i, s in enumerate(sentences)))
    packed = prepare(cfg(as_jsonl), tmp_path)
    assert packed.sized_batch and packed.sized_dropout and packed.cfg.training.max_tokens_per_batch == 14 * 128


def test_a_large_classification_set_trains_in_batches_of_32_unless_set(tmp_path, tiny_model, capsys):
    from lmforge.tasks.registry import LARGE_TRAINING_SET
    from lmforge.training.setup import prepare

    rows = sentiment_rows(LARGE_TRAINING_SET, 5)
    train = write_csv(tmp_path / "train.csv", rows)
    small = write_csv(tmp_path / "small.csv", rows[:LARGE_TRAINING_SET - 1])
    dev = write_csv(tmp_path / "dev.csv", sentiment_rows(8, 6))

    def cfg(path, **training):
        return config_from_dict({"name": "b", "task": "text-classification", "model": str(tiny_model),
                                 "data": {"train": str(path), "dev": str(dev)}, "training": training})

    p = prepare(cfg(train), tmp_path)
    assert p.sized_batch and p.cfg.training.batch_size == 32
    assert "batch_size: 32" in dump_config(p.cfg)  # saved with the run: a resume plans the same batches
    p = prepare(cfg(small), tmp_path)
    assert not p.sized_batch and p.cfg.training.batch_size == 16
    for chosen, batch in (({"batch_size": 24}, 24), ({"max_tokens_per_batch": 512}, 16)):
        p = prepare(cfg(train, **chosen), tmp_path)
        assert not p.sized_batch and p.cfg.training.batch_size == batch
    run = train_run(cfg(train, epochs=1, tensorboard=False), tmp_path, max_steps=2)
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["batch_size"] == 32
    assert "batches of 32 (10,000 training sequences; training.batch_size unset)" in " ".join(capsys.readouterr().err.split())


def test_a_small_set_trains_about_400_steps_unless_epochs_are_set(tmp_path, tiny_model, tiny_decoder, cls_data, ner_data, capsys):
    """On a few hundred examples the default epochs are a few dozen optimizer steps, too few to learn
    from (bench/active_learning.py: Banking77 from 462 labels, 33.7% after 5 epochs, 43.4% after 400
    steps). With training.epochs empty they are raised to about 400 steps (at most 100 epochs; dev
    every few epochs past 20 of them), saved with the run and announced; epochs or max_steps set, a
    set big enough, a sentence method and a decoder get the default 3."""
    from lmforge.training.setup import SMALL_SET_MAX_EPOCHS, SMALL_SET_STEPS, prepare
    from lmforge.training.steps import plan_arguments, total_steps
    from lmforge.validate import validate_config

    four_hundred = {"train": write_csv(tmp_path / "400.csv", sentiment_rows(400, 4)), "dev": cls_data["dev"]}
    enough = {"train": write_csv(tmp_path / "2200.csv", sentiment_rows(2200, 5)), "dev": cls_data["dev"]}

    def cfg(data=four_hundred, task="text-classification", model=tiny_model, method="full", **training):
        return config_from_dict({"name": "s", "task": task, "model": str(model), "method": method,
                                 "data": {"train": str(data["train"]), "dev": str(data["dev"])}, "training": training})

    def steps_of(p):
        lengths = [len(f["input_ids"]) for f in p.train_features]
        return total_steps(lengths, plan_arguments(p.cfg.training), p.cfg.training.epochs, 1, False)

    p = prepare(cfg(), tmp_path)
    assert p.sized_epochs and p.cfg.training.epochs == 16 and steps_of(p) == 400  # 25 steps an epoch: 75 in 3 epochs
    assert yaml.safe_load(dump_config(p.cfg))["training"]["epochs"] == 16  # saved with the run: a resume plans the same steps
    assert prepare(cfg(epochs=None), tmp_path).cfg.training.epochs == 16  # written empty, as init writes it
    tiny = prepare(cfg(cls_data), tmp_path)  # 48 examples, 3 steps an epoch: capped at 100 epochs
    assert tiny.sized_epochs and tiny.cfg.training.epochs == SMALL_SET_MAX_EPOCHS and steps_of(tiny) == 300
    assert tiny.cfg.training.eval_every_steps == 15 and p.cfg.training.eval_every_steps is None  # 20 evaluations, not 100
    assert prepare(cfg(cls_data, eval_every_steps=7), tmp_path).cfg.training.eval_every_steps == 7  # a chosen cadence stays
    ner = prepare(cfg(ner_data, "token-classification"), tmp_path)
    assert ner.sized_epochs and (steps_of(ner) >= SMALL_SET_STEPS or ner.cfg.training.epochs == SMALL_SET_MAX_EPOCHS)
    assert prepare(cfg(method="lora"), tmp_path).sized_epochs  # peft needs the steps as much
    big = prepare(cfg(enough), tmp_path)
    assert steps_of(big) >= SMALL_SET_STEPS
    for keep in (prepare(cfg(epochs=3), tmp_path), prepare(cfg(max_steps=50), tmp_path), big, prepare(cfg(method="fewshot"), tmp_path)):
        assert not keep.sized_epochs and keep.cfg.training.epochs == 3
    sft = jsonl(tmp_path / "sft.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)])
    decoder = config_from_dict({"name": "g", "task": "generation", "model": str(tiny_decoder), "data": {"train": str(sft)}})
    assert not prepare(decoder, tmp_path).sized_epochs
    run = train_run(cfg(tensorboard=False), tmp_path, max_steps=2)
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 16
    written = tmp_path / "small.yaml"
    written.write_text(dump_config(cfg(cls_data)))  # epochs: null, as init writes it
    assert validate_config(written, [])["epochs"] == ("100 (training.epochs empty: about 400 optimizer steps on a small set, "
                                                      "dev scored every 15 steps)")
    assert "epochs" not in validate_config(written, ["training.epochs=3"])
    info = json.loads((train_run(cfg(cls_data, tensorboard=False), tmp_path, overwrite=True) / "run.json").read_text())
    assert info["steps"] == 300 and info["dev_passes"] == 20 and info["best_step"] % 15 == 0  # the last step scored too
    assert "16 epochs (400 training sequences; training.epochs empty): on a small set" in " ".join(capsys.readouterr().err.split())


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


def test_the_weight_window_keeps_the_last_evaluations_and_averages_them(tmp_path):
    """`training.average_last`: each evaluation's weights join a window of the last N on disk; steps a
    killed run wrote after the resumed one are dropped; the average is the plain mean."""
    import torch

    from lmforge.training import checkpoint as ckpt

    model = torch.nn.Linear(3, 2)
    for step in (10, 20, 30, 40):
        with torch.no_grad():
            model.weight.fill_(step)
            model.bias.fill_(-step)
        ckpt.save_window(tmp_path, model, step, size=2)
    assert sorted(p.name for p in tmp_path.glob("avg-*")) == ["avg-00000030.safetensors", "avg-00000040.safetensors"]
    with torch.no_grad():  # a resumed run re-evaluates step 30: the stale step-40 file goes
        model.weight.fill_(31)
        model.bias.fill_(-31)
    ckpt.save_window(tmp_path, model, 30, size=2)
    assert sorted(p.name for p in tmp_path.glob("avg-*")) == ["avg-00000030.safetensors"]
    with torch.no_grad():
        model.weight.fill_(50)
        model.bias.fill_(-50)
    ckpt.save_window(tmp_path, model, 50, size=2)
    assert ckpt.load_average(tmp_path, model, until=50, size=2) == [30, 50]
    assert torch.allclose(model.weight, torch.full((2, 3), 40.5)) and torch.allclose(model.bias, torch.full((2,), -40.5))
    assert ckpt.load_average(tmp_path, model, until=40, size=2) == [30]
    assert ckpt.load_average(tmp_path / "none", model, until=40, size=2) == []


def test_a_run_with_average_last_saves_the_mean_of_its_last_evaluations(tmp_path, tiny_model, cls_data, monkeypatch):
    import json

    import torch
    from safetensors.torch import load_file

    from lmforge.config import load_config
    from lmforge.training import checkpoint as ckpt
    from lmforge.training.loop import train

    recorded = {}
    original = ckpt.save_window

    def record(root, model, step, size):
        recorded[step] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        original(root, model, step, size)

    monkeypatch.setattr(ckpt, "save_window", record)
    run = train(load_config(make_config(tmp_path, tiny_model, cls_data, epochs=4, average_last=3)), tmp_path)
    info = json.loads((run / "run.json").read_text())
    steps = sorted(recorded)
    assert len(steps) == 4 and info["averaged_steps"] == steps[-3:]
    assert json.loads((run / "metrics.json").read_text())["training"]["averaged_steps"] == steps[-3:]
    saved = load_file(str(run / "model" / "model.safetensors"))
    for name in recorded[steps[-1]]:
        mean = sum(recorded[s][name].double() for s in steps[-3:]) / 3
        assert torch.allclose(saved[name].double(), mean, atol=1e-6), name
    assert not (run / "checkpoints").exists()  # the averaging window went with the checkpoints


def test_average_last_is_refused_where_there_are_no_evaluations(tmp_path, tiny_model, cls_data):
    from lmforge.config import load_config

    with pytest.raises(Exception, match="training.average_last: method fewshot trains in one pass"):
        load_config(make_config(tmp_path, tiny_model, cls_data, method="fewshot", average_last=3))
    with pytest.raises(Exception, match="average_last"):
        load_config(make_config(tmp_path, tiny_model, cls_data, average_last=-1))


def _steps_of(p, n: int):
    """The losses of the first `n` optimizer steps of a run built as the loop builds it, and its weights."""
    from accelerate import Accelerator

    from lmforge.training.loop import _build
    from lmforge.training.state import TrainState
    from lmforge.training.steps import train_steps

    training = _build(p, Accelerator(cpu=True), None)
    training.stepper.model.train()
    gen = train_steps(training.stepper, TrainState(), training.lengths, training.plan_args, 1)
    losses = [next(gen).loss_sum for _ in range(n)]
    return losses, {k: v.detach().clone() for k, v in training.raw_model.named_parameters()}, training.stepper


def test_a_compiled_training_step_matches_the_eager_one(tmp_path, tiny_model, cls_data):
    """training.compile: torch.compile (inductor) computes the same losses and updates as eager, across
    batches of different lengths (dynamic shapes), within float tolerance."""
    import torch

    from lmforge.config import load_config
    from lmforge.training.setup import prepare

    cfg = load_config(make_config(tmp_path, tiny_model, cls_data, epochs=1))
    eager_losses, eager_weights, _ = _steps_of(prepare(cfg, tmp_path), 4)
    cfg.training.compile = True
    losses, weights, stepper = _steps_of(prepare(cfg, tmp_path), 4)
    assert stepper.eager is not None, "compiling fell back to eager"
    assert losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    for name, value in eager_weights.items():
        assert torch.allclose(weights[name], value, atol=1e-5, rtol=1e-4), name


def test_a_failed_compile_falls_back_to_eager_with_a_warning(tmp_path, tiny_model, cls_data, monkeypatch):
    import torch._dynamo.exc

    from lmforge.config import load_config
    from lmforge.training import steps
    from lmforge.training.setup import prepare

    class Broken(torch.nn.Module):
        def forward(self, **_):
            raise torch._dynamo.exc.TorchRuntimeError("no C compiler found")

    monkeypatch.setattr("lmforge.training.loop.compiled", lambda model: Broken())
    cfg = load_config(make_config(tmp_path, tiny_model, cls_data, epochs=1))
    eager_losses, _, _ = _steps_of(prepare(cfg, tmp_path), 3)
    cfg.training.compile = True
    with pytest.warns(UserWarning, match="torch.compile failed .TorchRuntimeError: no C compiler found.; training continues uncompiled"):
        losses, _, stepper = _steps_of(prepare(cfg, tmp_path), 3)
    assert losses == eager_losses and stepper.eager is None
    assert steps.is_compile_error(torch._dynamo.exc.TorchRuntimeError("x")) and not steps.is_compile_error(ValueError("x"))


def test_layer_decay_gives_lower_layers_lower_learning_rates(tmp_path, tiny_model, cls_data):
    """training.layer_decay: layer i of L at decay^(L - i), the embeddings at decay^(L + 1), the head
    at head_learning_rate; without it one rate for the body."""
    from transformers import AutoModelForSequenceClassification

    from lmforge.config import load_config
    from lmforge.training.steps import optimizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    depth = model.config.num_hidden_layers
    assert depth >= 2
    cfg = load_config(make_config(tmp_path, tiny_model, cls_data, learning_rate=1e-3, head_learning_rate=5e-3, layer_decay=0.5))
    opt = optimizer(model, cfg)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the logged rate is the body's full rate
    for i in range(depth):
        assert lr_of[id(params[f"bert.encoder.layer.{i}.attention.self.query.weight"])] == pytest.approx(1e-3 * 0.5 ** (depth - i))
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.5 ** (depth + 1))
    assert lr_of[id(params["bert.pooler.dense.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(params["classifier.weight"])] == pytest.approx(5e-3)
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[id(params["bert.encoder.layer.0.attention.self.query.bias"])] == 0.0
    assert decays[id(params["bert.encoder.layer.0.attention.self.query.weight"])] == cfg.training.weight_decay

    flat = optimizer(model, load_config(make_config(tmp_path, tiny_model, cls_data, learning_rate=1e-3)))
    assert {g["lr"] for g in flat.param_groups} == {1e-3}


def test_layer_decay_outside_zero_to_one_is_refused(tmp_path, tiny_model, cls_data):
    from lmforge.config import load_config

    for bad in (0, 1.5, -0.2):
        with pytest.raises(Exception, match="layer_decay"):
            load_config(make_config(tmp_path, tiny_model, cls_data, layer_decay=bad))


def test_a_run_with_layer_decay_trains_and_learns(tmp_path, tiny_model, cls_data):
    import json

    from lmforge.config import load_config
    from lmforge.training.loop import train

    run = train(load_config(make_config(tmp_path, tiny_model, cls_data, epochs=10, layer_decay=0.8)), tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] >= 0.8


def test_layer_decay_places_embeddings_by_position_whatever_their_name():
    """GPT-2 names its embeddings wte/wpe: they sit before layer 0, so they decay most; the final norm
    after the last layer keeps the full rate."""
    from lmforge.training.steps import layer_scales

    names = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
             "transformer.h.1.attn.c_attn.weight", "transformer.ln_f.weight"]
    scales = layer_scales(names, 0.5)
    assert scales == {"transformer.wte.weight": 0.125, "transformer.wpe.weight": 0.125, "transformer.h.0.attn.c_attn.weight": 0.25,
                      "transformer.h.1.attn.c_attn.weight": 0.5, "transformer.ln_f.weight": 1.0}
    assert set(layer_scales(names, None).values()) == {1.0} and set(layer_scales(names, 1.0).values()) == {1.0}


def test_a_small_dev_set_keeps_the_mean_of_the_last_three_evaluations_unless_told(tmp_path, tiny_model, cls_data):
    """Empty training.average_last: full fine-tuning scored on fewer than 1,000 dev examples over 5+
    evaluations keeps the mean of the last 3 (the best of a few noisy dev scores swings test accuracy),
    says so, and records it in the run's config; average_last: 0 keeps the best evaluation."""
    import json

    import yaml
    from rich.console import Console

    from lmforge.config import load_config
    from lmforge.training.loop import train
    from lmforge.validate import validate_config

    path = make_config(tmp_path, tiny_model, cls_data, epochs=5, average_last=None)  # empty: lmforge's default
    assert validate_config(path, [])["kept weights"].startswith("the mean of the last 3 dev evaluations (training.average_last empty")
    assert "kept weights" not in validate_config(path, ["training.average_last=0"])
    console = Console(record=True, width=400)
    run = train(load_config(path), tmp_path, console=console)
    info = json.loads((run / "run.json").read_text())
    assert len(info["averaged_steps"]) == 3 and info["averaged_steps"][-1] == info["steps"]
    said = console.export_text()
    assert "mean of the weights at the last 3 dev evaluations, not the best one (12 dev examples; training.average_last empty)" in said
    assert "training.average_last: 0 keeps the best evaluation" in said
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["average_last"] == 3  # a resume averages too

    console = Console(record=True, width=400)
    run = train(load_config(make_config(tmp_path, tiny_model, cls_data, epochs=5, average_last=0)), tmp_path,
                overwrite=True, console=console)
    info = json.loads((run / "run.json").read_text())
    assert "averaged_steps" not in info and "mean of the weights" not in console.export_text()
    logged = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    dev = [row["accuracy"] for row in logged if row["split"] == "dev"]
    assert len(dev) == 5 and json.loads((run / "metrics.json").read_text())["dev"]["accuracy"] == pytest.approx(max(dev))

    run = train(load_config(make_config(tmp_path, tiny_model, cls_data, epochs=5, average_last=1)), tmp_path, overwrite=True)
    info = json.loads((run / "run.json").read_text())
    assert info["averaged_steps"] == [info["steps"]]  # 1: the last evaluation's weights


@pytest.mark.parametrize("change,averages", [
    ({}, True),
    ({"training": {"epochs": 4}}, False),  # 4 evaluations: the last 3 would take in the least trained
    ({"training": {"epochs": 40, "eval_every_steps": 100}}, True),  # 8 evaluations of 100 steps
    ({"training": {"epochs": 40, "eval_every_steps": 250}}, False),
    ({"training": {"max_steps": 60}}, False),  # 3 epochs of 20 steps
    ({"training": {"early_stopping_patience": 2}}, False),  # the best is what early stopping looks for
    ({"training": {"average_last": 5}}, False),  # set: kept as it is
    ({"training": {"average_last": 0}}, False),
    ({"dev": 1000}, False),
    ({"method": "lora"}, False),
])
def test_which_runs_average_by_default(tmp_path, change, averages):
    from lmforge.config import config_from_dict
    from lmforge.training.setup import sized_average

    raw = {"name": "r", "task": "text-classification", "model": "minilm-l6", "method": change.get("method", "full"),
           "data": {"train": "t.csv"}, "training": {"epochs": 5, "batch_size": 16, **change.get("training", {})}}
    cfg = config_from_dict(raw)
    set_before = cfg.training.average_last
    assert sized_average(cfg, change.get("dev", 999), [10] * 320) is averages  # 20 steps an epoch
    assert cfg.training.average_last == (3 if averages else set_before)
