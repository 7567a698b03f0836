"""The request middleware: request ids, the body's size limit and read deadline, request metrics,
and the JSON error responses every route shares (an opaque 500 for anything unexpected)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .metrics import ServerMetrics
from .settings import ServeSettings

log = logging.getLogger("lmforge.serve")


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in (an HTTPException, so FastAPI's body parsing passes it on)."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodyTimeout(StarletteHTTPException):
    """The body stopped arriving (raised while it streams in, like `BodyTooLarge`)."""

    def __init__(self) -> None:
        super().__init__(408, "request body timed out")


def body_too_large(settings: ServeSettings) -> JSONResponse:
    return error_response(413, "body_too_large", f"the request body exceeds {settings.max_body_bytes} bytes",
                          limit="max_body_bytes", value=settings.max_body_bytes)


def body_timeout(settings: ServeSettings) -> JSONResponse:
    return error_response(408, "body_timeout", f"the request body did not arrive within {settings.body_timeout_s:g} s; "
                          "send the whole body at once", limit="body_timeout_s", value=settings.body_timeout_s)


def internal_error(request_id: str) -> JSONResponse:
    return error_response(500, "internal_error", "internal server error; the cause is in the server log",
                          request_id=request_id)


class BodyReader:
    """The request body as the app reads it: within the size limit, and all of it within the read
    deadline (a client that stalls mid-body would otherwise hold its request open forever)."""

    def __init__(self, receive, scope, settings: ServeSettings):
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        self._receive, self.limit = receive, settings.max_body_bytes
        self.declared_too_large = declared is not None and declared.isdigit() and int(declared) > self.limit
        self.complete = b"transfer-encoding" not in headers and declared in (None, b"0")  # no body to wait for
        self.deadline = time.monotonic() + settings.body_timeout_s
        self.seen = 0

    async def receive(self):
        if self.complete:  # only a disconnect is left to wait for, however long the response takes
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise BodyTimeout() from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise BodyTooLarge()
            self.complete = not message.get("more_body", False)
        return message


class RequestMiddleware:
    """Pure ASGI middleware around the whole app: request ids, the body's size limit and read
    deadline, request metrics by route and status, and an opaque 500 for anything unexpected, sent
    as an ordinary response so that the client's keep-alive connection stays usable."""

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
        body = BodyReader(receive, scope, self.settings)
        status: dict[str, int | None] = {"code": None}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = [(b"x-request-id", request_id.encode())]
                if not body.complete:  # a body nobody will read may still be arriving, or stalled: do not wait for it
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            if body.declared_too_large:
                await body_too_large(self.settings)(scope, receive, send_with_id)
            else:
                await self.app(scope, body.receive, send_with_id)
        except Exception as err:  # noqa: BLE001 - logged with its request id; the client gets an opaque 500
            log.error("request %s failed", request_id, exc_info=err)
            if status["code"] is None:  # once a response has started, uvicorn can only close the connection
                await internal_error(request_id)(scope, receive, send_with_id)
        finally:
            self._observe(scope, status["code"] or 500, started)

    def _observe(self, scope, status: int, started: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "other"
        self.metrics.requests.labels(path, str(status)).inc()
        self.metrics.latency.labels(path).observe(time.perf_counter() - started)


def _json_by_default(scope) -> None:
    """The API speaks JSON only: a body sent without a content type, or with curl's default
    form type (`curl -d '{...}'`), is read as JSON."""
    headers = scope.get("headers") or []
    kind = dict(headers).get(b"content-type", b"")
    if not kind or kind.startswith(b"application/x-www-form-urlencoded"):
        scope["headers"] = [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", b"application/json")]
