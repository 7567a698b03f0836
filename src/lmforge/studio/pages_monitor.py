"""Monitor page: the traffic of a registered model against its training-time reference, the same
report `lmforge monitor` prints (lifecycle.monitoring.monitor_report), with charts over time."""

from __future__ import annotations

from fastapi import FastAPI, Request
from markupsafe import Markup

from ..errors import UserError
from ..lifecycle.versions import MAX_VERSION, NAME_RE
from .charts import line_chart

WINDOWS = ("1h", "24h", "7d", "30d", "all")
DEFAULT_WINDOW = "24h"


def report_charts(report: dict) -> list[Markup]:
    volume = (report.get("volume") or {}).get("per_hour") or []
    over = report.get("over_time") or {}
    hours = over.get("hours") or []
    first = hours[0] if hours else 0

    def rel(h: float) -> float:  # hours since the first hour with traffic
        return (h - first) / 3600.0

    charts = [line_chart({"predictions": [(rel(h), float(c)) for h, c in volume]}, "predictions per hour", x_label="hours")]
    charts.append(line_chart({"mean confidence": [(rel(h), c) for h, c in zip(hours, over.get("confidence") or []) if c is not None]},
                             "confidence over time", x_label="hours"))
    shares = over.get("label_share") or {}
    charts.append(line_chart({label: [(rel(h), s) for h, s in zip(hours, values)] for label, values in shares.items()},
                             "label share over time", x_label="hours"))
    return [Markup(chart) for chart in charts]


class ReportCache:
    """Monitoring reports, recomputed when the prediction log changes (a new prediction or feedback) or,
    for a sliding window, the minute turns. Each registry's logged predictions are kept in memory
    (`TrafficStore`: only new rows are read), so a report takes tens of milliseconds once the log has
    been read; reading it the first time (100k predictions: about a second) happens in the background.

    A page never waits longer than `budget` seconds: until the first report of a model and window is
    ready it shows a "reading the log" page that reloads itself, and once one exists a newer log shows
    the last report (with its time) while the new one is computed. `wait=True` (the page's "refresh
    now") waits for the current one."""

    def __init__(self, size: int = 16, budget: float = 0.1):
        import threading

        self.size, self.budget, self.reports, self.latest = size, budget, {}, {}
        self.lock, self.jobs, self.errors = threading.Lock(), {}, {}
        self.stores: dict = {}  # registry database -> TrafficStore (the logged predictions, in memory)

    def store(self, registry):
        from ..lifecycle.columns import TrafficStore

        with self.lock:
            return self.stores.setdefault(str(registry.db_path), TrafficStore(registry.db_path))

    def _compute(self, key: tuple, registry, model: str, version: int | None, since: str) -> None:
        import time

        from ..lifecycle.monitoring import monitor_report

        try:
            result = (*monitor_report(registry, model, version, since, store=self.store(registry)), time.time())
        except Exception as err:  # noqa: BLE001 - handed to the page that asked (UserError: no reference, ...)
            with self.lock:
                self.errors[key] = err
            return
        finally:
            with self.lock:
                self.jobs.pop(key, None)
        with self.lock:
            if len(self.reports) >= self.size:
                self.reports.pop(next(iter(self.reports)))
            self.reports[key] = result
            self.latest[key[:3]] = result

    def get(self, registry, model: str, version: int | None, since: str, *, wait: bool = False):
        """(version, report, computed at unix time, fresh: whether it covers the log as it is now), or
        None when no report of this model and window exists yet and the first is still being computed."""
        import threading
        import time

        from ..lifecycle.predlog import log_marker

        key = (model, version, since, log_marker(registry.db_path), 0 if since == "all" else int(time.time() // 60))
        with self.lock:
            if key in self.reports:
                return (*self.reports[key], True)
            if key in self.errors:
                raise self.errors.pop(key)
            previous = self.latest.get(key[:3])
            job = self.jobs.get(key)
            if job is None:
                job = self.jobs[key] = threading.Thread(target=self._compute, args=(key, registry, model, version, since),
                                                        name="lmforge-studio-monitor", daemon=True)
                job.start()
        if previous is not None and not wait:
            return (*previous, False)
        job.join(None if wait else self.budget)
        with self.lock:
            if key in self.reports:
                return (*self.reports[key], True)
            if key in self.errors:
                raise self.errors.pop(key)
        return None


def warm(studio, cache: ReportCache) -> None:
    """Compute the default window's report of every model in production, in the background, so the
    first visit to Monitor does not wait for it."""
    import threading

    def work() -> None:
        registry = studio.registry()
        for name in registry.names() if registry is not None else []:
            try:
                if registry.production(name) is not None:
                    cache.get(registry, name, None, DEFAULT_WINDOW)
            except Exception:  # noqa: BLE001 - a model without a reference (NER) is reported when its page is opened
                continue

    threading.Thread(target=work, name="lmforge-studio-warm", daemon=True).start()


def add_routes(app: FastAPI, studio) -> None:
    from ..lifecycle.drift_render import tables_html
    from .web import StudioError

    cache = ReportCache()
    studio.report_cache = cache
    if studio.settings.warm_monitor:
        warm(studio, cache)

    @app.get("/monitor")
    async def monitor_page(request: Request, model: str = "", version: int | None = None, since: str = DEFAULT_WINDOW, refresh: int = 0):
        registry = studio.registry()
        names = registry.names() if registry is not None else []
        context = {"names": names, "model": model, "version": version, "since": since, "windows": WINDOWS,
                   "report": None, "tables": "", "charts": [], "error": ""}
        if registry is None:
            context["error"] = f"no registry at {studio.registry_root}; serve a registered model (lmforge serve registry:NAME) to monitor it"
            return studio.page(request, "monitor.html", **context)
        if not model:
            if not names:
                context["error"] = "the registry holds no models yet"
            return studio.page(request, "monitor.html", **context)
        if not NAME_RE.fullmatch(model) or model not in names:
            raise StudioError(404, "no such model in the registry")
        if version is not None and not 1 <= version <= MAX_VERSION:
            raise StudioError(404, "no such version")
        if since not in WINDOWS:
            raise StudioError(422, f"since: choose one of {', '.join(WINDOWS)}")
        try:
            from starlette.concurrency import run_in_threadpool

            result = await run_in_threadpool(lambda: cache.get(registry, model, version, since, wait=bool(refresh)))
        except UserError as err:
            context["error"] = str(err)
            return studio.page(request, "monitor.html", 409, **context)
        if result is None:  # the first report of this window is being computed: the page reloads itself
            return studio.page(request, "monitor.html", pending=True, **context)
        v, report, computed, fresh = result
        import time

        context.update(report=report, version=v.version, tables=Markup(tables_html(report)), charts=report_charts(report),
                       ref=v.ref, fresh=fresh, computed=time.strftime("%H:%M:%S", time.localtime(computed)))
        return studio.page(request, "monitor.html", **context)
