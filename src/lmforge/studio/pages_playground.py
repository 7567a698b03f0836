"""Playground: type a text, see the prediction (probabilities, or entities marked in the text) and
the integrated-gradients heat-map, for any finished run or registered version. Predictions and
explanations go through the shared Predictor and `explain_text`, the path `serve` uses."""

from __future__ import annotations

import html
import threading
from collections import OrderedDict

from fastapi import FastAPI, Request
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from ..errors import UserError
from ..lifecycle.versions import NAME_RE

MAX_CHARS = 5000
MAX_NEW_TOKENS = 256


def entity_markup(text: str, entities: list[dict]) -> Markup:
    """The text with each predicted entity wrapped in <mark> (escaped; overlapping spans skipped)."""
    parts, pos = [], 0
    for ent in sorted(entities, key=lambda e: (e.get("start", 0), -e.get("end", 0))):
        start, end = int(ent.get("start", 0)), int(ent.get("end", 0))
        if start < pos or not 0 <= start < end <= len(text):
            continue
        parts.append(html.escape(text[pos:start]))
        kind = html.escape(str(ent.get("type", "")))
        parts.append(f'<mark class="ent" title="{kind} {float(ent.get("score", 0)):.2f}">{html.escape(text[start:end])}'
                     f'<span class="ent-type">{kind}</span></mark>')
        pos = end
    parts.append(html.escape(text[pos:]))
    return Markup("".join(parts))


class Predictors:
    """A few loaded predictors or generators (most recently used kept), one load at a time; `run_lock`
    lets one generation run at a time."""

    def __init__(self, size: int):
        self.size, self.loaded, self.lock = size, OrderedDict(), threading.Lock()
        self.run_lock = threading.Lock()

    def get(self, key: str, path, generation: bool = False):
        from ..generation import Generator
        from ..predictor import Predictor

        with self.lock:
            if key in self.loaded:
                self.loaded.move_to_end(key)
                return self.loaded[key]
            predictor = Generator.from_pretrained(str(path)) if generation else Predictor.from_run(path)
            self.loaded[key] = predictor
            while len(self.loaded) > self.size:
                self.loaded.popitem(last=False)
            return predictor


def add_routes(app: FastAPI, studio) -> None:
    from .web import StudioError, checked_form

    predictors = Predictors(studio.settings.predictors_cached)

    def sources() -> list[dict]:
        """What the playground can run: finished classification / NER runs and registered versions."""
        out = [{"key": f"run:{e.id}", "label": f"run {e.name} ({e.task})", "path": e.path, "generation": e.task == "generation"}
               for e in studio.catalog.entries() if e.status == "finished" and e.task in ("text-classification", "token-classification", "generation")]
        registry = studio.registry()
        if registry is not None:
            out += [{"key": f"reg:{v.name}:{v.version}", "label": f"registry {v.name} v{v.version} ({v.stage})", "path": v.run_dir,
                     "generation": False} for v in registry.list()]
        return out

    def resolve(key: str) -> dict:
        if key.startswith("reg:"):
            name, _, version = key[4:].rpartition(":")
            if not NAME_RE.fullmatch(name) or not version.isdigit():
                raise StudioError(404, "no such model")
        for source in sources():
            if source["key"] == key:
                return source
        raise StudioError(404, "no such run or version; choose one from the list")

    def render(request: Request, source: str = "", text: str = "", result: dict | None = None, error: str = "", status: int = 200):
        return studio.page(request, "playground.html", status, sources=sources(), source=source, text=text, result=result,
                           error=error, max_chars=MAX_CHARS, max_new_tokens=MAX_NEW_TOKENS)

    add_stream_route(app, studio, predictors, resolve)

    @app.get("/playground")
    async def playground_page(request: Request, source: str = ""):
        return render(request, source=source)

    @app.post("/playground")
    async def playground_run(request: Request):
        form = await checked_form(studio, request)
        key, text = form.get("source", ""), form.get("text", "")
        explain = form.get("explain", "on") == "on"
        if not text.strip():
            return render(request, key, text, error="type a text to predict", status=422)
        if len(text) > MAX_CHARS:
            return render(request, key, text[:MAX_CHARS], error=f"the text has {len(text):,} characters; at most {MAX_CHARS:,}", status=422)
        chosen = resolve(key)
        if chosen["generation"]:
            def generate() -> dict:
                generator = predictors.get(chosen["key"], chosen["path"], generation=True)
                with predictors.run_lock:
                    out = generator.generate([text], max_new_tokens=_max_new(form.get("max_new_tokens")))[0]
                return {"generation": True, "completion": out["text"], "version": generator.version, "tokens": out.get("tokens")}

            try:
                return render(request, key, text, result=await run_in_threadpool(generate))
            except UserError as err:
                return render(request, key, text, error=str(err), status=422)

        def work() -> dict:
            predictor = predictors.get(chosen["key"], chosen["path"])
            prediction = predictor.predict([text])[0]
            result = {"prediction": prediction, "ner": predictor.task.token_level, "version": predictor.version}
            if predictor.task.token_level:
                result["marked"] = entity_markup(text, prediction.get("entities", []))
            else:
                probs = prediction.get("probabilities", {})
                result["probabilities"] = sorted(probs.items(), key=lambda kv: -kv[1])[:10]
            if explain and (not predictor.task.token_level or prediction.get("entities")):
                from ..explain import explain_text
                from ..explain.render import render_fragment

                result["heatmap"] = Markup(render_fragment(explain_text(predictor, text, steps=studio.explain_steps)))
            return result

        try:
            result = await run_in_threadpool(work)
        except UserError as err:
            return render(request, key, text, error=str(err), status=422)
        return render(request, key, text, result=result)


def _max_new(value) -> int:
    try:
        return max(1, min(MAX_NEW_TOKENS, int(value)))
    except (TypeError, ValueError):
        return 64


def add_stream_route(app: FastAPI, studio, predictors: "Predictors", resolve) -> None:
    """POST /api/generate: the playground's streamed completion (server-sent events, as `serve`'s)."""
    from fastapi.responses import StreamingResponse

    from ..serve.generation_routes import sse_events
    from .web import StudioError

    @app.post("/api/generate")
    async def generate_stream(request: Request):
        import json

        if not studio.guard.csrf_ok(request, {"csrf": request.headers.get("x-csrf-token", "")}):
            raise StudioError(403, "the page has expired; reload it")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise StudioError(422, "send JSON: {source, prompt, max_new_tokens}") from None
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not isinstance(body.get("source"), str):
            raise StudioError(422, "send JSON: {source, prompt, max_new_tokens}")
        prompt = body["prompt"]
        if not prompt.strip() or len(prompt) > MAX_CHARS:
            raise StudioError(422, f"prompt: 1 to {MAX_CHARS:,} characters")
        chosen = resolve(body["source"])
        if not chosen["generation"]:
            raise StudioError(422, "source: not a generation model")
        generator = await run_in_threadpool(predictors.get, chosen["key"], chosen["path"], True)
        params = {"max_new_tokens": _max_new(body.get("max_new_tokens")), "temperature": 0.0, "top_p": 1.0, "stop": (),
                  "seed": None, "chat": True}

        async def exclusive(fn):
            def locked():
                with predictors.run_lock:
                    return fn()

            return await run_in_threadpool(locked)

        return StreamingResponse(sse_events(generator, exclusive, prompt, params), media_type="text/event-stream")
