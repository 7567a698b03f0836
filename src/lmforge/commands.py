"""Evaluate and predict on files: the functions behind `lmforge evaluate` and `lmforge predict`."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from .data.load import read_split
from .predictor import Predictor
from .files import write_text_atomic

PROGRESS_MIN_EXAMPLES = 256


def _progress(total: int, label: str, enabled: bool, minimum: int = PROGRESS_MIN_EXAMPLES):
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


def evaluate_file(run_dir: Path, data: Path, output: Path | None = None, overrides: list[str] | None = None,
                  threshold: float | None = None) -> tuple[Path, dict]:
    from .evaluation.report import write_report

    predictor = Predictor.from_run(run_dir, threshold=threshold)
    with_reading_overrides(predictor, overrides)
    cfg = predictor.config
    examples, _ = read_split(cfg, data, scheme="auto")
    predictor.task.check_labels(examples, cfg.data.label_map, data.name)
    bar, advance = _progress(len(examples), "evaluate", True)
    try:
        report, predictions = predictor.evaluate(examples, progress=advance)
    finally:
        if bar:
            bar.stop()
    report_dir = output or Path(run_dir) / "eval" / data.name
    kind = "multi-label" if cfg.data.multi_label else cfg.task
    write_report(report, report_dir, task=kind, title=f"{cfg.name}: {data.name}")
    lines = [json.dumps({"source": ex.source, **pred}, ensure_ascii=False) for ex, pred in zip(examples, predictions)]
    write_text_atomic(report_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    return report_dir, predictor.task.headline(report)


def read_inputs(predictor: Predictor, path: Path) -> list:
    """Unlabelled inputs: .txt lines, or the text column/key of a .csv/.tsv/.jsonl file."""
    return list(iter_inputs(predictor, path))


def iter_inputs(predictor: Predictor, path: Path) -> Iterator:
    """The inputs of `path` one at a time, in bounded memory (a bad line raises when it is reached)."""
    from .data.classification_readers import iter_texts

    cfg = predictor.config
    if cfg.task == "token-classification":
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
    ner = predictor.task.name == "token-classification"
    while batch := list(itertools.islice(inputs, chunk)):
        lines = []
        for ex, pred in zip(batch, predictor.predict_examples(batch)):
            text = ex.text if getattr(ex, "text", None) is not None else " ".join(ex.words)
            record = {"text": text}
            if getattr(ex, "text_pair", None) is not None:
                record["text_pair"] = ex.text_pair
            lines.append(json.dumps({**record, **({"entities": pred["entities"]} if ner else pred)}, ensure_ascii=False) + "\n")
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


def explain_one(run_dir: Path, text: str, *, text_pair: str | None = None, target: str | None = None,
                entity: int | None = None, steps: int = 50, html: Path | None = None, console=None,
                threshold: float | None = None) -> dict:
    """Explain one prediction; print a heat-map on `console` and/or write an HTML page."""
    from .explain import explain_text, render_terminal, write_html

    predictor = Predictor.from_run(run_dir, threshold=threshold)
    result = explain_text(predictor, text, text_pair=text_pair, target=target, entity=entity, steps=steps)
    if console is not None:
        render_terminal(result, console)
    if html is not None:
        write_html(result, html)
    return result


def explain_global(run_dir: Path, data: Path, output: Path | None = None, *, limit: int = 200, steps: int = 20,
                   console=None, threshold: float | None = None) -> list[Path]:
    """Most influential words per predicted class over the texts of a file."""
    from .explain import explain_dataset, write_global_report

    predictor = Predictor.from_run(run_dir, threshold=threshold)
    examples = read_inputs(predictor, data)
    total = min(len(examples), limit) if limit else len(examples)
    bar, advance = _progress(total, "explain", True, minimum=2)
    try:
        result = explain_dataset(predictor, examples, steps=steps, limit=limit, progress=advance)
    finally:
        if bar:
            bar.stop()
    if console is not None:
        print_global_table(result, console)
    return write_global_report(result, output or Path(run_dir) / "explain" / data.name)


def print_global_table(result: dict, console, words: int = 8) -> None:
    """The top words of each class (most frequent classes first) as one terminal table."""
    from rich.table import Table
    from rich.text import Text

    unit = "entity type" if result.get("task") == "token-classification" else "predicted class"
    per_class = result.get("per_class", {})
    table = Table(title=f"most influential words per {unit} ({result['examples']} texts, {result['steps']} steps)")
    for column in (unit, "texts", "top words (mean attribution)"):
        table.add_column(column)
    for name in sorted(result["classes"], key=lambda n: -per_class.get(n, 0)):
        top = ", ".join(f"{r['word']} {r['mean_score']:+.3f}" for r in result["classes"][name][:words])
        table.add_row(Text(name), str(per_class.get(name, "")), Text(top))
    console.print(table)
    if result.get("skipped"):
        console.print(f"{result['skipped']} texts without a predicted entity were skipped", highlight=False)


def evaluate_generation_file(run_dir: Path, data: Path, output: Path | None = None) -> tuple[Path, dict]:
    """Loss per completion token and perplexity of a generation run on a JSONL file."""
    import torch

    from .config import load_run_config
    from .models.build import bf16_supported, load_model, load_tokenizer
    from .runs import check_complete
    from .files import write_json_atomic
    from .tasks.generation import GenerationTask

    run_dir = check_complete(Path(run_dir))
    cfg = load_run_config(run_dir)
    examples, _ = read_split(cfg, data)
    tokenizer = load_tokenizer(run_dir / "model")
    task = GenerationTask(tokenizer, cfg.data.max_length)
    model = load_model(task.model_class(), run_dir / "model")
    scores = task.score(model, examples, bf16_supported(torch.device("cpu")))
    report_dir = output or run_dir / "eval" / data.name
    write_json_atomic(report_dir / "report.json", {"data": str(data), **scores})
    return report_dir, task.headline(scores)


CLOSING_FENCE = "\n```\n"


def evaluate_benchmark(model: str, benchmark: str, *, limit: int | None = None, samples: int = 1, k: tuple[int, ...] | None = None,
                       temperature: float | None = None, top_p: float = 0.95, max_new_tokens: int = 512, seed: int = 0,
                       batch_size: int = 8, workers: int | None = None, output: Path | None = None,
                       stop_at_fence: bool = True) -> dict:
    """pass@k of a model (a run folder or a model short name / folder) on a code benchmark: generate
    `samples` completions per problem (greedy for one sample, sampling at `temperature` for more),
    run each in the sandbox, and write results.jsonl + summary.json to `output`.

    `stop_at_fence` ends a completion at its first closing code fence (a line that is just ```): the
    code extractor reads the first fenced block anyway, so what a chat model writes after it (prose,
    usage examples) only costs time. Opening fences carry a language tag (```python) and do not stop."""
    from .codeeval.benchmarks import load_benchmark
    from .codeeval.evaluate import evaluate_code
    from .errors import UserError
    from .generation.generator import Generator

    if samples < 1:
        raise UserError(f"--samples {samples}: give at least 1")
    k = tuple(k or ((1,) if samples == 1 else tuple(x for x in (1, 10, 100) if x <= samples)))
    if max(k) > samples:
        raise UserError(f"--k {max(k)} needs at least that many --samples (got {samples})")
    if temperature is None:
        temperature = 0.0 if samples == 1 else 0.8
    if samples > 1 and temperature == 0:
        raise UserError("--samples > 1 with --temperature 0 would repeat one greedy answer; give a temperature (e.g. 0.8)")
    problems = load_benchmark(benchmark, limit=limit)
    with Console(stderr=True).status(f"loading {model}", spinner="dots"):
        generator = Generator.from_pretrained(model)
    calls = {"n": 0}

    def generate(prompts: list[str]) -> list[str]:
        calls["n"] += 1
        results = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     stop=[CLOSING_FENCE] if stop_at_fence else None,
                                     seed=None if temperature == 0 else seed + calls["n"])
        return [r["text"] for r in results]

    target = output or _benchmark_dir(model, benchmark, samples, temperature)
    bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
    stages: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in stages:
            stages[stage] = bar.add_task(f"{benchmark} {stage}", total=total)
        bar.update(stages[stage], completed=done, total=total)

    bar.start()
    try:
        summary = evaluate_code(problems, generate, samples=samples, k=k, output_dir=target, workers=workers,
                                batch_size=batch_size, progress=progress,
                                metadata={"model": str(model), "model_version": getattr(generator, "version", None),
                                          "temperature": temperature, "top_p": top_p if temperature else None,
                                          "max_new_tokens": max_new_tokens, "seed": seed,
                                          "stop": [CLOSING_FENCE] if stop_at_fence else []})
    finally:
        bar.stop()
    return {**summary, "output": str(target)}


def _benchmark_dir(model: str, benchmark: str, samples: int, temperature: float) -> Path:
    tag = f"{benchmark}-n{samples}" + (f"-t{temperature:g}" if temperature else "-greedy")
    folder = Path(model)
    if (folder / "config.yaml").is_file():  # a run folder: results live with the run
        return folder / "eval" / tag
    return Path("runs") / "benchmarks" / f"{folder.name}-{tag}"
