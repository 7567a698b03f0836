"""Fitting word sequences into a model window: packing sentences with their document neighbours,
and sliding windows so that every word of a long text gets a prediction."""

from __future__ import annotations

from itertools import accumulate


def word_windows(word_lens: list[int], window: int, stride: int) -> list[tuple[int, int]]:
    """Windows (start_word, end_word) of at most `window` sub-word tokens each, starting on word
    boundaries, consecutive starts about `stride` tokens apart; together they cover every word.
    A single word longer than the window gets a window of its own (its tail is cut by the caller)."""
    n = len(word_lens)
    if n == 0:
        return []
    cum = [0, *accumulate(word_lens)]  # cum[i] = tokens before word i
    spans, start = [], 0
    while True:
        end = start + 1
        while end < n and cum[end + 1] - cum[start] <= window:
            end += 1
        spans.append((start, end))
        if end >= n:
            return spans
        target = cum[start] + stride
        nxt = start + 1
        while nxt < end and cum[nxt] < target:
            nxt += 1
        start = max(nxt, start + 1) if stride < window else end


def pack_sentences(sentence_lens: list[int], window: int) -> list[list[int]]:
    """Greedily group consecutive sentences (by token count) into packs of at most `window` tokens."""
    packs: list[list[int]] = []
    current, used = [], 0
    for i, n in enumerate(sentence_lens):
        if current and used + n > window:
            packs.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        packs.append(current)
    return packs


def best_window_per_word(word_lens: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """For every word, the index of the window in which it has the most context on its tighter side."""
    cum = [0, *accumulate(word_lens)]
    best = [-1] * len(word_lens)
    score = [-1] * len(word_lens)
    for w, (s, e) in enumerate(spans):
        for i in range(s, e):
            ctx = min(cum[i] - cum[s], cum[e] - cum[i + 1])
            if ctx > score[i]:
                best[i], score[i] = w, ctx
    return best
