"""`lmforge studio` (registered in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def studio(
    runs: Optional[List[Path]] = typer.Option(None, help="a folder of runs (repeatable; default: runs/)"),
    registry: Optional[Path] = typer.Option(None, help="the registry folder (default: $LMFORGE_REGISTRY or ./registry)"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (loopback by default)"),
    port: int = typer.Option(8080, min=0, max=65535, help="TCP port"),
    api_key_env: Optional[str] = typer.Option(None, help="require the key held by this environment variable (login form or bearer header)"),
    label: Optional[List[str]] = typer.Option(None, help="a queue for the Label page: a file written by `lmforge suggest`, or registry:NAME "
                                                         "(the served model's least confident predictions, stored as feedback); repeatable"),
):
    """A web page over runs, the registry and a playground: open http://127.0.0.1:8080."""
    from .serve.server import api_key_from_env
    from .studio.app import StudioSettings
    from .studio.server import run_studio

    settings = StudioSettings(runs=list(runs or [Path("runs")]), registry=registry, api_key=api_key_from_env(api_key_env),
                              label_files=list(label or []))
    run_studio(settings, host, port)
