"""How uvicorn runs the app, including the limits on slow or stalled clients.

- **Request head**: uvicorn has no timer for a request's line and headers; its keep-alive timer
  restarts on every byte, so a client that trickles a header byte at a time (slowloris), or opens
  a connection and sends nothing, holds the connection forever. `HeadDeadlineH11Protocol` closes a
  connection that has not sent a complete request head within `header_timeout_s` of opening, or
  of its previous response.
- **Request body**: the app's `BodyReader` answers 408 when the body has not arrived within
  `body_timeout_s`, and closes the connection.
- **Idle keep-alive connections** close after uvicorn's `timeout_keep_alive` (5 s, its default);
  a request head larger than h11's 16 KiB (`h11_max_incomplete_event_size`, default) gets 400.
- `limit_concurrency` stays unset: past it uvicorn answers every new request with a plain-text
  503, so a few hundred stalled connections would deny service to everyone; the head and body
  deadlines shed stalled connections instead.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import ServeSettings


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request's line and headers."""

    def __init__(self, *args, header_timeout: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        waiting_for_head = self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
        if waiting_for_head and not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()


def uvicorn_config(app, settings: ServeSettings, *, log_level: str = "info"):
    """The uvicorn configuration `lmforge serve` runs `app` with (bound to settings.host:port)."""
    import functools

    import uvicorn

    protocol = functools.partial(HeadDeadlineH11Protocol, header_timeout=settings.header_timeout_s)
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                          timeout_graceful_shutdown=settings.graceful_timeout_s, lifespan="on", http=protocol)
