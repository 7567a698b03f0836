"""Deterministic, shardable batch plans: length-grouped batches by count or by a token budget.

A plan depends only on (lengths, settings, seed, epoch), so every process builds the same global
batches and takes its own shard, and a resumed run can skip exactly the batches already seen.
"""

from __future__ import annotations

import random

MEGABATCH_FACTOR = 50  # sort within windows of 50 batches: little padding, still random order


def plan_batches(
    lengths: list[int],
    *,
    batch_size: int,
    max_tokens: int | None = None,
    group_by_length: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
) -> list[list[int]]:
    """Split example indices into batches. With `max_tokens`, a batch holds as many examples as fit
    in `max_tokens` padded tokens (longest example x count), at least one."""
    order = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    if shuffle:
        rng.shuffle(order)
    if not group_by_length:
        return _cut(order, lengths, batch_size, max_tokens)
    window = MEGABATCH_FACTOR * (batch_size if max_tokens is None else max(1, max_tokens // 32))
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        mega = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches.extend(_cut(mega, lengths, batch_size, max_tokens))
    if shuffle:
        rng.shuffle(batches)
    return batches


def _cut(order: list[int], lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches, current, longest = [], [], 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def shard(batch: list[int], rank: int, world_size: int) -> tuple[list[int], bool]:
    """This process's part of a global batch. A process left empty (tiny last batch) gets a copy of
    the first example flagged as padding, so DDP's all-reduce still sees every process."""
    part = batch[rank::world_size]
    if part:
        return part, False
    return batch[:1], True
