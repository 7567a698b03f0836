"""Stop strings and cancellation for generation: transformers stopping criteria, and the text helpers the
streaming and continuous paths share."""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, Sequence

import torch


class StopStrings:
    """A transformers stopping criterion: a sequence is done once its generated text contains a
    stop string. Only the last few tokens are decoded each step (enough to hold any stop string)."""

    def __init__(self, tokenizer, stops: list[str], prompt_length: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length
        self.window = _window(stops)
        self.stopped_at: dict[int, int] = {}  # row -> generated tokens when its stop string appeared

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_length
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        for row, tail in enumerate(input_ids[:, start:].tolist()):
            if row in self.stopped_at:
                done[row] = True
            elif first_stop(self.tokenizer.decode(tail, skip_special_tokens=True), self.stops) is not None:
                self.stopped_at[row] = generated
                done[row] = True
        return done


class Cancelled:
    """A stopping criterion that ends the generation when its event is set (a stream was closed)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def tail_stop(stops: Sequence[str], decode: Callable[[list[int]], str]) -> Callable[[list[int]], bool] | None:
    """Whether generated ids end in a stop string (only the last few are decoded, enough to hold any
    stop string); None without stop strings."""
    if not stops:
        return None
    window = _window(stops)
    return lambda tokens: first_stop(decode(tokens[-window:]), stops) is not None


def _window(stops: Sequence[str]) -> int:
    """Trailing tokens that hold any stop string: each token holds at least one character, bar partial bytes."""
    return max(len(s) for s in stops) + 4


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string (not yet safe to emit)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def pieces_until_stop(texts: Iterable[str], stops: Sequence[str]) -> Iterator[str]:
    """Text pieces to send from successive versions of a growing completion: cut at the first stop
    string; the end that could still become one, or that is a character whose bytes are not all
    generated yet, is held back until it is known."""
    cutter = PieceCutter(stops)
    text = ""
    for text in texts:
        piece = cutter.feed(text)
        if piece:
            yield piece
        if cutter.done:
            return
    piece = cutter.finish(text)
    if piece:
        yield piece


class PieceCutter:
    """`pieces_until_stop` pushed: `feed` each version of the growing completion, get the piece to
    send now (or ""); `finish` with the last version for what was held back. `done` once a stop
    string appeared (nothing more is sent)."""

    def __init__(self, stops: Sequence[str]):
        self.stops, self.sent, self.done = stops, 0, False

    def feed(self, text: str) -> str:
        if self.done:
            return ""
        cut = first_stop(text, self.stops)
        if cut is not None:
            self.done = True
            return text[self.sent:cut] if cut > self.sent else ""
        safe = len(text) - held_back(text, self.stops)
        while safe > self.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe <= self.sent:
            return ""
        piece, self.sent = text[self.sent:safe], safe
        return piece

    def finish(self, text: str) -> str:
        if self.done or len(text) <= self.sent:
            return ""
        self.done = True
        return text[self.sent:]
