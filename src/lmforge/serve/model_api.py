"""The contract between the HTTP base (`serve/base.py`) and one kind of served model.

A kind of model (classifier/NER in `predict_routes.py`, text generation in `generation_routes.py`)
plugs into the base as a `ModelApi`, the shape of LitServe's `LitAPI`: it sets itself up, predicts
one gathered batch on the model thread, describes itself, and adds its routes, each of which
decodes its request (validating it against the limits), submits the items to the micro-batcher and
encodes the response. The base hands those routes a `Server` (the app, the batcher, the metrics and
the API-key guard); a route reports a client's mistake by raising `ApiError`.
"""

from __future__ import annotations

from concurrent.futures import Executor

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from fastapi import FastAPI
from pydantic import BaseModel

from .batcher import MicroBatcher, QueueFull
from .metrics import ServerMetrics
from .settings import ServeSettings


class ApiError(Exception):
    """An error with a status code and a JSON body that says what was wrong."""

    def __init__(self, status: int, code: str, message: str, limit: str | None = None, value: int | float | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.limit, self.value = status, code, message, limit, value


@dataclass
class Server:
    """What the HTTP base hands a `ModelApi` when it adds its routes."""

    app: FastAPI
    settings: ServeSettings
    batcher: MicroBatcher
    metrics: ServerMetrics
    guarded: list  # route dependencies: the API-key check

    async def submit(self, items: Sequence[Any]) -> list:
        """The model's results for `items` (through the micro-batcher); 503 when too many items are waiting."""
        try:
            return await self.batcher.submit(items)
        except QueueFull as err:
            raise ApiError(503, "overloaded", f"the server is busy: {err}; retry later", limit="max_queue",
                           value=self.settings.max_queue) from None


class ModelApi(Protocol):
    """One kind of served model, as the HTTP base sees it."""

    settings: ServeSettings
    info_model: type[BaseModel]  # the schema of the GET /v1/model body
    warmup_items: list  # one batch, predicted three times before /ready answers 200

    def setup(self) -> None:
        """Start background work (on server start-up, before warm-up)."""

    def teardown(self) -> None:
        """Stop it (on shutdown, after the last batch)."""

    def model_executor(self) -> Executor | None:
        """Where the micro-batcher runs model jobs, if not on its own thread (asked after `setup`)."""

    def predict(self, items: list) -> list:
        """One gathered batch, on the model thread: one result per item, in order."""

    def version(self) -> str:
        """The version served now (it may change while serving: registry hot swaps)."""

    def info(self) -> dict[str, str]:
        """The `lmforge_model` metric's labels: version, task, backend."""

    def description(self) -> str:
        """One line for the OpenAPI document: what is served."""

    def describe(self) -> dict:
        """The GET /v1/model body."""

    def add_routes(self, server: Server) -> None:
        """Add this kind's routes to `server.app`, behind `server.guarded`."""

    async def refresh_metrics(self) -> None:
        """Update this kind's own gauges before /metrics is rendered."""
