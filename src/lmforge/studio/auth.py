"""Who may use the studio, and that a state change came from the studio's own page.

- Without an API key (loopback use), every visitor gets a session cookie; with one, the login form
  sets it after the key is given, and `Authorization: Bearer <key>` works for every page and action.
- The session cookie is `<nonce>.<HMAC(nonce)>`: HttpOnly, SameSite=Strict. With a key, the HMAC
  secret derives from the key (sessions survive a restart, and end when the key changes); without
  one, it is random per process.
- CSRF: every form carries `csrf = HMAC("csrf:" + nonce)`, checked on each POST (constant-time);
  requests authenticated by the bearer header carry no cookie to abuse and need none.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs

from starlette.requests import Request

COOKIE = "lmforge_studio"
MAX_FORM_BYTES = 1_000_000


def _sign(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


class Guard:
    def __init__(self, api_key: str | None):
        self.api_key = api_key or None
        self.secret = (hashlib.sha256(b"lmforge-studio-session:" + api_key.encode()).digest() if api_key
                       else secrets.token_bytes(32))

    # -- sessions ------------------------------------------------------------------------------------
    def new_session(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{_sign(self.secret, nonce)}"

    def session(self, request: Request) -> str | None:
        """The request's valid session nonce, or None."""
        token = request.cookies.get(COOKIE, "")
        nonce, _, signature = token.partition(".")
        if nonce and signature and hmac.compare_digest(signature, _sign(self.secret, nonce)):
            return nonce
        return None

    def bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return bool(self.api_key) and scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.api_key.encode())

    def key_ok(self, given: str) -> bool:
        return bool(self.api_key) and hmac.compare_digest(given.encode(), self.api_key.encode())

    def allowed(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        return self.bearer_ok(request) or self.session(request) is not None

    # -- CSRF ----------------------------------------------------------------------------------------
    def csrf_token(self, nonce: str | None) -> str:
        return _sign(self.secret, f"csrf:{nonce}") if nonce else ""

    def csrf_ok(self, request: Request, form: dict[str, str]) -> bool:
        if self.bearer_ok(request):
            return True
        nonce = self.session(request)
        given = form.get("csrf", "")
        return nonce is not None and bool(given) and hmac.compare_digest(given, self.csrf_token(nonce))


class FormError(ValueError):
    pass


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form body (the studio's forms post nothing else): the last value of each field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FormError(f"the form is larger than {MAX_FORM_BYTES:,} bytes")
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise FormError("send the form url-encoded (application/x-www-form-urlencoded)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("the form is not UTF-8") from None
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=1000)
    except ValueError:
        raise FormError("the form has more than 1,000 fields") from None
    return {k: v[-1] for k, v in fields.items()}
