"""Uncertainty measures and the diversity step of active learning (numpy + scikit-learn).

Each measure maps a model's output for one example to an informativeness score, higher = more worth
labelling:
- margin: 1 - (p1 - p2), the two most probable labels (Scheffer et al. 2001);
- entropy: the label distribution's entropy, divided by log C so it lies in [0, 1];
- least-confidence: 1 - p1;
- mnlp (NER): minus the length-normalised log-probability of the predicted tag sequence,
  -(1/n) sum log max_tag p(word) (Shen et al. 2017): long sentences are not favoured just for length.
Multi-label outputs (independent sigmoids) score by how close the labels are to the decision threshold.

The diversity step (`diverse_top`) keeps a batch from being N near-duplicates: the most informative
candidates (a few times N) are clustered on their normalised embeddings (k-means, N clusters) and the
most informative member of each cluster is taken; `cluster_medoids` is the cold start (no model yet):
the member nearest each centroid.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

CLASSIFICATION_STRATEGIES = ("margin", "entropy", "least-confidence")
CANDIDATES_PER_PICK = 5  # the diversity step clusters the top N x this candidates


def label_uncertainty(probs: np.ndarray, strategy: str) -> float:
    """Single-label: informativeness of one probability vector [C]."""
    p = np.sort(np.asarray(probs, dtype=np.float64))[::-1]
    if strategy == "margin":
        return float(1.0 - (p[0] - (p[1] if len(p) > 1 else 0.0)))
    if strategy == "entropy":
        q = p[p > 0]
        return float(-(q * np.log(q)).sum() / math.log(max(len(p), 2)))
    if strategy == "least-confidence":
        return float(1.0 - p[0])
    raise ValueError(f"unknown strategy {strategy!r}")


def multilabel_uncertainty(probs: np.ndarray, threshold: float, strategy: str) -> float:
    """Multi-label: entropy = mean binary entropy of the labels; margin / least-confidence = how close
    the label nearest the threshold is to it (1 at the threshold, 0 at 0 or 1)."""
    q = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    if strategy == "entropy":
        return float((-(q * np.log(q) + (1 - q) * np.log(1 - q)) / math.log(2)).mean())
    span = np.where(q >= threshold, 1.0 - threshold, threshold)
    return float(1.0 - np.min(np.abs(q - threshold) / np.maximum(span, 1e-12)))


def mnlp(word_probs: list[float]) -> float:
    """Minus the mean log-probability of the predicted tags (0 for a sentence without words)."""
    if not word_probs:
        return 0.0
    return float(-np.mean(np.log(np.clip(np.asarray(word_probs, dtype=np.float64), 1e-12, 1.0))))


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(_normalised(x))


def diverse_top(scores: np.ndarray, embed: Callable[[np.ndarray], np.ndarray], n: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices (into `scores`) of n picks: the most informative member of each of n clusters of the
    top candidates, most informative first; and each pick's cluster number. `embed(indices)` gives the
    embeddings [len(indices), H] of those examples (only the candidates are embedded)."""
    order = np.argsort(-scores, kind="stable")
    if n >= len(order):
        return [int(i) for i in order], list(range(len(order)))
    candidates = order[:min(len(order), n * CANDIDATES_PER_PICK)]
    labels = _kmeans(embed(candidates), n, seed)
    picks: dict[int, int] = {}
    for i, cluster in zip(candidates, labels):  # candidates are in informativeness order: the first seen is the best
        picks.setdefault(int(cluster), int(i))
    chosen = sorted(picks.items(), key=lambda kv: -scores[kv[1]])
    return [i for _, i in chosen], [c for c, _ in chosen]


def cluster_medoids(embeddings: np.ndarray, n: int, seed: int) -> tuple[list[int], list[float]]:
    """Cold start: per cluster of n, the member nearest the centroid (cosine), largest clusters first;
    and each pick's cluster share of the pool."""
    if n >= len(embeddings):
        return list(range(len(embeddings))), [1.0 / max(len(embeddings), 1)] * len(embeddings)
    x = _normalised(embeddings)
    labels = _kmeans(x, n, seed)
    picks = []
    for cluster in range(n):
        members = np.flatnonzero(labels == cluster)
        if not len(members):
            continue
        centre = x[members].mean(axis=0)
        best = members[int(np.argmax(x[members] @ centre))]
        picks.append((len(members) / len(x), int(best)))
    picks.sort(key=lambda t: -t[0])
    return [i for _, i in picks], [share for share, _ in picks]
