"""Everything a run needs before its first step: data read and checked, labels, encoded features,
the model (full or peft-wrapped). Shared by `train` and `validate`, so validation checks exactly
what training will use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..config import SENTENCE_METHODS, ProjectConfig
from ..data.load import Splits, load_splits
from ..errors import UserError
from ..models.build import freeze_word_embeddings, load_model, load_tokenizer, wrap_peft
from ..models.head import HEAD_NAMES, fine_tuned_labels, grow_head, head_to_grow
from ..models.resolve import resolve_model
from ..tasks import Task, get_task
from .steps import plan_arguments, total_steps

@dataclass
class Prepared:
    cfg: ProjectConfig
    model_path: Path
    tokenizer: object
    task: Task
    splits: Splits
    train_features: list
    truncated_train: int
    metric: str
    unknown_tokens: tuple[int, int] = (0, 0)  # (unknown, all) non-special tokens of the training features
    sized_batch: bool = False  # training.batch_size (or max_tokens_per_batch) was unset and set for a large training set
    sized_dropout: bool = False  # training.hidden_dropout was empty and set for a large training set
    sized_epochs: bool = False  # training.epochs was empty and raised for a small training set
    sized_average: bool = False  # training.average_last was empty and set for a small dev set

    @property
    def warnings(self) -> list[str]:
        """What the user must know before spending hours on training (the model cannot read the text)."""
        from ..data.language_fit import unknown_warning

        found = unknown_warning(*self.unknown_tokens, self.cfg.model)
        return [found] if found else []


def prepare(cfg: ProjectConfig, base: Path) -> Prepared:
    spec = get_task(cfg.task)
    model_path = resolve_model(cfg.model, base)
    tokenizer = load_tokenizer(model_path)
    _check_max_length(cfg, model_path)
    splits = load_splits(cfg, base)
    task = spec.for_training(cfg, tokenizer, splits)
    task.check_labels(splits.dev, cfg.data.label_map, "dev")
    if splits.test is not None:
        task.check_labels(splits.test, cfg.data.label_map, "test")
    features = task.encode_for_training(splits.train) if splits.train else []
    from ..data.language_fit import unknown_rate

    lengths = [len(f["input_ids"]) for f in features]
    batch, dropout = sized_batch(cfg, len(features), len(splits.train or [])), sized_dropout(cfg, len(splits.train or []), len(features))
    epochs = sized_epochs(cfg, lengths)  # after the batch size, which sets the steps per epoch
    return Prepared(cfg, model_path, tokenizer, task, splits, features, task.truncated, _metric(cfg),
                    unknown_rate(features, tokenizer), batch, dropout, epochs, sized_average(cfg, len(splits.dev), lengths))


def sized_batch(cfg: ProjectConfig, sequences: int, examples: int) -> bool:
    """Size the batches for a large training set when the config leaves both batch_size and
    max_tokens_per_batch unset: training.max_tokens_per_batch from the task's `tokens_for_large_set`
    (of `examples` packed into `sequences`), else training.batch_size from its `batch_for_large_set` (of `sequences`).
    Returns whether it did."""
    t, spec = cfg.training, get_task(cfg.task)
    if "batch_size" in t.model_fields_set or t.max_tokens_per_batch is not None:
        return False
    tokens = spec.tokens_for_large_set(examples, cfg.method, cfg.data.max_length, sequences)
    batch = spec.batch_for_large_set(sequences, cfg.method)
    if tokens is not None:
        t.max_tokens_per_batch = tokens
    elif batch is not None:
        t.batch_size = batch
    return tokens is not None or batch is not None


DEFAULT_EPOCHS = 3.0  # training.epochs when empty, on a set big enough
SMALL_SET_STEPS = 400  # optimizer steps a small training set gets when training.epochs is empty
SMALL_SET_MAX_EPOCHS = 100
SMALL_SET_EVALUATIONS = 20  # at most this many dev evaluations (each writes a checkpoint) over many short epochs
SMALL_SET_REASON = (f"on a small set, {DEFAULT_EPOCHS:g} epochs are too few optimizer steps to learn from; "
                    f"about {SMALL_SET_STEPS} are trained (Banking77 from 462 labels, MiniLM-L6: 33.7% test accuracy after "
                    "5 epochs, 43.4% after 400 steps; bench/active_learning.py).")


def sized_epochs(cfg: ProjectConfig, lengths: list[int]) -> bool:
    """Fill an empty training.epochs: DEFAULT_EPOCHS, or, where those would take fewer than
    SMALL_SET_STEPS optimizer steps, enough epochs for about that many (at most SMALL_SET_MAX_EPOCHS):
    an encoder fine-tuned (fully or with peft) on a few hundred examples, without max_steps. Over
    more than SMALL_SET_EVALUATIONS epochs, an empty training.eval_every_steps becomes every few
    epochs (the last step still evaluated), so that dev passes and checkpoints do not outweigh the
    steps. Returns whether it raised them."""
    t = cfg.training
    if t.epochs is not None:
        return False
    t.epochs = DEFAULT_EPOCHS
    if t.max_steps is not None or not lengths or cfg.method in SENTENCE_METHODS or get_task(cfg.task).decoder:
        return False
    per_epoch = total_steps(lengths, plan_arguments(t), 1, t.gradient_accumulation_steps, t.max_tokens_per_batch is not None)
    if per_epoch * t.epochs >= SMALL_SET_STEPS:
        return False
    epochs = min(SMALL_SET_MAX_EPOCHS, math.ceil(SMALL_SET_STEPS / per_epoch))
    every = math.ceil(epochs / SMALL_SET_EVALUATIONS)
    if every > 1 and t.eval_every_steps is None and t.max_tokens_per_batch is None:  # epochs of equal steps
        epochs = every * math.ceil(epochs / every)
        t.eval_every_steps = every * per_epoch
    t.epochs = float(epochs)
    return True


def dev_cadence(t) -> str:
    """How a raised small-set run scores dev, as train and validate say it ("" when every epoch)."""
    return f", dev scored every {t.eval_every_steps} steps" if t.eval_every_steps else ""


SMALL_DEV = 1000  # dev examples below which an empty training.average_last averages (full fine-tuning)
AVERAGED_EVALUATIONS = 3
MIN_EVALUATIONS = 5  # averaging the last 3 of fewer evaluations would take in the first, least trained ones
SMALL_DEV_REASON = ("a dev set this small ranks the evaluations by noise: on SST-2 from 200-3,200 labels (10% held out "
                    "as dev, MiniLM-L6, 5 epochs) the best dev evaluation swung test accuracy by up to 6 points from one "
                    "round to the next; the mean of the last 3 was 0.7 points better over 32 rounds (better on 27) and "
                    "dropped at most 2.8 (bench/active_learning.py); training.average_last: 0 keeps the best evaluation")


def sized_average(cfg: ProjectConfig, dev_examples: int, lengths: list[int]) -> bool:
    """Fill an empty training.average_last for full fine-tuning of an encoder on a small dev set
    (fewer than SMALL_DEV examples) over at least MIN_EVALUATIONS dev evaluations, without early
    stopping: the mean of the weights at the last AVERAGED_EVALUATIONS evaluations is kept instead
    of the single best one. Call after the epochs and batches are sized. Returns whether it did."""
    t = cfg.training
    if (t.average_last is not None or cfg.method != "full" or get_task(cfg.task).decoder or t.early_stopping_patience
            or not 0 < dev_examples < SMALL_DEV or not lengths):
        return False
    varies = t.max_tokens_per_batch is not None
    steps = total_steps(lengths, plan_arguments(t), t.epochs, t.gradient_accumulation_steps, varies)
    if t.max_steps is not None:
        steps = min(steps, t.max_steps)
    every = t.eval_every_steps or total_steps(lengths, plan_arguments(t), 1, t.gradient_accumulation_steps, varies)
    evaluations = math.ceil(steps / every)  # the last step is evaluated too
    if evaluations < MIN_EVALUATIONS:
        return False
    t.average_last = AVERAGED_EVALUATIONS
    return True


def sized_dropout(cfg: ProjectConfig, examples: int, sequences: int) -> bool:
    """Set training.hidden_dropout to the task's rate for a large training set
    (`hidden_dropout_for_large_set`) when the config leaves it empty. Returns whether it did."""
    rate = get_task(cfg.task).hidden_dropout_for_large_set(examples, cfg.method, sequences)
    if rate is None or cfg.training.hidden_dropout is not None:
        return False
    cfg.training.hidden_dropout = rate
    return True


def _metric(cfg: ProjectConfig) -> str:
    allowed = get_task(cfg.task).dev_metrics(cfg)
    if cfg.training.metric == "auto":
        return allowed[0]
    if cfg.training.metric not in allowed:
        kind = cfg.task + (" (multi-label)" if cfg.data.multi_label else "")
        raise UserError(f"training.metric: {cfg.training.metric!r} is not a dev metric of {kind}; choose one of {', '.join(allowed)}")
    return cfg.training.metric


def _check_max_length(cfg: ProjectConfig, model_path: Path) -> None:
    import json

    limit = json.loads((model_path / "config.json").read_text()).get("max_position_embeddings")
    if limit and cfg.data.max_length > limit:
        raise UserError(f"data.max_length: {cfg.data.max_length} exceeds the model's {limit} positions; set data.max_length <= {limit}")


def build_model(p: Prepared):
    # a base folder may carry a task head of its own (an earlier fine-tuned model): one whose shape
    # does not fit these labels is re-initialised rather than refused
    grown_from = head_to_grow(p.model_path, p.task.labels) if p.task.labels and not p.task.token_level else None
    if grown_from:  # the base's fine-tuned head covers the first labels: keep its rows, add the new ones
        kwargs = {**p.task.model_kwargs(), "num_labels": len(grown_from), "id2label": dict(enumerate(grown_from)),
                  "label2id": {label: i for i, label in enumerate(grown_from)}}
        model = load_model(p.task.model_class(), p.model_path, attention_dropout=p.cfg.training.attention_dropout,
                           hidden_dropout=p.cfg.training.hidden_dropout, training=True,
                           pad_token_id=p.tokenizer.pad_token_id, **kwargs)
        grow_head(model, p.task.labels)
    else:
        model = load_model(p.task.model_class(), p.model_path, attention_dropout=p.cfg.training.attention_dropout,
                           hidden_dropout=p.cfg.training.hidden_dropout, training=True,
                           ignore_mismatched_sizes=True, pad_token_id=p.tokenizer.pad_token_id, **p.task.model_kwargs())
        if not p.train_features:  # zero-shot: the head is built from the label texts
            pass
        elif p.cfg.data.multi_label and fine_tuned_labels(p.model_path) != p.task.labels:  # a new head, not a trained one
            init_bias_to_prior(model, p.train_features)
        elif p.task.token_level and fine_tuned_labels(p.model_path, "ForTokenClassification") != p.task.labels:
            init_tag_bias_to_prior(model, p.train_features, len(p.task.labels))
    if p.cfg.training.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(f"training.gradient_checkpointing: {type(model).__name__} does not support it; set it to false")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if p.cfg.method not in ("full", *SENTENCE_METHODS):
        return wrap_peft(model, p.cfg.method, get_task(p.cfg.task).peft_task_type, p.cfg.peft)
    if freeze_embeddings(p.cfg.training.freeze_embeddings, model, p.cfg.method in SENTENCE_METHODS):
        freeze_word_embeddings(model)
    return model


LARGE_VOCABULARY = 100_000


def freeze_embeddings(configured: bool | None, model, sentence_method: bool = False) -> bool:
    """Whether full fine-tuning keeps the word embeddings frozen: as configured, else for every model
    without an output embedding (an encoder under a task head; a decoder's LM head is, or mirrors, its
    word embeddings, which stay trained). A fine-tuning set touches a small share of the rows, yet
    AdamW, its weight decay, gradient clipping and the dense embedding gradient go over all of them at
    every step. MiniLM-L6 (30,522 rows, half its parameters): SST-2 one epoch 1.14x the tokens/s of
    trained embeddings at batch 16, dev accuracy 89.7 against 89.6; CoNLL-2003 one epoch test F1 84.5
    against 84.2. me5-small (250,002 rows): Weibo NER dev F1 59.6 frozen against 56.6 trained."""
    if configured is not None:
        return configured
    embeddings = model.get_input_embeddings()
    if embeddings is None:
        return False
    if sentence_method:  # the few-shot recipe as measured against SetFit (README): trained below 100,000 rows
        return embeddings.weight.shape[0] >= LARGE_VOCABULARY
    return getattr(model, "get_output_embeddings", lambda: None)() is None


def init_tag_bias_to_prior(model, features: list, num_labels: int) -> None:
    """Token classification: start the softmax head's bias at the log share of each tag among the
    labelled training tokens (add-one smoothed), so the untrained head already predicts the tag
    frequencies (mostly O) and the first steps are spent on telling entities apart.

    From a zero bias the head needs hundreds of steps at an encoder learning rate just to learn "mostly
    O" (Adam moves a bias by about one learning rate per step): me5-small on Weibo NER (96% O, 17
    tags) ended 3 epochs at a training loss above the all-O prior's and dev F1 0.00."""
    import torch

    counts = torch.ones(num_labels, dtype=torch.float64)
    for f in features:
        for label in f.get("labels", ()):
            if 0 <= label < num_labels:
                counts[label] += 1
    _set_head_bias(model, torch.log(counts / counts.sum()))


