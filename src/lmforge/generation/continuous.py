"""Continuous batching for greedy generation of many prompts (benchmark evaluation, batch generation).

Static batching decodes a batch until its longest completion ends: rows that finished early sit idle.
Here transformers' continuous-batching manager (paged KV cache) keeps up to `max_rows` requests
decoding: a request that ends (end token, max_new_tokens, or one of our stop strings, which cancels
it) leaves at the next step and a waiting prompt takes its place.

Greedy only: sampling with per-call seeds stays on the static path, where a seed reproduces a batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import UserError

POLL_S = 0.5  # how long one wait for a result lasts before the manager's health is checked


@dataclass
class Finished:
    tokens: list[int]  # generated ids (up to the end token, or up to where a stop string appeared)
    stopped_at: int | None  # generated tokens when a stop string appeared (the request was cancelled)


def generate_continuous(model, generation_config, encoded: Sequence[list[int]], *, max_new_tokens: int, eos_ids: set[int],
                        stops: Sequence[str], decode: Callable[[list[int]], str], ignore_eos: bool = False,
                        max_rows: int = 8, page_size: int = 64, on_done: Callable[[int], None] | None = None) -> list[Finished]:
    """Greedy completions of `encoded` prompts (token ids), in their order. `decode` turns generated
    ids into text (to find stop strings); `on_done(i)` is called as request i finishes."""
    from transformers import ContinuousBatchingConfig

    from .generator import first_stop

    if not encoded:
        return []
    longest = max(len(ids) for ids in encoded) + max_new_tokens
    pages_per_row = math.ceil(longest / page_size)
    config = ContinuousBatchingConfig(page_size=page_size, num_blocks=max_rows * pages_per_row + 2, max_requests_per_batch=max_rows,
                                      max_batch_tokens=max(256, max_rows * 32), allow_block_sharing=False, use_cuda_graph=False,
                                      auto_switch_to_flash=False, scheduler_type="fifo")
    eos = -1 if ignore_eos else sorted(eos_ids)
    window = max((len(s) for s in stops), default=0) + 4
    results: dict[str, Finished] = {}
    with model.continuous_batching_context_manager(generation_config=generation_config, continuous_batching_config=config,
                                                   warmup=False, block=True, timeout=30) as manager:
        ids = [manager.add_request(input_ids=list(prompt), request_id=f"r{i}", max_new_tokens=max_new_tokens,
                                   streaming=bool(stops), eos_token_id=eos) for i, prompt in enumerate(encoded)]
        if any(rid is None for rid in ids):
            raise UserError("the continuous-batching queue refused a request; generate with fewer prompts at once")
        index = {rid: i for i, rid in enumerate(ids)}
        idle_since = time.monotonic()
        while len(results) < len(ids):
            out = manager.get_result(timeout=POLL_S)
            if out is None:
                if not manager.is_running():
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
            if stops:
                tail = tokens[-window:]
                if first_stop(decode(tail), stops) is not None:
                    results[rid] = Finished(tokens, len(tokens))
                    if not out.is_finished():
                        manager.cancel_request(rid)
                    if on_done:
                        on_done(index[rid])
                    continue
            if out.is_finished():
                results[rid] = Finished(tokens, None)
                if on_done:
                    on_done(index[rid])
    return [results[rid] for rid in ids]
