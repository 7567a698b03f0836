"""Evaluating a run on a labelled file (`lmforge evaluate RUN FILE`): the report and predictions,
written through the run's task; generation runs get loss and perplexity."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.load import read_split
from ..errors import UserError
from ..files import write_json_atomic, write_text_atomic
from ..predict_files import progress_bar, with_reading_overrides
from ..predictor import Predictor
from ..runs import RunFolder

def evaluate_run_on_file(run_dir: Path, data: Path, output: Path | None = None, overrides: list[str] | None = None,
                         threshold: float | None = None) -> tuple[Path, dict]:
    """Evaluate a run on a labelled file: (the report file, headline metrics). Encoder runs get the
    report of their task (report.md, report.json, plots, predictions.jsonl); decoder runs the loss and
    perplexity of the completions (report.json)."""
    run = RunFolder.open(run_dir)
    if not run.is_decoder:
        report_dir, headline = evaluate_file(run.path, data, output, overrides, threshold)
        return report_dir / "report.md", headline
    if overrides or threshold is not None:
        raise UserError("data.* overrides and --threshold apply to classification and NER runs; generation data is "
                        "read by its JSONL keys")
    report_dir, headline = evaluate_generation_file(run.path, data, output)
    return report_dir / "report.json", headline


def evaluate_file(run_dir: Path, data: Path, output: Path | None = None, overrides: list[str] | None = None,
                  threshold: float | None = None) -> tuple[Path, dict]:
    from .report import write_report

    predictor = Predictor.from_run(run_dir, threshold=threshold)
    with_reading_overrides(predictor, overrides)
    cfg = predictor.config
    examples, _ = read_split(cfg, data, scheme="auto")
    predictor.task.check_labels(examples, cfg.data.label_map, data.name)
    bar, advance = progress_bar(len(examples), "evaluate", True)
    try:
        report, predictions = predictor.evaluate(examples, progress=advance)
    finally:
        if bar:
            bar.stop()
    report_dir = output or RunFolder(Path(run_dir)).eval_dir(data.name)
    write_report(report, report_dir, style=predictor.spec.report_style(cfg), title=f"{cfg.name}: {data.name}")
    lines = [json.dumps({"source": ex.source, **pred}, ensure_ascii=False) for ex, pred in zip(examples, predictions)]
    write_text_atomic(report_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    return report_dir, predictor.task.headline(report)


def evaluate_generation_file(run_dir: Path, data: Path, output: Path | None = None) -> tuple[Path, dict]:
    """Loss per completion token and perplexity of a generation run on a JSONL file."""
    import torch

    from ..models.build import bf16_supported, load_model, load_tokenizer
    from ..tasks.generation import GenerationTask

    run = RunFolder.open(run_dir)
    cfg = run.config
    examples, _ = read_split(cfg, data)
    tokenizer = load_tokenizer(run.model_dir)
    task = GenerationTask(tokenizer, cfg.data.max_length)
    model = load_model(task.model_class(), run.model_dir)
    scores = task.score(model, examples, bf16_supported(torch.device("cpu")))
    report_dir = output or run.eval_dir(data.name)
    write_json_atomic(report_dir / "report.json", {"data": str(data), **scores})
    return report_dir, task.headline(scores)
