"""Evaluate and predict on files: the functions behind `lmforge evaluate` and `lmforge predict`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .data.load import read_split
from .predictor import Predictor
from .runs import write_text_atomic

PROGRESS_MIN_EXAMPLES = 256


def _progress(total: int, label: str, enabled: bool, minimum: int = PROGRESS_MIN_EXAMPLES):
    if not enabled or total < minimum:
        return None, None
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True))
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, lambda n: bar.advance(task, n)


def evaluate_file(run_dir: Path, data: Path, output: Path | None = None) -> tuple[Path, dict]:
    from .evaluation.report import write_report

    predictor = Predictor.from_run(run_dir)
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
    from .data.classification_readers import read_texts

    cfg = predictor.config
    if cfg.task == "token-classification":
        rows = read_texts(path)
        examples = [predictor.words_of(r.text, doc_id=i) for i, r in enumerate(rows)]
        for ex, r in zip(examples, rows):
            ex.source = r.source
        return examples
    return read_texts(path, text_field=cfg.data.text_field, text_pair_field=cfg.data.text_pair_field)


def predict_file(run_dir: Path, path: Path, output: Path | None = None) -> int:
    predictor = Predictor.from_run(run_dir)
    examples = read_inputs(predictor, path)
    bar, advance = _progress(len(examples), "predict", output is not None)
    try:
        predictions = predictor.predict_examples(examples, progress=advance)
    finally:
        if bar:
            bar.stop()
    lines = []
    for ex, pred in zip(examples, predictions):
        text = ex.text if getattr(ex, "text", None) is not None else " ".join(ex.words)
        record = {"text": text}
        if getattr(ex, "text_pair", None) is not None:
            record["text_pair"] = ex.text_pair
        if predictor.task.name == "token-classification":
            pred = {"entities": pred["entities"]}
        lines.append(json.dumps({**record, **pred}, ensure_ascii=False))
    body = "\n".join(lines) + "\n"
    if output is None:
        sys.stdout.write(body)
    else:
        write_text_atomic(output, body)
    return len(lines)


def explain_one(run_dir: Path, text: str, *, text_pair: str | None = None, target: str | None = None,
                entity: int | None = None, steps: int = 50, html: Path | None = None, console=None) -> dict:
    """Explain one prediction; print a heat-map on `console` and/or write an HTML page."""
    from .explain import explain_text, render_terminal, write_html

    predictor = Predictor.from_run(run_dir)
    result = explain_text(predictor, text, text_pair=text_pair, target=target, entity=entity, steps=steps)
    if console is not None:
        render_terminal(result, console)
    if html is not None:
        write_html(result, html)
    return result


def explain_global(run_dir: Path, data: Path, output: Path | None = None, *, limit: int = 200, steps: int = 20,
                   console=None) -> list[Path]:
    """Most influential words per predicted class over the texts of a file."""
    from .explain import explain_dataset, write_global_report

    predictor = Predictor.from_run(run_dir)
    examples = read_inputs(predictor, data)
    total = min(len(examples), limit) if limit else len(examples)
    bar, advance = _progress(total, "explain", True, minimum=2)
    try:
        result = explain_dataset(predictor, examples, steps=steps, limit=limit, progress=advance)
    finally:
        if bar:
            bar.stop()
    return write_global_report(result, output or Path(run_dir) / "explain" / data.name)


def evaluate_generation_file(run_dir: Path, data: Path, output: Path | None = None) -> tuple[Path, dict]:
    """Loss per completion token and perplexity of a generation run on a JSONL file."""
    import torch

    from .config import load_run_config
    from .models.build import bf16_supported, load_model, load_tokenizer
    from .runs import check_complete, write_json_atomic
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
    generator = Generator.from_pretrained(model)
    calls = {"n": 0}

    def generate(prompts: list[str]) -> list[str]:
        calls["n"] += 1
        results = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     stop=[CLOSING_FENCE] if stop_at_fence else None,
                                     seed=None if temperature == 0 else seed + calls["n"])
        return [r["text"] for r in results]

    target = output or _benchmark_dir(model, benchmark, samples, temperature)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True))
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
