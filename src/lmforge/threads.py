"""Load models off the main thread, so that only the threads that compute own an OpenMP pool.

PyTorch's CPU build runs each operator's parallel part with OpenMP (libgomp), which keeps one pool of
threads per application thread that has run parallel work, for as long as that thread lives. With
two such threads alive (the main thread that loaded the model, the model thread that serves it),
libgomp manages more threads than the machine has cores and stops spinning between parallel regions:
every small operator of a decode step then pays a sleep and a wake-up. On 2 cores, batch-1 greedy
decoding of SmolLM2-135M ran at 0.44x the main thread's speed on a second thread, and at 1.03x
when the main thread had never run a torch operator (`bench/thread_pools.py`). A short-lived thread's
pool is released when it ends, so loading there leaves the serving thread alone with its pool.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def on_short_thread(fn: Callable[[], T], name: str = "lmforge-load") -> T:
    """`fn()` run on a new thread that ends with it; its result returned, its exception re-raised here."""
    result: list = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(err)

    worker = threading.Thread(target=body, name=name, daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return result[0]
