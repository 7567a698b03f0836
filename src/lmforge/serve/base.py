"""The HTTP base every served model shares: the FastAPI app and its lifespan (micro-batcher and
warm-up), JSON errors, API-key auth, /health, /ready, /metrics, /v1/model, the offline docs pages
and the request middleware (request ids, body limits, request metrics, an opaque 500).

It knows nothing of tasks: a `ModelApi` (serve/model_api.py) supplies the model and its routes.
Every model call goes through one `MicroBatcher` (one worker thread), so concurrent requests share
forward passes and no other model job ever runs beside a batch.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import MicroBatcher
from .docs import add_offline_docs
from .metrics import ServerMetrics
from .middleware import BodyTimeout, BodyTooLarge, RequestMiddleware, body_timeout, body_too_large, error_response
from .model_api import ApiError, ModelApi, Server
from .schemas import Health, Ready, error_responses, unicode_problem
from .settings import ServeSettings

log = logging.getLogger("lmforge.serve")


def create_server_app(api: ModelApi) -> FastAPI:
    """An ASGI app serving `api`: the shared routes, then the routes `api` adds."""
    settings = api.settings
    metrics = ServerMetrics()
    metrics.model.info(api.info())
    batcher = MicroBatcher(api.predict, max_batch=settings.max_batch_size, max_wait_s=settings.max_wait_ms / 1000,
                           max_queue=settings.max_queue, metrics=metrics)
    state = {"ready": False}

    async def warm_up() -> None:
        try:
            for _ in range(3):  # first calls allocate and pick kernels
                await batcher.submit(list(api.warmup_items))
            state["ready"] = True
            log.info("model %s warmed up; ready", api.version())
        except Exception:  # noqa: BLE001 - stays not-ready; the cause is logged
            log.exception("warm-up failed; /ready will keep answering 503")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        api.setup()
        executor = api.model_executor()
        if executor is not None:  # e.g. the continuous batch's thread: model jobs run there, between its steps
            batcher.use_executor(executor)
        await batcher.start()
        warming = asyncio.create_task(warm_up())
        yield
        state["ready"] = False
        warming.cancel()
        await batcher.stop()
        api.teardown()

    app = FastAPI(title="lmforge", version=api.version(), lifespan=lifespan, description=api.description(),
                  docs_url=None, redoc_url=None)
    add_offline_docs(app)
    add_error_handlers(app, settings)
    server = Server(app, settings, batcher, metrics, guarded=[Depends(api_key_check(settings))])
    app.state.server, app.state.model_api = server, api
    _add_shared_routes(server, api, is_ready=lambda: state["ready"])
    api.add_routes(server)
    app.add_middleware(RequestMiddleware, settings=settings, metrics=metrics)
    return app


def add_error_handlers(app: FastAPI, settings: ServeSettings) -> None:
    """Every error as a JSON `{"error": {...}}` body. Anything unexpected becomes a 500 in
    RequestMiddleware, not in an exception handler: Starlette re-raises after running a handler for
    Exception, and uvicorn then drops the connection."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return error_response(err.status, err.code, err.message, limit=err.limit, value=err.value)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        return error_response(422, "invalid_request", validation_message(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        if isinstance(err, BodyTooLarge):
            return body_too_large(settings)
        if isinstance(err, BodyTimeout):
            return body_timeout(settings)
        if err.status_code == 400:  # FastAPI could not read the body: not JSON it can decode (bad UTF-8, too deep)
            return error_response(422, "invalid_request", "the body could not be read as JSON: it is not UTF-8, nests too "
                                  "deeply or holds a number too long; send a JSON object as UTF-8")
        return error_response(err.status_code, "http_error", str(err.detail))


def api_key_check(settings: ServeSettings):
    """A route dependency: 401 unless the request carries the server's API key (when it has one)."""

    async def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent (a UTF-8 key stays UTF-8)
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1"), settings.api_key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong API key; send 'Authorization: Bearer <key>'")

    return require_key


def _add_shared_routes(server: Server, api: ModelApi, *, is_ready) -> None:
    app, metrics, guarded = server.app, server.metrics, server.guarded

    @app.get("/health", response_model=Health, response_class=JSONResponse, responses=error_responses(500),
             summary="the process is alive")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, response_class=JSONResponse, responses=error_responses(500, 503),
             summary="the model is loaded and warmed up")
    async def ready():
        if not is_ready():
            return error_response(503, "not_ready", "the model is still warming up")
        return {"status": "ready", "model_version": api.version()}

    @app.get("/metrics", dependencies=guarded, response_class=PlainTextResponse,
             responses=error_responses(401, 500, plain_route=True),
             summary="Prometheus metrics")
    async def prometheus():
        try:
            await api.refresh_metrics()
        except Exception:  # noqa: BLE001 - the other metrics are still worth serving
            log.exception("could not compute monitoring gauges")
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/model", dependencies=guarded, response_model=api.info_model, response_class=JSONResponse,
             responses=error_responses(401, 500), summary="what is served")
    async def model_info():
        return api.describe()


def validation_message(errors: list[dict]) -> str:
    """pydantic's validation errors as one line, each naming its field the way a client writes it
    (`texts[3]: ...`)."""
    problems = []
    for e in errors:
        kind, message = e.get("type"), e.get("msg", "invalid")
        if kind == "json_invalid":
            problems.append(f"body: not valid JSON ({e.get('ctx', {}).get('error', 'decode error')}) "
                            f"at character {e.get('loc', (None, '?'))[-1]}")
            continue
        if kind == "string_unicode":  # pydantic's own check of constrained strings, worded like ours
            message = unicode_problem(e.get("input")) or message
        problems.append(f"{_field_path(e.get('loc', ()))}: {message}")
    return "; ".join(problems[:10]) or "invalid request"


def _field_path(loc) -> str:
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"
