"""Batch plans and word windows: deterministic, complete, within budget."""

from lmforge.data.batching import plan_batches, shard
from lmforge.data.windows import best_window_per_word, pack_sentences, word_windows


def test_plan_covers_every_example_once_and_is_deterministic():
    lengths = [5 + (i * 7) % 40 for i in range(203)]
    a = plan_batches(lengths, batch_size=16, seed=3, epoch=1)
    b = plan_batches(lengths, batch_size=16, seed=3, epoch=1)
    c = plan_batches(lengths, batch_size=16, seed=3, epoch=2)
    assert a == b and a != c
    flat = sorted(i for batch in a for i in batch)
    assert flat == list(range(203))
    assert all(len(batch) <= 16 for batch in a)


def test_length_grouping_reduces_padding():
    lengths = [5 + (i * 37) % 120 for i in range(1000)]
    def padded(plan):
        return sum(max(lengths[i] for i in b) * len(b) for b in plan)
    grouped = plan_batches(lengths, batch_size=32, seed=0, group_by_length=True)
    plain = plan_batches(lengths, batch_size=32, seed=0, group_by_length=False)
    assert padded(grouped) < 0.8 * padded(plain)


def test_token_budget_respected():
    lengths = [10, 50, 20, 100, 30, 5, 60, 70] * 10
    plan = plan_batches(lengths, batch_size=999, max_tokens=200, seed=0)
    for batch in plan:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 200
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))


def test_shard_splits_and_pads_empty_ranks():
    assert shard([1, 2, 3, 4, 5], 0, 2) == ([1, 3, 5], False)
    assert shard([1, 2, 3, 4, 5], 1, 2) == ([2, 4], False)
    assert shard([7], 1, 2) == ([7], True)


def test_word_windows_cover_all_words_within_budget():
    lens = [1, 3, 2, 1, 4, 1, 1, 2, 5, 1] * 5
    for stride in (4, 8):
        spans = word_windows(lens, 10, stride)
        covered = {i for s, e in spans for i in range(s, e)}
        assert covered == set(range(len(lens)))
        assert all(sum(lens[s:e]) <= 10 for s, e in spans)
    non_overlapping = word_windows(lens, 10, 10)
    assert all(a[1] == b[0] for a, b in zip(non_overlapping, non_overlapping[1:]))


def test_single_word_longer_than_window_gets_own_window():
    assert word_windows([2, 50, 2], 10, 10) == [(0, 1), (1, 2), (2, 3)]


def test_best_window_prefers_central_position():
    lens = [1] * 12
    spans = word_windows(lens, 8, 4)  # (0,8) (4,12)
    best = best_window_per_word(lens, spans)
    assert best[0] == 0 and best[11] == len(spans) - 1
    assert best[3] == 0 and best[8] == 1


def test_pack_sentences_respects_window():
    assert pack_sentences([3, 4, 2, 6, 1], 7) == [[0, 1], [2], [3, 4]]
    assert pack_sentences([9, 1], 7) == [[0], [1]]
