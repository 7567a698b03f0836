"""Metrics for text classification: multi-class and multi-label.

Every number in the returned dicts is a plain Python `float`/`int` (never a numpy scalar) so that
the reports serialise to JSON as they are. Precision/recall/F1 come from scikit-learn with
`zero_division=0`: a class that is never predicted (or never present) scores 0 instead of warning.

Calibration uses the expected calibration error (ECE) over equal-width confidence bins on [0, 1].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

DEFAULT_N_BINS = 15

# The averages reported for each task family; "samples" only makes sense for multi-label.
_MULTICLASS_AVERAGES = ("micro", "macro", "weighted")
_MULTILABEL_AVERAGES = ("micro", "macro", "weighted")  # plus "samples", computed by hand


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def expected_calibration_error(
    confidences: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | Sequence[int] | np.ndarray,
    n_bins: int = DEFAULT_N_BINS,
) -> tuple[float, list[dict]]:
    """ECE over `n_bins` equal-width bins of [0, 1].

    Bin `i` holds confidences in `[i/n, (i+1)/n)`; the last bin also holds exactly 1.0.
    Returns `(ece, bins)` where every bin (empty ones included, so plots have a fixed x axis) is
    `{"lo", "hi", "count", "accuracy", "confidence"}`; `accuracy`/`confidence` are the means of
    `correct`/`confidences` in the bin, 0.0 when `count` is 0. `ece = sum(count/N * |acc - conf|)`;
    0.0 when there are no samples.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != hit.shape:
        raise ValueError(
            f"confidences and correct must have the same length, got {conf.size} and {hit.size}"
        )
    if conf.size and (np.isnan(conf).any() or conf.min() < -1e-6 or conf.max() > 1 + 1e-6):
        raise ValueError("confidences must be probabilities in [0, 1] (no NaN)")
    # Tolerate float noise such as 1.0000001 from a softmax.
    conf = np.clip(conf, 0.0, 1.0)

    # floor(c * n) puts c in [i/n, (i+1)/n); clipping sends c == 1.0 to the last bin.
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    total = conf.size
    ece = 0.0
    bins: list[dict] = []
    for i in range(n_bins):
        mask = idx == i
        count = int(mask.sum())
        acc = float(hit[mask].mean()) if count else 0.0
        mean_conf = float(conf[mask].mean()) if count else 0.0
        if count:
            ece += count / total * abs(acc - mean_conf)
        bins.append(
            {
                "lo": i / n_bins,
                "hi": (i + 1) / n_bins,
                "count": count,
                "accuracy": acc,
                "confidence": mean_conf,
            }
        )
    return float(ece), bins


def _calibration_section(confidences: np.ndarray, correct: np.ndarray) -> dict:
    ece, bins = expected_calibration_error(confidences, correct, DEFAULT_N_BINS)
    return {"ece": ece, "bins": bins}


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if not labels:
        raise ValueError("labels must not be empty")
    dupes = sorted(lab for lab, k in Counter(labels).items() if k > 1)
    if dupes:
        raise ValueError(f"labels contain duplicates: {dupes}")
    return labels


def _check_known(found: set[str], labels: list[str], where: str) -> None:
    # Callers promise a closed label set; an unknown label means a bug upstream (e.g. a label
    # map that does not match the data), so fail loudly rather than silently drop rows.
    unknown = sorted(found - set(labels))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:20])
        more = f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else ""
        raise ValueError(
            f"{where} contains labels that are not in the label set: {shown}{more}. "
            f"Known labels: {labels[:20]}{' ...' if len(labels) > 20 else ''}"
        )


def _prf(precision: float, recall: float, f1: float, support: int) -> dict:
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "support": int(support),
    }


def _per_label(
    labels: list[str], y_true: np.ndarray | list, y_pred: np.ndarray | list, label_arg: list
) -> dict[str, dict]:
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=label_arg, average=None, zero_division=0
    )
    return {lab: _prf(p[i], r[i], f[i], s[i]) for i, lab in enumerate(labels)}


def _averages(
    y_true: np.ndarray | list,
    y_pred: np.ndarray | list,
    label_arg: list,
    averages: Sequence[str],
    support: int,
) -> dict[str, dict]:
    # sklearn returns support=None for averaged scores; like sklearn's text report we show the
    # total support instead so every row of the tables has the same four columns.
    out: dict[str, dict] = {}
    for avg in averages:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=label_arg, average=avg, zero_division=0
        )
        out[avg] = _prf(p, r, f, support)
    return out


def _zeros(support: int = 0) -> dict:
    return _prf(0.0, 0.0, 0.0, support)


