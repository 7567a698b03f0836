"""pass@k against hand-computed values (Chen et al. 2021: 1 - C(n-c, k) / C(n, k))."""

from __future__ import annotations

from math import comb

import pytest

from lmforge.codeeval import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 0.4),                    # pass@1 = c / n
    (10, 3, 5, 1 - 21 / 252),          # 1 - C(7,5)/C(10,5)
    (10, 0, 5, 0.0),                   # nothing passes
    (10, 6, 5, 1.0),                   # n - c < k: every draw of 5 holds a correct one
    (1, 1, 1, 1.0),
    (200, 13, 10, 1 - comb(187, 10) / comb(200, 10)),
])
def test_pass_at_k_matches_the_binomial_formula(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_mean_over_problems():
    assert mean_pass_at_k([(5, 2), (5, 0), (5, 5)], 1) == pytest.approx((0.4 + 0 + 1) / 3)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 5), (0, 0, 1), (5, 6, 1), (5, 1, 0)])
def test_impossible_arguments_are_refused(n, c, k):
    with pytest.raises(ValueError, match="pass@|samples"):
        pass_at_k(n, c, k)


def test_k_larger_than_n_says_what_to_do():
    with pytest.raises(ValueError, match="choose k <= 3"):
        pass_at_k(3, 1, 5)
