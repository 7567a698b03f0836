"""The statistics behind the drift checks: PSI and a chi-square goodness-of-fit test for predicted-label
counts, a two-sample Kolmogorov-Smirnov test for confidences and lengths. Inputs are validated (a
UserError names the bad count or value); scipy is imported only when a test runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UserError

SMOOTHING = 0.5  # pseudo-count added to every reference category in `chi_square`


def clean_counts(counts: Mapping[str, int | float], name: str) -> dict[str, float]:
    """Counts as {str(label): float}, rejecting negative or non-numeric values."""
    if not isinstance(counts, Mapping):
        raise UserError(f"{name} must map labels to counts, got {type(counts).__name__}")
    out: dict[str, float] = {}
    for label, value in counts.items():
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = float("nan")
        if not math.isfinite(x) or x < 0:
            raise UserError(f"{name}: the count of {str(label)!r} is {value!r}; expected a number >= 0")
        out[str(label)] = out.get(str(label), 0.0) + x
    return out


def _proportions(counts: dict[str, float], labels: list[str], name: str) -> np.ndarray:
    total = sum(counts.values())
    if total <= 0:
        raise UserError(f"{name} has no counts; need at least one labelled prediction")
    return np.array([counts.get(label, 0.0) / total for label in labels], dtype=float)


def psi(reference_counts: Mapping[str, int | float], recent_counts: Mapping[str, int | float],
        eps: float = 1e-4) -> float:
    """Population Stability Index: sum over the union of categories of (r - e) * ln(r / e).

    `e` and `r` are the reference and recent proportions. Each proportion is floored at `eps` before
    the sum (in the difference and the log), so a category missing on one side adds a large but finite
    term instead of infinity. Identical distributions give 0; every term is >= 0.
    """
    if not 0 < eps < 1:
        raise UserError(f"psi eps={eps!r} must be between 0 and 1")
    ref = clean_counts(reference_counts, "reference label counts")
    rec = clean_counts(recent_counts, "recent label counts")
    labels = sorted(set(ref) | set(rec))
    e = np.maximum(_proportions(ref, labels, "the reference"), eps)
    r = np.maximum(_proportions(rec, labels, "the recent traffic"), eps)
    return float(np.sum((r - e) * np.log(r / e)))


def chi_square(reference_counts: Mapping[str, int | float],
               recent_counts: Mapping[str, int | float]) -> dict[str, float]:
    """Chi-square goodness of fit of the recent counts against the reference proportions.

    Categories are the union of both sides. The reference is smoothed with +0.5 per category before
    taking proportions, so a label never seen in the reference gets a small expected count instead of
    zero (which would make the statistic infinite). Expected counts are those proportions times the
    recent total. Returns {"statistic", "p_value", "dof"}; a single category gives 0, 1.0, 0.
    """
    ref = clean_counts(reference_counts, "reference label counts")
    rec = clean_counts(recent_counts, "recent label counts")
    if sum(ref.values()) <= 0:
        raise UserError("the reference has no label counts; need at least one labelled prediction")
    labels = sorted(set(ref) | set(rec))
    observed = np.array([rec.get(label, 0.0) for label in labels], dtype=float)
    total = float(observed.sum())
    if total <= 0:
        raise UserError("the recent traffic has no label counts; need at least one labelled prediction")
    if len(labels) < 2:
        return {"statistic": 0.0, "p_value": 1.0, "dof": 0}
    smoothed = np.array([ref.get(label, 0.0) + SMOOTHING for label in labels], dtype=float)
    expected = smoothed / smoothed.sum() * total
    from scipy.stats import chisquare

    result = chisquare(observed, expected)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "dof": len(labels) - 1}


def _numbers(values: Iterable[Any], name: str) -> np.ndarray:
    try:
        array = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name} must be numbers ({exc})") from None
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise UserError(f"{name} has {bad} values that are not finite numbers")
    return array


def ks(reference: Sequence[float], recent: Sequence[float]) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov test (scipy `ks_2samp`, two-sided) -> {"statistic", "p_value"}."""
    a = _numbers(reference, "the reference sample")
    b = _numbers(recent, "the recent sample")
    if a.size == 0 or b.size == 0:
        raise UserError("a KS test needs at least one value on each side")
    from scipy.stats import ks_2samp

    result = ks_2samp(a, b)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}
