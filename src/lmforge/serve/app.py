"""The FastAPI application: predict, explain, model info, health, readiness and metrics.

Every model call goes through one `MicroBatcher` (one worker thread), so predictions from
concurrent requests share forward passes and explanations never run beside a prediction.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from ..runs import METRICS, RUN_INFO, read_json
from .batcher import MicroBatcher, QueueFull
from .metrics import ServerMetrics
from .schemas import ExplainRequest, FeedbackRequest, PredictRequest, PredictResponse
from .settings import ServeSettings

log = logging.getLogger("lmforge.serve")
PUBLIC_ROUTES = ("/health", "/ready", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc")
WARMUP_TEXT = "warm up the model"


class ApiError(Exception):
    """An error with a status code and a JSON body that says what was wrong."""

    def __init__(self, status: int, code: str, message: str, limit: str | None = None, value: int | float | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.limit, self.value = status, code, message, limit, value


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in (an HTTPException, so FastAPI's body parsing passes it on)."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def create_app(model, settings: ServeSettings | None = None, *, prediction_log=None) -> FastAPI:
    """An ASGI app serving `model`: a `lmforge.Predictor` (classification, NER), a model slot
    (`serve.slots.RegistrySlot`: the production version of a registered model, hot-swapped on
    promotion) or a `lmforge.generation.Generator` (text generation). With `prediction_log`
    (lifecycle.predlog.PredictionLog) every sampled prediction is logged with an id that
    `POST /v1/feedback` can correct."""
    from .traffic import DriftGauges, log_predictions
    from .slots import FixedSlot

    settings = settings or ServeSettings()
    if hasattr(model, "generate"):
        from .generation_routes import add_generation_routes

        return add_generation_routes(model, settings)
    slot = model if hasattr(model, "current") else FixedSlot(model)

    def predict_batch(items: list) -> list:
        loaded = slot.current  # read once: the whole batch runs on one version, even during a swap
        return [(result, loaded) for result in predict_items(loaded.predictor, items)]

    batcher = MicroBatcher(predict_batch, max_batch=settings.max_batch_size,
                           max_wait_s=settings.max_wait_ms / 1000, max_queue=settings.max_queue)
    first = slot.predictor
    monitor = DriftGauges(prediction_log, slot) if prediction_log is not None else None
    app = base_app(settings, batcher, version=lambda: slot.current.version_tag, warm=lambda: batcher.submit([WARMUP_TEXT]),
                   info=_info(slot.current), description=f"{first.config.name}: {first.task.name} ({first.backend} backend)",
                   describe=lambda: describe(slot.predictor), on_start=[slot.start] + ([prediction_log.start] if prediction_log else []),
                   on_stop=[slot.stop] + ([prediction_log.stop] if prediction_log else []),
                   on_metrics=monitor.refresh if monitor else None)
    app.state.slot = slot
    metrics, guarded = app.state.metrics, app.state.guarded
    if monitor is not None:
        monitor.metrics = metrics
    if hasattr(slot, "on_swap"):
        def swapped(loaded) -> None:
            metrics.model.info(_info(loaded))
            metrics.swaps.inc()

        slot.on_swap = swapped

    @app.post("/v1/predict", dependencies=guarded, response_model=PredictResponse, summary="predict a batch of texts")
    async def predict(body: PredictRequest):
        check_texts(body.texts, slot.predictor, settings)
        started = time.perf_counter()
        try:
            pairs = await batcher.submit(body.texts)
        except QueueFull as err:
            raise ApiError(503, "overloaded", f"the server is busy: {err}; retry later", limit="max_queue",
                           value=settings.max_queue) from None
        loaded = pairs[0][1]  # one request's texts always share a batch
        results = [result for result, _ in pairs]
        metrics.texts.inc(len(results))
        if prediction_log is not None:
            results = log_predictions(prediction_log, loaded, body.texts, results, (time.perf_counter() - started) * 1000)
        return {"model_version": loaded.version_tag, "predictions": results}

    @app.post("/v1/explain", dependencies=guarded, summary="token attributions for one prediction")
    async def explain(body: ExplainRequest):
        from ..explain import explain_text

        loaded = slot.current
        predictor = loaded.predictor
        check_texts([body.text if body.text_pair is None else (body.text, body.text_pair)], predictor, settings)
        steps = body.steps or settings.explain_steps
        if steps > settings.max_explain_steps:
            raise ApiError(413, "limit_exceeded", f"steps is {steps}; at most {settings.max_explain_steps} are allowed",
                           limit="max_explain_steps", value=settings.max_explain_steps)
        try:
            result = await batcher.run_exclusive(lambda: explain_text(
                predictor, body.text, text_pair=body.text_pair, target=body.target, entity=body.entity,
                steps=steps, baseline=body.baseline))
        except UserError as err:
            raise ApiError(422, "cannot_explain", str(err)) from None
        return {"model_version": loaded.version_tag, **result}

    if prediction_log is not None:
        @app.post("/v1/feedback", dependencies=guarded, summary="attach the correct label to a logged prediction")
        async def feedback(body: FeedbackRequest):
            from starlette.concurrency import run_in_threadpool

            from ..lifecycle.predlog import UnknownPrediction

            try:
                stored = await run_in_threadpool(prediction_log.add_feedback, body.prediction_id, body.label)
            except UnknownPrediction:
                raise ApiError(404, "unknown_prediction", f"no logged prediction has id {body.prediction_id!r} "
                               "(ids come from /v1/predict responses; unsampled predictions are not logged)") from None
            known = set(slot.predictor.task.labels)
            return {**stored, "stored": True, "new_label": body.label not in known}

    return app


def _info(loaded) -> dict:
    p = loaded.predictor
    return {"version": loaded.version_tag, "task": p.task.name, "backend": p.backend}


def base_app(settings: ServeSettings, batcher: MicroBatcher, *, version, warm, info: dict, description: str,
             describe, on_start=(), on_stop=(), on_metrics=None) -> FastAPI:
    """The parts every served model shares: micro-batcher lifecycle and warm-up, JSON errors,
    API-key auth, /health, /ready, /metrics, /v1/model and the request middleware. `warm` is an
    async callable that runs the model once; `describe` returns the /v1/model body."""
    current_version = version if callable(version) else (lambda: version)
    metrics = ServerMetrics()
    metrics.model.info(info)
    batcher.metrics = metrics
    state = {"ready": False}

    async def warm_up() -> None:
        try:
            for _ in range(3):  # first calls allocate and pick kernels
                await warm()
            state["ready"] = True
            log.info("model %s warmed up; ready", current_version())
        except Exception:  # noqa: BLE001 - stays not-ready; the cause is logged
            log.exception("warm-up failed; /ready will keep answering 503")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for start in on_start:
            start()
        await batcher.start()
        warming = asyncio.create_task(warm_up())
        yield
        state["ready"] = False
        warming.cancel()
        await batcher.stop()
        for stop in on_stop:
            stop()

    app = FastAPI(title="lmforge", version=current_version(), lifespan=lifespan, description=description)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings

    # -- errors ------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return error_response(err.status, err.code, err.message, limit=err.limit, value=err.value)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(problems[:10]) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        if isinstance(err, BodyTooLarge):
            return error_response(413, "body_too_large", f"the request body exceeds {settings.max_body_bytes} bytes",
                                  limit="max_body_bytes", value=settings.max_body_bytes)
        return error_response(err.status_code, "http_error", str(err.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception):
        request_id = request.scope.get("lmforge.request_id", "")
        log.error("request %s failed", request_id, exc_info=(type(err), err, err.__traceback__))
        return error_response(500, "internal_error", "internal server error; the cause is in the server log",
                              request_id=request_id)

    # -- auth ------------------------------------------------------------------------------------
    async def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong API key; send 'Authorization: Bearer <key>'")

    guarded = [Depends(require_key)]
    app.state.guarded = guarded

    # -- routes ----------------------------------------------------------------------------------
    @app.get("/health", summary="the process is alive")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="the model is loaded and warmed up")
    async def ready():
        if not state["ready"]:
            return error_response(503, "not_ready", "the model is still warming up")
        return {"status": "ready", "model_version": current_version()}

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    async def prometheus():
        if on_metrics is not None:
            try:
                await on_metrics()
            except Exception:  # noqa: BLE001 - the other metrics are still worth serving
                log.exception("could not compute monitoring gauges")
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/model", dependencies=guarded, summary="what is served")
    async def model_info():
        return describe()

    app.add_middleware(RequestMiddleware, settings=settings, metrics=metrics)
    return app


def check_texts(texts: list, predictor, settings: ServeSettings) -> None:
    """Request limits and input shape, each failure naming the field, the limit and its value."""
    if len(texts) > settings.max_texts:
        raise ApiError(413, "limit_exceeded", f"{len(texts)} texts in one request; at most {settings.max_texts} are allowed",
                       limit="max_texts", value=settings.max_texts)
    wants_pairs = predictor.task.name == "text-classification" and predictor.config.data.text_pair_field is not None
    for i, item in enumerate(texts):
        parts = [item] if isinstance(item, str) else list(item)
        if len(parts) == 2 and not wants_pairs:
            raise ApiError(422, "invalid_request", f"texts[{i}] is a pair, but this model takes single texts")
        if len(parts) == 1 and wants_pairs:
            raise ApiError(422, "invalid_request", f"texts[{i}] is a single text, but this model takes [text, text_pair] pairs")
        for part in parts:
            if not part.strip():
                raise ApiError(422, "invalid_request", f"texts[{i}] is empty")
            if len(part) > settings.max_chars:
                raise ApiError(413, "limit_exceeded", f"texts[{i}] has {len(part)} characters; at most {settings.max_chars} are allowed",
                               limit="max_chars", value=settings.max_chars)


def predict_items(predictor, items: list) -> list[dict]:
    """Predict a gathered batch. Single texts and pairs go through separate encodes, so a pair from
    one request never changes how another request's single text is encoded."""
    results: list[dict | None] = [None] * len(items)
    singles = [i for i, t in enumerate(items) if isinstance(t, str)]
    pairs = [i for i, t in enumerate(items) if not isinstance(t, str)]
    for group in (singles, pairs):
        if group:
            for i, pred in zip(group, predictor.predict([items[i] if isinstance(items[i], str) else tuple(items[i]) for i in group])):
                results[i] = {"entities": pred["entities"]} if "entities" in pred else pred
    return results  # type: ignore[return-value]


