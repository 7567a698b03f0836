"""Sequence classification: single texts or text pairs; one label (softmax) or many (sigmoid)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.types import TextExample
from ..errors import DataError, UserError
from ..evaluation.report import ReportStyle
from .base import Feature, TaskBase
from .registry import TaskSpec, register

MULTI_LABEL_THRESHOLD = 0.5  # before training has tuned one on dev (training/threshold.py)

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ClassificationTask(TaskBase):
    name = "text-classification"

    def __init__(self, labels: list[str], tokenizer, max_length: int, multi_label: bool = False,
                 threshold: float = MULTI_LABEL_THRESHOLD, pooling: str = "model"):
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.multi_label = multi_label
        self.threshold = threshold  # multi-label: a label is predicted when its probability >= this
        self.truncated = 0  # texts cut to max_length by the last encode call
        self.loss_offset: torch.Tensor | None = None  # [C] added to the logits in the loss (logit adjustment)
        # "model": the architecture's own sequence-classification head; "mean": a sentence-embedding
        # classifier (models/pooled.py: mean pooling, normalisation, linear head; fewshot/zeroshot)
        self.pooling = pooling

    # -- construction ----------------------------------------------------------------------
    @staticmethod
    def discover_labels(examples: list[TextExample]) -> list[str]:
        return sorted({label for ex in examples for label in ex.labels})

    def model_class(self) -> type:
        if self.pooling == "mean":
            from ..models.pooled import SentenceClassifier

            return SentenceClassifier
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.labels),
            "id2label": dict(enumerate(self.labels)),
            "label2id": dict(self.index),
            "problem_type": "multi_label_classification" if self.multi_label else "single_label_classification",
        }

    def to_json(self) -> dict:
        out = {"task": self.name, "labels": self.labels, "multi_label": self.multi_label}
        if self.pooling != "model":
            out["pooling"] = self.pooling
        if self.multi_label:
            out["threshold"] = self.threshold
        return out

    # -- encoding --------------------------------------------------------------------------
    def check_labels(self, examples: list[TextExample], label_map: dict[str, str], split: str) -> list[TextExample]:
        """Map configured aliases and reject labels unseen in train, naming file:line."""
        problems, total = [], 0
        for ex in examples:
            ex.labels = [label_map.get(label, label) for label in ex.labels]
            for label in ex.labels:
                if label not in self.index:
                    total += 1
                    if len(problems) < 10:
                        problems.append(
                            f"{ex.source}: label {label!r} of the {split} set does not occur in train "
                            f"(known: {_short_list(self.labels)}); add train examples or map it with data.label_map"
                        )
        if total:
            raise DataError(problems, total)
        return examples

    def examples_from_texts(self, texts) -> list[TextExample]:
        return [TextExample(text=t[0], text_pair=t[1]) if isinstance(t, (tuple, list)) else TextExample(text=t) for t in texts]

    def report_extras(self) -> dict:
        return {"threshold": self.threshold} if self.multi_label else {}

    def encode_for_training(self, examples: list[TextExample]) -> list[Feature]:
        features = self._encode(examples)
        for f, ex in zip(features, examples):
            f["labels"] = self._target(ex)
        return features

    def encode_for_inference(self, examples: list[TextExample]) -> tuple[list[Feature], None]:
        return self._encode(examples), None

    def _encode(self, examples: list[TextExample]) -> list[Feature]:
        texts = [ex.text for ex in examples]
        pairs = [ex.text_pair for ex in examples] if any(ex.text_pair is not None for ex in examples) else None
        if pairs is not None:
            pairs = [p or "" for p in pairs]
        full = self.tokenizer(texts, pairs, truncation=False, add_special_tokens=True)["input_ids"]
        long = [i for i, ids in enumerate(full) if len(ids) > self.max_length]
        self.truncated = len(long)
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        return [{k: enc[k][i] for k in keys} for i in range(len(texts))]

    def _target(self, ex: TextExample):
        if self.multi_label:
            target = [0.0] * len(self.labels)
            for label in ex.labels:
                target[self.index[label]] = 1.0
            return target
        return self.index[ex.labels[0]]

    def loss_units(self, feature: Feature) -> int:
        return 1

    def adjust_for_prior(self, features: list[Feature], tau: float) -> torch.Tensor:

        import torch

        """Logit-adjusted loss (Menon et al. 2021): the loss sees logits + tau * log(prior), the prior
        being each class's share of the training features, so the trained logits themselves carry no
        preference for frequent classes (in a continual update: new data over the smaller replayed
        sample of the old classes). A class absent from training counts as one example."""
        if self.multi_label:
            raise ValueError("logit adjustment is defined for single-label classification")
        counts = torch.bincount(torch.tensor([f["labels"] for f in features]), minlength=len(self.labels)).float()
        prior = counts.clamp(min=1) / counts.clamp(min=1).sum()
        self.loss_offset = tau * prior.log()
        return self.loss_offset

    # -- loss and decoding -----------------------------------------------------------------
    def loss_sum(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch.nn.functional as F

        logits = logits.float()  # [B, C]
        if self.multi_label:
            per_label = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="none")  # [B, C]
            return per_label.mean(dim=1).sum()
        if self.loss_offset is not None:
            logits = logits + self.loss_offset.to(logits.device)
        return F.cross_entropy(logits, batch["labels"], reduction="sum")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:

        import torch

        t = torch.from_numpy(logits).float()
        return (torch.sigmoid(t) if self.multi_label else torch.softmax(t, dim=-1)).numpy()

    def decode(self, examples: list[TextExample], plan: None, outputs: list[np.ndarray]) -> list[dict]:
        results = []
        for logits in outputs:  # one [C] row per example
            probs = self.probabilities(logits[None, :])[0]
            scores = {label: round(float(p), 6) for label, p in zip(self.labels, probs)}
            if self.multi_label:
                chosen = [self.labels[i] for i in np.flatnonzero(probs >= self.threshold)]
                results.append({"labels": chosen, "probabilities": scores})
            else:
                best = int(np.argmax(probs))
                results.append({"label": self.labels[best], "score": float(probs[best]), "probabilities": scores})
        return results

    # -- active learning (lmforge suggest) ----------------------------------------------------
    @property
    def suggest_strategies(self) -> tuple[str, ...]:
        from ..active.scoring import CLASSIFICATION_STRATEGIES

        return CLASSIFICATION_STRATEGIES

    def informativeness(self, prediction: dict, strategy: str) -> tuple[float, str]:
        """How much labelling this example would teach the model, and why, in words."""
        from ..active.scoring import label_uncertainty, multilabel_uncertainty

        probs = prediction["probabilities"]
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        values = np.array([probs[label] for label in self.labels])
        if self.multi_label:
            near = min(ranked, key=lambda kv: abs(kv[1] - self.threshold))
            return (multilabel_uncertainty(values, self.threshold, strategy),
                    f"{strategy}: label {near[0]!r} at {near[1]:.2f}, threshold {self.threshold:.2f}")
        top = ", ".join(f"{label!r} {p:.2f}" for label, p in ranked[:2])
        return label_uncertainty(values, strategy), f"{strategy}: {top}"

    def suggestion(self, example: TextExample, prediction: dict | None, data) -> dict:
        """A record in the JSONL format the reader accepts (the config's field names), pre-filled
        with the predicted label(s) to confirm or correct (None without a model)."""
        record = {data.text_field: example.text}
        if data.text_pair_field:
            record[data.text_pair_field] = example.text_pair
        if prediction is None:
            record[data.label_field] = [] if self.multi_label else None
        else:
            record[data.label_field] = list(prediction["labels"]) if self.multi_label else prediction["label"]
        return record

    # -- metrics ---------------------------------------------------------------------------
    def metrics(self, examples: list[TextExample], predictions: list[dict]) -> dict:
        from ..evaluation.classification_metrics import classification_report, multilabel_report

        probs = np.array([[p["probabilities"][label] for label in self.labels] for p in predictions])
        if self.multi_label:
            return multilabel_report([ex.labels for ex in examples], [p["labels"] for p in predictions], self.labels, probs)
        return classification_report([ex.labels[0] for ex in examples], [p["label"] for p in predictions], self.labels, probs)

    @property
    def answer_unit(self) -> str:
        return "label sets" if self.multi_label else "labels"

    def answers(self, prediction: dict) -> list:
        return [sorted(prediction["labels"])] if self.multi_label else [prediction["label"]]

    def headline(self, report: dict) -> dict[str, float]:
        if self.multi_label:
            out = {"micro_f1": report["micro"]["f1"], "macro_f1": report["macro"]["f1"], "exact_match": report["exact_match"]}
            if "average_precision" in report:
                out["average_precision"] = report["average_precision"]
            return out
        out = {"accuracy": report["accuracy"], "macro_f1": report["macro"]["f1"]}
        if "calibration" in report:
            out["ece"] = report["calibration"]["ece"]
        return out



def _short_list(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


SINGLE_LABEL_REPORT = ReportStyle(
    kind="text-classification",
    headlines=(("Accuracy", ("accuracy",)), ("Macro F1", ("macro", "f1")), ("Micro F1", ("micro", "f1")),
               ("Weighted F1", ("weighted", "f1"))))
MULTI_LABEL_REPORT = ReportStyle(
    kind="multi-label",
    headlines=(("Exact match (subset accuracy)", ("exact_match",)), ("Micro F1", ("micro", "f1")),
               ("Macro F1", ("macro", "f1")), ("Samples F1", ("samples", "f1")),
               ("Average precision (micro, threshold-free)", ("average_precision",)),
               ("Decision threshold (a label is predicted at probability >= this)", ("threshold",)),
               ("Examples with no predicted label (share)", ("empty_predictions",))),
    per_heading="Per label", per_column="Label", binary_calibration=True)


class ClassificationSpec(TaskSpec):
    name = "text-classification"
    summary = "one label per text (softmax) or several (data.multi_label: true); single texts or pairs"
    auto_class = "AutoModelForSequenceClassification"
    pipeline_tag = "text-classification"
    peft_task_type = "SEQ_CLS"
    data_keys = ("text_field", "text_pair_field", "label_field", "multi_label", "label_delimiter", "labels", "label_descriptions")
    supports_lifecycle = True
    sentence_methods = True
    overflow = "longer texts are cut at data.max_length"
    large_set_batch_size = 32  # SST-2: 1.4x the tokens/s of batch 16, dev accuracy 90.4 vs 89.7 (README)

    def check_config(self, cfg) -> list[str]:
        problems = []
        labels = cfg.data.labels
        if labels is not None and (len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels)):
            problems.append("data.labels: give each label once, as a non-empty string")
        if cfg.training.logit_adjustment and cfg.data.multi_label:
            problems.append("training.logit_adjustment: only for single-label text-classification")
        return problems

    def dev_metrics(self, cfg) -> tuple[str, ...]:
        # multi-label selects on threshold-free average precision: micro-F1 at 0.5 is often 0 for every early
        # checkpoint (the first would win the tie), and the threshold is tuned on dev after training anyway
        if cfg.data.multi_label:
            return ("average_precision", "micro_f1", "macro_f1", "exact_match")
        return ("accuracy", "macro_f1")

    def read(self, cfg, path, *, scheme=None, require_labels=True):
        from ..data.classification_readers import read_classification

        d = cfg.data
        if d.format == "conll":
            raise UserError("data.format: conll is a NER format; use csv, tsv or jsonl for text-classification")
        examples = read_classification(path, format=d.format, text_field=d.text_field, text_pair_field=d.text_pair_field,
                                       label_field=d.label_field, multi_label=d.multi_label,
                                       label_delimiter=d.label_delimiter, require_labels=require_labels)
        return examples, None

    def starter_data(self, train, flags):
        if train is None:
            return dict(flags), []
        from ..data.infer import infer_classification_fields

        _require_file(train)
        return infer_classification_fields(train, flags.get("text_field"), flags.get("label_field"),
                                           flags.get("text_pair_field"), flags.get("multi_label"))

    def for_training(self, cfg, tokenizer, splits) -> ClassificationTask:
        labels = cfg.data.labels or ClassificationTask.discover_labels(splits.train)
        task = ClassificationTask(labels, tokenizer, cfg.data.max_length, cfg.data.multi_label, pooling=_pooling(cfg))
        if cfg.data.labels:
            task.check_labels(splits.train, cfg.data.label_map, "train")
        if len(task.labels) < (1 if cfg.data.multi_label else 2):
            raise UserError(f"{cfg.data.train}: found labels {task.labels}; training needs at least two different labels")
        return task

    def for_run(self, cfg, labels, tokenizer, *, threshold=None) -> ClassificationTask:
        multi_label = labels.get("multi_label", False)
        if threshold is not None:
            check_threshold(threshold, multi_label)
        return ClassificationTask(labels["labels"], tokenizer, cfg.data.max_length, multi_label, pooling=labels.get("pooling", "model"),
                                  threshold=next(t for t in (threshold, labels.get("threshold"), MULTI_LABEL_THRESHOLD) if t is not None))

    def report_style(self, cfg) -> ReportStyle:
        return MULTI_LABEL_REPORT if cfg.data.multi_label else SINGLE_LABEL_REPORT

    def usage_code(self, cfg) -> list[str]:
        pair = ', "second text"' if cfg.data.text_pair_field else ""
        code = [f'inputs = tokenizer(["some text"{pair}], return_tensors="pt", truncation=True, max_length={cfg.data.max_length})',
                "with torch.no_grad():", "    logits = model(**inputs).logits"]
        if cfg.data.multi_label:
            return code + ["probs = logits.sigmoid()[0]  # multi-label: compare each with the threshold above",
                           "labels = [model.config.id2label[i] for i, p in enumerate(probs) if p >= THRESHOLD]"]
        return code + ["probs = logits.softmax(-1)[0]", "label = model.config.id2label[int(probs.argmax())]"]


def _pooling(cfg) -> str:
    """Mean pooling (a sentence-embedding classifier) for the few-/zero-shot methods, and for full
    fine-tuning that starts from a saved sentence classifier (e.g. a continual update of one)."""
    from pathlib import Path

    from ..models.pooled import is_sentence_classifier
    from .registry import SENTENCE_METHODS

    if cfg.method in SENTENCE_METHODS or (cfg.method == "full" and is_sentence_classifier(Path(cfg.model))):
        return "mean"
    return "model"


def check_threshold(threshold: float, multi_label: bool) -> None:
    if not multi_label:
        raise UserError(f"threshold={threshold}: a decision threshold applies to multi-label runs only; this run "
                        "predicts one label per text (the most probable); leave the threshold out")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold={threshold!r}: give a probability between 0 and 1 (a label is predicted when its "
                        "probability is at least this)")


def _require_file(train) -> None:
    if not train.is_file():
        raise UserError(f"--train: file not found: {train}")


register(ClassificationSpec())
