"""Constrained IOB2 decoding: the best valid path, against brute force and on the case argmax gets wrong."""

import itertools

import numpy as np
import pytest

from lmforge.tasks.iob_viterbi import allowed_transitions, best_valid_path
from lmforge.tasks.token_classification import repair_iob2

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def _valid(path: list[int]) -> bool:
    tags = [LABELS[i] for i in path]
    return repair_iob2(tags) == tags


def test_allowed_transitions_follow_iob2():
    start, follow = allowed_transitions(LABELS)
    assert start.tolist() == [True, True, False, True, False]
    i = {t: k for k, t in enumerate(LABELS)}
    assert follow[i["B-PER"], i["I-PER"]] and follow[i["I-PER"], i["I-PER"]]
    assert not follow[i["O"], i["I-PER"]] and not follow[i["B-LOC"], i["I-PER"]] and not follow[i["I-LOC"], i["I-PER"]]
    assert follow[:, i["O"]].all() and follow[:, i["B-LOC"]].all()


@pytest.mark.parametrize("seed", range(30))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    logits = rng.normal(size=(n, len(LABELS))) * 3
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    best = max((p for p in itertools.product(range(len(LABELS)), repeat=n) if _valid(list(p))),
               key=lambda p: logp[np.arange(n), list(p)].sum())
    path = best_valid_path(logp, *allowed_transitions(LABELS))
    assert _valid(path)
    assert np.isclose(logp[np.arange(n), path].sum(), logp[np.arange(n), list(best)].sum())


def test_keeps_an_entity_that_argmax_and_repair_would_cut():
    # word 0: O 0.6 / B-PER 0.4; word 1: I-PER 0.9. Argmax reads O, I-PER -> repaired to O, B-PER (a one-word
    # entity, the wrong span); the best valid path is B-PER, I-PER (0.36 against 0.03)
    probs = np.array([[0.6, 0.0, 0.0, 0.4, 0.0], [0.05, 0.0, 0.0, 0.05, 0.9]]) + 1e-9
    path = best_valid_path(np.log(probs), *allowed_transitions(LABELS))
    assert [LABELS[i] for i in path] == ["B-PER", "I-PER"]
    assert repair_iob2([LABELS[i] for i in probs.argmax(1)]) == ["O", "B-PER"]


def test_agrees_with_argmax_when_argmax_is_valid_and_handles_empty():
    probs = np.array([[0.1, 0.8, 0.05, 0.03, 0.02], [0.1, 0.1, 0.7, 0.05, 0.05], [0.9, 0.02, 0.04, 0.02, 0.02]])
    assert best_valid_path(np.log(probs), *allowed_transitions(LABELS)) == [1, 2, 0]
    assert best_valid_path(np.zeros((0, 5)), *allowed_transitions(LABELS)) == []
