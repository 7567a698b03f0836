"""The `lmforge` command: thin Typer commands over importable functions.

Exit codes: 0 success; 2 user error (one message on stderr, no traceback); 1 internal error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

try:  # typer >= 0.29 bundles its own click, whose errors are not click's
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - an older typer on plain click
    from click.exceptions import ClickException, NoArgsIsHelpError

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adapt, evaluate and run language models from one config file.")
from .cli_common import check_text, err, out, printable, shorten  # noqa: E402


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"lmforge {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the lmforge version and exit")) -> None:
    """Adapt, evaluate and run language models from one config file."""


@app.command()
def init(
    task: str = typer.Option(..., help="text-classification, token-classification or generation"),
    model: Optional[str] = typer.Option(None, help="packaged model short name or a local Hugging Face folder "
                                        "(default: minilm-l6; me5-small when the training text is mostly not Latin script)"),
    method: Optional[str] = typer.Option(None, help="full, lora, ia3 or prefix (default: full; lora for generation); "
                                         "text-classification from few labels: fewshot (2-64 examples per class) or zeroshot (--labels only)"),
    labels: Optional[str] = typer.Option(None, help="zeroshot: the labels, comma-separated, e.g. \"refund,card lost\""),
    train: Optional[Path] = typer.Option(None, help="training file"),
    dev: Optional[Path] = typer.Option(None, help="dev file (default: a hold-out of train)"),
    test: Optional[Path] = typer.Option(None, help="test file"),
    text_field: Optional[str] = typer.Option(None, help="classification: text column (default: inferred from the header)"),
    label_field: Optional[str] = typer.Option(None, help="classification: label column (default: inferred from the header)"),
    text_pair_field: Optional[str] = typer.Option(None, help="classification: second-text column of sentence pairs (default: inferred from the header)"),
    multi_label: Optional[bool] = typer.Option(None, "--multi-label/--single-label", help="classification: several labels per example (default: inferred from the label column)"),
    name: Optional[str] = typer.Option(None, help="run name (default: from the output file name)"),
    output: Path = typer.Option(..., "-o", "--output", help="config file to write"),
    force: bool = typer.Option(False, help="overwrite an existing config file"),
):
    """Write a complete, commented starter config, with the data fields inferred from the training file."""
    from .starter import write_starter

    notes = write_starter(output, task=task, model=model, method=method, train=train, dev=dev, test=test,
                          text_field=text_field, label_field=label_field, text_pair_field=text_pair_field,
                          multi_label=multi_label, name=name, force=force, labels=_label_list(labels))
    for note in notes:
        err.print(printable(f"inferred {note}"), markup=False, highlight=False, soft_wrap=True)
    err.print(printable(f"wrote {output}; check it with: lmforge validate {output}"), markup=False, highlight=False, soft_wrap=True)


def _label_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    labels = [part.strip() for part in value.split(",")]
    if any(not label for label in labels) or len(set(labels)) != len(labels):
        raise UserError(f"--labels {value!r}: give each label once, comma-separated, none empty (e.g. --labels \"refund,card lost\")")
    return labels


@app.command()
def validate(config: Path, overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides")):
    """Check the config, data files, labels and one training batch; trains nothing, writes nothing."""
    from .validate import validate_config

    with err.status(f"checking {config}: config, data files, labels, one training batch", spinner="dots"):
        summary = validate_config(config, overrides or [])
    warned = any(key.startswith("warning") for key in summary)
    table = Table(title=f"{config} is valid" + (", with warnings" if warned else ""), show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value), style="bold yellow" if key.startswith("warning") else None)
    out.print(table)


@app.command()
def train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Argument(None, help="config file"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. training.epochs=5"),
    output: Optional[Path] = typer.Option(None, help="run folder (default: <output_dir>/<name>)"),
    max_steps: Optional[int] = typer.Option(None, min=1, max=10**12, help="stop after this many optimizer steps"),
    nproc: int = typer.Option(1, min=1, max=1024, help="train with N processes (torchrun, DDP)"),
    resume: Optional[Path] = typer.Option(None, help="continue an interrupted run folder"),
    overwrite: bool = typer.Option(False, help="replace an existing run folder"),
):
    """Fine-tune a model; writes a run folder."""
    from .launch import relaunch, under_launcher

    if nproc > 1 and not under_launcher():
        argv = (ctx.obj or {}).get("argv", sys.argv[1:])  # the command line main() was given
        raise typer.Exit(relaunch(nproc, without_option(argv, "--nproc")))
    from .config import load_config
    from .training.loop import resume as resume_training, train as run_training

    if resume is not None:
        if config is not None:
            raise UserError("give either a config file or --resume RUN_DIR, not both")
        run_dir = resume_training(resume, console=err)
    else:
        if config is None:
            raise UserError("missing config file: lmforge train CONFIG (or --resume RUN_DIR)")
        cfg = load_config(config, overrides or [])
        run_dir = run_training(cfg, config.resolve().parent, output=output, max_steps=max_steps, overwrite=overwrite, console=err)
    out.print(str(run_dir))


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run folder; with --benchmark also a packaged decoder (smollm2-135m) or a model folder"),
    overrides: Optional[List[str]] = typer.Argument(None, help="how --data is read, e.g. data.label_field=intent data.text_field=body"),
    data: Optional[Path] = typer.Option(None, help="labelled file in the run's format"),
    benchmark: Optional[str] = typer.Option(None, help="code benchmark for decoders: humaneval or mbpp (test split, task ids 11-510)"),
    limit: Optional[int] = typer.Option(None, min=1, max=10**9, help="--benchmark: only the first N problems"),
    samples: int = typer.Option(1, min=1, max=10_000, help="--benchmark: completions per problem (1: greedy pass@1; more: sampled pass@k)"),
    k: Optional[List[int]] = typer.Option(None, min=1, max=10_000, help="--benchmark: k values of pass@k (default 1, and 10/100 when samples allow)"),
    temperature: Optional[float] = typer.Option(None, min=0.0, max=5.0, help="--benchmark: sampling temperature (default 0 for one sample, 0.8 for more)"),
    max_new_tokens: int = typer.Option(512, min=1, max=100_000, help="--benchmark: most tokens per completion"),
    workers: Optional[int] = typer.Option(None, min=1, max=1024, help="--benchmark: sandboxed programs run in parallel (default: the cores)"),
    stop_at_fence: bool = typer.Option(True, help="--benchmark: end each completion at its first closing ``` fence (the extractor reads the first code block)"),
    continuous_batching: bool = typer.Option(True, help="--benchmark, greedy: a finished completion's row takes the next problem at once (off: each batch waits for its longest completion)"),
    rows: Optional[int] = typer.Option(None, min=1, max=1024, help="--benchmark: completions decoding at once (default 16 with continuous batching, else 8)"),
    output: Optional[Path] = typer.Option(None, help="report folder (default: RUN_DIR/eval/<file or benchmark>)"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="multi-label runs: predict a label when its probability is at least this (default: the threshold tuned on dev during training, in labels.json)"),
):
    """Evaluate a run on a labelled file (report + plots), or a decoder on a code benchmark (pass@k, sandboxed)."""
    if benchmark is not None:
        from .codeeval.run import evaluate_benchmark

        if data is not None or overrides or threshold is not None:
            raise UserError("give either --data (with data.* overrides, --threshold) or --benchmark, not both")
        summary = evaluate_benchmark(str(run_dir), benchmark, limit=limit, samples=samples, k=tuple(k) if k else None,
                                     temperature=temperature, max_new_tokens=max_new_tokens, workers=workers, output=output,
                                     stop_at_fence=stop_at_fence, continuous=continuous_batching, rows=rows)
        table = Table(title=f"{benchmark}: {summary['problems']} problems x {summary['samples']} sample(s)")
        for key in [*summary["pass_at_k"], *summary["status_counts"], "generation s", "execution s"]:
            table.add_column(key)
        table.add_row(*(f"{v:.4f}" for v in summary["pass_at_k"].values()), *(str(v) for v in summary["status_counts"].values()),
                      f"{summary['generation_seconds']:.0f}", f"{summary['execution_seconds']:.1f}")
        out.print(table)
        out.print(f"per-problem results: {summary['output']}/results.jsonl")
        return
    given = [name for name, value in (("--limit", limit), ("--k", k), ("--temperature", temperature), ("--workers", workers),
                                      ("--rows", rows)) if value is not None]
    if given:
        raise UserError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to --benchmark")
    if data is None:
        raise UserError("give --data FILE (a labelled file) or --benchmark humaneval|mbpp")
    from .evaluation.on_files import evaluate_run_on_file

    report, headline = evaluate_run_on_file(run_dir, data, output, overrides=overrides, threshold=threshold)
    table = Table(title=f"{data.name}")
    for key in headline:
        table.add_column(key)
    table.add_row(*(f"{v:.4f}" for v in headline.values()))
    out.print(table)
    out.print(f"report: {report}")


@app.command()
def predict(
    run_dir: Path,
    input: Path = typer.Argument(..., help=".txt (one text per line), .csv, .tsv or .jsonl"),
    overrides: Optional[List[str]] = typer.Argument(None, help="how INPUT is read, e.g. data.text_field=body"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="JSONL output (default: stdout)"),
    resume: bool = typer.Option(False, help="continue an interrupted prediction into --output (keeps its finished lines)"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="multi-label runs: predict a label when its probability is at least this (default: the threshold tuned on dev during training, in labels.json)"),
):
    """Predict labels (or entities) for every text of a file; JSONL out, written as it goes (bounded memory)."""
    from .predict_files import predict_file

    count = predict_file(run_dir, input, output, overrides=overrides, resume=resume, threshold=threshold)
    if output is not None:
        err.print(f"wrote {count} predictions to {output}", markup=False, highlight=False)


@app.command()
def explain(
    run_dir: Path,
    text: Optional[str] = typer.Option(None, help="the text to explain"),
    text_pair: Optional[str] = typer.Option(None, help="the second text, for pair classifiers"),
    target: Optional[str] = typer.Option(None, help="label to explain (default: the predicted one)"),
    entity: Optional[int] = typer.Option(None, min=0, max=1_000_000, help="NER: index of the predicted entity to explain (default 0)"),
    steps: Optional[int] = typer.Option(None, min=2, max=10_000, help="integrated-gradients steps (default 50; 20 with --global)"),
    html: Optional[Path] = typer.Option(None, help="also write an HTML page here"),
    open_browser: bool = typer.Option(False, "--open", help="open the HTML page in a browser"),
    data: Optional[Path] = typer.Option(None, help="with --global: a file of texts (the run's format)"),
    global_: bool = typer.Option(False, "--global", help="most influential words per class over --data"),
    limit: int = typer.Option(200, min=0, max=10**9, help="with --global: explain at most this many texts (0: all)"),
    output: Optional[Path] = typer.Option(None, help="with --global: report folder (default RUN_DIR/explain/<file>)"),
    as_json: bool = typer.Option(False, "--json", help="print the explanation as JSON"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="multi-label runs: predict a label when its probability is at least this (default: the threshold tuned on dev during training, in labels.json)"),
):
    """Explain a prediction (token attributions) or, with --global, the model over a dataset."""
    from .explain.on_files import explain_global, explain_one

    if global_:
        if data is None:
            raise UserError("--global needs --data FILE (texts to explain)")
        paths = explain_global(run_dir, data, output, limit=limit, steps=steps or 20, console=out, threshold=threshold)
        for path in paths:
            out.print(f"wrote {path}")
        return
    if text is None:
        raise UserError("give --text \"...\" (or --global --data FILE)")
    check_text("--text/--text-pair/--target", text, text_pair or "", target or "")
    result = explain_one(run_dir, text, text_pair=text_pair, target=target, entity=entity, steps=steps or 50, html=html,
                         console=None if as_json else out, threshold=threshold)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    if html is not None:
        err.print(f"wrote {html}")
        if open_browser:
            import webbrowser

            webbrowser.open(html.resolve().as_uri())


def without_option(argv: list[str], option: str) -> list[str]:
    """argv minus `--option VALUE` / `--option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


from .cli_lifecycle import monitor, registry_app, update  # noqa: E402
from .cli_serving import export, generate, models, serve  # noqa: E402
from .cli_studio import studio  # noqa: E402
from .cli_suggest import suggest  # noqa: E402

for command in (generate, serve):
    app.command()(command)

app.add_typer(registry_app, name="registry")
app.command()(update)
app.command(help="Drift, confidence, feedback and volume of recent traffic against the version's training-time reference. "
                 "Exit code 3 when a check warns.")(monitor)
for command in (export, models, suggest, studio):
    app.command()(command)


def _usage_error(e) -> int:
    """One line for a usage mistake (unknown command or option, missing or bad value), with click's
    "did you mean" hint and where to find the help; exit code 2."""
    if isinstance(e, NoArgsIsHelpError):  # a bare `lmforge` or `lmforge registry`: the help is the answer
        e.show()
        return 0
    ctx = getattr(e, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = " ".join(e.format_message().split())
    err.print(f"[red]error:[/] {escape(printable(message))}{escape(where)}", soft_wrap=True, highlight=False)
    return e.exit_code


def main(argv: Optional[List[str]] = None) -> int:
    """Run `lmforge ARGV` (default: the process arguments); returns the exit code: 0 success, 2 a
    problem the user can fix (one message, no traceback), 3 `monitor` warnings, 130 interrupted,
    1 a bug."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="lmforge", standalone_mode=False, obj={"argv": args})
    except UserError as e:
        err.print("[red]error:[/]", end=" ")
        err.print(printable(str(e)), markup=False, highlight=False, soft_wrap=True)
        return 2
    except ClickException as e:  # typer's bundled click: usage errors
        return _usage_error(e)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 130
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except OSError as e:
        if e.filename is None:  # not about a file the user named: treat as a bug below
            return _internal_error()
        # a path the user gave that the system refuses (too long, no permission, a folder, disk full)
        err.print("[red]error:[/]", end=" ")
        err.print(printable(f"{shorten(str(e.filename))}: {e.strerror or e}"), markup=False, highlight=False, soft_wrap=True)
        return 2
    except Exception:
        return _internal_error()
    # typer hands back `raise typer.Exit(code)` from inside a command as the return value
    return result if isinstance(result, int) else 0


def _internal_error() -> int:
    import traceback

    traceback.print_exc()
    err.print("[red]internal error[/] (a bug in lmforge; please report it with the traceback above)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
