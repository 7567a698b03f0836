"""The ASGI apps `lmforge serve` runs: the shared HTTP base (serve/base.py) plus the routes of one
kind of served model (serve/model_api.py). `serve/server.py` decides which kind a target is."""

from __future__ import annotations

from fastapi import FastAPI

from .base import create_server_app
from .generation_routes import GenerationApi
from .predict_routes import WARMUP_TEXT, PredictApi
from .settings import ServeSettings

__all__ = ["WARMUP_TEXT", "create_app", "create_generation_app"]


def create_app(model, settings: ServeSettings | None = None, *, prediction_log=None) -> FastAPI:
    """An app serving a classifier or NER model: a `lmforge.Predictor`, or a model slot
    (`serve.slots.RegistrySlot`: the production version of a registered model, hot-swapped on
    promotion). With `prediction_log` (lifecycle.predlog.PredictionLog) every sampled prediction is
    logged with an id that `POST /v1/feedback` can correct."""
    return create_server_app(PredictApi(model, settings or ServeSettings(), prediction_log=prediction_log))


def create_generation_app(generator, settings: ServeSettings | None = None) -> FastAPI:
    """An app serving a `lmforge.generation.Generator` (text generation) at `POST /v1/generate`."""
    return create_server_app(GenerationApi(generator, settings or ServeSettings()))
