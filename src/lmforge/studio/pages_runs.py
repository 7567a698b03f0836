"""Runs, Run and Compare pages, the live-progress JSON, and a run's files (by index, never by path)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from markupsafe import Markup

from ..runs import CONFIG, EVAL
from .catalog import RunEntry, curves, progress, read_log, run_id
from .charts import line_chart

SERVED = {".png": "image/png", ".svg": "text/plain", ".json": "text/plain", ".jsonl": "text/plain", ".md": "text/plain",
          ".yaml": "text/plain", ".txt": "text/plain", ".csv": "text/plain", ".html": "text/plain", ".log": "text/plain"}
MAX_SERVED_BYTES = 20_000_000
HIDDEN_DIRS = {"checkpoints", "tensorboard"}
MAX_COMPARE = 5


def run_files(entry: RunEntry) -> list[tuple[str, Path, int]]:
    """(relative name, path, size) of the run's files, sorted; checkpoints and TensorBoard events left out."""
    files = []
    for path in sorted(entry.path.rglob("*")):
        rel = path.relative_to(entry.path)
        if any(part in HIDDEN_DIRS or part.startswith(".") for part in rel.parts) or not path.is_file() or path.is_symlink():
            continue
        files.append((rel.as_posix(), path, path.stat().st_size))
    return files


def eval_reports(entry: RunEntry, files: list[tuple[str, Path, int]]) -> list[dict]:
    """Per split: the report's headline, per-class (or per-type) rows, and its plots as file indexes."""
    reports = []
    root = entry.path / EVAL
    if not root.is_dir():
        return reports
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            report = json.loads((split_dir / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict):
            continue
        per = report.get("per_class") or report.get("per_type") or {}
        rows = [{"name": name, **{k: v.get(k) for k in ("precision", "recall", "f1", "support")}}
                for name, v in per.items() if isinstance(v, dict)]
        headline = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key in ("macro", "micro"):
            if isinstance(report.get(key), dict) and isinstance(report[key].get("f1"), (int, float)):
                headline[f"{key} f1"] = report[key]["f1"]
        if isinstance(report.get("calibration"), dict) and isinstance(report["calibration"].get("ece"), (int, float)):
            headline["ece"] = report["calibration"]["ece"]
        prefix = f"{EVAL}/{split_dir.name}/"
        plots = [(i, name) for i, (name, _, _) in enumerate(files) if name.startswith(prefix) and name.endswith(".png")]
        reports.append({"split": split_dir.name, "headline": headline, "rows": rows, "plots": plots})
    return reports


def _charts(rows: list[dict]) -> list[Markup]:
    return [Markup(line_chart(series, name)) for name, series in curves(rows).items()]


def _flat(data, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data
    return out


def _config(entry: RunEntry) -> dict:
    import yaml

    try:
        # libyaml's safe loader when PyYAML has it: the pure-Python one took 30 ms a config
        data = yaml.load((entry.path / CONFIG).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def add_routes(app: FastAPI, studio) -> None:
    from .web import StudioError

    def entry_or_404(rid: str, entries: list[RunEntry] | None = None) -> RunEntry:
        entry = (studio.catalog.get(rid) if entries is None
                 else next((e for e in entries if run_id(e.path) == rid), None))
        if entry is None:
            raise StudioError(404, "no run with this id under the studio's runs folders (it may have been removed)")
        return entry

    @app.get("/runs")
    async def runs_page(request: Request):
        entries = studio.catalog.entries()
        metric_names = list(dict.fromkeys(k for e in entries for k in e.headline))[:4]
        return studio.page(request, "runs.html", entries=entries, metric_names=metric_names,
                           roots=[str(r) for r in studio.settings.runs])

    @app.get("/api/progress")
    async def progress_json(id: list[str] = Query(default=[])):
        wanted = set(id[:500])
        rows = [progress(e) for e in studio.catalog.entries() if e.id in wanted or (not wanted and e.status == "running")]
        return JSONResponse({"runs": rows})

    @app.get("/runs/{rid}")
    async def run_page(request: Request, rid: str):
        entry = entry_or_404(rid)
        files = run_files(entry)
        try:
            config_text = (entry.path / CONFIG).read_text(encoding="utf-8", errors="replace")
        except OSError:
            config_text = ""
        return studio.page(request, "run.html", run=entry, config_text=config_text, charts=_charts(read_log(entry.path)),
                           reports=eval_reports(entry, files), files=[(i, name, size, Path(name).suffix in SERVED)
                                                                      for i, (name, _, size) in enumerate(files)],
                           live=progress(entry))

    @app.get("/runs/{rid}/files/{index}")
    async def run_file(rid: str, index: int):
        entry = entry_or_404(rid)
        files = run_files(entry)
        if not 0 <= index < len(files):
            raise StudioError(404, "no such file in this run")
        name, path, size = files[index]
        kind = SERVED.get(Path(name).suffix)
        if kind is None or size > MAX_SERVED_BYTES:
            raise StudioError(403, f"{name}: the studio shows images and text files under {MAX_SERVED_BYTES // 1_000_000} MB only")
        if kind == "image/png":
            return FileResponse(path, media_type=kind)
        return PlainTextResponse(path.read_text(encoding="utf-8", errors="replace"),
                                 headers={"Content-Disposition": "inline"})

    @app.get("/compare")
    async def compare_page(request: Request, id: list[str] = Query(default=[])):
        ids = list(dict.fromkeys(id))
        entries = studio.catalog.entries()
        if not ids:
            return studio.page(request, "compare.html", chosen=[], entries=entries, rows=[], metrics=[], charts=[])
        if not 2 <= len(ids) <= MAX_COMPARE:
            raise StudioError(400, f"choose 2 to {MAX_COMPARE} runs to compare (got {len(ids)})")
        chosen = [entry_or_404(rid, entries) for rid in ids]
        configs = [_flat(_config(e)) for e in chosen]
        keys = sorted(set().union(*configs))
        rows = [{"key": k, "values": [c.get(k, "") for c in configs], "differs": len({c.get(k) for c in configs}) > 1}
                for k in keys]
        rows.sort(key=lambda r: (not r["differs"], r["key"]))
        metric_keys = list(dict.fromkeys(k for e in chosen for k in e.headline))
        metrics = [{"key": k, "values": [e.headline.get(k) for e in chosen]} for k in metric_keys]
        logs = [curves(read_log(e.path)) for e in chosen]
        chart_names = list(dict.fromkeys(name for log in logs for name in log))
        charts = []
        for name in chart_names:
            series = {}
            for e, log in zip(chosen, logs):
                for metric, points in log.get(name, {}).items():
                    series[f"{e.name}: {metric}" if len(log.get(name, {})) > 1 else e.name] = points
            charts.append(Markup(line_chart(series, name)))
        return studio.page(request, "compare.html", chosen=chosen, entries=entries, rows=rows, metrics=metrics, charts=charts)
