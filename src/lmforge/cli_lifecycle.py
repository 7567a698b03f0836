"""Lifecycle commands: `lmforge registry ...`, `lmforge update`, `lmforge monitor` (thin wrappers over
lmforge.lifecycle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .cli_common import err, out
from .errors import UserError
from .lifecycle import MAX_VERSION, GateThresholds, Registry, check_name

registry_app = typer.Typer(no_args_is_help=True, help="Versions of registered models: add, list, show, promote, rollback, archive, diff.")


def _checked_name(name: Optional[str]) -> Optional[str]:
    """A model name, checked before the registry folder is opened (or created)."""
    if name is None:
        return None
    try:
        return check_name(name)
    except UserError as e:
        raise typer.BadParameter(str(e)) from None


Name = Annotated[str, typer.Argument(callback=_checked_name, help="registered model name")]
REGISTRY_HELP = "registry folder (default: $LMFORGE_REGISTRY, else ./registry)"


def _registry(root: Optional[Path]) -> Registry:
    return Registry(root)


def _pct(value) -> str:
    return f"{value * 100:.2f}" if isinstance(value, (int, float)) else "-"


def _headline(metrics: dict) -> str:
    parts = []
    for split in ("dev", "test"):
        for key in ("accuracy", "macro_f1", "f1"):
            value = (metrics.get(split) or {}).get(key)
            if isinstance(value, (int, float)):
                parts.append(f"{split} {key} {_pct(value)}")
    return ", ".join(parts[:4])


@registry_app.command("add")
def registry_add(name: Name, run_dir: Path, registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP),
                 parent: Optional[int] = typer.Option(None, min=1, max=MAX_VERSION, help="the version this run was trained from (lineage)")):
    """Register a finished run as a new candidate version (copied into the registry, content-hashed)."""
    from .lifecycle.register import register_run

    version = register_run(_registry(registry), name, run_dir, parent=parent)
    out.print(f"registered [bold]{version.ref}[/] (candidate) from {run_dir}; {_headline(version.metrics)}")
    out.print(f"promote it with: lmforge registry promote {name} {version.version}")


@registry_app.command("list")
def registry_list(name: Optional[str] = typer.Argument(None, callback=_checked_name, help="only this model"), registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP),
                  as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Registered versions with stage, parent, gate and headline metrics."""
    versions = _registry(registry).list(name)
    if as_json:
        out.print_json(json.dumps([_version_json(v) for v in versions]))
        return
    if not versions:
        out.print("no registered versions" + (f" of {name}" if name else "") + "; add one with `lmforge registry add NAME RUN`")
        return
    table = Table(title="registry")
    for column in ("model", "version", "stage", "parent", "gate", "created", "metrics"):
        table.add_column(column)
    for v in versions:
        gate = "-" if v.gate is None else ("pass" if v.gate.get("passed") else "FAIL") + (" (forced)" if v.forced else "")
        style = {"production": "bold green", "archived": "dim"}.get(v.stage, "")
        table.add_row(v.name, f"v{v.version}", f"[{style}]{v.stage}[/]" if style else v.stage,
                      f"v{v.parent}" if v.parent else "-", gate, v.created_at[:19], _headline(v.metrics))
    out.print(table)


def _version_json(v) -> dict:
    return {"name": v.name, "version": v.version, "stage": v.stage, "path": str(v.path), "content_hash": v.content_hash,
            "parent": v.parent, "created_at": v.created_at, "promoted_at": v.promoted_at, "promoted_by": v.promoted_by,
            "forced": v.forced, "gate_passed": None if v.gate is None else v.gate.get("passed"), "metrics": v.metrics,
            "info": v.info}


@registry_app.command("show")
def registry_show(name: Name, version: Optional[int] = typer.Argument(None, min=1, max=MAX_VERSION, help="default: the production version"),
                  registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP),
                  as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """One version: stage, lineage, content hash, data, gate report and the model's event history."""
    reg = _registry(registry)
    v = reg.get(name, version)
    lineage = reg.lineage(name, v.version)
    if as_json:
        out.print_json(json.dumps({**_version_json(v), "lineage": [x.version for x in lineage], "gate": v.gate,
                                   "history": reg.history(name)}))
        return
    out.print(f"[bold]{v.ref}[/] {v.stage}  created {v.created_at}" + (f", promoted {v.promoted_at} by {v.promoted_by}" if v.promoted_at else ""))
    out.print(f"lineage: {' <- '.join(x.ref for x in lineage)}")
    out.print(f"folder: {v.path}\ncontent sha256: {v.content_hash}")
    out.print(f"metrics: {_headline(v.metrics) or '-'}")
    if v.info:
        out.print(f"info: {json.dumps(v.info)[:600]}")
    if v.gate:
        out.print(f"gate: {'PASSED' if v.gate.get('passed') else 'FAILED'}" + (" (promoted with --force)" if v.forced else ""))
        for check in v.gate.get("checks", []):
            out.print(f"  {'pass' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}")
    table = Table(title=f"history of {name}")
    for column in ("time", "action", "version", "from", "to", "by"):
        table.add_column(column)
    for e in reg.history(name)[-15:]:
        table.add_row(str(e["time"])[:19], e["action"], f"v{e['version']}", str(e["from_stage"] or "-"), str(e["to_stage"] or "-"),
                      str(e["actor"] or "-"))
    out.print(table)


