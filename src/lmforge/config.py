"""The project config: one YAML file, validated by pydantic models that reject unknown keys.

Every setting has a type, a default and a one-line description; the descriptions feed the
commented starter config written by `lmforge init`. Problems are gathered and reported together,
each naming its dotted key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .tasks.registry import SENTENCE_METHODS  # noqa: F401 - re-exported: methods that build a sentence-embedding classifier

MAX_CONFIG_BYTES = 1_000_000  # a config is a page of YAML; anything this big is a mistake (or a YAML bomb)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _train_files(value):
    if isinstance(value, list):
        if not value or not all(isinstance(x, str) and x.strip() for x in value):
            raise ValueError("give a file name, or a non-empty list of file names")
        if len(set(value)) != len(value):
            raise ValueError("a file is listed twice: its examples would count twice")
    return value


class DataConfig(_Section):
    train: str | list[str] | None = Field("data/train.csv", description="training file, or a list of files read one after the other (required, except for method: zeroshot); paths are relative to the config file; on the command line data.train=+FILE adds a file")
    dev: str | None = Field(None, description="dev file for evaluation during training; empty: a seeded, stratified hold-out of train")
    test: str | None = Field(None, description="test file, evaluated once after training; empty: none")
    format: Literal["auto", "csv", "tsv", "jsonl", "conll"] = Field("auto", description="file format; auto: from the file suffix")
    text_field: str = Field("text", description="column/key holding the text (classification)")
    prompt_field: str = Field("prompt", description="generation: JSONL key of the prompt (with completion_field), or use messages_field")
    completion_field: str = Field("completion", description="generation: JSONL key of the completion the model learns to write")
    messages_field: str = Field("messages", description="generation: JSONL key of a chat, a list of {role, content}; the loss covers the assistant turns")
    text_pair_field: str | None = Field(None, description="column/key holding the second text of a pair (classification); empty: single texts")
    label_field: str = Field("label", description="column/key holding the label(s) (classification)")
    multi_label: bool = Field(False, description="each example may carry several labels (sigmoid outputs; the decision threshold is tuned on dev after training)")
    label_delimiter: str | None = Field(None, min_length=1, description="multi-label only: split a label string on this delimiter, e.g. '|'")
    scheme: Literal["auto", "iob1", "iob2", "bioes", "bmes"] = Field("auto", description="NER tag scheme of the files; auto: detected from the train tags")
    lenient_tags: bool = Field(False, description="NER: repair invalid tag sequences (an I-X after O, an entity never closed) the way conlleval reads them, counted and reported; false: such a file is an error")
    segment_positions: Literal["auto", "strip", "keep"] = Field("auto", description="NER column files whose tokens are a character plus its word position ('科0', Weibo NER): auto strips the digits when every token looks like that, strip always, keep never")
    dev_fraction: float = Field(0.1, gt=0.0, lt=0.9, description="fraction of train held out as dev when no dev file is given")
    labels: list[str] | None = Field(None, description="text-classification: the label set in this order (a model grown from a fine-tuned one keeps its labels first); empty: the train labels, sorted")
    _check_train = field_validator("train")(_train_files)
    label_descriptions: dict[str, str] = Field(default_factory=dict, description="zeroshot (and fewshot with fewshot.label_texts): a short text per label that says what it means (e.g. {pos: a positive movie review}); the zero-shot head compares texts with these; empty: the label names")
    label_map: dict[str, str] = Field(default_factory=dict, description="map dev/test labels unseen in train onto train labels, e.g. {old_name: new_name}")
    max_length: int = Field(128, ge=8, le=8192, description="max sub-word tokens per sequence (classification truncates and reports; NER uses sliding windows; generation: 512 unless set, prompts are cut from the left)")
    document_context: bool = Field(True, description="NER: pack neighbouring sentences of the same -DOCSTART- document into one sequence as context")


class PeftSettings(_Section):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling alpha")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout (0: no random mask per adapted layer; measured faster on CPU at equal accuracy)")
    target_modules: list[str] | None = Field(None, description="module names to adapt; empty: the model's attention and feed-forward projections")
    num_virtual_tokens: int = Field(20, ge=1, description="prefix tuning: number of virtual tokens")
    merge: bool = Field(True, description="LoRA/IA3: also save a merged model that plain transformers loads (the adapter is always saved)")


class FewShotSettings(_Section):
    pairs_per_example: int = Field(20, ge=1, le=1000, description="fewshot: sentence pairs drawn per training example and pass (one same-label, one other-label pair per draw; SetFit's num_iterations)")
    epochs: float = Field(1, gt=0, le=100, description="fewshot: passes over the drawn pairs in the contrastive stage")
    batch_size: int = Field(16, ge=1, description="fewshot: pairs per contrastive step")
    loss: Literal["cosine", "cosent"] = Field("cosine", description="fewshot: contrastive loss on the pairs (sentence-transformers' CosineSimilarityLoss, as SetFit, or CoSENTLoss)")
    label_texts: bool = Field(True, description="fewshot: add each label's text (data.label_descriptions, else the label name) as one more example of it")
    label_text_weight: float | None = Field(None, gt=0, description="fewshot, with label_texts: weight of each label's text in the head fit, in examples; empty: as many as the label has examples (its text and its examples have equal say)")
    head_c: float | Literal["auto"] = Field("auto", description="fewshot: inverse L2 strength of the logistic-regression head fitted on the embeddings (scikit-learn's C); auto: chosen among 0.1, 1, 10 and 100 by stratified cross-validation on the training examples (1 where a class has a single example, and for multi-label)")

    @field_validator("head_c")
    @classmethod
    def _positive_c(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError("must be a positive number or auto")
        return value


class TrainingConfig(_Section):
    epochs: float | None = Field(None, gt=0, description="number of passes over the training data; empty: 3, or on a small set "
                                 "as many as give about 400 optimizer steps (at most 100; a few dozen steps learn next to nothing)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs when reached first)")
    batch_size: int = Field(16, ge=1, description="examples per optimizer step across all processes (before accumulation); NER: 16 unless set (each sequence packs several sentences of a document); text-classification: 32 unless set when there are 10,000 training texts or more")
    max_tokens_per_batch: int | None = Field(None, ge=16, description="instead of batch_size: fill each batch up to this many padded tokens")
    gradient_accumulation_steps: int = Field(1, ge=1, description="accumulate gradients over this many batches per optimizer step")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate; empty: 1e-4 for full (NER: 2e-4), 1e-3 for lora, 3e-3 for ia3, 1e-2 for prefix")
    head_learning_rate: float | None = Field(None, gt=0, description="learning rate of the new task head; empty: same as learning_rate")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise learning-rate decay: layer i of L trains at layer_decay^(L - i) of the learning rate, the embeddings at layer_decay^(L + 1), the head at its own rate (lower layers, which hold general language knowledge, move less; helps small data sets); e.g. 0.8; empty: one rate for the body")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and LayerNorm)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps with a linear warmup")
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="learning-rate decay after warmup")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip gradients to this norm; empty: no clipping")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast where the CPU/GPU supports it, else fp32")
    eval_every_steps: int | None = Field(None, ge=1, description="evaluate on dev every N steps; empty: after every epoch")
    metric: str = Field("auto", description="dev metric that selects the best checkpoint; auto: accuracy (classification), average_precision (multi-label; threshold-free, the decision threshold is tuned on dev after training), f1 (NER)")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop after this many evaluations without improvement; empty: never")
    save_every_steps: int = Field(500, ge=1, description="write a resumable checkpoint every N steps (and at every evaluation)")
    group_by_length: bool = Field(True, description="batch examples of similar length together to reduce padding")
    seed: int = Field(42, description="seed for data order, splits, initialisation and dropout")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; empty: all cores (one per process under --nproc)")
    log_every_steps: int = Field(10, ge=1, description="write training metrics every N steps")
    tensorboard: bool = Field(True, description="also write TensorBoard event files")
    attention_dropout: float | None = Field(0.0, ge=0, lt=1, description="dropout on attention probabilities; 0 skips a [batch, heads, L, L] random mask per layer (about 20% faster on CPU); empty: the model's own value")
    hidden_dropout: float | None = Field(None, ge=0, lt=1, description="dropout on the hidden states between layers and before the task head (the model's hidden_dropout_prob or its equivalent); empty: 0 for NER full fine-tuning on 10,000 sentences or more packed into documents, two or more a sequence (a large set needs no such regularisation, and the masks cost time), else the model's own value (0.1 for MiniLM-L6)")
    bf16_weights: bool | None = Field(None, description="with bf16: run forward and backward on a bf16 copy of the model, the optimizer updating the fp32 weights (no autocast casts; the fp32 model is what dev passes, checkpoints and the saved run use); empty: on for full fine-tuning of an encoder on a CPU with one batch per step, in one process, without compile or anchor_strength (true there too: an error where it cannot work); false: bf16 autocast over the fp32 weights")
    pad_to_multiple_of: int = Field(1, ge=1, description="pad batch lengths to a multiple of this; 1: to the longest example (measured fastest, in fp32 and bf16: bench/pad_multiple.py)")
    freeze_embeddings: bool | None = Field(None, description="full fine-tuning: keep the word-embedding matrix frozen (faster, fewer parameters); empty: frozen for encoders (a model without an LM head), trained for decoders (tied to their LM head)")
    anchor_strength: float = Field(0.0, ge=0, description="L2-SP: pull the encoder weights towards the starting model with this strength (continual updates: less forgetting); 0: off")
    logit_adjustment: float = Field(0.0, ge=0, description="single-label classification: train with tau * log(class share in the training set) added to the logits (logit-adjusted loss, Menon et al. 2021) so that frequent classes do not win on frequency alone; lmforge update sets 1.0; 0: off")
    average_last: int | None = Field(None, ge=0, description="keep the mean of the weights at the last N dev evaluations (stochastic weight averaging) as the trained model instead of the single best evaluation: steadier than picking one epoch by a small, noisy dev set (SST-2 from a few hundred labels, Weibo NER); dev is still scored at every evaluation and the averaged model is evaluated at the end; 1: the last evaluation's weights; 0: the best evaluation; empty: 3 for full fine-tuning of an encoder with fewer than 1,000 dev examples over 5 or more evaluations without early stopping, else the best evaluation")
    compile: bool = Field(False, description="run the training forward and backward through torch.compile (inductor; needs a C compiler on a CPU): the first steps compile, about a minute; falls back to eager with a warning if compiling fails. Off by default: bench/train_compile.py measures what it gains on your machine")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory for long sequences, about 30% slower")


class TrackingSettings(_Section):
    mlflow: bool = Field(False, description="also log to MLflow (pip install 'lmforge[mlflow]'): parameters, metrics, the run's artefacts")
    experiment: str = Field("lmforge", min_length=1, description="MLflow experiment name")
    uri: str | None = Field(None, description="MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else a local file store <output_dir>/mlruns")


class ProjectConfig(_Section):
    name: str = Field("my-model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run name: the run folder is <output_dir>/<name>")
    task: str = Field("text-classification", description="a registered task: text-classification, token-classification (NER) or generation (decoder models: prompt -> completion); task plug-ins add more")
    model: str = Field("minilm-l6", description="packaged model short name (see `lmforge models`) or a local Hugging Face folder")
    method: Literal["full", "lora", "ia3", "prefix", "fewshot", "zeroshot"] = Field("full", description="full fine-tuning or a peft method: lora, ia3, prefix (generation: lora unless set); text-classification from few labels: fewshot (contrastive sentence pairs, then a head; 2-64 examples per class), zeroshot (label names/descriptions only)")
    output_dir: str = Field("runs", description="where run folders are written; relative to the config file")
    data: DataConfig = Field(default_factory=DataConfig)
    peft: PeftSettings = Field(default_factory=PeftSettings)
    fewshot: FewShotSettings = Field(default_factory=FewShotSettings)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from .tasks import task_names

        if value not in task_names():
            raise ValueError(f"{value!r} is not a task; choose one of {', '.join(task_names())}")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> "ProjectConfig":
        from .tasks import get_task

        spec = get_task(self.task)
        problems = []
        if self.data.label_delimiter and not self.data.multi_label:
            problems.append("data.label_delimiter: only meaningful with data.multi_label: true")
        problems += _method_problems(self, spec)
        problems += spec.check_config(self)
        if problems:
            raise ValueError("; ".join(problems))
        # PEFT methods train far fewer parameters and need larger steps; each task has its defaults
        if "method" not in self.model_fields_set:
            self.method = spec.default_method
        if spec.default_max_length and "max_length" not in self.data.model_fields_set:
            self.data.max_length = spec.default_max_length
        if spec.default_batch_size and "batch_size" not in self.training.model_fields_set:
            self.training.batch_size = spec.default_batch_size
            self.training.model_fields_set.discard("batch_size")  # still unset: a large set's sizing may replace it
        if self.training.learning_rate is None:
            self.training.learning_rate = spec.learning_rates[self.method]
        return self

    def train_paths(self, base: Path) -> list[Path]:
        """The training file(s), made absolute relative to `base` (none for a zero-shot config)."""
        train = self.data.train
        return [self.resolve_path(t, base) for t in ([train] if isinstance(train, str) else train or [])]

    def resolve_path(self, value: str | None, base: Path) -> Path | None:
        """A data/output path from the config, made absolute relative to the config's folder."""
        if value is None:
            return None
        if is_builtin_dataset(value):
            return Path(value)
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)