def _check_probs(probs: np.ndarray, n: int, n_labels: int) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.shape != (n, n_labels):
        raise ValueError(
            f"probs must have shape [n_examples, n_labels] = [{n}, {n_labels}], "
            f"got {list(arr.shape)}"
        )
    return arr


# --------------------------------------------------------------------------------------------
# Multi-class
# --------------------------------------------------------------------------------------------


def classification_report(
    y_true: list[str],
    y_pred: list[str],
    labels: list[str],
    probs: np.ndarray | None = None,
) -> dict:
    """Multi-class report over the closed label set `labels` (its order is kept everywhere).

    Returns `{"num_examples", "accuracy", "per_class": {label: {precision, recall, f1, support}},
    "micro", "macro", "weighted", "confusion_matrix": {"labels", "matrix"}}` plus `"calibration":
    {"ece", "bins"}` when `probs` ([n, len(labels)], columns in `labels` order) is given.
    Confusion matrix rows are true labels, columns predicted labels.
    Calibration scores the arg-max of `probs` (its max probability is the confidence) against
    `y_true`. Raises ValueError on length mismatches or labels outside `labels`.
    """
    labels = _check_labels(labels)
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    _check_known(set(y_true), labels, "y_true")
    _check_known(set(y_pred), labels, "y_pred")
    n = len(y_true)

    report: dict = {"num_examples": n}
    if n == 0:
        # sklearn cannot score empty input; an empty eval split still gets a well-formed report.
        report["accuracy"] = 0.0
        report["per_class"] = {lab: _zeros() for lab in labels}
        for avg in _MULTICLASS_AVERAGES:
            report[avg] = _zeros()
        matrix = [[0] * len(labels) for _ in labels]
    else:
        report["accuracy"] = float(np.mean([t == p for t, p in zip(y_true, y_pred)]))
        report["per_class"] = _per_label(labels, y_true, y_pred, labels)
        report.update(_averages(y_true, y_pred, labels, _MULTICLASS_AVERAGES, n))
        matrix = _sk_confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist()
    report["confusion_matrix"] = {"labels": list(labels), "matrix": matrix}

    if probs is not None:
        arr = _check_probs(probs, n, len(labels))
        index = {lab: i for i, lab in enumerate(labels)}
        truth = np.array([index[t] for t in y_true], dtype=np.int64)
        pred = arr.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
        conf = arr.max(axis=1) if n else np.zeros(0)
        report["calibration"] = _calibration_section(conf, pred == truth)
    return report


# --------------------------------------------------------------------------------------------
# Multi-label
# --------------------------------------------------------------------------------------------


