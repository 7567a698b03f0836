"""`lmforge suggest` (registered in `cli.py`): which texts to label next, over lmforge.active."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .cli_common import err, printable


def suggest(
    run: Optional[Path] = typer.Argument(None, help="a classification or NER run folder; leave out for a cold start (no model yet: diverse texts)"),
    pool: Path = typer.Option(..., help="unlabelled texts: .txt (one per line), or the text column/key of a .csv/.tsv/.jsonl; NER: .txt sentences, or words already split in the training format (CoNLL/JSONL; tags ignored)"),
    n: int = typer.Option(50, "-n", min=1, max=1_000_000, help="how many texts to suggest"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="JSONL to write (default: stdout); the readers accept it once labelled"),
    strategy: str = typer.Option("auto", help="margin, entropy or least-confidence (classification), mnlp (NER), random; auto: margin / mnlp"),
    diversity: bool = typer.Option(True, "--diversity/--no-diversity", help="cluster the top candidates so the batch is not near-duplicates"),
    exclude: Optional[List[Path]] = typer.Option(None, help="a file of texts already labelled (repeat for several); the run's data files are always left out"),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="seed of the clustering and of random picks"),
    model: str = typer.Option("minilm-l6", help="cold start only: the encoder that embeds the pool"),
    task: str = typer.Option("text-classification", help="cold start only: text-classification or token-classification (the record format)"),
    backend: str = typer.Option("torch", help="torch, or onnx (the run's exported graph, `lmforge export`)"),
):
    """Suggest the pool texts most worth labelling next, pre-filled with the model's prediction to confirm or correct."""
    from .active.suggest import suggest as run_suggest, write_suggestions

    if run is None and (strategy != "auto" or backend != "torch"):
        raise typer.BadParameter("--strategy and --backend need a RUN (a cold start picks diverse texts)")
    if run is not None and (model != "minilm-l6" or task != "text-classification"):
        raise typer.BadParameter("--model and --task are for a cold start (without RUN); a run has its own")
    with err.status(printable(f"scoring {pool}"), spinner="dots"):
        result = run_suggest(run, pool, n, strategy=strategy, diversity=diversity, exclude=list(exclude or []),
                             seed=seed, model=model, task=task, backend=backend)
    for note in result.notes:
        err.print(printable(note), markup=False, highlight=False, soft_wrap=True)
    text = write_suggestions(result, output)
    if output is None:
        typer.echo(text, nl=False)
    where = output if output is not None else "stdout"
    err.print(printable(f"{len(result.records)} suggestion(s) from {result.pool_texts:,} pool texts in {result.seconds:.1f} s -> {where}; "
                        "fill in or correct the labels, then train with data.train=+FILE or lmforge update NAME --data FILE"),
              markup=False, highlight=False, soft_wrap=True)
