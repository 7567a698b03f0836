"""Dynamic micro-batching: concurrent requests are gathered into one forward pass.

Requests put their texts on a queue and await a future. One collector task takes the first waiting
request, then keeps gathering until `max_batch` texts are collected or `max_wait` seconds have
passed, and runs the model once for all of them on a single worker thread (off the event loop).
The same worker thread runs every other model job (explanations), so the model is never used by
two threads at once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmforge-model")

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
        self._executor.shutdown(wait=True)

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
            except Exception as err:  # every request of the batch gets the failure
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(err)
                continue
            if self.metrics:
                self.metrics.batch_size.observe(len(items))
                self.metrics.batch_latency.observe(time.perf_counter() - started)
            start = 0
            for j in live:
                if not j.future.done():
                    j.future.set_result(results[start:start + len(j.items)])
                start += len(j.items)
