"""Tasks are plug-ins: each task module registers a `TaskSpec` under its config name.

A spec is what lmforge knows about a task *before* there is a model: which config keys it uses
and how they combine, how its data files are read, which dev metrics it can select on, how a task
object is built for training and for a saved run, its model card, its report layout and what
`lmforge init` infers from a training file. The task object it builds (`base.Task`) does the
work on examples, features and outputs.

The built-in tasks register when `lmforge.tasks` is imported; other packages can add tasks through
the `lmforge.tasks` entry-point group (the entry point names a module that calls `register`).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ProjectConfig
    from ..evaluation.report import ReportStyle
    from .base import Task

LARGE_TRAINING_SET = 10_000  # training examples from which a task's large_set_* settings apply
LARGE_SET_DROPOUT_REASON = "a large set needs no such regularisation, and the random masks cost time"
LARGE_SET_REASON = "on a large set, fewer and larger steps train faster"  # said by init and train when they size it
LARGE_SET_TOKENS_REASON = ("on a large set, batches cut by tokens train faster: no step of a few short documents costs "
                           "nearly as much as a full one")


def packed_large_set(examples: int, sequences: int) -> bool:
    """Whether NER's large-set settings (batches cut by tokens, no hidden dropout) apply: LARGE_TRAINING_SET
    sentences or more, packed into `sequences` (init: documents, a lower bound) of two or more on average.
    Both were measured on documents packed into full sequences (CoNLL-2003 files). Sentences without
    documents (JSONL lines without doc_id, CoNLL without -DOCSTART-) are a sequence each: a budget of 14 full
    sequences would hold ~80 of them, 5x fewer steps an epoch; they keep batches of 16 and the model's
    dropout (README: 12,685 CoNLL-2003 sentences as JSONL lines, test F1 84.02 with both against 86.30 without
    after 3 epochs, 83.54 against 85.08 after 5)."""
    return examples >= LARGE_TRAINING_SET and 2 * sequences <= examples


SENTENCE_METHODS = ("fewshot", "zeroshot")  # methods that build a sentence-embedding classifier (models/pooled.py)
DEFAULT_LEARNING_RATES = {"full": 1e-4, "lora": 1e-3, "ia3": 3e-3, "prefix": 1e-2, "fewshot": 2e-5, "zeroshot": 2e-5}


class TaskSpec:
    """Defaults shared by most tasks; a task module subclasses this and registers one instance."""

    name = ""
    summary = ""  # one line, shown by `lmforge init --help` and in unknown-task errors
    decoder = False  # a decoder (generation) run: served and evaluated by the generation stack
    auto_class = ""  # transformers Auto class (model card, loading without lmforge)
    pipeline_tag = ""  # Hugging Face pipeline tag (model card)
    peft_task_type = ""  # peft TaskType member
    data_keys: tuple[str, ...] = ()  # data.* keys that mean something for this task only
    unused_data_keys: tuple[str, ...] = ()  # shared data.* keys that this task ignores
    holdout_by_document = False  # dev hold-out keeps documents whole (NER)
    default_train_file = "data/train.csv"
    default_method = "full"
    default_max_length: int | None = None  # None: DataConfig's default
    default_batch_size: int | None = None  # None: TrainingConfig's default
    # batch_size when it is not set and the training set has LARGE_TRAINING_SET examples or more (None: no change):
    # on short texts a step's fixed costs (optimizer, gradient clipping, casts) outweigh its matrix products
    large_set_batch_size: int | None = None
    # training.hidden_dropout when it is empty and full fine-tuning has LARGE_TRAINING_SET examples or more (None: the
    # model's own rate stays)
    large_set_hidden_dropout: float | None = None
    # training.max_tokens_per_batch, in sequences of data.max_length, when neither it nor batch_size is set and full
    # fine-tuning has LARGE_TRAINING_SET examples or more (None: batches by count)
    large_set_token_batch_rows: int | None = None
    # what happens to an input longer than data.max_length, for init's note; None: init does not size it
    overflow: str | None = None
    learning_rates = DEFAULT_LEARNING_RATES
    supports_lifecycle = False  # registry `update` (continual learning) and drift monitoring
    sentence_methods = False  # method fewshot / zeroshot (a sentence-embedding classifier) apply

    # -- config --------------------------------------------------------------------------------
    def batch_for_large_set(self, examples: int, method: str) -> int | None:
        """`large_set_batch_size` for a training set of `examples` when it is large enough
        (LARGE_TRAINING_SET) and `method` trains in ordinary batches (not fewshot/zeroshot); else None.
        `init` writes it and `train` applies it to a config that leaves the batch unset."""
        if self.large_set_batch_size and examples >= LARGE_TRAINING_SET and method not in SENTENCE_METHODS:
            return self.large_set_batch_size
        return None

    def tokens_for_large_set(self, examples: int, method: str, max_length: int, sequences: int) -> int | None:
        """`large_set_token_batch_rows` x `max_length` padded tokens per batch for full fine-tuning on a
        large set of `examples` packed into `sequences` (`packed_large_set`); else None. `init` writes it and
        `train` applies it to a config that leaves the batch unset."""
        if self.large_set_token_batch_rows and method == "full" and packed_large_set(examples, sequences):
            return self.large_set_token_batch_rows * max_length
        return None

    def hidden_dropout_for_large_set(self, examples: int, method: str, sequences: int) -> float | None:
        """`large_set_hidden_dropout` for full fine-tuning on a large set of `examples` packed into
        `sequences` (`packed_large_set`); else None (the model's own rate)."""
        if self.large_set_hidden_dropout is not None and method == "full" and packed_large_set(examples, sequences):
            return self.large_set_hidden_dropout
        return None

    def check_config(self, cfg: "ProjectConfig") -> list[str]:
        """Problems with combinations of keys, each naming its key."""
        return []

    def dev_metrics(self, cfg: "ProjectConfig") -> tuple[str, ...]:
        """Dev metrics a checkpoint can be selected on; the first is the default."""
        raise NotImplementedError

    # -- data ------------------------------------------------------------------------------------
    def read(self, cfg: "ProjectConfig", path, *, scheme: str | None = None, require_labels: bool = True) -> tuple[list, str | None]:
        """Read one data file the way the config says: (examples, NER scheme or None)."""
        raise NotImplementedError

    def starter_data(self, train, flags: dict[str, Any]) -> tuple[dict, list[str]]:
        """`lmforge init`: data keys inferred from the training file (or from the flags), and notes."""
        return {}, []

    # -- task objects ---------------------------------------------------------------------------
    def for_training(self, cfg: "ProjectConfig", tokenizer, splits) -> "Task":
        raise NotImplementedError

    def for_run(self, cfg: "ProjectConfig", labels: dict, tokenizer, *, threshold: float | None = None) -> "Task":
        """The task of a saved run (its labels.json), for prediction."""
        raise UserError(f"{self.name} runs are not loaded by the Predictor")

    # -- documentation ----------------------------------------------------------------------------
    def report_style(self, cfg: "ProjectConfig") -> "ReportStyle":
        raise NotImplementedError

    def usage_code(self, cfg: "ProjectConfig") -> list[str]:
        """Model card: the lines of Python that run the saved model with transformers alone, after
        `model` and `tokenizer` are loaded."""
        return []

    def lmforge_usage(self) -> list[str]:
        return ["from lmforge import Predictor", 'Predictor.from_run("path/to/run").predict(["some text"])']

    def input_lengths(self, examples: list, tokenizer) -> list[int]:
        """Token counts (with special tokens) of training inputs, as the task encodes them: what init
        sizes data.max_length to (data/lengths.py). Text tasks: the text (and pair) under the tokenizer."""
        pairs = [ex.text_pair or "" for ex in examples] if any(getattr(ex, "text_pair", None) for ex in examples) else None
        return [len(ids) for ids in tokenizer([ex.text for ex in examples], pairs)["input_ids"]]

    def input_limit_note(self, max_length: int) -> str:
        return f"Inputs longer than {max_length} sub-word tokens are truncated (the rest is not seen)."


def refuse_keys(cfg, task: str, keys: tuple[str, ...]) -> list[str]:
    """Problems for data keys set (non-empty) that `task` has no use for."""
    given = [key for key in keys if getattr(cfg.data, key) not in (None, False)]
    problems = [f"data.{' / data.'.join(given)}: not available for {task}"] if given else []
    if cfg.training.logit_adjustment:
        problems.append("training.logit_adjustment: only for single-label text-classification")
    return problems


_REGISTRY: dict[str, TaskSpec] = {}
_plugins_loaded = False


def register(spec: TaskSpec) -> TaskSpec:
    """Add a task under `spec.name`; a name can be registered once."""
    if not spec.name:
        raise ValueError("a task spec needs a name")
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"task {spec.name!r} is registered already (by {type(_REGISTRY[spec.name]).__module__})")
    _REGISTRY[spec.name] = spec
    return spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group="lmforge.tasks"):
        point.load()


def task_names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The spec registered under `name`; an unknown name is a UserError listing the known ones."""
    _load_plugins()
    if name not in _REGISTRY:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
    return _REGISTRY[name]
