"""`lmforge serve`: load a run, build the app, and run it under uvicorn (one process)."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from pathlib import Path

from ..errors import UserError
from .settings import ServeSettings

log = logging.getLogger("lmforge.serve")


def api_key_from_env(name: str | None) -> str | None:
    """The API key held by environment variable `name` (None when no name is given)."""
    if name is None:
        return None
    key = os.environ.get(name, "")
    if not key.strip():
        raise UserError(f"--api-key-env {name}: the environment variable {name} is not set or empty; "
                        f"export {name}=<a long random key> or leave the option out")
    return key.strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is already in use; choose another with --port") from None
            raise UserError(f"cannot listen on {host}:{port}: {err.strerror}") from None


def serves_generation(target: Path) -> bool:
    """A generation run folder, or something that is no run folder at all (a model short name or a
    Hugging Face folder: only decoders are served without training)."""
    config = Path(target) / "config.yaml"
    if not config.is_file():
        return True
    import yaml

    try:
        return (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("task") == "generation"
    except yaml.YAMLError:
        return False


def serve(run_dir: Path, settings: ServeSettings, *, backend: str = "torch", log_level: str = "info") -> None:
    """Serve a run folder until interrupted; SIGINT/SIGTERM finish in-flight requests first."""
    import uvicorn

    from ..predictor import Predictor
    from .app import create_app

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not is_loopback(settings.host):
        warning = "" if settings.api_key else " without an API key (--api-key-env)"
        log.warning("binding %s: the API is reachable from other machines%s", settings.host, warning)
    check_port_free(settings.host, settings.port)
    if serves_generation(run_dir):
        from ..generation.generator import Generator

        if backend != "torch":
            raise UserError(f"--backend {backend}: generation models are served with the torch backend")
        predictor = Generator.from_pretrained(str(run_dir))
    else:
        predictor = Predictor.from_run(run_dir, backend=backend)
    app = create_app(predictor, settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=settings.graceful_timeout_s, lifespan="on")
    log.info("serving %s (%s, %s backend) on http://%s:%s; API docs at /docs", run_dir, predictor.version,
             getattr(predictor, "backend", "torch"), settings.host, settings.port)
    uvicorn.Server(config).run()
