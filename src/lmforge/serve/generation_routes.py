"""Serving a decoder: `POST /v1/generate`, as a `ModelApi` on the shared HTTP base (errors, auth,
health, readiness, metrics, request limits).

Greedy requests (temperature 0), streamed or not, share one continuous batch (`continuous_rows`,
generation/refill_engine.py): up to that many decode together and a finished one is replaced by the
next at once. Its engine thread is also the model thread: the micro-batcher's jobs (non-streaming
requests, sampled streams, the warm-up) run there between two decode steps, so one thread runs all
torch work. With `continuous_rows: 0`, greedy streams that arrive together are decoded as one static
batch on the model thread (serve/stream_gather.py). Sampled streams run on the model thread one at a
time. Non-streaming requests go through the micro-batcher: concurrent prompts with the same sampling
settings are generated as one left-padded batch, except greedy ones while the continuous batch runs:
they join it, as streams do.
Streaming requests (`"stream": true`) get server-sent events: `data: {"text": "..."}` per piece,
then `data: {"done": true, ...}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import UserError
from .model_api import ApiError, Server
from .schemas import ERROR_RESPONSES, STREAM_EVENT, GenerateRequest, GenerateResponse, GeneratorInfo
from .settings import ServeSettings

log = logging.getLogger("lmforge.serve")
WARMUP_PROMPT = "Say hello."
WARMUP_PARAMS = {"max_new_tokens": 4, "temperature": 0.0, "top_p": 1.0, "stop": (), "seed": None, "chat": True}
STREAM_THREADS = 64  # at least: threads waiting for the continuous batch's tokens (one per request in flight)
_END = object()


class GenerationApi:
    """Serves a `lmforge.generation.Generator`: POST /v1/generate, within the server's prompt and
    max_new_tokens limits."""

    info_model = GeneratorInfo
    warmup_items = [(WARMUP_PROMPT, WARMUP_PARAMS)]

    def __init__(self, generator, settings: ServeSettings):
        self.generator, self.settings = generator, settings
        self.stream_threads = None  # with the continuous batch: threads that wait for its tokens (streams, greedy requests)

    # -- what the HTTP base calls --------------------------------------------------------------------
    def setup(self) -> None:
        if self.settings.continuous_rows and hasattr(self.generator, "start_continuous"):
            from concurrent.futures import ThreadPoolExecutor

            self.generator.start_continuous(max_rows=self.settings.continuous_rows)
            # one waiting thread per stream in flight; asyncio's default pool (cores + 4 threads) would
            # leave rows of the batch empty while streams queue for a thread
            self.stream_threads = ThreadPoolExecutor(max_workers=max(STREAM_THREADS, 4 * self.settings.continuous_rows),
                                                     thread_name_prefix="lmforge-stream")

    def model_executor(self):
        """The continuous batch's engine when it can also run the other model jobs (generation/refill_engine.py)."""
        from concurrent.futures import Executor

        engine = getattr(self.generator, "engine", None)
        return engine if isinstance(engine, Executor) else None

    def teardown(self) -> None:
        if getattr(self.generator, "engine", None) is not None:
            self.generator.stop_continuous()
        if self.stream_threads is not None:
            self.stream_threads.shutdown(wait=True)

    def predict(self, items: list) -> list:
        return generate_items(self.generator, items)

    def version(self) -> str:
        return self.generator.version

    def info(self) -> dict[str, str]:
        return {"version": self.generator.version, "task": "generation", "backend": "torch"}

    def description(self) -> str:
        return f"{self.generator.version}: text generation"

    def describe(self) -> dict:
        return describe_generator(self.generator, self.settings)

    async def refresh_metrics(self) -> None:
        pass

    def add_routes(self, server: Server) -> None:
        generator, decode_request = self.generator, self.decode_request
        gatherer = None
        if not self.settings.continuous_rows and hasattr(generator, "stream_batch_into"):  # static serving: gather greedy streams
            from .stream_gather import StreamGatherer

            gatherer = StreamGatherer(generator, server.batcher.run_exclusive, max_rows=self.settings.max_batch_size,
                                      wait_s=self.settings.max_wait_ms / 1000)

        @server.app.post("/v1/generate", dependencies=server.guarded, response_model=GenerateResponse, response_class=JSONResponse,
                         responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {"schema": STREAM_EVENT}},
                                                             "description": "the result; with \"stream\": true, server-sent events"}},
                         summary="generate text for one prompt (optionally streamed)")
        async def generate(body: GenerateRequest):
            params = decode_request(body)
            if body.stream:
                return StreamingResponse(sse_events(generator, server.batcher.run_exclusive, body.prompt, params, gatherer=gatherer,
                                                            stream_threads=self.stream_threads),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            try:
                if self.stream_threads is not None and on_continuous_batch(generator, params):
                    # greedy: joins the continuous batch, as streams do (a job on the model thread would pause it)
                    [result] = await asyncio.get_running_loop().run_in_executor(
                        self.stream_threads, lambda: generate_items(generator, [(body.prompt, params)], continuous=True))
                else:
                    [result] = await server.submit([(body.prompt, params)])
            except UserError as err:
                raise ApiError(422, "invalid_request", str(err)) from None
            server.metrics.texts.inc()
            return {"model_version": generator.version, **result}

    # -- the request ---------------------------------------------------------------------------------
    def decode_request(self, body: GenerateRequest) -> dict[str, Any]:
        """The request within the server's limits, as the generation settings `generate_items` takes."""
        settings = self.settings
        if not body.prompt.strip():
            raise ApiError(422, "invalid_request", "prompt is empty")
        if "max_new_tokens" not in body.model_fields_set:  # the default never exceeds the server's cap
            body.max_new_tokens = min(body.max_new_tokens, settings.max_new_tokens)
        if len(body.prompt) > settings.max_prompt_chars:
            raise ApiError(413, "limit_exceeded", f"the prompt has {len(body.prompt)} characters; at most {settings.max_prompt_chars} are allowed",
                           limit="max_prompt_chars", value=settings.max_prompt_chars)
        if body.max_new_tokens > settings.max_new_tokens:
            raise ApiError(413, "limit_exceeded", f"max_new_tokens is {body.max_new_tokens}; at most {settings.max_new_tokens} are allowed",
                           limit="max_new_tokens", value=settings.max_new_tokens)
        return {"max_new_tokens": body.max_new_tokens, "temperature": body.temperature, "top_p": body.top_p,
                "stop": tuple(body.stop), "seed": body.seed, "chat": body.chat}


def generate_items(generator, items: list[tuple[str, dict]], continuous: bool = False) -> list[dict]:
    """Generate a gathered batch: prompts sharing their settings are generated together (`continuous`:
    greedy ones on the generator's continuous batch)."""
    results: list[dict | None] = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (_, params) in enumerate(items):
        groups.setdefault(tuple(sorted(params.items())), []).append(i)
    for key, indices in groups.items():
        params = dict(key)
        outputs = generator.generate([items[i][0] for i in indices], max_new_tokens=params["max_new_tokens"],
                                     temperature=params["temperature"], top_p=params["top_p"], stop=list(params["stop"]) or None,
                                     seed=params["seed"], chat=params["chat"], continuous=continuous)
        for i, out in zip(indices, outputs):
            results[i] = {"text": out["text"], "tokens": out.get("tokens"), "finish_reason": out.get("finish_reason")}
    return results  # type: ignore[return-value]


def on_continuous_batch(generator, params: dict) -> bool:
    """Whether a request decodes on the generator's continuous batch: greedy, while one runs."""
    return getattr(generator, "engine", None) is not None and params["temperature"] == 0


async def sse_events(generator, run_exclusive, prompt: str, params: dict, gatherer=None, stream_threads=None):
    """Server-sent events (`{"text"}` pieces, then `{"done"}` or `{"error"}`) of one streamed generation;
    `run_exclusive(fn)` runs the blocking generation where the model may run (the server's model
    thread, the studio's lock). With a `gatherer` (static serving), greedy streams are decoded in
    batches with the streams that arrive with them (serve/stream_gather.py)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()  # set when the client has gone away: the next piece ends the generation

    def emit(piece: str) -> None:
        if gone.is_set():
            raise ClientGone("the client of this stream went away")
        loop.call_soon_threadsafe(queue.put_nowait, piece)

    async def gathered() -> None:
        try:
            await gatherer.run(prompt, params, emit)
        except ClientGone:
            pass
        except Exception as err:  # noqa: BLE001 - reported to the client as an error event, logged here
            log.exception("streamed generation failed")
            queue.put_nowait(err)
        finally:
            queue.put_nowait(_END)

    def produce() -> None:  # the generation runs on this thread; pieces are pushed to the event loop as they come
        try:
            generator.stream_into(emit, prompt,
                                  max_new_tokens=params["max_new_tokens"], temperature=params["temperature"],
                                  top_p=params["top_p"], stop=list(params["stop"]) or None, seed=params["seed"], chat=params["chat"])
        except ClientGone:
            pass
        except Exception as err:  # noqa: BLE001 - reported to the client as an error event, logged here
            log.exception("streamed generation failed")
            loop.call_soon_threadsafe(queue.put_nowait, err)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    if on_continuous_batch(generator, params):
        # the continuous batch: streams decode together; this stream's thread waits for its tokens
        job = asyncio.ensure_future(loop.run_in_executor(stream_threads, produce))
    elif gatherer is not None and params["temperature"] == 0:
        job = asyncio.ensure_future(gathered())
    else:
        job = asyncio.ensure_future(run_exclusive(produce))

    def job_ended(future) -> None:  # a job that failed before `produce` ran (e.g. the server shutting down)
        if not future.cancelled() and future.exception() is not None:
            log.error("streamed generation could not run: %s", future.exception())
            queue.put_nowait(future.exception())
            queue.put_nowait(_END)

    job.add_done_callback(job_ended)
    pieces = 0
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, Exception):
                message = str(item) if isinstance(item, UserError) else "generation failed; the cause is in the server log"
                yield _event({"error": message})
                return
            pieces += 1
            yield _event({"text": item})
        yield _event({"done": True, "pieces": pieces, "model_version": generator.version})
    finally:
        gone.set()
        try:
            await job
        except Exception:  # noqa: BLE001 - already reported (job_ended)
            pass


class ClientGone(Exception):
    """Raised into a generation whose stream has no reader any more, to end it and free its row."""


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def describe_generator(generator, settings: ServeSettings) -> dict:
    return {"version": generator.version, "task": "generation", "source": str(getattr(generator, "source", "")),
            "chat_template": bool(getattr(generator.tokenizer, "chat_template", None)) if hasattr(generator, "tokenizer") else None,
            "limits": {"max_prompt_chars": settings.max_prompt_chars, "max_new_tokens": settings.max_new_tokens}}
