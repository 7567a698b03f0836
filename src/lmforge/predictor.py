"""`Predictor`: a trained run loaded for inference. Evaluate, predict, explain and serve all go
through it, so they can never disagree. The forward pass is pluggable (PyTorch or an exported ONNX
graph, see `lmforge.inference`); explanations always use the PyTorch model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import ProjectConfig, load_run_config
from .data.types import TextExample, TokenExample
from .errors import UserError
from .inference import Forward, run_batches, torch_forward
from .models.build import bf16_supported, load_model, load_tokenizer
from .runs import LABELS, check_complete
from .files import read_json, sha256_file

_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef])")


class Predictor:
    def __init__(self, model, tokenizer, task, config: ProjectConfig, run_dir: Path | None = None, bf16: bool | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.task = task
        self.config = config
        self.run_dir = run_dir
        device = next(model.parameters()).device
        self.bf16 = (config.training.precision == "bf16" or (config.training.precision == "auto" and bf16_supported(device))) if bf16 is None else bf16
        self.forward: Forward = torch_forward(self.model, self.bf16)
        self.backend = "torch"
        self.version = _version(config.name, run_dir)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, bf16: bool | None = None, device: str | torch.device | None = None,
                 backend: str = "torch", threshold: float | None = None) -> "Predictor":
        """Load the model a run saved (plus its peft adapter where the method needs one).
        backend="onnx" predicts with the run's exported ONNX graph (`lmforge export`).
        threshold: multi-label runs only, the probability at which a label is predicted; default:
        the threshold training tuned on dev (labels.json; 0.5 for runs trained before tuning existed)."""
        if backend not in ("torch", "onnx"):
            raise UserError(f"unknown backend {backend!r}; use torch or onnx")
        from .tasks.classification import MULTI_LABEL_THRESHOLD, ClassificationTask
        from .tasks.token_classification import TokenClassificationTask

        run_dir = check_complete(Path(run_dir))
        cfg = load_run_config(run_dir)
        if cfg.task == "generation":
            raise UserError(f"{run_dir} is a generation run: use `lmforge generate {run_dir} --prompt ...` "
                            "or lmforge.generation.Generator.from_pretrained")
        info = read_json(run_dir / LABELS)
        tokenizer = load_tokenizer(run_dir / "model")
        multi_label = cfg.task == "text-classification" and info.get("multi_label", False)
        if threshold is not None:
            _check_threshold(threshold, multi_label, run_dir)
        if cfg.task == "token-classification":
            task = TokenClassificationTask(info["labels"], tokenizer, cfg.data.max_length, info.get("document_context", True))
        else:
            task = ClassificationTask(info["labels"], tokenizer, cfg.data.max_length, multi_label,
                                      threshold=threshold if threshold is not None else info.get("threshold", MULTI_LABEL_THRESHOLD))
        model = load_model(task.model_class(), run_dir / "model")
        if (run_dir / "adapter").is_dir() and not _merged(run_dir):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(run_dir / "adapter"), local_files_only=True)
        if device is not None:
            model = model.to(device)
        predictor = cls(model, tokenizer, task, cfg, run_dir, bf16)
        if backend == "onnx":
            from .export.onnx import load_onnx_forward

            predictor.forward, predictor.backend = load_onnx_forward(run_dir, model_version=predictor.version)
        return predictor

    # -- inputs ----------------------------------------------------------------------------
    def examples_from_texts(self, texts: Sequence[str | tuple[str, str]]) -> list:
        if self.task.name == "token-classification":
            return [self.words_of(t if isinstance(t, str) else t[0], doc_id=i) for i, t in enumerate(texts)]
        out = []
        for t in texts:
            if isinstance(t, (tuple, list)):
                out.append(TextExample(text=t[0], text_pair=t[1]))
            else:
                out.append(TextExample(text=t))
        return out

    def words_of(self, text: str, doc_id: int = 0) -> TokenExample:
        """Split raw text into words with character offsets, the way the model's tokenizer does
        (punctuation split off; CJK characters one word each)."""
        pre = self.tokenizer.backend_tokenizer.pre_tokenizer
        spans = [span for _, span in pre.pre_tokenize_str(text)] if pre is not None else []
        if not spans:
            spans = [m.span() for m in re.finditer(r"\S+", text)]
        words, offsets = [], []
        for start, end in spans:
            # the offsets index the original text; the piece strings may be rewritten (Ġ, ▁ markers)
            for m in re.finditer(r"\S+", text[start:end]):
                pos = start + m.start()
                for part in (p for p in _CJK.split(m.group()) if p):
                    words.append(part)
                    offsets.append((pos, pos + len(part)))
                    pos += len(part)
        return TokenExample(words=words, doc_id=doc_id, text=text, offsets=offsets)

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
        outputs = run_batches(features, self.tokenizer.pad_token_id, self.forward, progress=progress)
        return self.task.decode(examples, plan, outputs)

    def scores(self, examples: list) -> np.ndarray:
        """Classification: the probability of every label for every example, [N, C] in label order
        (softmax, or independent sigmoids for multi-label), unrounded."""
        if self.task.name != "text-classification":
            raise UserError("scores() is for text-classification runs; use predict() for token classification")
        if not examples:
            return np.zeros((0, len(self.task.labels)), dtype=np.float32)
        features, _ = self.task.encode_for_inference(examples)
        outputs = run_batches(features, self.tokenizer.pad_token_id, self.forward)
        return self.task.probabilities(np.stack(outputs))  # [N, C]

    def evaluate(self, examples: list, progress=None) -> tuple[dict, list[dict]]:
        """Metrics report on labelled examples, and the predictions."""
        predictions = self.predict_examples(examples, progress=progress)
        report = self.task.metrics(examples, predictions)
        report["num_examples"] = len(examples)
        report["truncated"] = self.task.truncated
        if getattr(self.task, "multi_label", False):
            report["threshold"] = self.task.threshold
        return report, predictions

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _version(name: str, run_dir: Path | None) -> str:
    """`<run name>-<first 12 hex digits of the weights' sha256>`: changes whenever the weights do."""
    weights = run_dir / "model" / "model.safetensors" if run_dir is not None else None
    if weights is None or not weights.is_file():
        return name
    return f"{name}-{sha256_file(weights)[0][:12]}"


def _check_threshold(threshold: float, multi_label: bool, run_dir: Path) -> None:
    if not multi_label:
        raise UserError(f"threshold={threshold}: a decision threshold applies to multi-label runs only; {run_dir} predicts "
                        "one label per text (the most probable); leave the threshold out")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold={threshold!r}: give a probability between 0 and 1 (a label is predicted when its "
                        "probability is at least this)")


def _merged(run_dir: Path) -> bool:
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    return bool(info.get("merged", False))