def describe(predictor) -> dict:
    """The served model: task, labels, base model, method, version and the run's metrics."""
    cfg, run = predictor.config, predictor.run_dir
    info = read_json(run / RUN_INFO) if run is not None and (run / RUN_INFO).is_file() else {}
    metrics = read_json(run / METRICS) if run is not None and (run / METRICS).is_file() else {}
    return {
        "name": cfg.name, "version": predictor.version, "task": predictor.task.name,
        "labels": predictor.task.labels, "multi_label": bool(getattr(predictor.task, "multi_label", False)),
        "text_pairs": cfg.task == "text-classification" and cfg.data.text_pair_field is not None,
        "base_model": cfg.model, "method": cfg.method, "backend": predictor.backend, "max_length": cfg.data.max_length,
        "trained": info.get("finished"), "metrics": metrics,
    }


def _json_by_default(scope) -> None:
    """The API speaks JSON only: a body sent without a content type, or with curl's default
    form type (`curl -d '{...}'`), is read as JSON."""
    headers = scope.get("headers") or []
    kind = dict(headers).get(b"content-type", b"")
    if not kind or kind.startswith(b"application/x-www-form-urlencoded"):
        scope["headers"] = [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", b"application/json")]


class RequestMiddleware:
    """Pure ASGI middleware: request ids, the body-size limit, and request metrics by route and status."""

    def __init__(self, app, settings: ServeSettings, metrics: ServerMetrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        scope["lmforge.request_id"] = request_id
        if scope["method"] == "POST":
            _json_by_default(scope)
        started = time.perf_counter()
        status = {"code": 500}
        limit = self.settings.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(413, "body_too_large", f"the request body exceeds {limit} bytes",
                                      limit="max_body_bytes", value=limit)
            response.headers["x-request-id"] = request_id
            self._observe(scope, 413, started)
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        finally:
            self._observe(scope, status["code"], started)

    def _observe(self, scope, status: int, started: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "other"
        self.metrics.requests.labels(path, str(status)).inc()
        self.metrics.latency.labels(path).observe(time.perf_counter() - started)
