"""Serving a classifier or NER model: POST /v1/predict, /v1/explain and, with a prediction log,
/v1/feedback, as a `ModelApi` on the shared HTTP base.

Predictions go through the micro-batcher (concurrent requests share forward passes); explanations
run on the same model thread, so they never run beside a prediction. Every batch reads the slot's
version once, so a registry hot swap never splits a batch between two versions.
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse

from ..errors import UserError
from ..runs import RunFolder
from .model_api import ApiError, Server
from .schemas import (ERROR_RESPONSES, ExplainRequest, ExplainResponse, FeedbackRequest, FeedbackResponse, ModelInfo,
                      PredictRequest, PredictResponse, error_doc)
from .settings import ServeSettings
from .slots import FixedSlot
from .traffic import DriftGauges, log_predictions

WARMUP_TEXT = "warm up the model"


class PredictApi:
    """Serves `model`: a `lmforge.Predictor` (classification, NER) or a model slot
    (`serve.slots.RegistrySlot`: the production version of a registered model, hot-swapped on
    promotion). With `prediction_log` (lifecycle.predlog.PredictionLog) every sampled prediction is
    logged with an id that `POST /v1/feedback` can correct."""

    info_model = ModelInfo
    warmup_items = [WARMUP_TEXT]

    def __init__(self, model, settings: ServeSettings, *, prediction_log=None):
        self.settings = settings
        self.slot = model if hasattr(model, "current") else FixedSlot(model)
        self.prediction_log = prediction_log
        self.monitor = DriftGauges(prediction_log, self.slot) if prediction_log is not None else None

    # -- what the HTTP base calls --------------------------------------------------------------------
    def setup(self) -> None:
        self.slot.start()
        if self.prediction_log is not None:
            self.prediction_log.start()

    def teardown(self) -> None:
        self.slot.stop()
        if self.prediction_log is not None:
            self.prediction_log.stop()

    def model_executor(self) -> None:
        return None  # the micro-batcher's own model thread

    def predict(self, items: list) -> list:
        loaded = self.slot.current  # read once: the whole batch runs on one version, even during a swap
        return [(result, loaded) for result in predict_items(loaded.predictor, items)]

    def version(self) -> str:
        return self.slot.current.version_tag

    def info(self) -> dict[str, str]:
        return version_info(self.slot.current)

    def description(self) -> str:
        p = self.slot.predictor
        return f"{p.config.name}: {p.task.name} ({p.backend} backend)"

    def describe(self) -> dict:
        return describe(self.slot.predictor)

    async def refresh_metrics(self) -> None:
        if self.monitor is not None:
            await self.monitor.refresh()

    def add_routes(self, server: Server) -> None:
        metrics = server.metrics
        if self.monitor is not None:
            self.monitor.metrics = metrics
        if hasattr(self.slot, "on_swap"):
            def swapped(loaded) -> None:
                metrics.model.info(version_info(loaded))
                metrics.swaps.inc()

            self.slot.on_swap = swapped
        self._add_predict(server)
        self._add_explain(server)
        if self.prediction_log is not None:
            self._add_feedback(server)

    # -- routes --------------------------------------------------------------------------------------
    def _add_predict(self, server: Server) -> None:
        slot, settings, prediction_log = self.slot, self.settings, self.prediction_log

        @server.app.post("/v1/predict", dependencies=server.guarded, response_model=PredictResponse,
                         response_model_exclude_unset=True, responses=ERROR_RESPONSES, summary="predict a batch of texts")
        async def predict(body: PredictRequest):
            check_texts(body.texts, slot.predictor, settings)
            started = time.perf_counter()
            pairs = await server.submit(body.texts)
            loaded = pairs[0][1]  # one request's texts always share a batch
            results = [result for result, _ in pairs]
            server.metrics.texts.inc(len(results))
            if prediction_log is not None:
                results = log_predictions(prediction_log, loaded, body.texts, results, (time.perf_counter() - started) * 1000)
            return {"model_version": loaded.version_tag, "predictions": results}

    def _add_explain(self, server: Server) -> None:
        slot, settings = self.slot, self.settings

        @server.app.post("/v1/explain", dependencies=server.guarded, response_model=ExplainResponse,
                         response_model_exclude_unset=True, response_class=JSONResponse, responses=ERROR_RESPONSES,
                         summary="token attributions for one prediction")
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
                result = await server.batcher.run_exclusive(lambda: explain_text(
                    predictor, body.text, text_pair=body.text_pair, target=body.target, entity=body.entity,
                    steps=steps, baseline=body.baseline))
            except UserError as err:
                raise ApiError(422, "cannot_explain", str(err)) from None
            return {"model_version": loaded.version_tag, **result}

    def _add_feedback(self, server: Server) -> None:
        slot, prediction_log = self.slot, self.prediction_log

        @server.app.post("/v1/feedback", dependencies=server.guarded, response_model=FeedbackResponse,
                         response_class=JSONResponse,
                         responses={**ERROR_RESPONSES, 404: error_doc("no logged prediction has this id")},
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


def version_info(loaded) -> dict[str, str]:
    """The `lmforge_model` metric's labels for a loaded version."""
    p = loaded.predictor
    return {"version": loaded.version_tag, "task": p.task.name, "backend": p.backend}


def check_texts(texts: list, predictor, settings: ServeSettings) -> None:
    """Request limits and input shape, each failure naming the field, the limit and its value."""
    if len(texts) > settings.max_texts:
        raise ApiError(413, "limit_exceeded", f"{len(texts)} texts in one request; at most {settings.max_texts} are allowed",
                       limit="max_texts", value=settings.max_texts)
    wants_pairs = predictor.accepts_pairs
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
                results[i] = predictor.task.response(pred)
    return results  # type: ignore[return-value]


def describe(predictor) -> dict:
    """The served model: task, labels, base model, method, version and the run's metrics."""
    cfg, run = predictor.config, predictor.run_dir
    folder = RunFolder(run) if run is not None else None
    info = folder.info.model_dump() if folder is not None and folder.info_path.is_file() else {}
    metrics = folder.metrics if folder is not None else {}
    return {
        "name": cfg.name, "version": predictor.version, "task": predictor.task.name,
        "labels": predictor.task.labels, "multi_label": cfg.data.multi_label,
        "threshold": predictor.task.report_extras().get("threshold"),
        "text_pairs": predictor.accepts_pairs,
        "base_model": cfg.model, "method": cfg.method, "backend": predictor.backend, "max_length": cfg.data.max_length,
        "trained": info.get("finished"), "metrics": metrics,
    }