def _method_problems(cfg: "ProjectConfig", spec) -> list[str]:
    method = cfg.method if "method" in cfg.model_fields_set else spec.default_method
    if method not in SENTENCE_METHODS:
        return [] if cfg.data.train else ["data.train: a training file is needed (only method: zeroshot trains without one)"]
    if not spec.sentence_methods:
        return [f"method: {method} is for text-classification (a sentence-embedding classifier); {spec.name} trains with full, lora, ia3 or prefix"]
    problems = []
    if cfg.data.text_pair_field:
        problems.append(f"data.text_pair_field: method {method} classifies single texts; use method: full for pairs")
    if cfg.training.average_last:
        problems.append(f"training.average_last: method {method} trains in one pass without dev evaluations; remove it or use method: full")
    if method == "zeroshot" and not (cfg.data.labels and len(cfg.data.labels) >= (1 if cfg.data.multi_label else 2)):
        problems.append("data.labels: method zeroshot classifies into the labels given here (at least two); e.g. data.labels: [refund, card lost]")
    if method == "fewshot" and not cfg.data.train:
        problems.append("data.train: method fewshot learns from labelled examples (2-64 per class); without any, use method: zeroshot")
    unknown = sorted(set(cfg.data.label_descriptions) - set(cfg.data.labels or cfg.data.label_descriptions))
    if unknown:
        problems.append(f"data.label_descriptions: {', '.join(map(repr, unknown))} not in data.labels")
    return problems


