"""What the studio's pages share: the error a page refuses with, the session of a request, its cookie,
and the CSRF-checked form of a POST."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from .auth import COOKIE, FormError, read_form


class StudioError(Exception):
    """A request the studio refuses: rendered as a page with the status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def session_of(request: Request) -> str | None:
    """The request's session nonce (set by the middleware: the cookie's, or a new one in an open studio)."""
    return getattr(request.state, "session", None)


def set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/", max_age=7 * 24 * 3600)


async def checked_form(studio, request: Request) -> dict[str, str]:
    """The POSTed form, after the CSRF check (403 when it fails)."""
    try:
        form = await read_form(request)
    except FormError as err:
        raise StudioError(400, str(err)) from None
    if not studio.guard.csrf_ok(request, form):
        raise StudioError(403, "this form has expired or did not come from the studio; reload the page and try again")
    return form
