"""Continuous batching on one dense KV cache ("refill"), for greedy generation of many prompts
(benchmark evaluation, `generate(..., continuous=True)`).

A static batch decodes until its longest completion ends while finished rows sit idle. Here a row
that finishes (end token, max_new_tokens or a stop string) is given the next waiting prompt at the
next step: the prompt is prefilled alone and its keys and values are copied into the row's place in
the batch cache, right-aligned with the other rows; the columns before it are masked out for that
row, and each row carries its own position ids. When no prompt waits, finished rows are dropped, so
the tail of the work runs on the rows still decoding.

Why not transformers' paged continuous-batching manager (continuous.py): on a CPU a step of its paged
cache costs more than a plain batched step, so on 100 MBPP problems it was slower than static
batches. This keeps every decode step an ordinary batched forward over a dense cache, as the static
path's is (measured: bench/continuous_batching.py).

Only for SDPA attention and models whose cache layers are all full-attention `DynamicLayer`s (Llama,
Qwen2, GPT-style decoders), not prefix-tuned ones; `supported(model)` says whether a model qualifies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .continuous import Finished

SPARE_COLUMNS = 128  # cache columns allocated ahead, so that a step writes one column instead of copying the cache
TRIM_AT = 64  # drop leading cache columns that no row attends to once there are this many


def prompt_learning(model) -> bool:
    """A PEFT prompt-learning model (prefix tuning): its forward supplies its own past keys/values and
    attention mask, so neither continuous path can run it; it keeps static batches."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def supported(model) -> bool:
    """Whether this module can run `model`: SDPA attention (a boolean mask; eager attention would add it
    as 0/1), no prompt learning, and a KV cache of full-attention dynamic layers only (what it edits)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if prompt_learning(model) or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - a config transformers cannot map to cache layers
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def ending(tokens: list[int], *, max_new_tokens: int, eos_ids: set[int], ignore_eos: bool,
           stopped: Callable[[list[int]], bool] | None) -> Finished | None:
    """The completion if its last token ended it (a stop string in its text, an end token, or
    max_new_tokens), else None."""
    if stopped is not None and stopped(tokens):
        return Finished(list(tokens), len(tokens))
    if (not ignore_eos and tokens[-1] in eos_ids) or len(tokens) >= max_new_tokens:
        return Finished(list(tokens), None)
    return None


def _buffer_layer_class():
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A DynamicLayer whose keys and values are views of a buffer with spare columns: a decode step
        writes its column in place instead of concatenating (copying) the whole cache."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor):
            super().__init__()
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self._set(keys, values)

        def _set(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            rows, heads, length, dim = keys.shape
            self.buffer_k = keys.new_zeros(rows, heads, length + SPARE_COLUMNS, dim)
            self.buffer_v = values.new_zeros(rows, heads, length + SPARE_COLUMNS, values.shape[-1])
            self.buffer_k[:, :, :length] = keys
            self.buffer_v[:, :, :length] = values
            self.length = length
            self._views()

        def _views(self) -> None:
            self.keys = self.buffer_k[:, :, :self.length]
            self.values = self.buffer_v[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            new = key_states.shape[-2]
            if self.length + new > self.buffer_k.shape[-2]:
                self._set(self.keys, self.values)  # a bigger buffer, SPARE_COLUMNS ahead again
            self.buffer_k[:, :, self.length:self.length + new] = key_states
            self.buffer_v[:, :, self.length:self.length + new] = value_states
            self.length += new
            self._views()
            return self.keys, self.values

        def replace(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            """New contents (after rows were added, dropped or columns trimmed)."""
            self._set(keys, values)

    return BufferLayer


@dataclass
class _Row:
    index: int  # which prompt
    start: int  # first cache column of the prompt
    position: int  # position id of the next token fed
    tokens: list[int] = field(default_factory=list)


class _Batch:
    """The rows decoding together: a dense cache [rows, heads, columns, dim] per layer, which columns
    each row attends to, and each row's next token and position."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.cache = DynamicCache()
        self.layer_class = _buffer_layer_class()
        self.rows: list[_Row] = []
        self.mask = torch.zeros((0, 0), dtype=torch.bool, device=self.device)  # [rows, columns]: True where the row attends
        self.next_tokens: list[int] = []

    @property
    def columns(self) -> int:
        return self.mask.shape[1]

    def prefill(self, ids: list[int]):
        """The prompt alone: its greedy first token and its keys/values per layer."""
        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = int(out.logits[0, -1].argmax())
        return first, [(layer.keys, layer.values) for layer in cache.layers]

    def add(self, index: int, ids: list[int], place: int | None) -> int:
        """Put prompt `index` in row `place` (a finished row) or in a new row; returns its first token."""
        first, kv = self.prefill(ids)
        self.place(index, len(ids), place, first, kv)
        return first

    def place(self, index: int, length: int, place: int | None, first: int, kv: list) -> None:
        """A prefilled prompt (its first token, keys and values) into row `place` or a new row."""
        if length > self.columns:
            self._pad_left(length - self.columns)
        columns = self.columns
        if place is None:
            place = len(self.rows)
            self._edit(lambda t: torch.cat([t, t.new_zeros((1, *t.shape[1:]))]) if t.shape[0] else
                       t.new_zeros((1, t.shape[1], columns, t.shape[3])), kv)
            self.mask = torch.cat([self.mask, self.mask.new_zeros((1, columns))])
            self.rows.append(None)  # type: ignore[arg-type]
            self.next_tokens.append(0)
        for layer, (k, v) in zip(self.cache.layers, kv):
            layer.buffer_k[place, :, columns - length:columns] = k[0]
            layer.buffer_v[place, :, columns - length:columns] = v[0]
        self.mask[place] = False
        self.mask[place, columns - length:] = True
        self.rows[place] = _Row(index, columns - length, length, [first])
        self.next_tokens[place] = first

    def _edit(self, change: Callable[[torch.Tensor], torch.Tensor], kv=None) -> None:
        if not self.cache.layers:  # the first row: layers made from the prompt's shapes
            self.cache.layers = [self.layer_class(k.new_zeros((0, k.shape[1], 0, k.shape[3])), v.new_zeros((0, v.shape[1], 0, v.shape[3])))
                                 for k, v in kv]
        for layer in self.cache.layers:
            layer.replace(change(layer.keys), change(layer.values))

    def _pad_left(self, n: int) -> None:
        """`n` more columns before the others (a prompt longer than the cache so far)."""
        if self.cache.layers:
            self._edit(lambda t: torch.cat([t.new_zeros((t.shape[0], t.shape[1], n, t.shape[3])), t], dim=2))
        self.mask = torch.cat([self.mask.new_zeros((self.mask.shape[0], n)), self.mask], dim=1)
        for row in self.rows:
            row.start += n

    def drop(self, places: list[int]) -> None:
        """Remove finished rows (when no prompt is waiting for them)."""
        gone = set(places)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._edit(lambda t: t.index_select(0, index))
        self.mask = self.mask[index]
        self.rows = [self.rows[i] for i in keep]
        self.next_tokens = [self.next_tokens[i] for i in keep]
        self.trim()

    def trim(self) -> None:
        """Drop the leading columns no row attends to, once there are TRIM_AT of them."""
        if not self.rows:
            return
        first = min(row.start for row in self.rows)
        if first >= TRIM_AT:
            self._edit(lambda t: t[:, :, first:])
            self.mask = self.mask[:, first:]
            for row in self.rows:
                row.start -= first

    def step(self) -> None:
        """One decode step for every row: feeds each row's next token and appends its greedy next one."""
        rows = len(self.rows)
        self.mask = torch.cat([self.mask, self.mask.new_ones((rows, 1))], dim=1)
        positions = torch.tensor([[row.position] for row in self.rows], device=self.device)
        tokens = torch.tensor(self.next_tokens, device=self.device).view(rows, 1)
        out = self.model(input_ids=tokens, attention_mask=self.mask[:, None, None, :], position_ids=positions,
                         past_key_values=self.cache, use_cache=True)
        self.next_tokens = out.logits[:, -1].argmax(-1).tolist()
        for row, token in zip(self.rows, self.next_tokens):
            row.position += 1
            row.tokens.append(token)