BUILTIN_DATASETS = ("mbpp:",)  # benchmark splits read from the shared data, e.g. mbpp:train


def is_builtin_dataset(value: str) -> bool:
    return str(value).startswith(BUILTIN_DATASETS)


# --- loading, overrides and errors -------------------------------------------------------------

def _format_errors(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            section = _section_for(e["loc"][:-1])
            known = ", ".join(section.model_fields) if section else ""
            lines.append(f"  - {key}: unknown key. Known keys here: {known}")
        elif e["type"] == "value_error":  # our own checks: their message says what is wrong (and, at the top level, names the keys)
            message = str(e.get("ctx", {}).get("error", e["msg"]))
            lines.append(f"  - {message}" if not e["loc"] else f"  - {key}: {message}")
        else:
            found = e.get("input")
            shown = "" if isinstance(found, (dict, list)) else f" (found {found!r})"
            lines.append(f"  - {key}: {e['msg']}{shown}")
    return f"{where}: {len(lines)} problem(s) in the config:\n" + "\n".join(lines)


def _section_for(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = ProjectConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`training.learning_rate=3e-5` -> (["training", "learning_rate"], 3e-5); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. training.epochs=5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    return key.split("."), parse_value(raw)


def parse_value(raw: str) -> Any:
    """An override's value: numbers, booleans, null, [lists] and {maps} as YAML reads them; any other
    text verbatim. YAML would turn `|`, `>`, `&x`, `*x`, `!x`, `# note` or `a: b` into something else
    (an empty block scalar, an alias, a tag, nothing, a map), silently changing what the user typed;
    quote a value to force YAML's reading of it."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return raw
    if value is None and text not in ("null", "Null", "NULL", "~"):
        return raw  # `#x` (a comment) or `&a` (an anchor) would read as nothing
    if isinstance(value, str):
        if _NUMBER.match(value):  # YAML 1.1 reads 3e-5 (no dot) as a string
            return float(value)
        return value if text[0] in "'\"" else raw
    if isinstance(value, (dict, list)) and text[0] not in "[{":
        return raw  # `a: b` or `- a` in a value is text, not a structure
    return value


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Set dotted keys in a raw config dict: `key=value` strings (values parsed as YAML, see
    `parse_value`) or a {dotted key: value} mapping of typed values."""
    parsed = ([(key, key.split("."), value) for key, value in overrides.items()] if isinstance(overrides, dict)
              else [(item, *parse_override(item)) for item in overrides])
    for item, keys, value in parsed:
        node = raw
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
            node = child
        if keys == ["data", "train"] and isinstance(value, str) and value.startswith("+"):  # data.train=+FILE adds a file
            current = node.get("train")
            value = ([current] if isinstance(current, str) else list(current or [])) + [value[1:]]
        node[keys[-1]] = value
    return raw


def config_from_dict(raw: dict, where: str = "config") -> ProjectConfig:
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, where)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ProjectConfig:
    """Read, override and validate a config file. Raises ConfigError naming every bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Create one with `lmforge init`.")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a config file (at most "
                          f"{MAX_CONFIG_BYTES:,}); is it a data file? Give data files under data.train / data.dev / data.test")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, found {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, str(path))


def dump_config(cfg: ProjectConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