def init_bias_to_prior(model, features: list) -> None:
    """Multi-label: start each label's output bias at the log-odds of its share of the training
    examples (Laplace-smoothed), so the untrained head already predicts the label frequencies.

    From zero, a sigmoid head on data where most (example, label) pairs are negative first spends its
    steps learning "mostly no": the bias moves by about one learning rate per step, so the encoder and
    the head weights are bent into saying it, and a short run ends predicting nothing (MiniLM-L6, LoRA,
    2 epochs on 600 CLINC150 domain examples, ~85% negative pairs: dev micro-F1 0.00, every prediction
    empty; with this start 0.49 at 0.5 and 0.60 at the tuned threshold). The prior start is the one of
    Lin et al. 2017 (focal loss, section 4.1)."""
    import torch

    targets = torch.tensor([f["labels"] for f in features], dtype=torch.float64)  # [N, C]
    prior = (targets.sum(dim=0) + 1) / (len(features) + 2)  # [C]
    _set_head_bias(model, torch.log(prior / (1 - prior)))


def _set_head_bias(model, bias) -> None:
    """Copy `bias` ([C]) into the task head's bias; an architecture whose head lmforge does not know
    keeps its own initialisation."""
    import torch

    modules = dict(model.named_modules())
    head = next((modules[n] for n in HEAD_NAMES if isinstance(modules.get(n), torch.nn.Linear)
                 and modules[n].out_features == bias.shape[0] and modules[n].bias is not None), None)
    if head is not None:
        with torch.no_grad():
            head.bias.copy_(bias.to(head.bias.dtype))
