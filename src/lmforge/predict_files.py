"""Predicting on files (`lmforge predict`): inputs read one at a time, predicted and written in
chunks, resumable; and how a file given to evaluate/predict may be read differently from training."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .predictor import Predictor

PROGRESS_MIN_EXAMPLES = 256


def progress_bar(total: int, label: str, enabled: bool, minimum: int = PROGRESS_MIN_EXAMPLES):
    if not enabled or total < minimum:
        return None, None
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True))
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, lambda n: bar.advance(task, n)


# What a file given to evaluate/predict may change about how it is read; the model's own settings
# (labels, max_length, multi-label or not) are fixed by training.
READING_KEYS = ("format", "text_field", "text_pair_field", "label_field", "label_delimiter", "scheme", "label_map")


def with_reading_overrides(predictor: Predictor, overrides: list[str] | None) -> None:
    """Apply `data.<key>=value` overrides (e.g. a test file whose label column is `intent`) to how
    files are read for this predictor; any other key is refused."""
    if not overrides:
        return
    from .config import apply_overrides, config_from_dict, parse_override
    from .errors import ConfigError

    for item in overrides:
        keys, _ = parse_override(item)
        if len(keys) != 2 or keys[0] != "data" or keys[1] not in READING_KEYS:
            raise ConfigError(f"override {item!r}: only how the file is read can change here: "
                              + ", ".join(f"data.{k}" for k in READING_KEYS))
    raw = apply_overrides(predictor.config.model_dump(mode="json"), overrides)
    cfg = config_from_dict(raw, "overrides")
    if (cfg.data.text_pair_field is None) != (predictor.config.data.text_pair_field is None):
        raise ConfigError("data.text_pair_field: the model was trained on "
                          + ("sentence pairs; name the second text's column" if predictor.config.data.text_pair_field
                             else "single texts; it cannot take a second text"))
    predictor.config = cfg


def read_inputs(predictor: Predictor, path: Path) -> list:
    """Unlabelled inputs: .txt lines, or the text column/key of a .csv/.tsv/.jsonl file."""
    return list(iter_inputs(predictor, path))


def iter_inputs(predictor: Predictor, path: Path) -> Iterator:
    """The inputs of `path` one at a time, in bounded memory (a bad line raises when it is reached)."""
    from .data.classification_readers import iter_texts

    cfg = predictor.config
    if predictor.task.token_level:  # one text per row, split into words the way the model's tokenizer does
        for i, row in enumerate(iter_texts(path)):
            example = predictor.words_of(row.text, doc_id=i)
            example.source = row.source
            yield example
        return
    yield from iter_texts(path, text_field=cfg.data.text_field, text_pair_field=cfg.data.text_pair_field)


PREDICT_CHUNK = 512  # inputs predicted and written together: bounded memory, output appears as it goes


def predict_file(run_dir: Path, path: Path, output: Path | None = None, *, overrides: list[str] | None = None,
                 resume: bool = False, chunk: int = PREDICT_CHUNK, threshold: float | None = None) -> int:
    """Predict every input of `path` and write one JSON line per input, streaming: inputs are read,
    predicted and written `chunk` at a time. With `output`, lines go to `<output>.partial`, which is
    renamed to `output` once every input is done; `resume` continues a `.partial` an interrupted run
    left (its complete lines are kept and their inputs skipped). Returns the number of predictions."""
    from .errors import UserError

    predictor = Predictor.from_run(run_dir, threshold=threshold)
    with_reading_overrides(predictor, overrides)
    if output is None:
        if resume:
            raise UserError("--resume needs -o/--output (the file an interrupted run was writing)")
        return _predict_stream(predictor, iter_inputs(predictor, path), sys.stdout, chunk=chunk)
    partial = output.with_name(output.name + ".partial")
    done = _complete_lines(partial) if resume and partial.is_file() else 0
    if resume and not partial.is_file():
        raise UserError(f"--resume: no {partial} to continue (it is written while predicting and renamed when done)")
    output.parent.mkdir(parents=True, exist_ok=True)
    if done:
        with partial.open("r+b") as fh:  # drop a last line cut short by the interruption
            fh.truncate(_offset_after_lines(partial, done))
    with partial.open("a" if done else "w", encoding="utf-8") as fh:
        inputs = itertools.islice(iter_inputs(predictor, path), done, None)
        bar = Progress(TextColumn("[bold]predict"), TextColumn("{task.completed:,} inputs"), TextColumn("{task.fields[rate]}"),
                       console=Console(stderr=True), transient=True)
        task = bar.add_task("predict", total=None, completed=done, rate="")
        with bar:
            count = _predict_stream(predictor, inputs, fh, chunk=chunk, progress=lambda n: bar.advance(task, n))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, output)
    return done + count


def _predict_stream(predictor: Predictor, inputs: Iterator, out, *, chunk: int, progress=None) -> int:
    count = 0
    while batch := list(itertools.islice(inputs, chunk)):
        lines = []
        for ex, pred in zip(batch, predictor.predict_examples(batch)):
            text = ex.text if getattr(ex, "text", None) is not None else " ".join(ex.words)
            record = {"text": text}
            if getattr(ex, "text_pair", None) is not None:
                record["text_pair"] = ex.text_pair
            lines.append(json.dumps({**record, **predictor.task.response(pred)}, ensure_ascii=False) + "\n")
        out.write("".join(lines))
        out.flush()
        count += len(batch)
        if progress:
            progress(len(batch))
    return count


def _complete_lines(path: Path) -> int:
    """Lines of `path` that end with a newline (a line cut by a kill is not complete)."""
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


def _offset_after_lines(path: Path, lines: int) -> int:
    seen = offset = 0
    with path.open("rb") as fh:
        for line in fh:
            if seen == lines:
                break
            offset += len(line)
            seen += 1
    return offset
