"""`lmforge init`: a complete, commented starter config, with data fields inferred from the
training file by the task (`TaskSpec.starter_data`; see `data/infer.py`). What was inferred goes
into notes (printed, and written at the top of the config)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml
from pydantic import BaseModel

from .config import ProjectConfig
from .data.text_files import shown
from .errors import UserError
from .tasks import get_task, task_names
from .tasks.registry import LARGE_SET_REASON, LARGE_SET_TOKENS_REASON, LARGE_TRAINING_SET


def hidden_data_keys(task: str) -> set[str]:
    """The data keys a starter config for `task` leaves out (while they keep their defaults): the
    keys only other tasks use, and the shared keys this task ignores."""
    spec = get_task(task)
    others = {key for name in task_names() if name != task for key in get_task(name).data_keys}
    return (others - set(spec.data_keys)) | set(spec.unused_data_keys)


DEFAULT_MODEL = "minilm-l6"


def write_starter(output: Path, *, task: str, model: str | None = None, method: str | None = None,
                  train: Path | None = None, dev: Path | None = None, test: Path | None = None,
                  text_field: str | None = None, label_field: str | None = None, text_pair_field: str | None = None,
                  multi_label: bool | None = None, name: str | None = None, force: bool = False,
                  labels: list[str] | None = None) -> list[str]:
    """Write a complete, commented starter config to `output`, with the data fields inferred from the
    training file where it is given. Returns the notes on what was inferred (for the user to check).
    Without a model, an encoder task gets minilm-l6, or me5-small when the training text is mostly
    not Latin script."""
    from .config import config_from_dict
    from .files import write_text_atomic

    if output.exists() and not force:
        raise UserError(f"{output} exists; use --force to overwrite it")
    spec = get_task(task)
    flags = {"text_field": text_field, "label_field": label_field, "text_pair_field": text_pair_field, "multi_label": multi_label,
             "labels": labels}
    refused = [f"--{key.replace('_', '-')}" if key != "multi_label" else "--multi-label/--single-label"
               for key, value in flags.items() if value is not None and key not in spec.data_keys]
    if labels is not None and method != "zeroshot" and train is not None:
        refused.append("--labels (it fixes the label set; with --train the labels are read from the file, "
                       "or set data.labels in the config)")
    if refused:
        users = [name for name in task_names() if all(k in get_task(name).data_keys for k in flags)]
        raise UserError(f"{', '.join(refused)}: only for --task {' / '.join(users) or 'another task'}")
    base = output.resolve().parent
    rel = lambda p: None if p is None else _relative(p, base)  # noqa: E731
    zeroshot_only = method == "zeroshot" and train is None
    data: dict = {"train": None if zeroshot_only else rel(train) or spec.default_train_file, "dev": rel(dev), "test": rel(test)}
    extra, notes = spec.starter_data(train, {k: v for k, v in flags.items() if v is not None and k != "labels"})
    if labels is not None:
        extra["labels"] = labels
    data.update(extra)
    raw = {"name": name or output.stem, "task": task, "model": model or DEFAULT_MODEL, "data": data}
    if method is not None:
        raw["method"] = method
    cfg = config_from_dict(raw, "init")
    examples: list | None = None  # the training examples, read once for the choices below (None: not read)
    if model is None and train is not None and not spec.decoder:
        from .data.language_fit import model_for_texts

        examples = _all_examples(cfg, train)
        picked, note = model_for_texts(_texts(examples[:SAMPLE]), DEFAULT_MODEL)
        if note:
            raw["model"] = picked
            cfg = config_from_dict(raw, "init")
            notes.append(note)
    if spec.overflow and train is not None:
        examples = _read_once(examples, cfg, train)  # no examples: the default length stays
        length, note = _fitting_max_length(cfg, examples[:SAMPLE], base)
        if note:
            raw["data"] = {**data, "max_length": length}
            cfg = config_from_dict(raw, "init")
            notes.append(note)
    if method is None and spec.sentence_methods and train is not None and not cfg.data.text_pair_field:
        examples = _read_once(examples, cfg, train)
        notes.extend(_fewshot_hint(examples))
    count = len(examples or [])
    documents = len({getattr(ex, "doc_id", i) for i, ex in enumerate(examples or [])})  # sequences, at least
    tokens = spec.tokens_for_large_set(count, cfg.method, cfg.data.max_length, documents)
    batch = spec.batch_for_large_set(count, cfg.method)
    if tokens is not None:
        notes.append(f"training.max_tokens_per_batch: {tokens} for {count:,} training examples (below {LARGE_TRAINING_SET:,}: "
                     f"batches of {cfg.training.batch_size} sequences): {LARGE_SET_TOKENS_REASON}")
        raw["training"] = {"max_tokens_per_batch": tokens}
        cfg = config_from_dict(raw, "init")
    elif batch is not None:
        notes.append(f"training.batch_size: {batch} for {count:,} training examples ({cfg.training.batch_size} below "
                     f"{LARGE_TRAINING_SET:,}): {LARGE_SET_REASON}")
        raw["training"] = {"batch_size": batch}
        cfg = config_from_dict(raw, "init")
    write_text_atomic(output, render(cfg, f"lmforge train {output.name}", notes))
    return notes


FEWSHOT_HINT_MAX = 64  # examples per label up to which the few-shot learner is the better start (README: few-shot rows)


def _fewshot_hint(examples: list) -> list[str]:
    """A note suggesting method fewshot when every label has few examples (counted over the whole file):
    measured ahead of full fine-tuning on the same examples at 8 and 64 per label (bench/fewshot.py; on Banking77
    at 64 per label only ahead of 3 epochs, the default at that size, not of 20)."""
    per_label = Counter(label for ex in examples for label in ex.labels)
    if not per_label or max(per_label.values()) > FEWSHOT_HINT_MAX:
        return []
    return [f"{len(examples):,} training examples, at most {max(per_label.values())} per label: with this few, method fewshot "
            "(contrastive sentence pairs, then a head) measured ahead of full fine-tuning on the same examples "
            "(Banking77, 8 per label: 83.1 vs 77.9% test accuracy; SST-2, 64 per label: 77.7 vs 73.0%; Banking77, "
            "64 per label: 90.9 vs 84.8% after 3 epochs, the default at that size, though 20 epochs, 10x the steps, reached 91.7%); "
            "to use it, run init again with --method fewshot"]


def _fitting_max_length(cfg, examples: list, base: Path) -> tuple[int, str | None]:
    """data.max_length for a task whose inputs must fit in it (texts are cut, NER sentences split across
    windows), sized to the first training examples as the task encodes them under the chosen model's
    tokenizer (data/lengths.py). A model that cannot be loaded yet leaves the default."""
    from .data.lengths import fitting_max_length
    from .models.build import load_tokenizer
    from .models.resolve import resolve_model

    if not examples:
        return cfg.data.max_length, None
    try:
        tokenizer = load_tokenizer(resolve_model(cfg.model, base))
    except UserError:  # validate and train say what is wrong with the model
        return cfg.data.max_length, None
    spec = get_task(cfg.task)
    lengths = spec.input_lengths(examples, tokenizer)
    model_limit = getattr(tokenizer, "model_max_length", None)
    return fitting_max_length(lengths, cfg.data.max_length, model_limit if model_limit and model_limit < 100_000 else None,
                              unit="sentences" if spec.holdout_by_document else "texts", overflow=spec.overflow)


SAMPLE = 1000  # the first examples the model and max_length choices look at (language detection, tokenizing)


def _read_once(examples: list | None, cfg, train: Path) -> list:
    """The training examples, read now unless already read; a file with bad rows gives none (validate
    and train report them)."""
    if examples is not None:
        return examples
    try:
        return _all_examples(cfg, train)
    except UserError:
        return []


def _all_examples(cfg, train: Path) -> list:
    """The examples of the training file, read as training will read it (its reader's notes were
    already given by the field inference: silenced here)."""
    import logging

    logging.disable(logging.WARNING)
    try:
        examples, _ = get_task(cfg.task).read(cfg, train)
    finally:
        logging.disable(logging.NOTSET)
    return examples


def _texts(examples: list) -> list[str]:
    """Each example's text (NER: its words joined)."""
    texts = []
    for ex in examples:
        text = getattr(ex, "text", None)
        texts.append(text if isinstance(text, str) else "".join(getattr(ex, "words", None) or []))
    return texts


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path.resolve())


