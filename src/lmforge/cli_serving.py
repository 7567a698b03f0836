"""CLI commands that run models: generate, serve, export, models (registered in `cli.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .cli_common import check_text, err, out, stage
from .errors import UserError

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
    continuous_batching: bool = typer.Option(True, help="greedy: a finished completion's row takes the next prompt at once (off: each batch waits for its longest completion)"),
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
    check_text("--prompt", *prompt or [], *stop or [])
    generator = Generator.from_pretrained(model)
    start = time.perf_counter()
    results = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop or None,
                                 seed=seed, chat=not no_chat, batch_size=batch_size, continuous=continuous_batching)
    seconds = time.perf_counter() - start
    for i, (text, result) in enumerate(zip(prompts, results)):
        if as_json:
            sys.stdout.write(json.dumps({"prompt": text, **result}, ensure_ascii=False) + "\n")
        else:  # plain text: model output may contain [brackets] that rich would read as markup
            sys.stdout.write((f"--- {i + 1}/{len(prompts)}: {text}\n" if len(prompts) > 1 else "") + result["text"] + "\n")
    tokens = sum(r["tokens"] for r in results)
    err.print(f"[dim]{tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tokens/s); {generator.version}, "
              f"{'bf16' if generator.bf16 else 'fp32'}, {len(generator.packed)} layers on 4-bit kernels[/dim]", highlight=False)


def _serve_option(name: str, **limits):
    """A `serve` option whose default and help are the ServeSettings field's (written once, there)."""
    from .serve.settings import ServeSettings

    field = ServeSettings.model_fields[name]
    return typer.Option(field.default, help=field.description, **limits)


def serve(
    run_dir: Path,
    backend: str = typer.Option("torch", help="torch, or onnx (after lmforge export)"),
    host: str = _serve_option("host"),
    port: int = _serve_option("port", min=0, max=65535),
    api_key_env: Optional[str] = typer.Option(None, help="require 'Authorization: Bearer <key>' with the key held by this environment variable"),
    max_batch_size: int = _serve_option("max_batch_size", min=1, max=65536),
    max_wait_ms: float = _serve_option("max_wait_ms", min=0.0, max=60_000.0),
    max_texts: int = _serve_option("max_texts", min=1, max=1_000_000),
    max_chars: int = _serve_option("max_chars", min=1, max=100_000_000),
    max_body_bytes: int = _serve_option("max_body_bytes", min=1, max=2**40),
    body_timeout_s: float = _serve_option("body_timeout_s", min=0.1, max=3600.0),
    header_timeout_s: float = _serve_option("header_timeout_s", min=0.1, max=3600.0),
    continuous_rows: int = _serve_option("continuous_rows", min=0, max=256),
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
                                 continuous_rows=continuous_rows, api_key=api_key_from_env(api_key_env))
    except ValidationError as e:
        raise UserError("; ".join(f"--{'-'.join(str(p) for p in x['loc']).replace('_', '-')}: {x['msg']}" for x in e.errors())) from None
    run_server(str(run_dir), settings, backend=backend, log_level=log_level, registry_root=registry,
               log_sample=log_sample, log_texts=log_texts, threshold=threshold)


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
                             min_agreement=min_agreement, progress=lambda message: stage(status, message))
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


def models():
    """List the packaged models available by short name."""
    from .models.resolve import PACKAGED_MODELS, installed

    table = Table("name", "kind", "installed", "description")
    for name, m in sorted(PACKAGED_MODELS.items()):
        table.add_row(name, m.kind, "yes" if installed(m) else f"no ({m.install_hint()})", m.description)
    out.print(table)
