"""Static serving of greedy streams (`continuous_rows: 0`): concurrent streamed /v1/generate requests
with the same settings are gathered for up to `max_wait_ms` and decoded as one static batch on the
model thread, each row streamed to its own client (Generator.stream_batch_into). On this CPU a batch
step over 8 rows costs little more than one row's, so 8 streams finish several times sooner than one
after the other; a request that arrives while a batch runs waits for the next one.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from ..errors import UserError

Emit = Callable[[str], None]


class StreamGatherer:
    def __init__(self, generator, run_exclusive: Callable[..., Awaitable], *, max_rows: int, wait_s: float):
        self.generator, self.run_exclusive = generator, run_exclusive
        self.max_rows, self.wait_s = max_rows, wait_s
        self._pending: list[tuple[str, dict, Emit, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, prompt: str, params: dict, emit: Emit) -> None:
        """Stream the greedy completion of `prompt` to `emit` (called on the model thread); returns
        when it is done, raises what its batch raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        self._pending.append((prompt, params, emit, done))
        if len(self._pending) >= self.max_rows:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        await done

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._pending = self._pending, []
        groups: dict[tuple, list] = {}
        for item in waiting:
            groups.setdefault(_key(item[1]), []).append(item)
        for items in groups.values():
            for start in range(0, len(items), self.max_rows):
                asyncio.ensure_future(self._run_batch(items[start:start + self.max_rows]))

    async def _run_batch(self, items: list) -> None:
        params = items[0][1]
        items = [item for item in items if self._fits(item)]  # a prompt the model refuses fails alone
        if not items:
            return
        try:
            await self.run_exclusive(lambda: self.generator.stream_batch_into(
                [emit for _, _, emit, _ in items], [prompt for prompt, _, _, _ in items],
                max_new_tokens=params["max_new_tokens"], stop=list(params["stop"]) or None, chat=params["chat"]))
        except Exception as err:  # noqa: BLE001 - every request of the batch gets the error
            for *_, done in items:
                if not done.done():
                    done.set_exception(err)
            return
        for *_, done in items:
            if not done.done():
                done.set_result(None)

    def _fits(self, item) -> bool:
        prompt, params, _, done = item
        try:
            self.generator.check_prompt(prompt, max_new_tokens=params["max_new_tokens"], chat=params["chat"])
        except UserError as err:
            done.set_exception(err)
            return False
        return True


def _key(params: dict) -> tuple:
    return (params["max_new_tokens"], tuple(params["stop"]), params["chat"])