def generate_refill(model, encoded: Sequence[list[int]], *, max_new_tokens: int, eos_ids: set[int], stops: Sequence[str],
                    decode: Callable[[list[int]], str], ignore_eos: bool = False, max_rows: int = 8,
                    on_done: Callable[[int], None] | None = None) -> list[Finished]:
    """Greedy completions of `encoded` prompts (token ids), in their order, with up to `max_rows`
    decoding at once. `decode` turns generated ids into text (to find stop strings); `on_done(i)` is
    called as prompt i finishes. Call under torch.inference_mode()."""
    from .stops import tail_stop

    stopped = tail_stop(stops, decode)
    waiting = deque(range(len(encoded)))
    results: dict[int, Finished] = {}
    batch = _Batch(model)

    def settle() -> None:
        """Rows whose last token ended them: record them, then give them the next waiting prompts or drop them."""
        check, dropped = list(range(len(batch.rows))), []
        while check:
            place = check.pop()
            row = batch.rows[place]
            result = ending(row.tokens, max_new_tokens=max_new_tokens, eos_ids=eos_ids, ignore_eos=ignore_eos, stopped=stopped)
            if result is None:
                continue
            results[row.index] = result
            if on_done:
                on_done(row.index)
            if waiting:
                index = waiting.popleft()
                batch.add(index, encoded[index], place)
                check.append(place)  # its first token may already end it
            else:
                dropped.append(place)
        if dropped:
            batch.drop(dropped)
        else:
            batch.trim()

    while waiting and len(batch.rows) < max_rows:
        index = waiting.popleft()
        batch.add(index, encoded[index], None)
    settle()
    while batch.rows:
        batch.step()
        settle()
    return [results[i] for i in range(len(encoded))]
