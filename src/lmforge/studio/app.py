"""`lmforge studio`: one web page over runs, the registry and the playground.

Server-rendered Jinja2 templates (autoescaped), a little plain JavaScript, SVG charts made on the
server, static files from the package: nothing is fetched from anywhere, so the page works offline.
Every page reads through the library (runs.RunFolder, lifecycle.Registry, Predictor, explain), never
a second implementation. Security: see auth.py (session cookie or bearer key, CSRF on every POST),
plus a strict Content-Security-Policy (scripts only from the studio itself) and no path in any URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .auth import COOKIE, FormError, Guard, read_form
from .web import StudioError, checked_form, session_of, set_session_cookie
from .catalog import Catalog

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class StudioSettings:
    runs: list[Path] = field(default_factory=lambda: [Path("runs")])
    registry: Path | None = None  # None: $LMFORGE_REGISTRY or ./registry, when it exists
    api_key: str | None = None
    label_files: list[Path | str] = field(default_factory=list)  # suggest files, or registry:NAME (unconfident served predictions)
    predictors_cached: int = 2  # playground models kept loaded
    # Host headers answered (None: any). `lmforge studio` without a key answers only its own loopback
    # names, so a web page whose DNS name is re-bound to 127.0.0.1 cannot read or drive the studio.
    allowed_hosts: list[str] | None = None
    warm_monitor: bool = False  # compute each production model's Monitor report in the background at start


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v: "" if not isinstance(v, (int, float)) else f"{100 * v:.2f}"
    env.filters["num"] = _num
    env.filters["duration"] = _duration
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def _num(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Studio:
    """The app's shared state: settings, the guard, templates, the runs catalog, loaded predictors."""

    def __init__(self, settings: StudioSettings):
        import os

        self.settings = settings
        self.guard = Guard(settings.api_key)
        self.env = templates()
        from ..lifecycle.registry import DEFAULT_ROOT_ENV

        registry = settings.registry or Path(os.environ.get(DEFAULT_ROOT_ENV) or "registry")
        self.registry_root = Path(registry).expanduser().absolute()
        self.catalog = Catalog(settings.runs, exclude=[self.registry_root])
        self._registry = None
        from ..serve.settings import ServeSettings

        self.explain_steps = ServeSettings().explain_steps  # the playground explains as `serve` does
        self.queues = {q.id: q for q in (self._queue(str(source)) for source in settings.label_files)}

    def _queue(self, source: str):
        """A labelling queue: `registry:NAME` (the served model's unconfident predictions) or a suggest file."""
        from ..errors import UserError
        from .labelling import FeedbackQueue, FileQueue

        if source.startswith("registry:"):
            registry = self.registry()
            if registry is None:
                raise UserError(f"--label {source}: no registry at {self.registry_root}; give --registry FOLDER")
            return FeedbackQueue(registry, source.split(":", 1)[1])
        return FileQueue(Path(source))

    def page(self, request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        nonce = session_of(request)
        html = self.env.get_template(template).render(request_path=request.url.path, csrf=self.guard.csrf_token(nonce),
                                                  locked=self.guard.api_key is not None, **context)
        return HTMLResponse(html, status_code=status)

    def registry(self):
        """The registry, or None when its folder does not exist (the studio never creates one)."""
        from ..lifecycle.registry import DB_NAME, Registry

        if not (self.registry_root / DB_NAME).is_file():
            return None
        if self._registry is None:  # opened once: opening checks the tables in a write transaction
            self._registry = Registry(self.registry_root)
        return self._registry


def create_app(settings: StudioSettings) -> FastAPI:
    app = FastAPI(title="lmforge studio", docs_url=None, redoc_url=None, openapi_url=None)
    studio = Studio(settings)
    app.state.studio = studio
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def guard_and_headers(request: Request, call_next):
        path = request.url.path
        open_paths = path in ("/login", "/favicon.ico") or path.startswith("/static/")
        if settings.allowed_hosts is not None and _host_name(request.headers.get("host", "")) not in settings.allowed_hosts:
            return JSONResponse({"error": {"code": "bad_host", "message": "this studio answers only at the address it was started on"}},
                                status_code=400)
        request.state.session = studio.guard.session(request)
        new_cookie = None
        if request.state.session is None and studio.guard.api_key is None:  # open studio: every visitor gets a session (CSRF, labeller)
            new_cookie = studio.guard.new_session()
            request.state.session = new_cookie.partition(".")[0]
        if not open_paths and not studio.guard.allowed(request):
            if path.startswith("/api/") or request.headers.get("authorization"):
                response = JSONResponse({"error": {"code": "unauthorized", "message": "log in or send Authorization: Bearer <key>"}},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
            else:
                response = RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)
        else:
            response = await call_next(request)
        if new_cookie:
            set_session_cookie(response, new_cookie)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(StudioError)
    async def studio_error(request: Request, err: StudioError):
        return studio.page(request, "error.html", err.status, message=err.message)

    @app.exception_handler(404)
    async def not_found(request: Request, _err):
        return studio.page(request, "error.html", 404, message="no such page")

    @app.exception_handler(405)
    async def wrong_method(request: Request, _err):
        return studio.page(request, "error.html", 405, message="this page does not take that method")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        import logging

        logging.getLogger("lmforge.studio").error("studio request failed", exc_info=err)
        return studio.page(request, "error.html", 500, message="internal error; the cause is in the studio's log")

    @app.get("/", include_in_schema=False)
    async def home():
        return RedirectResponse("/runs", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/runs"):
        return studio.page(request, "login.html", next=_local(next), failed=False)

    @app.post("/login")
    async def login(request: Request):
        try:
            form = await read_form(request)
        except FormError as err:
            raise StudioError(400, str(err)) from None
        target = _local(form.get("next", "/runs"))
        if studio.guard.api_key is None:
            return RedirectResponse(target, status_code=303)
        if not studio.guard.key_ok(form.get("key", "")):
            return studio.page(request, "login.html", 401, next=target, failed=True)
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(response, studio.guard.new_session())
        return response

    @app.post("/logout")
    async def logout(request: Request):
        await checked_form(studio, request)
        response = RedirectResponse("/login" if studio.guard.api_key else "/runs", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    from . import pages_label, pages_monitor, pages_playground, pages_registry, pages_runs

    for pages in (pages_runs, pages_registry, pages_playground, pages_monitor, pages_label):
        pages.add_routes(app, studio)
    return app


def _host_name(header: str) -> str:
    """The host of a Host header, without the port ("[::1]:8080" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _local(target: str) -> str:
    """A redirect target inside the studio (never another site: `//evil`, `https://...`, `\\\\evil`)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return "/runs"
    return target
