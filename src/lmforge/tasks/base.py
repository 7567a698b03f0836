"""The task protocol and the collate function every task shares."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch


Feature = dict[str, Any]  # input_ids, optional token_type_ids, optional labels; plus task keys


LogitsOf = Callable[[list[Feature]], list]  # features -> one logits array per feature (the loop's sharded forward)


class Task(Protocol):
    """What the training loop, evaluation, reports, the Predictor, the server, the explainer and the
    registry ask of a task instance. `TaskBase` gives the defaults most tasks keep."""

    name: str
    labels: list[str]
    lower_is_better: bool  # direction of the dev metric (generation selects on loss)
    token_level: bool  # one prediction per word (NER) rather than per text
    truncated: int  # texts longer than max_length seen by the last encode

    def model_class(self) -> type: ...

    def model_kwargs(self) -> dict[str, Any]: ...

    def encode_for_training(self, examples: list) -> list[Feature]: ...

    def encode_for_inference(self, examples: list) -> tuple[list[Feature], Any]: ...

    def loss_sum(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def loss_units(self, feature: Feature) -> int: ...

    def adjust_for_prior(self, features: list[Feature], tau: float) -> None:
        """Logit-adjusted loss against the training prior (single-label classification only)."""

    def dev_headline(self, model, examples: list, features: list[Feature], plan: Any, logits_of: LogitsOf,
                     bf16: bool) -> dict[str, float]:
        """The dev scores the loop selects checkpoints on (`headline` keys)."""

    def examples_from_texts(self, texts: Sequence) -> list:
        """Examples (unlabelled) from raw texts as a user or a client sends them (pairs as tuples)."""

    def decode(self, examples: list, plan: Any, outputs: list) -> list[dict]: ...

    def report_extras(self) -> dict:
        """Settings an evaluation report records beside the metrics (a multi-label threshold)."""

    def response(self, prediction: dict) -> dict:
        """What a client (HTTP response, `lmforge predict` line) sees of one prediction."""

    def metrics(self, examples: list, predictions: list[dict]) -> dict: ...

    def headline(self, report: dict) -> dict[str, float]: ...

    answer_unit: str  # what `answers` returns, plural ("labels", "word tags")

    def answers(self, prediction: dict) -> list:
        """The comparable answers in one prediction (ONNX parity, agreement between models)."""

    def check_labels(self, examples: list, label_map: dict[str, str], split: str) -> list: ...

    def to_json(self) -> dict: ...


class TaskBase:
    """Defaults for the members of `Task` that most tasks share."""

    name = ""
    labels: list[str] = []
    lower_is_better = False
    token_level = False
    truncated = 0

    suggest_strategies: tuple[str, ...] = ()  # active learning measures (lmforge suggest); none: not offered

    def adjust_for_prior(self, features: list[Feature], tau: float) -> None:
        raise ValueError(f"logit adjustment is not defined for {self.name}")

    def examples_from_texts(self, texts: Sequence) -> list:
        raise NotImplementedError(f"{self.name} does not predict from raw texts")

    def report_extras(self) -> dict:
        return {}

    def training_logits(self, model, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The logits a training step needs (called under autocast); `training_loss_sum` reads them."""
        return model(**batch).logits

    def training_loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_sum(logits, {"labels": labels})

    def response(self, prediction: dict) -> dict:
        return prediction

    def dev_headline(self, model, examples: list, features: list[Feature], plan: Any, logits_of: LogitsOf,
                     bf16: bool) -> dict[str, float]:
        return self.headline(self.metrics(examples, self.decode(examples, plan, logits_of(features))))


def collate(features: list[Feature], pad_id: int, label_pad: int = -100, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad a list of features to the longest one (dynamic padding), rounded up to `multiple`."""
    import torch

    longest = max(len(f["input_ids"]) for f in features)
    longest += (-longest) % multiple
    n = len(features)
    input_ids = torch.full((n, longest), pad_id, dtype=torch.long)  # [B, L]
    attention = torch.zeros((n, longest), dtype=torch.long)  # [B, L]
    has_types = "token_type_ids" in features[0]
    types = torch.zeros((n, longest), dtype=torch.long) if has_types else None
    for i, f in enumerate(features):
        ids = f["input_ids"]
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        if types is not None:
            types[i, : len(ids)] = torch.tensor(f["token_type_ids"])
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if types is not None:
        batch["token_type_ids"] = types
    if "labels" in features[0]:
        first = features[0]["labels"]
        if isinstance(first, int):
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)  # [B]
        elif isinstance(first[0], float):
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float)  # [B, C]
        else:
            labels = torch.full((n, longest), label_pad, dtype=torch.long)  # [B, L]
            for i, f in enumerate(features):
                labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
            batch["labels"] = labels
    return batch
