"""`Predictor`: a trained run loaded for inference. Evaluate, predict, explain and serve all go
through it, so they can never disagree. The forward pass is pluggable (PyTorch, `lmforge.inference`,
or an exported ONNX graph, `lmforge.onnx_runtime`); explanations always use the PyTorch model."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import ProjectConfig
from .data.words import words_of
from .errors import UserError
from .inference import Forward, TorchForward, run_batches
from .models.build import load_model, load_tokenizer, uses_bf16
from .runs import RunFolder


class Predictor:
    def __init__(self, model, tokenizer, task, config: ProjectConfig, run_dir: Path | None = None, bf16: bool | None = None,
                 version: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.task = task
        self.config = config
        self.run_dir = run_dir
        device = next(model.parameters()).device
        self.bf16 = uses_bf16(config.training.precision, device) if bf16 is None else bf16
        self.torch = TorchForward(self.model, self.bf16)  # with bf16: runs a bf16 copy of the model (explain keeps fp32)
        self.forward: Forward = self.torch
        self.backend = "torch"
        self.version = version or (RunFolder(run_dir).version if run_dir is not None else config.name)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, bf16: bool | None = None, device: str | torch.device | None = None,
                 backend: str = "torch", threshold: float | None = None) -> "Predictor":
        """Load the model a run saved (plus its peft adapter where the method needs one).
        backend="onnx" predicts with the run's exported ONNX graph (`lmforge export`).
        threshold: multi-label runs only, the probability at which a label is predicted; default:
        the threshold training tuned on dev (labels.json; 0.5 for runs trained before tuning existed)."""
        if backend not in ("torch", "onnx"):
            raise UserError(f"unknown backend {backend!r}; use torch or onnx")
        run = RunFolder.open(run_dir)
        tokenizer = load_tokenizer(run.model_dir)
        task = run.spec.for_run(run.config, run.labels.model_dump(), tokenizer, threshold=threshold)
        model = load_model(task.model_class(), run.model_dir)
        if run.uses_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(run.adapter_dir), local_files_only=True)
        if device is not None:
            model = model.to(device)
        predictor = cls(model, tokenizer, task, run.config, run.path, bf16, version=run.version)
        if backend == "onnx":
            from .onnx_runtime import load_onnx_forward

            predictor.forward, predictor.backend = load_onnx_forward(run.path, model_version=predictor.version)
        return predictor

    @property
    def spec(self):
        from .tasks import get_task

        return get_task(self.config.task)

    @property
    def accepts_pairs(self) -> bool:
        """Inputs are (text, second text) pairs (a pair classifier)."""
        return "text_pair_field" in self.spec.data_keys and self.config.data.text_pair_field is not None

    # -- inputs ----------------------------------------------------------------------------
    def examples_from_texts(self, texts: Sequence[str | tuple[str, str]]) -> list:
        return self.task.examples_from_texts(texts)

    def words_of(self, text: str, doc_id: int = 0):
        """Raw text as words with character offsets, the way this model's tokenizer splits it."""
        return words_of(self.tokenizer, text, doc_id)

    # -- prediction ------------------------------------------------------------------------
    def predict(self, texts: Sequence[str | tuple[str, str]], progress=None) -> list[dict]:
        """Predictions for raw texts (or (text, pair) tuples for pair classification)."""
        if isinstance(texts, str):
            raise UserError("predict() takes a list of texts, not a single string")
        return self.predict_examples(self.examples_from_texts(texts), progress=progress)

    def predict_examples(self, examples: list, progress=None) -> list[dict]:
        if not examples:
            return []
        features, plan = self.task.encode_for_inference(examples)
        outputs = run_batches(features, self.tokenizer.pad_token_id, self.forward, progress=_per_example(progress, len(features), len(examples)))
        return self.task.decode(examples, plan, outputs)

    def scores(self, examples: list) -> np.ndarray:
        """Classification: the probability of every label for every example, [N, C] in label order
        (softmax, or independent sigmoids for multi-label), unrounded."""
        if self.task.token_level:
            raise UserError("scores() is for text-classification runs; use predict() for token classification")
        if not examples:
            return np.zeros((0, len(self.task.labels)), dtype=np.float32)
        features, _ = self.task.encode_for_inference(examples)
        outputs = run_batches(features, self.tokenizer.pad_token_id, self.forward)
        return self.task.probabilities(np.stack(outputs))  # [N, C]

    def evaluate(self, examples: list, progress=None, predictions: list[dict] | None = None) -> tuple[dict, list[dict]]:
        """Metrics report on labelled examples, and the predictions (`predictions`: already made for
        these examples with this predictor; not made again)."""
        if predictions is None:
            predictions = self.predict_examples(examples, progress=progress)
        report = self.task.metrics(examples, predictions)
        report["num_examples"] = len(examples)
        report["truncated"] = self.task.truncated
        report.update(self.task.report_extras())
        return report, predictions

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _per_example(progress, n_features: int, n_examples: int):
    """`progress` counts examples; the forward counts features (NER: windows and packed documents, not
    sentences): advance by the examples' share of the features done, ending exactly at n_examples."""
    if progress is None or n_features == n_examples:
        return progress
    done = [0, 0]  # features, examples reported

    def advance(n: int) -> None:
        done[0] += n
        shown = n_examples * done[0] // n_features
        if shown > done[1]:
            progress(shown - done[1])
            done[1] = shown
    return advance