def render(cfg: ProjectConfig, command: str, notes: list[str] | tuple[str, ...] = ()) -> str:
    """YAML with every key of the config's task, each preceded by its one-line description, and
    the `notes` on what was inferred at the top. Data keys of other tasks are left out unless
    they differ from their defaults, so the file always loads back to `cfg`."""
    lines = [f"# {command}",
             "# Every key of this task is shown with its default; delete what you do not need. "
             "Paths are relative to this file."]
    if notes:
        lines.append("# Inferred from the training data (check these):")
        lines += [f"#   - {shown(note, 300)}" for note in notes]
    lines.append("")
    hide = {"data": hidden_data_keys(cfg.task)}
    if cfg.method != "fewshot" and cfg.fewshot == type(cfg.fewshot)():
        hide[""] = {"fewshot"}  # the few-shot recipe's settings mean nothing to other methods
    _render_model(cfg, lines, indent="", hide=hide)
    return "\n".join(lines) + "\n"


def _render_model(model: BaseModel, lines: list[str], indent: str, hide: dict[str, set[str]] | None = None,
                  section: str = "") -> None:
    hidden = (hide or {}).get(section, set())
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            if name in hidden:
                continue
            lines.append("")
            lines.append(f"{indent}{name}:")
            _render_model(value, lines, indent + "  ", hide, section=name)
            continue
        if name in hidden and value == info.get_default(call_default_factory=True):
            continue
        if info.description:
            lines.append(f"{indent}# {info.description}")
        dumped = yaml.safe_dump({name: value}, default_flow_style=True, width=1000, allow_unicode=True).strip()
        lines.append(f"{indent}{dumped[1:-1] if dumped.startswith('{') else dumped}")
