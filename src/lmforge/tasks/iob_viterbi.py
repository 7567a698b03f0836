"""Valid IOB2 tags by construction: the most probable tag path of a sentence under the rule that
an I-X tag continues a B-X or I-X (Viterbi over the per-word log-probabilities).

Per-word argmax followed by a repair (an I-X after O read as B-X) decides each word alone; here a
word whose best tag would break an entity can take its second-best tag when that keeps the
sentence's total probability higher.

The path may also be scored by how tags follow each other in the training data (`tag_bigrams`:
add-one smoothed log-probabilities of the first tag and of each tag given the one before), added with
a weight that is tuned on dev after training (lmforge.training.transitions; 0 leaves the path as the
per-word probabilities alone choose it). The softmax head sees the whole sentence, but it scores each
word alone: on 12 trained models (Weibo, Resume, CoNLL-2003) the dev-tuned bigrams changed test F1 by
-0.7 to +3.6, +0.74 on average (bench/ner_transitions.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0)  # tried on dev after training (lmforge.training.transitions)


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


def tag_bigrams(sequences, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(log P(first tag) [C], log P(next tag | tag) [C prev, C next]) from tag-id sequences,
    add-one smoothed, so a pair never seen in training is unlikely, not impossible."""
    first = np.ones(n)
    pairs = np.ones((n, n))
    for ids in sequences:
        if len(ids):
            first[ids[0]] += 1
            np.add.at(pairs, (ids[:-1], ids[1:]), 1)
    return np.log(first / first.sum()), np.log(pairs / pairs.sum(axis=1, keepdims=True))


def best_valid_path(log_probs: np.ndarray, start: np.ndarray, follow: np.ndarray,
                    scores: tuple[np.ndarray, np.ndarray] | None = None) -> list[int]:
    """The tag ids maximising the summed log-probabilities [n words, C] among the paths allowed by
    `start` and `follow` (from `allowed_transitions`), plus `scores` (weighted `tag_bigrams`: the
    first tag's [C] and each transition's [C, C]) where given. O is always allowed, so a path exists."""
    n = len(log_probs)
    if n == 0:
        return []
    first, pairs = scores if scores is not None else (0.0, 0.0)
    penalty = np.where(follow, pairs, -np.inf)  # [C prev, C next]
    score = np.where(start, log_probs[0] + first, -np.inf)
    back = np.zeros((n, log_probs.shape[1]), dtype=np.int64)
    for t in range(1, n):
        cand = score[:, None] + penalty  # [prev, next]
        back[t] = np.argmax(cand, axis=0)
        score = cand[back[t], np.arange(cand.shape[1])] + log_probs[t]
    path = [int(np.argmax(score))]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t][path[-1]]))
    return path[::-1]


def best_valid_paths(log_probs: list[np.ndarray], start: np.ndarray, follow: np.ndarray,
                     scores: tuple[np.ndarray, np.ndarray] | None = None) -> list[list[int]]:
    """`best_valid_path` of every sentence, computed for all sentences at once: the same sums in the
    same order, so the same paths (ties included), at a fraction of the per-word numpy calls."""
    paths: list[list[int]] = [[] for _ in log_probs]
    order = sorted((i for i in range(len(log_probs)) if len(log_probs[i])), key=lambda i: -len(log_probs[i]))
    if not order:
        return paths
    lengths = np.array([len(log_probs[i]) for i in order])
    width = log_probs[order[0]].shape[1]
    steps = np.zeros((len(order), lengths[0], width))  # [sentences, longest, C], longest sentence first
    for row, i in enumerate(order):
        steps[row, : lengths[row]] = log_probs[i]
    first, pairs = scores if scores is not None else (0.0, 0.0)
    penalty = np.where(follow, pairs, -np.inf)  # [C prev, C next]
    score = np.where(start, steps[:, 0] + first, -np.inf)  # [sentences, C]
    back = np.zeros((len(order), lengths[0], width), dtype=np.int64)
    columns = np.arange(width)
    for t in range(1, int(lengths[0])):
        k = int(np.searchsorted(-lengths, -t, side="left"))  # sentences longer than t (lengths descend)
        cand = score[:k, :, None] + penalty  # [k, prev, next]
        back[:k, t] = np.argmax(cand, axis=1)
        score[:k] = cand[np.arange(k)[:, None], back[:k, t], columns] + steps[:k, t]
    for row, i in enumerate(order):
        path = [int(np.argmax(score[row]))]
        for t in range(int(lengths[row]) - 1, 0, -1):
            path.append(int(back[row, t, path[-1]]))
        paths[i] = path[::-1]
    return paths


@dataclass
class TagTransitions:
    """Training tag bigrams (`tag_bigrams`) and the weight they are added with (0 until tuned)."""

    first: np.ndarray  # [C] log P(first tag)
    pairs: np.ndarray  # [C, C] log P(next | previous)
    weight: float = 0.0

    @classmethod
    def from_training(cls, tag_sequences, labels: list[str]) -> TagTransitions:
        index = {label: i for i, label in enumerate(labels)}
        return cls(*tag_bigrams((np.array([index[t] for t in tags], dtype=np.int64) for tags in tag_sequences), len(labels)))

    @classmethod
    def from_json(cls, data: dict | None) -> TagTransitions | None:
        """What `to_json` wrote to labels.json; None for runs saved before transitions existed."""
        if not data:
            return None
        return cls(np.array(data["first"], dtype=np.float64), np.array(data["pairs"], dtype=np.float64), float(data["weight"]))

    def to_json(self) -> dict:
        return {"weight": self.weight, "first": [round(float(v), 6) for v in self.first],
                "pairs": [[round(float(v), 6) for v in row] for row in self.pairs],
                "about": "log P(first tag) and log P(tag | previous tag) over the training tags (add-one smoothed), "
                         "added to the word log-probabilities times weight (tuned on dev)"}

    def scores(self) -> tuple[np.ndarray, np.ndarray] | None:
        return (self.weight * self.first, self.weight * self.pairs) if self.weight else None


def repair_iob2(tags: list[str]) -> list[str]:
    """Make predicted tags valid IOB2: an I-X that does not continue an X entity starts one (B-X)."""
    out, prev = [], "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            t = "B-" + t[2:]
        out.append(t)
        prev = t
    return out
