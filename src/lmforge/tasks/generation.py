"""Generation (decoder language models): learn to write the assistant turns of chats.

Each example is rendered with the tokenizer's chat template (or, for a tokenizer without one,
prompt + completion + end-of-sequence). The loss covers only the assistant tokens: every other
label is -100. Prompts longer than the budget are cut from the left (the end of a prompt is what
the completion follows); a completion that alone exceeds data.max_length is cut at its end. Both
are counted and reported, never dropped.

Dev evaluation is the mean loss per completion token and its perplexity (lower is better).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
from typing import Any

import numpy as np

from ..data.types import ChatExample
from ..errors import DataError, UserError
from .base import Feature, TaskBase, collate
from .registry import TaskSpec, refuse_keys, register

IGNORE = -100
EVAL_TOKEN_BUDGET = 4096  # padded tokens per dev forward pass (the [B, L, vocab] logits dominate memory)

if TYPE_CHECKING:  # pragma: no cover
    import torch


class GenerationTask(TaskBase):
    name = "generation"
    lower_is_better = True

    def __init__(self, tokenizer, max_length: int):
        self.labels: list[str] = []
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncated = 0  # examples cut by the last encode call
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    # -- construction ----------------------------------------------------------------------
    def model_class(self) -> type:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def model_kwargs(self) -> dict[str, Any]:
        # SDPA, not the eager attention load_model picks for encoders on bf16 CPUs: at 512-token sequences
        # eager keeps every layer's [heads, L, L] probabilities for the backward pass. LoRA SFT of
        # SmolLM2 on MBPP, batch 8 (bench/sft_speed.py): peak memory 12.25 GB eager, 9.18 GB SDPA.
        return {"attn_implementation": "sdpa"}

    def to_json(self) -> dict:
        return {"task": self.name, "labels": [], "chat_template": self.chat}

    def check_labels(self, examples: list, label_map: dict[str, str], split: str) -> list:
        return examples

    # -- encoding --------------------------------------------------------------------------
    def encode_for_training(self, examples: list[ChatExample]) -> list[Feature]:
        self.truncated = 0
        features, problems = [], []
        for ex in examples:
            ids, labels = self._render(ex.messages)
            ids, labels = self._fit(ids, labels)
            if sum(label != IGNORE for label in labels[1:]) == 0:
                problems.append(f"{ex.source}: no completion token is left to learn from (empty answer?)")
                continue
            features.append({"input_ids": ids, "labels": labels})
        if problems:
            raise DataError(problems[:10], len(problems))
        return features

    def encode_for_inference(self, examples: list[ChatExample]) -> tuple[list[Feature], None]:
        return self.encode_for_training(examples), None

    def _render(self, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
        """Token ids of the whole chat, and labels that are the ids on assistant tokens, -100 elsewhere."""
        tok = self.tokenizer
        if not self.chat:
            prompt = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
            answer = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
            p = tok(prompt, add_special_tokens=True)["input_ids"]
            a = tok(answer, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if tok.eos_token_id is not None else [])
            return p + a, [IGNORE] * len(p) + a
        ids = _ids(tok.apply_chat_template(messages, tokenize=True))
        labels = [IGNORE] * len(ids)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            # the assistant turn spans from the end of "everything before + generation prompt"
            # to the end of "everything through this turn" (chat templates render prefixes stably)
            start = len(_ids(tok.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=True)))
            end = len(_ids(tok.apply_chat_template(messages[: i + 1], tokenize=True)))
            labels[start:end] = ids[start:end]
        return ids, labels

    def _fit(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        excess = len(ids) - self.max_length
        if excess <= 0:
            return ids, labels
        self.truncated += 1
        first_answer = next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))
        cut = min(excess, max(0, first_answer - 1))  # drop prompt tokens from the left, keep one before the answer
        ids, labels = ids[cut:], labels[cut:]
        return ids[: self.max_length], labels[: self.max_length]

    # -- loss ------------------------------------------------------------------------------
    def loss_units(self, feature: Feature) -> int:
        return sum(label != IGNORE for label in feature["labels"][1:])

    def loss_sum(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:

        import torch.nn.functional as F

        """Summed next-token cross-entropy over completion tokens. logits [B, L, V], labels [B, L]."""
        labels = batch["labels"][:, 1:]
        logits = logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE, reduction="sum")

    def training_logits(self, model, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Logits only where the next token is learned ([1, N, V]): the LM head gets the hidden states of
        those positions alone (a pre-hook on the output embeddings, inside the model's own forward, so
        PEFT and DDP wrappers run as usual). Prompt and padding positions cost no vocabulary-wide
        matmul or softmax, in memory or time. Equal to `loss_sum` over all logits (tested)."""
        import torch

        head = _output_embeddings(model)
        if head is None:
            return model(**batch).logits
        learned = torch.zeros_like(labels, dtype=torch.bool)
        learned[:, :-1] = labels[:, 1:] != IGNORE  # position i predicts token i + 1
        handle = head.register_forward_pre_hook(lambda module, args: (args[0][learned].unsqueeze(0), *args[1:]))
        try:
            return model(**batch).logits
        finally:
            handle.remove()

    def training_loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if logits.shape[:2] == labels.shape:  # full logits (a model without reachable output embeddings)
            return self.loss_sum(logits, {"labels": labels})
        targets = labels[:, 1:][labels[:, 1:] != IGNORE]
        return F.cross_entropy(logits[0].float(), targets, reduction="sum")

    # -- evaluation ------------------------------------------------------------------------
    def dev_scores(self, model, features: list[Feature], pad_id: int, bf16: bool = False) -> dict[str, float]:
        """Mean loss per completion token over `features`, and its perplexity."""
        import torch

        from ..inference import autocast_context

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, units = 0.0, 0
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        start = 0
        while start < len(order):
            size = max(1, EVAL_TOKEN_BUDGET // len(features[order[start]]["input_ids"]))
            chunk = [features[i] for i in order[start:start + size]]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            labels = batch.pop("labels")
            with torch.no_grad(), autocast_context(device, bf16):
                total += float(self.training_loss_sum(self.training_logits(model, batch, labels), labels))
            units += sum(self.loss_units(f) for f in chunk)
            start += len(chunk)
        model.train(was_training)
        loss = total / max(1, units)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": float(units)}

    def dev_headline(self, model, examples: list, features: list[Feature], plan, logits_of, bf16: bool) -> dict[str, float]:
        return self.headline(self.dev_scores(model, features, self.tokenizer.pad_token_id, bf16))

    def score(self, model, examples: list[ChatExample], bf16: bool = False) -> dict[str, float]:
        """`dev_scores` of raw examples (encoded here), plus how many were truncated."""
        features, _ = self.encode_for_inference(examples)
        return {"examples": len(examples), "truncated": self.truncated,
                **self.dev_scores(model, features, self.tokenizer.pad_token_id, bf16)}

    def headline(self, report: dict) -> dict[str, float]:
        return {k: report[k] for k in ("loss", "perplexity")}


def _output_embeddings(model):
    """The LM head module under DDP / PEFT wrappers; None for a compiled model (a hook added there would
    recompile it) or one without output embeddings."""
    inner = model
    while hasattr(inner, "module") and not hasattr(inner, "get_output_embeddings"):
        inner = inner.module  # DistributedDataParallel
    if hasattr(inner, "_orig_mod"):
        return None
    getter = getattr(inner, "get_output_embeddings", None)
    return getter() if getter is not None else None


def _ids(rendered) -> list[int]:
    """apply_chat_template(tokenize=True) returns a list, or a BatchEncoding in newer transformers."""
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    if isinstance(rendered, np.ndarray):
        rendered = rendered.tolist()
    return list(rendered)


class GenerationSpec(TaskSpec):
    name = "generation"
    summary = "decoder models: learn to write completions (prompt -> completion, or chats)"
    decoder = True
    auto_class = "AutoModelForCausalLM"
    pipeline_tag = "text-generation"
    peft_task_type = "CAUSAL_LM"
    data_keys = ("prompt_field", "completion_field", "messages_field")
    unused_data_keys = ("label_map",)  # no labels to map
    default_train_file = "data/train.jsonl"
    default_method = "lora"
    default_max_length = 512
    # Decoders are fine-tuned with smaller steps; LoRA is their default method.
    learning_rates = {"full": 2e-5, "lora": 2e-4, "ia3": 3e-3, "prefix": 1e-2}

    def check_config(self, cfg) -> list[str]:
        return refuse_keys(cfg, self.name, ("multi_label", "text_pair_field", "labels"))

    def dev_metrics(self, cfg) -> tuple[str, ...]:
        return ("loss", "perplexity")

    def read(self, cfg, path, *, scheme=None, require_labels=True):
        from ..data.generation_readers import read_generation

        d = cfg.data
        if d.format not in ("auto", "jsonl"):
            raise UserError(f"data.format: {d.format} is not a generation format; generation data is jsonl")
        examples = read_generation(path, prompt_field=d.prompt_field, completion_field=d.completion_field,
                                   messages_field=d.messages_field, require_completion=require_labels)
        return examples, None

    def starter_data(self, train, flags):
        if train is not None and not str(train).startswith("mbpp:") and not train.is_file():
            raise UserError(f"--train: file not found: {train}")
        return {}, []

    def for_training(self, cfg, tokenizer, splits) -> GenerationTask:
        return GenerationTask(tokenizer, cfg.data.max_length)

    def for_run(self, cfg, labels, tokenizer, *, threshold=None):
        raise UserError(f"{cfg.name} is a generation run: use `lmforge generate RUN --prompt ...` "
                        "or lmforge.generation.Generator.from_pretrained")

    def usage_code(self, cfg) -> list[str]:
        return ['messages = [{"role": "user", "content": "Write a haiku about autumn."}]',
                "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")",
                "output = model.generate(inputs, max_new_tokens=64)",
                "print(tokenizer.decode(output[0, inputs.shape[1]:], skip_special_tokens=True))"]

    def lmforge_usage(self) -> list[str]:
        return ["from lmforge.generation import Generator", 'Generator.from_pretrained("path/to/run").generate(["..."])']


register(GenerationSpec())
