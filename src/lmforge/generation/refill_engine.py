"""`RefillEngine`: the server's shared continuous batch on the dense cache of refill.py.

Greedy requests from any thread (the server's streams and batches) join one batch of up to
`max_rows` rows that one engine thread decodes: a request that finishes, or is cancelled, leaves at
the next step and a waiting one is prefilled into its row. Each request's generated ids are handed to
its own queue after every step. Same interface as continuous.StreamEngine (transformers' paged
manager), which stays for models refill.py cannot edit.

The engine is also the server's model executor (`submit(fn)`, a concurrent.futures.Executor): other
model work (sampled generations, non-streaming batches, the warm-up) runs on the engine thread between
two steps. One thread then runs every torch operator: a second long-lived thread running torch would
give PyTorch's OpenMP two thread pools on the same cores and slow both (lmforge/threads.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from concurrent.futures import Executor, Future
from typing import Callable, Iterator, Sequence

import torch

from .continuous import Finished
from .refill import _Batch, ending

IDLE_WAIT_S = 0.5
log = logging.getLogger("lmforge.generation")


def _run_job(future: Future, fn: Callable, args: tuple, kwargs: dict) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as err:  # noqa: BLE001 - handed to the caller
        future.set_exception(err)


class _Request:
    def __init__(self, ids: list[int], max_new_tokens: int, ignore_eos: bool, stopped: Callable[[list[int]], bool] | None = None):
        self.ids, self.max_new_tokens, self.ignore_eos = list(ids), max_new_tokens, ignore_eos
        self.stopped = stopped  # whether the tokens so far end in a stop string (checked on the engine thread)
        self.updates: queue.Queue = queue.Queue()  # new token ids after each step; None once finished; or an error
        self.cancelled = False
        self.stopped_at: int | None = None

    def fail(self, error: BaseException) -> None:
        self.updates.put(error)


class RefillEngine(Executor):
    def __init__(self, model, *, eos_ids: set[int], max_rows: int = 8):
        self.max_rows = max_rows
        self.model = model
        self.eos_ids = set(eos_ids)
        self._inbox: deque[_Request] = deque()
        self._jobs: deque[tuple[Future, Callable, tuple, dict]] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self.rows_in_use = 0  # rows decoding after the last admission (read-only outside the engine thread)
        self._thread = threading.Thread(target=self._run, name="lmforge-continuous", daemon=True)
        self._thread.start()

    # -- the engine thread -----------------------------------------------------------------------
    def _run(self) -> None:
        batch = _Batch(self.model)
        owners: list[_Request | None] = []  # the request of each batch row; None once it finished
        try:
            with torch.inference_mode():
                while True:
                    with self._wake:
                        while not self._closed and not self._inbox and not owners and not self._jobs:
                            self._wake.wait(IDLE_WAIT_S)
                        if self._closed:
                            return
                        jobs = list(self._jobs)
                        self._jobs.clear()
                    for job in jobs:
                        _run_job(*job)
                    try:
                        self._admit(batch, owners)
                        if owners:
                            batch.step()
                            for place in range(len(owners)):
                                self._deliver(batch, owners, place)
                    except Exception as err:  # noqa: BLE001 - fails the rows decoding now; the engine goes on
                        log.exception("a continuous-batching step failed")
                        for request in owners:
                            if request is not None:
                                request.fail(RuntimeError(f"generation failed: {err}"))
                        batch, owners = _Batch(self.model), []
                        self.rows_in_use = 0
        except BaseException as err:  # noqa: BLE001 - the thread itself is ending (interpreter exit)
            with self._wake:
                self._closed = True
            for request in [r for r in owners if r is not None]:
                request.fail(RuntimeError(f"the continuous-batching engine stopped: {err!r}"))
            raise
        finally:
            with self._wake:
                waiting, jobs = [r for r in owners if r is not None] + list(self._inbox), list(self._jobs)
                self._inbox.clear()
                self._jobs.clear()
            for request in waiting:
                request.fail(RuntimeError("the server is shutting down; the generation was stopped"))
            for future, *_ in jobs:
                if future.set_running_or_notify_cancel():
                    future.set_exception(RuntimeError("the continuous-batching engine stopped before running this job"))

    def _admit(self, batch: _Batch, owners: list[_Request | None]) -> None:
        """Free the rows of cancelled requests, give free rows to waiting requests (each prefilled alone:
        one that fails gets its error, the others go on), drop the rows left free."""
        owners[:] = [None if r is not None and r.cancelled else r for r in owners]
        with self._wake:
            room = owners.count(None) + self.max_rows - len(owners)
            arrivals = [self._inbox.popleft() for _ in range(min(room, len(self._inbox)))]
        for request in arrivals:
            if request.cancelled:
                continue
            place = owners.index(None) if None in owners else None
            try:
                first, kv = batch.prefill(request.ids)
            except Exception as err:  # noqa: BLE001 - this prompt's own failure
                log.exception("prefilling a prompt for the continuous batch failed")
                request.fail(RuntimeError(f"generation failed: {err}"))
                continue
            batch.place(0, len(request.ids), place, first, kv)  # a failure here fails the whole batch (_run)
            if place is None:
                place = len(owners)
                owners.append(request)
            owners[place] = request
            self._deliver(batch, owners, place)
        if None in owners:  # finished rows nobody waits for: dropped
            batch.drop([i for i, r in enumerate(owners) if r is None])
            owners[:] = [r for r in owners if r is not None]
        else:
            batch.trim()
        self.rows_in_use = len(owners)

    def _deliver(self, batch: _Batch, owners: list[_Request | None], place: int) -> None:
        """Hand row `place`'s newest token to its request; free the row when the request is done."""
        request, tokens = owners[place], batch.rows[place].tokens
        if request is None:
            return
        request.updates.put(tokens[-1])
        end = ending(tokens, max_new_tokens=request.max_new_tokens, eos_ids=self.eos_ids, ignore_eos=request.ignore_eos,
                     stopped=request.stopped)
        if end is not None:
            request.stopped_at = end.stopped_at
            request.updates.put(None)
            owners[place] = None

    # -- callers' side ---------------------------------------------------------------------------
    def on_engine_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        """Run `fn(*args, **kwargs)` on the engine thread, between two decode steps (Executor API)."""
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the continuous-batching engine is closed")
            self._jobs.append((future, fn, args, kwargs))
            self._wake.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.close()

    def _submit(self, request: _Request) -> None:
        if self.on_engine_thread():
            raise RuntimeError("a job on the engine thread cannot wait for the continuous batch it blocks")
        with self._wake:
            if self._closed:
                raise RuntimeError("the continuous-batching engine is closed")
            self._inbox.append(request)
            self._wake.notify()

    def tokens(self, ids: list[int], *, max_new_tokens: int, eos_ids: set[int] | None = None,
               ignore_eos: bool = False) -> Iterator[list[int]]:
        """Generated ids of one greedy request, yielded after every new token as one list grown in place
        (the last is the whole completion). Closing the iterator early cancels the request."""
        request = _Request(ids, max_new_tokens, ignore_eos)
        self._submit(request)
        return self._updates(request)

    @staticmethod
    def _updates(request: _Request) -> Iterator[list[int]]:
        tokens: list[int] = []
        try:
            while True:
                update = request.updates.get()
                if update is None:
                    return
                if isinstance(update, BaseException):
                    raise update
                tokens.append(update)
                yield tokens
        finally:
            request.cancelled = True  # no-op once finished; frees the row when the caller stops early

    def run_many(self, encoded: Sequence[list[int]], *, max_new_tokens: int, eos_ids: set[int] | None = None,
                 stops: Sequence[str], decode: Callable[[list[int]], str], ignore_eos: bool = False) -> list[Finished]:
        """Greedy completions of `encoded` prompts, in their order, sharing the rows with whatever else
        runs; a completion whose text shows a stop string is finished there (on the engine thread)."""
        from .stops import tail_stop

        stopped = tail_stop(stops, decode)
        requests = [_Request(ids, max_new_tokens, ignore_eos, stopped) for ids in encoded]
        results = []
        try:
            for request in requests:
                self._submit(request)
            for request in requests:
                tokens: list[int] = []
                for tokens in self._updates(request):
                    pass
                results.append(Finished(list(tokens), request.stopped_at))
        finally:
            for request in requests:
                request.cancelled = True
        return results

    def close(self) -> None:
        """Stop the engine thread; requests still waiting get an error instead of waiting forever."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=30)
