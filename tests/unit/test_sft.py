"""Supervised fine-tuning of decoders (task: generation): data reading, prompt masking, config
defaults, and overfit -> save -> reload -> identical greedy output, for full fine-tuning and LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import jsonl
from lmforge.config import config_from_dict, load_config
from lmforge.data.generation_readers import read_generation
from lmforge.data.types import ChatExample
from lmforge.errors import DataError, UserError
from lmforge.tasks.generation import IGNORE, GenerationTask

PAIRS = [("say hi", "hello there"), ("how are you", "fine thanks"), ("what is two plus three", "five"),
         ("write a function that reverses string s", "def return s [::-1]")]


def sft_config(tmp_path: Path, model: Path, method: str = "full", pairs=PAIRS, **training) -> Path:
    rows = [{"prompt": p, "completion": c} for p, c in pairs]
    train = {"epochs": 60, "batch_size": 4, "learning_rate": 1e-2 if method == "full" else 3e-2, "tensorboard": False,
             "warmup_ratio": 0.0, "precision": "fp32", "log_every_steps": 10, "save_every_steps": 1000, **training}
    cfg = {"name": f"sft-{method}", "task": "generation", "model": str(model), "method": method, "output_dir": str(tmp_path / "runs"),
           "data": {"train": str(jsonl(tmp_path / "train.jsonl", rows * 2)), "dev": str(jsonl(tmp_path / "dev.jsonl", rows))},
           "peft": {"r": 8, "alpha": 16}, "training": train}
    path = tmp_path / f"sft-{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def greedy(model, tokenizer, prompt: str, n: int = 8) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_generation_defaults():
    cfg = config_from_dict({"task": "generation", "model": "x"})
    assert cfg.method == "lora" and cfg.training.learning_rate == 2e-4 and cfg.data.max_length == 512
    cfg = config_from_dict({"task": "generation", "model": "x", "method": "full", "data": {"max_length": 256}})
    assert cfg.method == "full" and cfg.training.learning_rate == 2e-5 and cfg.data.max_length == 256
    assert config_from_dict({"task": "text-classification"}).method == "full"  # encoders keep their defaults


def test_reader_prompt_completion_chat_and_errors(tmp_path):
    good = jsonl(tmp_path / "good.jsonl", [{"prompt": "say hi", "completion": "hello"},
                                            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                                          {"role": "assistant", "content": "hello"}]}])
    examples = read_generation(good)
    assert [len(e.messages) for e in examples] == [2, 3] and examples[0].source.endswith("good.jsonl:1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\nnot json\n{"messages": [{"role": "robot", "content": "x"}]}\n'
                   '{"messages": [{"role": "user", "content": "x"}]}\n[1]\n{"completion": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_generation(bad)
    message = str(err.value)
    for line, text in ((1, "missing or empty 'completion'"), (2, "not valid JSON"), (3, "messages[0].role is 'robot'"),
                       (4, "the chat has no assistant message"), (5, "expected a JSON object"), (6, "missing or empty 'prompt'")):
        assert f"bad.jsonl:{line}: {text}" in message, message
    with pytest.raises(UserError, match="JSON Lines"):
        read_generation(tmp_path / "data.csv")


def test_prompt_masking(tiny_decoder):
    from lmforge.models.build import load_tokenizer

    tok = load_tokenizer(tiny_decoder)
    task = GenerationTask(tok, 512)
    chat = [{"role": "system", "content": "say hi"}, {"role": "user", "content": "how are you"},
            {"role": "assistant", "content": "fine thanks"}, {"role": "user", "content": "say hi"},
            {"role": "assistant", "content": "hello there"}]
    [feature] = task.encode_for_training([ChatExample(chat, "x:1")])
    learned = [tok.convert_ids_to_tokens(i) for i, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE]
    assert learned == ["fine", "thanks", "<|im_end|>", "hello", "there", "<|im_end|>"]  # both assistant turns, nothing else
    assert task.loss_units(feature) == 6
    # the loss ignores the prompt: changing the logits that predict prompt tokens leaves it unchanged
    batch = {"labels": torch.tensor([feature["labels"]])}
    logits = torch.randn(1, len(feature["labels"]), len(tok))
    before = task.loss_sum(logits, batch)
    prompt_positions = [i - 1 for i, label in enumerate(feature["labels"]) if label == IGNORE and i > 0]
    logits[0, prompt_positions] += torch.randn(len(prompt_positions), len(tok)) * 10
    assert torch.allclose(task.loss_sum(logits, batch), before)


def test_long_prompts_are_cut_from_the_left(tiny_decoder):
    from lmforge.models.build import load_tokenizer

    tok = load_tokenizer(tiny_decoder)
    task = GenerationTask(tok, 12)
    long = ChatExample([{"role": "user", "content": " ".join(["please"] * 30) + " say hi"}, {"role": "assistant", "content": "hello there"}], "x:1")
    [feature] = task.encode_for_training([long])
    assert len(feature["input_ids"]) == 12 and task.truncated == 1
    tokens = tok.convert_ids_to_tokens(feature["input_ids"])
    assert tokens[-3:] == ["hello", "there", "<|im_end|>"] and "hi" in tokens  # the end of the prompt survives


@pytest.fixture(scope="module")
def decoder_base(tmp_path_factory, tiny_decoder) -> Path:
    """The tiny decoder fully fine-tuned to give the *wrong* answers (each prompt gets the next one's).
    LoRA freezes the base, and a random 32-wide base gives an adapter nothing to work with (measured:
    the loss stalls at 3.7); on this base LoRA has to re-map every answer."""
    from lmforge.training.loop import train

    tmp = tmp_path_factory.mktemp("decoder-base")
    shifted = [(p, PAIRS[(i + 1) % len(PAIRS)][1]) for i, (p, _) in enumerate(PAIRS)]
    return train(load_config(sft_config(tmp, tiny_decoder, "full", pairs=shifted)), tmp) / "model"


@pytest.mark.parametrize("method", ["full", "lora"])
def test_overfit_save_reload_identical_greedy(tmp_path, tiny_decoder, decoder_base, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.training.loop import train

    base = tiny_decoder if method == "full" else decoder_base
    path = sft_config(tmp_path, base, method)
    run = train(load_config(path), tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["loss"] < 0.2 and metrics["dev"]["perplexity"] < 1.25, metrics
    assert (run / "eval" / "dev" / "report.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(run / "model")  # plain transformers loads the (merged) model
    tok = AutoTokenizer.from_pretrained(run / "model")
    answers = {p: greedy(model, tok, p) for p, _ in PAIRS}
    assert answers == {p: c for p, c in PAIRS}
    if method == "lora":
        from peft import PeftModel

        assert (run / "adapter" / "adapter_config.json").is_file()
        adapted_base = AutoModelForCausalLM.from_pretrained(base)
        assert {p: greedy(adapted_base, tok, p) for p, _ in PAIRS} != answers  # the base alone answers wrongly
        adapted = PeftModel.from_pretrained(adapted_base, str(run / "adapter"))
        assert {p: greedy(adapted, tok, p) for p, _ in PAIRS} == answers  # the adapter alone, unmerged, says the same
        info = json.loads((run / "run.json").read_text())
        assert info["trained_parameters"] < info["total_parameters"] / 2


def test_predictor_refuses_generation_runs(tmp_path, tiny_decoder):
    from lmforge.predictor import Predictor
    from lmforge.training.loop import train

    run = train(load_config(sft_config(tmp_path, tiny_decoder, epochs=1)), tmp_path)
    with pytest.raises(UserError, match="generation run: use `lmforge generate"):
        Predictor.from_run(run)


@pytest.mark.parametrize("lora", [False, True])
def test_training_logits_only_where_tokens_are_learned_equal_the_full_loss(tiny_decoder, lora):
    """Training computes the LM head only at positions whose next token is learned (GenerationTask.
    training_logits): the loss and every gradient equal those of the full logits, with and without a
    PEFT wrapper, and the model is left as it was."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lmforge.models.build import load_tokenizer
    from lmforge.tasks.base import collate

    tok = load_tokenizer(tiny_decoder)
    task = GenerationTask(tok, 512)
    examples = [ChatExample([{"role": "user", "content": p}, {"role": "assistant", "content": c}], f"x:{i}")
                for i, (p, c) in enumerate(PAIRS)]
    features = task.encode_for_training(examples)
    batch = collate(features, tok.pad_token_id)
    labels = batch.pop("labels")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full = task.loss_sum(model(**batch).logits, {"labels": labels})
    full_grads = grads(full)
    logits = task.training_logits(model, batch, labels)
    assert logits.shape[:2] == (1, sum(task.loss_units(f) for f in features)) and logits.shape[1] < labels.numel() / 2
    selected = task.training_loss_sum(logits, labels)
    assert torch.allclose(selected, full, rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(full_grads, grads(selected)))
    assert model(**batch).logits.shape[:2] == labels.shape  # the hook is gone
