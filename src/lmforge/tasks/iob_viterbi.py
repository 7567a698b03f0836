"""Valid IOB2 tags by construction: the most probable tag path of a sentence under the rule that
an I-X tag continues a B-X or I-X (Viterbi over the per-word log-probabilities; the transitions are
not learned, only allowed or not).

Per-word argmax followed by a repair (an I-X after O read as B-X) decides each word alone; here a
word whose best tag would break an entity can take its second-best tag when that keeps the
sentence's total probability higher."""

from __future__ import annotations

import numpy as np


def allowed_transitions(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(may start a sentence [C], may follow [C prev, C next]) for IOB2 labels "O", "B-X", "I-X"."""
    n = len(labels)
    start = np.ones(n, dtype=bool)
    follow = np.ones((n, n), dtype=bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            start[j] = False
            follow[:, j] = [prev[2:] == tag[2:] and prev[:2] in ("B-", "I-") for prev in labels]
    return start, follow


def best_valid_path(log_probs: np.ndarray, start: np.ndarray, follow: np.ndarray) -> list[int]:
    """The tag ids maximising the summed log-probabilities [n words, C] among the paths allowed by
    `start` and `follow` (from `allowed_transitions`). O is always allowed, so a path exists."""
    n = len(log_probs)
    if n == 0:
        return []
    penalty = np.where(follow, 0.0, -np.inf)  # [C prev, C next]
    score = np.where(start, log_probs[0], -np.inf)
    back = np.zeros((n, log_probs.shape[1]), dtype=np.int64)
    for t in range(1, n):
        cand = score[:, None] + penalty  # [prev, next]
        back[t] = np.argmax(cand, axis=0)
        score = cand[back[t], np.arange(cand.shape[1])] + log_probs[t]
    path = [int(np.argmax(score))]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t][path[-1]]))
    return path[::-1]