def _binarize(rows: list[list[str]], labels: list[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    out = np.zeros((len(rows), len(labels)), dtype=np.int64)
    for r, row in enumerate(rows):
        for lab in row:
            out[r, index[lab]] = 1
    return out


def _samples_average(truth: np.ndarray, pred: np.ndarray, support: int) -> dict:
    """Per-example P/R/F1, averaged over examples.

    Not sklearn's `average="samples"`: with `zero_division=0` it scores an example with no true
    and no predicted labels as 0, so a model that is exactly right on every example could show a
    samples-F1 well below 1. Here such an example scores 1 (it is exactly right); an empty
    prediction against non-empty truth (or the reverse) still scores 0.
    """
    tp = (truth & pred).sum(axis=1).astype(np.float64)
    n_pred = pred.sum(axis=1).astype(np.float64)
    n_true = truth.sum(axis=1).astype(np.float64)
    both_empty = (n_pred == 0) & (n_true == 0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        safe = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return np.where(both_empty, 1.0, safe)

    precision = ratio(tp, n_pred)
    recall = ratio(tp, n_true)
    f1 = ratio(2 * tp, n_pred + n_true)
    return _prf(precision.mean(), recall.mean(), f1.mean(), support)


def multilabel_report(
    y_true: list[list[str]],
    y_pred: list[list[str]],
    labels: list[str],
    probs: np.ndarray | None = None,
) -> dict:
    """Multi-label report: each example has a (possibly empty) set of labels.

    Returns `{"num_examples", "exact_match", "per_class": {label: {precision, recall, f1,
    support}}, "micro", "macro", "weighted", "samples"}` plus `"calibration": {"ece", "bins"}` when
    `probs` ([n, len(labels)] independent sigmoid probabilities) is given. Calibration treats
    every (example, label) pair as one binary prediction: confidence = p(label), "accuracy" of a
    bin = fraction of those pairs whose label is truly present. Averages' support is the total
    number of true (example, label) pairs. "samples" averages per-example scores, counting an
    example with no true and no predicted labels as fully correct (see `_samples_average`).
    With `probs`, also `average_precision`: micro-averaged, threshold-free (the area under the
    precision-recall curve of all pairs ranked by probability).
    `empty_predictions` is the share of examples given no label at all (a model that learned only
    the label frequencies predicts nothing). No confusion matrix.
    """
    labels = _check_labels(labels)
    y_true = [list(row) for row in y_true]
    y_pred = [list(row) for row in y_pred]
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    _check_known({lab for row in y_true for lab in row}, labels, "y_true")
    _check_known({lab for row in y_pred for lab in row}, labels, "y_pred")
    n = len(y_true)

    truth = _binarize(y_true, labels)
    pred = _binarize(y_pred, labels)
    total_support = int(truth.sum())
    label_idx = list(range(len(labels)))

    report: dict = {"num_examples": n}
    if n == 0:
        report["exact_match"] = 0.0
        report["per_class"] = {lab: _zeros() for lab in labels}
        for avg in (*_MULTILABEL_AVERAGES, "samples"):
            report[avg] = _zeros()
    else:
        report["exact_match"] = float((truth == pred).all(axis=1).mean())
        report["per_class"] = _per_label(labels, truth, pred, label_idx)
        report.update(_averages(truth, pred, label_idx, _MULTILABEL_AVERAGES, total_support))
        report["samples"] = _samples_average(truth, pred, total_support)

    if probs is not None:
        arr = _check_probs(probs, n, len(labels))
        report["calibration"] = _calibration_section(arr.reshape(-1), truth.reshape(-1))
        report["average_precision"] = _micro_average_precision(truth, arr)
    report["empty_predictions"] = float((pred.sum(axis=1) == 0).mean()) if n else 0.0
    return report


def _micro_average_precision(truth: np.ndarray, probs: np.ndarray) -> float:
    """Area under the precision-recall curve of all (example, label) pairs ranked by probability:
    how well the scores rank right labels above wrong ones, whatever the threshold."""
    from sklearn.metrics import average_precision_score

    if truth.size == 0 or not truth.any():
        return 0.0
    return float(average_precision_score(truth.reshape(-1), probs.reshape(-1)))


# --------------------------------------------------------------------------------------------
# Multi-label decision threshold
# --------------------------------------------------------------------------------------------


def micro_f1_at(probs: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """Micro-F1 of the decisions `probs >= threshold` against the 0/1 matrix `truth`."""
    pred = np.asarray(probs) >= threshold
    truth = np.asarray(truth).astype(bool)
    denominator = pred.sum() + truth.sum()
    return float(2 * (pred & truth).sum() / denominator) if denominator else 0.0


def tune_threshold(probs: np.ndarray, truth: np.ndarray) -> dict:
    """The one global decision threshold that maximises micro-F1 of `probs >= threshold` against
    `truth` (both [n_examples, n_labels]), searched exactly over every cut between two distinct
    scores. The threshold is the midpoint of the cut, so a score equal to a dev score is not on the
    edge; among equally good cuts the middle one is taken.

    One threshold for all labels rather than one per label: it is fitted on every (example, label)
    pair at once, whereas a per-label threshold rests on that label's few dev positives (tens on
    typical dev sets) and overfits them.

    Returns `{"threshold", "micro_f1", "micro_f1_at_0.5", "trivial_micro_f1", "pairs", "positives"}`;
    `trivial_micro_f1` is what answering every label for every example scores: a model that does
    not beat it has learned nothing beyond the label frequencies."""
    scores = np.asarray(probs, dtype=np.float64).reshape(-1)
    gold = np.asarray(truth).astype(bool).reshape(-1)
    if scores.shape != gold.shape:
        raise ValueError(f"probs and truth differ in shape: {np.shape(probs)} vs {np.shape(truth)}")
    positives = int(gold.sum())
    summary = {"pairs": int(scores.size), "positives": positives,
               "micro_f1_at_0.5": micro_f1_at(scores, gold, 0.5),
               "trivial_micro_f1": float(2 * positives / (scores.size + positives)) if positives else 0.0}
    if not positives:
        return {"threshold": 0.5, "micro_f1": summary["micro_f1_at_0.5"], **summary}
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], gold[order]
    # cutting after position k (k = 1..n) predicts the k highest scores: tp = hits among them
    tp = np.cumsum(hits)
    k = np.arange(1, scores.size + 1)
    f1 = 2 * tp / (k + positives)
    # a cut is possible only where the score changes (equal scores fall on the same side), and after the last
    cuttable = np.append(ranked[:-1] > ranked[1:], True)
    best = np.flatnonzero(cuttable & (f1 >= f1[cuttable].max() - 1e-12))
    cut = int(best[len(best) // 2])
    threshold = (ranked[cut] + ranked[cut + 1]) / 2 if cut + 1 < scores.size else ranked[cut]
    return {"threshold": float(threshold), "micro_f1": float(f1[cut]), **summary}