@registry_app.command("promote")
def registry_promote(name: Name, version: int = typer.Argument(..., min=1, max=MAX_VERSION), registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP),
                     force: bool = typer.Option(False, help="promote even though the version's gate failed (recorded)")):
    """Make a version production (the previous one is archived). Refused when its gate failed, unless --force."""
    v = _registry(registry).promote(name, version, force=force)
    out.print(f"[green]{v.ref} is now production[/]" + (" (forced past a failed gate)" if v.forced else ""))


@registry_app.command("rollback")
def registry_rollback(name: Name, registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP)):
    """Back to the version that was production before the current one."""
    v = _registry(registry).rollback(name)
    out.print(f"[green]rolled back: {v.ref} is production again[/]")


@registry_app.command("archive")
def registry_archive(name: Name, version: int = typer.Argument(..., min=1, max=MAX_VERSION), registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP)):
    """Mark a candidate as not to be used."""
    v = _registry(registry).archive(name, version)
    out.print(f"{v.ref} archived")


@registry_app.command("diff")
def registry_diff(name: Name, a: int = typer.Argument(..., min=1, max=MAX_VERSION), b: int = typer.Argument(..., min=1, max=MAX_VERSION), registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP)):
    """Metrics of two versions side by side."""
    rows = _registry(registry).diff(name, a, b)
    table = Table(title=f"{name}: v{a} vs v{b}")
    for column in ("metric", f"v{a}", f"v{b}", "delta"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    for row in rows:
        table.add_row(row["metric"], fmt(row["a"]), fmt(row["b"]), fmt(row["delta"]))
    out.print(table)


def update(
    name: str = typer.Argument(..., callback=_checked_name, help="registered model; training starts from its production version"),
    data: Optional[Path] = typer.Option(None, help="new labelled examples (the model's data format)"),
    from_feedback: bool = typer.Option(False, help="also train on corrected labels collected by /v1/feedback"),
    replay: Optional[int] = typer.Option(None, min=0, max=100_000_000, help="old examples replayed (default: as many as the new training examples; 0: none)"),
    epochs: Optional[float] = typer.Option(None, min=1e-6, max=10_000.0, help="training epochs (default: the production run's)"),
    anchor: float = typer.Option(0.0, min=0.0, max=1e6, help="L2-SP strength pulling the encoder towards the production weights (0: off)"),
    logit_adjustment: float = typer.Option(1.0, min=0.0, max=100.0, help="tau of the logit-adjusted loss that keeps the plentiful new classes from crowding out the replayed old ones (0: plain cross-entropy)"),
    max_old_drop: float = typer.Option(1.0, min=0.0, max=100.0, help="gate: macro-F1 points the candidate may lose on each old evaluation set (over the set's gold labels and every label answered on it)"),
    max_old_accuracy_drop: float = typer.Option(1.0, min=0.0, max=100.0, help="gate: accuracy points the candidate may lose on each old evaluation set"),
    new_floor: float = typer.Option(0.7, min=0.0, max=1.0, help="gate: macro-F1 the candidate must reach on the new held-out examples"),
    output: Optional[Path] = typer.Option(None, help="run folder (default: runs/NAME-update-<time>)"),
    registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP),
):
    """Continual fine-tune of the production version on new data (+ replay) -> a new candidate with a gate report."""
    from .lifecycle.update import update as run_update

    version, report = run_update(_registry(registry), name, data, from_feedback=from_feedback, replay=replay, epochs=epochs,
                                 anchor=anchor, logit_adjustment=logit_adjustment, thresholds=GateThresholds(max_old_drop=max_old_drop, new_floor=new_floor,
                                                                               max_old_accuracy_drop=max_old_accuracy_drop),
                                 output=output, console=err)
    table = Table(title=f"gate of {version.ref} (parent v{report['parent']}): {'PASSED' if report['passed'] else 'FAILED'}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for check in report["checks"]:
        table.add_row(check["name"], "[green]pass[/]" if check["passed"] else "[red]FAIL[/]", check["detail"])
    out.print(table)
    worst = [r for r in report["old_classes"] if r["drop_points"] > 0][:5]
    if worst:
        out.print("largest old-class F1 drops: " + ", ".join(f"{r['label']} -{r['drop_points']:.1f}" for r in worst))
    out.print(f"registered {version.ref} as a candidate; report: {version.run_dir / 'gate.md'}")
    hint = f"lmforge registry promote {name} {version.version}" + ("" if report["passed"] else " --force   (the gate failed)")
    out.print(f"promote with: {hint}")


def monitor(
    name: str = typer.Argument(..., callback=_checked_name, help="registered model"),
    since: str = typer.Option("24h", help="window of recent traffic: 90s, 30m, 24h, 7d or all"),
    version: Optional[int] = typer.Option(None, min=1, max=MAX_VERSION, help="only traffic of this version (default: the production version)"),
    html: Optional[Path] = typer.Option(None, help="also write an HTML report with plots"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    registry: Optional[Path] = typer.Option(None, help=REGISTRY_HELP),
):
    """Drift, confidence, feedback and volume of recent traffic against the version's training-time reference."""
    from .lifecycle import render_table, write_html
    from .lifecycle.monitoring import monitor_report

    v, report = monitor_report(_registry(registry), name, version, since)
    if as_json:
        out.print_json(json.dumps({k: val for k, val in report.items() if k != "samples"}))
    else:
        out.print(f"[bold]{v.ref}[/]: {report['predictions']} logged predictions and {report['feedback']} feedback in the last {since}")
        out.print(render_table(report))
    if html is not None:
        write_html(report, html)
        err.print(f"HTML report: {html}")
    if report["warnings"]:
        raise typer.Exit(3)  # scripts (cron, CI) can act on drift
