"""`lmforge serve`: load a run, build the app, and run it under uvicorn (one process)."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from pathlib import Path

from ..errors import UserError
from ..threads import on_short_thread
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
    from ..errors import UserError
    from ..runs import RunFolder, is_run_folder

    if not is_run_folder(Path(target)):
        return True
    try:
        return RunFolder(Path(target)).is_decoder
    except UserError:  # a damaged config: the classifier path reports it properly
        return False


def serve(run_dir: Path | str, settings: ServeSettings, *, backend: str = "torch", log_level: str = "info",
          registry_root: Path | None = None, log_sample: float = 1.0, log_texts: bool = False, poll_s: float = 1.0,
          threshold: float | None = None) -> None:
    """Serve a run folder, or `registry:NAME` (the production version, hot-swapped on promotion and
    rollback, every sampled prediction logged to the registry database), until interrupted;
    SIGINT/SIGTERM finish in-flight requests first."""
    import uvicorn

    from ..predictor import Predictor
    from .base import create_server_app
    from .generation_routes import GenerationApi
    from .model_api import ModelApi
    from .predict_routes import PredictApi
    from .protocol import uvicorn_config

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not is_loopback(settings.host):
        warning = "" if settings.api_key else " without an API key (--api-key-env)"
        log.warning("binding %s: the API is reachable from other machines%s", settings.host, warning)
    from .slots import registry_target

    name = registry_target(run_dir)  # a bad registry:NAME is an argument error, said before the port is tried
    check_port_free(settings.host, settings.port)
    if threshold is not None and (name is not None or serves_generation(run_dir)):
        raise UserError("--threshold applies to a multi-label run folder (each registered version keeps the threshold "
                        "tuned for it)")
    api: ModelApi  # which kind of model the target is decides which routes are served
    if name is not None:
        from ..lifecycle.predlog import PredictionLog
        from ..lifecycle import Registry
        from .slots import RegistrySlot

        if not 0.0 <= log_sample <= 1.0:
            raise UserError(f"--log-sample {log_sample}: give a fraction between 0 and 1")
        registry = Registry(registry_root)
        slot = on_short_thread(lambda: RegistrySlot(registry, name, backend=backend, poll_s=poll_s))
        prediction_log = PredictionLog(registry.db_path, name, sample_rate=log_sample, store_texts=log_texts)
        log.info("registry %s: serving %s; promotions and rollbacks are picked up within %.0f s; logging %.0f%% of "
                 "predictions (%s)", registry.root, slot.current.version_tag, poll_s, log_sample * 100,
                 "with texts" if log_texts else "texts hashed")
        api = PredictApi(slot, settings, prediction_log=prediction_log)
    elif serves_generation(run_dir):
        from ..generation.generator import Generator

        if backend != "torch":
            raise UserError(f"--backend {backend}: generation models are served with the torch backend")
        api = GenerationApi(on_short_thread(lambda: Generator.from_pretrained(str(run_dir))), settings)
    else:
        api = PredictApi(on_short_thread(lambda: Predictor.from_run(run_dir, backend=backend, threshold=threshold)), settings)
    config = uvicorn_config(create_server_app(api), settings, log_level=log_level)
    log.info("serving %s (%s, %s backend) on http://%s:%s; API docs at /docs", run_dir, api.version(), backend,
             settings.host, settings.port)
    uvicorn.Server(config).run()
