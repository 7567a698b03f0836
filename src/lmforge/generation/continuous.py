"""Continuous batching for greedy generation of many prompts (benchmark evaluation, batch generation).

Static batching decodes a batch until its longest completion ends: rows that finished early sit idle.
Here transformers' continuous-batching manager (paged KV cache) keeps up to `max_rows` requests
decoding: a request that ends (end token, max_new_tokens, or one of our stop strings, which cancels
it) leaves at the next step and a waiting prompt takes its place.

Greedy only: sampling with per-call seeds stays on the static path, where a seed reproduces a batch.
Used for models whose cache refill.py cannot edit (sliding-window layers); the others decode on
refill.py's dense cache, whose steps cost less on a CPU.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import UserError

POLL_S = 0.5  # how long one wait for a result lasts before the manager's health is checked


@dataclass
class Finished:
    tokens: list[int]  # generated ids (up to the end token, or up to where a stop string appeared)
    stopped_at: int | None  # generated tokens when a stop string appeared (the request was cancelled)


def _config(max_rows: int, tokens_per_row: int, page_size: int):
    from transformers import ContinuousBatchingConfig

    return ContinuousBatchingConfig(page_size=page_size, num_blocks=max_rows * math.ceil(tokens_per_row / page_size) + 2,
                                    max_requests_per_batch=max_rows, max_batch_tokens=max(256, max_rows * 32),
                                    allow_block_sharing=False, use_cuda_graph=False, auto_switch_to_flash=False,
                                    scheduler_type="fifo")


def _collect(get: Callable, cancel: Callable, ids: list[str], *, stops: Sequence[str], decode: Callable[[list[int]], str],
             is_running: Callable[[], bool], on_done: Callable[[int], None] | None) -> list[Finished]:
    """Wait for the requests `ids` (results from `get(timeout)`); a streamed request whose text shows a
    stop string is cancelled and finished there."""
    from .stops import tail_stop

    index = {rid: i for i, rid in enumerate(ids)}
    stopped = tail_stop(stops, decode)
    results: dict[str, Finished] = {}
    idle_since = time.monotonic()
    while len(results) < len(ids):
        out = get(POLL_S)
        if isinstance(out, BaseException):
            raise out
        if out is None:
            if not is_running():
                raise RuntimeError("continuous batching stopped before every prompt was answered")
            if time.monotonic() - idle_since > 600:
                raise RuntimeError("continuous batching made no progress for 10 minutes")
            continue
        idle_since = time.monotonic()
        rid = out.request_id
        if rid in results or rid not in index:
            continue  # a streamed update after the request was cancelled for a stop string
        if out.error:
            raise RuntimeError(f"generation failed for prompt {index[rid]}: {out.error}")
        tokens = list(out.generated_tokens)
        if stopped is not None and stopped(tokens):
            results[rid] = Finished(tokens, len(tokens))
            if not out.is_finished():
                cancel(rid)
        elif out.is_finished():
            results[rid] = Finished(tokens, None)
        else:
            continue
        if on_done:
            on_done(index[rid])
    return [results[rid] for rid in ids]


def generate_continuous(model, generation_config, encoded: Sequence[list[int]], *, max_new_tokens: int, eos_ids: set[int],
                        stops: Sequence[str], decode: Callable[[list[int]], str], ignore_eos: bool = False,
                        max_rows: int = 8, page_size: int = 64, on_done: Callable[[int], None] | None = None) -> list[Finished]:
    """Greedy completions of `encoded` prompts (token ids), in their order, on a manager made for them.
    `decode` turns generated ids into text (to find stop strings); `on_done(i)` is called as request i
    finishes."""
    if not encoded:
        return []
    longest = max(len(ids) for ids in encoded) + max_new_tokens
    eos = -1 if ignore_eos else sorted(eos_ids)
    with model.continuous_batching_context_manager(generation_config=generation_config, warmup=False, block=True, timeout=30,
                                                   continuous_batching_config=_config(max_rows, longest, page_size)) as manager:
        ids = [manager.add_request(input_ids=list(prompt), request_id=f"r{i}", max_new_tokens=max_new_tokens,
                                   streaming=bool(stops), eos_token_id=eos) for i, prompt in enumerate(encoded)]
        if any(rid is None for rid in ids):
            raise UserError("the continuous-batching queue refused a request; generate with fewer prompts at once")
        return _collect(lambda timeout: manager.get_result(timeout=timeout), manager.cancel_request, ids, stops=stops,
                        decode=decode, is_running=manager.is_running, on_done=on_done)


class StreamEngine:
    """One persistent continuous-batching manager shared by concurrent greedy requests (the server's
    streams and batches): up to `max_rows` decode together, each request's tokens handed to its own
    queue by one router thread as they are generated. Requests longer than `tokens_per_row` still run
    (the manager's scheduler waits for cache pages), they just use more of the shared cache."""

    def __init__(self, model, generation_config, *, max_rows: int = 8, tokens_per_row: int = 2048, page_size: int = 64):
        self.max_rows = max_rows
        self.manager = model.init_continuous_batching(generation_config=generation_config,
                                                      continuous_batching_config=_config(max_rows, tokens_per_row, page_size))
        self.manager.start()
        self._queues: dict[str, object] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._counter = 0
        self._router = threading.Thread(target=self._route, name="lmforge-continuous-router", daemon=True)
        self._router.start()

    def _route(self) -> None:
        while not self._closed.is_set():
            out = self.manager.get_result(timeout=0.2)
            if out is None:
                if not self.manager.is_running() and not self._closed.is_set():
                    with self._lock:
                        for q in self._queues.values():
                            q.put(RuntimeError("the continuous-batching engine stopped"))
                    return
                continue
            with self._lock:
                q = self._queues.get(out.request_id)
            if q is not None:
                q.put(out)

    def _register(self, q, n: int) -> list[str]:
        with self._lock:
            rids = [f"s{self._counter + i + 1}" for i in range(n)]
            self._counter += n
            for rid in rids:
                self._queues[rid] = q
        return rids

    def run_many(self, encoded: Sequence[list[int]], *, max_new_tokens: int, eos_ids: set[int], stops: Sequence[str],
                 decode: Callable[[list[int]], str], ignore_eos: bool = False) -> list[Finished]:
        """Greedy completions of `encoded` prompts, in their order, sharing the engine's rows with
        whatever else is running."""
        if self._closed.is_set():
            raise RuntimeError("the continuous-batching engine is closed")
        q: queue.Queue = queue.Queue()
        rids = self._register(q, len(encoded))
        done = False
        try:
            for rid, prompt in zip(rids, encoded):
                if self.manager.add_request(input_ids=list(prompt), request_id=rid, max_new_tokens=max_new_tokens,
                                            streaming=bool(stops), eos_token_id=-1 if ignore_eos else sorted(eos_ids)) is None:
                    raise RuntimeError("the continuous-batching engine refused a request")

            def get(timeout: float):
                try:
                    return q.get(timeout=timeout)
                except queue.Empty:
                    return None

            results = _collect(get, self.manager.cancel_request, rids, stops=stops, decode=decode,
                               is_running=self.manager.is_running, on_done=None)
            done = True
            return results
        finally:
            with self._lock:
                for rid in rids:
                    self._queues.pop(rid, None)
            if not done and not self._closed.is_set():
                for rid in rids:
                    self.manager.cancel_request(rid)

    def tokens(self, ids: list[int], *, max_new_tokens: int, eos_ids: set[int], ignore_eos: bool = False):
        """Generated ids of one greedy request, yielded as a growing list after every new token (the
        last list is the whole completion). Closing the iterator early cancels the request."""
        if self._closed.is_set():
            raise RuntimeError("the continuous-batching engine is closed")
        q: queue.Queue = queue.Queue()
        (rid,) = self._register(q, 1)
        finished = False
        try:
            if self.manager.add_request(input_ids=list(ids), request_id=rid, max_new_tokens=max_new_tokens, streaming=True,
                                        eos_token_id=-1 if ignore_eos else sorted(eos_ids)) is None:
                raise RuntimeError("the continuous-batching engine refused the request")
            while True:
                out = q.get()
                if isinstance(out, BaseException):
                    raise out
                if out.error:
                    raise RuntimeError(f"generation failed: {out.error}")
                finished = out.is_finished()
                yield list(out.generated_tokens)
                if finished:
                    return
        finally:
            with self._lock:
                self._queues.pop(rid, None)
            if not finished and not self._closed.is_set():
                self.manager.cancel_request(rid)

    def on_engine_thread(self) -> bool:
        return False  # the manager's own thread never runs callers' jobs

    def close(self) -> None:
        """Stop the manager; requests still waiting get an error instead of waiting forever."""
        if not self._closed.is_set():
            self._closed.set()
            self.manager.stop(block=True, timeout=30)
            self._router.join(timeout=5)
            with self._lock:
                waiting = list(self._queues.values())
            for q in waiting:
                q.put(RuntimeError("the server is shutting down; the generation was stopped"))
