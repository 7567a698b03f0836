"""Dynamic micro-batching: concurrent requests are gathered into one forward pass.

Requests put their texts on a queue and await a future. One collector task takes the first waiting
request, then keeps gathering until `max_batch` texts are collected or `max_wait` seconds have
passed, and runs the model once for all of them on a single worker thread (off the event loop).
The same worker thread runs every other model job (explanations), so the model is never used by
two threads at once. When a shared forward pass fails, each request of the batch is run again on its
own, so one request whose input breaks the model never fails the requests it was batched with.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .metrics import ServerMetrics


class QueueFull(Exception):
    """More texts are waiting than the server accepts; the client should retry later (503)."""


@dataclass
class _Job:
    items: Sequence[Any]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, fn: Callable[[list], list], *, max_batch: int, max_wait_s: float, max_queue: int,
                 metrics: ServerMetrics | None = None):
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.metrics = metrics
        self.waiting = 0  # texts queued, not yet handed to the model
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._own_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmforge-model")
        self._executor: Executor = self._own_executor

    def use_executor(self, executor: Executor) -> None:
        """Run the model jobs on `executor` (one thread) instead of the batcher's own model thread, e.g.
        on the continuous batch's engine thread, so that one thread runs all torch work."""
        self._executor = executor

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._collect(), name="lmforge-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._own_executor.shutdown(wait=True)

    async def submit(self, items: Sequence[Any]) -> list:
        """The model's results for `items`, in order, computed together with other requests' items."""
        assert self._queue is not None, "batcher not started"
        if self.waiting + len(items) > self.max_queue:
            raise QueueFull(f"{self.waiting} texts are waiting (limit {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self._set_waiting(len(items))
        self._queue.put_nowait(_Job(items, future))
        return await future

    async def run_exclusive(self, fn: Callable, *args: Any) -> Any:
        """Run another model job (e.g. an explanation) on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _set_waiting(self, delta: int) -> None:
        self.waiting += delta
        if self.metrics:
            self.metrics.queue_depth.set(self.waiting)

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            count = len(jobs[0].items)
            deadline = loop.time() + self.max_wait_s
            while count < self.max_batch:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                else:
                    job = self._queue.get_nowait()
                jobs.append(job)
                count += len(job.items)
            self._set_waiting(-count)
            live = [j for j in jobs if not j.future.done()]  # a client that went away is skipped
            if not live:
                continue
            items = [item for j in live for item in j.items]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.fn, items)
            except Exception as err:  # noqa: BLE001 - handed to the request(s) that caused it
                await self._run_alone(live, err)
                continue
            self._observe(len(items), started)
            start = 0
            for j in live:
                if not j.future.done():
                    j.future.set_result(results[start:start + len(j.items)])
                start += len(j.items)

    async def _run_alone(self, jobs: list[_Job], err: Exception) -> None:
        """A shared batch failed: run each request's items on their own, so that only the request
        whose input breaks the model gets an error and the others still get their results."""
        if len(jobs) == 1:
            if not jobs[0].future.done():
                jobs[0].future.set_exception(err)
            return
        loop = asyncio.get_running_loop()
        for job in jobs:
            if job.future.done():  # its client went away
                continue
            started = time.perf_counter()
            try:
                result = await loop.run_in_executor(self._executor, self.fn, list(job.items))
            except Exception as job_err:  # noqa: BLE001 - this request's own failure
                if not job.future.done():
                    job.future.set_exception(job_err)
                continue
            self._observe(len(job.items), started)
            if not job.future.done():
                job.future.set_result(result)

    def _observe(self, size: int, started: float) -> None:
        if self.metrics:
            self.metrics.batch_size.observe(size)
            self.metrics.batch_latency.observe(time.perf_counter() - started)
