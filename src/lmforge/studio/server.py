"""Run the studio under uvicorn: loopback by default, a warning when bound elsewhere without a key."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..serve.server import check_port_free, is_loopback
from .app import StudioSettings, create_app

log = logging.getLogger("lmforge.studio")


def check_settings(settings: StudioSettings) -> None:
    missing = [str(root) for root in settings.runs if not Path(root).is_dir()]
    if missing:
        raise UserError(f"--runs {missing[0]}: no such folder; give the folder your runs are written to (output_dir, default runs/)")
    if settings.registry is not None and Path(settings.registry).exists() and not Path(settings.registry).is_dir():
        raise UserError(f"--registry {settings.registry}: not a folder")


def run_studio(settings: StudioSettings, host: str, port: int, *, log_level: str = "warning") -> None:
    import uvicorn

    check_settings(settings)
    if not is_loopback(host):
        log.warning("binding %s: the studio is reachable from other machines%s", host,
                    "" if settings.api_key else " without an API key (--api-key-env)")
    check_port_free(host, port)
    if settings.api_key is None and settings.allowed_hosts is None and is_loopback(host):
        settings.allowed_hosts = sorted({"127.0.0.1", "localhost", "::1", host.lower()})
    settings.warm_monitor = True
    app = create_app(settings)
    print(f"lmforge studio on http://{host}:{port}  (runs: {', '.join(str(r) for r in settings.runs)}; "
          f"registry: {app.state.studio.registry_root}); Ctrl-C stops it", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
