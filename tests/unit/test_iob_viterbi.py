"""Constrained IOB2 decoding: the best valid path, against brute force and on the case argmax gets wrong."""

import itertools
import json

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


@pytest.mark.parametrize("weight", [0.0, 0.5])
@pytest.mark.parametrize("seed", range(30))
def test_matches_brute_force(seed, weight):
    """Against every valid path: the per-word log-probabilities alone (weight 0, no scores given) and
    plus weighted tag bigrams."""
    from lmforge.tasks.iob_viterbi import tag_bigrams

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    logits = rng.normal(size=(n, len(LABELS))) * 3
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    first, pairs = tag_bigrams([rng.integers(0, len(LABELS), size=8) for _ in range(5)], len(LABELS))

    def total(p):
        return logp[np.arange(n), list(p)].sum() + weight * (first[p[0]] + sum(pairs[a, b] for a, b in zip(p, p[1:])))
    best = max((p for p in itertools.product(range(len(LABELS)), repeat=n) if _valid(list(p))), key=total)
    path = best_valid_path(logp, *allowed_transitions(LABELS), (weight * first, weight * pairs) if weight else None)
    assert _valid(path)
    assert np.isclose(total(path), total(best))


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


def test_tag_bigrams_are_add_one_smoothed_counts():
    from lmforge.tasks.iob_viterbi import tag_bigrams

    first, pairs = tag_bigrams([np.array([0, 3, 4, 0]), np.array([3, 0]), np.array([], dtype=np.int64)], len(LABELS))
    # first tags: O once, B-PER once, + one each -> O 2/7, B-PER 2/7, the rest 1/7
    assert np.allclose(np.exp(first), [2 / 7, 1 / 7, 1 / 7, 2 / 7, 1 / 7])
    # B-PER is followed by I-PER once and O once (+5 smoothing): I-PER 2/7, O 2/7
    assert np.allclose(np.exp(pairs[3]), [2 / 7, 1 / 7, 1 / 7, 1 / 7, 2 / 7])
    assert np.allclose(np.exp(pairs).sum(axis=1), 1.0)


def test_transition_scores_change_the_path_only_with_a_weight():
    from lmforge.tasks.iob_viterbi import TagTransitions

    # word 1 is a toss-up between O and I-PER after a confident B-PER; in training B-PER is nearly always
    # followed by I-PER, so the bigrams tip it: the two-word entity, not a one-word one
    probs = np.array([[0.05, 0.0, 0.0, 0.95, 0.0], [0.52, 0.0, 0.0, 0.0, 0.48]]) + 1e-9
    train = [["B-PER", "I-PER", "O"]] * 20 + [["B-PER", "O"]]
    trans = TagTransitions.from_training(train, LABELS)
    allowed = allowed_transitions(LABELS)
    assert trans.weight == 0.0 and trans.scores() is None  # untuned: as without bigrams
    assert best_valid_path(np.log(probs), *allowed, trans.scores()) == [3, 0]
    trans.weight = 0.25
    assert best_valid_path(np.log(probs), *allowed, trans.scores()) == [3, 4]
    # what labels.json holds comes back the same, and a run saved before bigrams existed has none
    again = TagTransitions.from_json(json.loads(json.dumps(trans.to_json())))
    assert again.weight == 0.25 and np.allclose(again.pairs, trans.pairs, atol=1e-6) and np.allclose(again.first, trans.first, atol=1e-6)
    assert TagTransitions.from_json(None) is None
