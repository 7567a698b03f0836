"""Explanations from the command line: one text (`lmforge explain RUN --text ...`) or the most
influential words over a file (`lmforge explain RUN --data FILE`)."""

from __future__ import annotations

from pathlib import Path

from ..predict_files import progress_bar, read_inputs
from ..predictor import Predictor
from ..runs import RunFolder

def explain_one(run_dir: Path, text: str, *, text_pair: str | None = None, target: str | None = None,
                entity: int | None = None, steps: int = 50, html: Path | None = None, console=None,
                threshold: float | None = None) -> dict:
    """Explain one prediction; print a heat-map on `console` and/or write an HTML page."""
    from . import explain_text, render_terminal, write_html

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
    from . import explain_dataset, write_global_report

    predictor = Predictor.from_run(run_dir, threshold=threshold)
    examples = read_inputs(predictor, data)
    total = min(len(examples), limit) if limit else len(examples)
    bar, advance = progress_bar(total, "explain", True, minimum=2)
    try:
        result = explain_dataset(predictor, examples, steps=steps, limit=limit, progress=advance)
    finally:
        if bar:
            bar.stop()
    if console is not None:
        print_global_table(result, console)
    return write_global_report(result, output or RunFolder(Path(run_dir)).explain_dir(data.name))


def print_global_table(result: dict, console, words: int = 8) -> None:
    """The top words of each class (most frequent classes first) as one terminal table."""
    from rich.table import Table
    from rich.text import Text

    unit = result.get("unit", "predicted class")
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
