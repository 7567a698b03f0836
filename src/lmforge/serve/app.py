"""The FastAPI application: predict, explain, model info, health, readiness and metrics.

Every model call goes through one `MicroBatcher` (one worker thread), so predictions from
concurrent requests share forward passes and explanations never run beside a prediction.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError
from ..runs import METRICS, RUN_INFO
from ..files import read_json
from .batcher import MicroBatcher, QueueFull
from .docs import add_offline_docs
from .metrics import ServerMetrics
from .middleware import BodyTimeout, BodyTooLarge, RequestMiddleware, body_timeout, body_too_large, error_response
from .schemas import (ERROR_RESPONSES, ExplainRequest, ExplainResponse, FeedbackRequest, FeedbackResponse, Health,
                      ModelInfo, PredictRequest, PredictResponse, Ready, unicode_problem)
from .settings import ServeSettings

log = logging.getLogger("lmforge.serve")
PUBLIC_ROUTES = ("/health", "/ready", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc")
WARMUP_TEXT = "warm up the model"


class ApiError(Exception):
    """An error with a status code and a JSON body that says what was wrong."""

    def __init__(self, status: int, code: str, message: str, limit: str | None = None, value: int | float | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.limit, self.value = status, code, message, limit, value


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

    @app.post("/v1/predict", dependencies=guarded, response_model=PredictResponse, response_model_exclude_unset=True,
              responses=ERROR_RESPONSES, summary="predict a batch of texts")
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

    @app.post("/v1/explain", dependencies=guarded, response_model=ExplainResponse, response_model_exclude_unset=True,
              response_class=JSONResponse, responses=ERROR_RESPONSES, summary="token attributions for one prediction")
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
        @app.post("/v1/feedback", dependencies=guarded, response_model=FeedbackResponse, response_class=JSONResponse,
                  responses={**ERROR_RESPONSES, 404: {"model": ERROR_RESPONSES[422]["model"], "description": "no logged prediction has this id"}},
                  summary="attach the correct label to a logged prediction")
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
             describe, describe_model=ModelInfo, on_start=(), on_stop=(), on_metrics=None) -> FastAPI:
    """The parts every served model shares: micro-batcher lifecycle and warm-up, JSON errors,
    API-key auth, /health, /ready, /metrics, /v1/model, the offline docs pages and the request
    middleware. `warm` is an async callable that runs the model once; `describe` returns the
    /v1/model body, of type `describe_model`."""
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

    app = FastAPI(title="lmforge", version=current_version(), lifespan=lifespan, description=description,
                  docs_url=None, redoc_url=None)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    add_offline_docs(app)

    # -- errors ------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return error_response(err.status, err.code, err.message, limit=err.limit, value=err.value)

    # Anything unexpected becomes a 500 in RequestMiddleware, not in an exception handler: Starlette
    # re-raises after running a handler for Exception, and uvicorn then drops the connection.
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

    # -- auth ------------------------------------------------------------------------------------
    async def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent (a UTF-8 key stays UTF-8)
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1"), settings.api_key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong API key; send 'Authorization: Bearer <key>'")

    guarded = [Depends(require_key)]
    app.state.guarded = guarded

    # -- routes ----------------------------------------------------------------------------------
    @app.get("/health", response_model=Health, response_class=JSONResponse, summary="the process is alive")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, response_class=JSONResponse, responses={503: ERROR_RESPONSES[503]},
             summary="the model is loaded and warmed up")
    async def ready():
        if not state["ready"]:
            return error_response(503, "not_ready", "the model is still warming up")
        return {"status": "ready", "model_version": current_version()}

    @app.get("/metrics", dependencies=guarded, response_class=PlainTextResponse, responses={401: ERROR_RESPONSES[401]},
             summary="Prometheus metrics")
    async def prometheus():
        if on_metrics is not None:
            try:
                await on_metrics()
            except Exception:  # noqa: BLE001 - the other metrics are still worth serving
                log.exception("could not compute monitoring gauges")
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/model", dependencies=guarded, response_model=describe_model, response_class=JSONResponse,
             responses={401: ERROR_RESPONSES[401]}, summary="what is served")
    async def model_info():
        return describe()

    app.add_middleware(RequestMiddleware, settings=settings, metrics=metrics)
    return app


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
        "threshold": getattr(predictor.task, "threshold", None) if getattr(predictor.task, "multi_label", False) else None,
        "text_pairs": cfg.task == "text-classification" and cfg.data.text_pair_field is not None,
        "base_model": cfg.model, "method": cfg.method, "backend": predictor.backend, "max_length": cfg.data.max_length,
        "trained": info.get("finished"), "metrics": metrics,
    }


