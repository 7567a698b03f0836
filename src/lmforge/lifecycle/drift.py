"""Drift statistics of recent traffic against a model's training-time reference, and the report.

The reference (`reference.json`, written at registration) holds the model's predictions on its dev set: label counts,
confidences, text lengths (words), out-of-vocabulary rates and accuracy. `build_report` compares the
recent logged predictions (and user feedback on them) with it, check by check:

- `label_shift`: PSI and a chi-square goodness-of-fit test of the predicted-label counts (`drift_stats`).
- `confidence_shift` / `length_shift`: two-sample Kolmogorov-Smirnov tests.
- `oov_rate`: absolute increase of the mean out-of-vocabulary rate.
- `feedback_accuracy`: share of corrected predictions whose prediction was right.

A check is `ok`, `warn`, or `insufficient` (too little data for a verdict; its numbers are then None).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from .columns import TrafficColumns
from .drift_stats import chi_square, clean_counts, ks, psi

OK, WARN, INSUFFICIENT = "ok", "warn", "insufficient"
SAMPLE_CAP = 5000  # raw values per side kept in report["samples"] for the HTML histograms
MAX_FILLED_HOURS = 10_000  # longer spans list only the hours that have predictions
NEW_LABELS_SHOWN = 5


@dataclass(frozen=True)
class DriftThresholds:
    """When a check warns. A check with fewer than `min_samples` recent values gives no verdict."""

    psi_warn: float = 0.2  # label_shift warns when PSI >= psi_warn and the chi-square p < p_value
    p_value: float = 0.01
    ks_statistic: float = 0.1  # confidence_shift warns when KS >= this and p < p_value
    oov_increase: float = 0.05  # oov_rate warns when the mean rate rose by more than this (absolute)
    length_ks_statistic: float = 0.1  # length_shift warns when KS >= this and p < p_value
    feedback_drop: float = 0.05  # feedback_accuracy warns below reference accuracy - feedback_drop
    min_samples: int = 30

    def __post_init__(self) -> None:
        problems = []
        if not self.psi_warn > 0:
            problems.append(f"psi_warn={self.psi_warn!r} must be > 0")
        if not 0 < self.p_value < 1:
            problems.append(f"p_value={self.p_value!r} must be between 0 and 1")
        for name in ("ks_statistic", "length_ks_statistic"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                problems.append(f"{name}={value!r} must be in (0, 1]")
        for name in ("oov_increase", "feedback_drop"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                problems.append(f"{name}={value!r} must be in [0, 1]")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 1:
            problems.append(f"min_samples={self.min_samples!r} must be a whole number >= 1")
        if problems:
            raise UserError("invalid drift thresholds: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Helpers for the report
# --------------------------------------------------------------------------------------------


def _finite(values: Iterable[Any]) -> list[float]:
    """The values that are finite numbers (None, NaN, strings are dropped)."""
    out = []
    for value in values:
        if isinstance(value, bool) or value is None:
            continue
        try:
            x = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out.append(x)
    return out


def _number_or_none(value: Any) -> float | None:
    values = _finite([value])
    return values[0] if values else None


def _p(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def _cap(values: list[float], cap: int = SAMPLE_CAP) -> list[float]:
    """At most `cap` values, evenly spaced over the list (deterministic, keeps time coverage)."""
    if len(values) <= cap:
        return [float(v) for v in values]
    index = np.linspace(0, len(values) - 1, cap).round().astype(int)
    return [float(values[i]) for i in index]


def _check(name: str, status: str, detail: str, **numbers: Any) -> dict:
    return {"name": name, "status": status, "detail": detail, **numbers}


def _shortage(count: int, thresholds: DriftThresholds, what: str = "recent predictions") -> str | None:
    """The "not enough data" detail when `count` is below min_samples, else None."""
    if count >= thresholds.min_samples:
        return None
    if count == 0:
        return f"not enough data: no {what}"
    return f"not enough data: {count} {what}, need at least {thresholds.min_samples}"


def _distribution(counts: Mapping[str, float]) -> dict[str, float]:
    """Proportions, most frequent first (ties by label)."""
    total = sum(counts.values())
    if total <= 0:
        return {}
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {label: float(count / total) for label, count in ordered}


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _label_check(ref_counts: dict[str, float], recent: Counter, n: int, t: DriftThresholds) -> dict:
    empty = {"psi": None, "chi2": None, "p_value": None, "dof": None, "new_labels": []}
    short = _shortage(n, t) or _shortage(sum(recent.values()), t, "recent predictions with a label")
    if short:
        return _check("label_shift", INSUFFICIENT, short, **empty)
    if sum(ref_counts.values()) <= 0:
        return _check("label_shift", INSUFFICIENT, "the reference has no label counts; re-register the model "
                      "to compute them", **empty)
    value = psi(ref_counts, recent)
    chi = chi_square(ref_counts, recent)
    known = {label for label, count in ref_counts.items() if count > 0}
    new = sorted(set(recent) - known, key=lambda label: (-recent[label], label))
    warn = value >= t.psi_warn and chi["p_value"] < t.p_value
    verdict = "predicted-label distribution shifted" if warn else "predicted-label distribution is stable"
    detail = (f"{verdict}: PSI {value:.3f} (warn at >= {t.psi_warn:g} with p < {t.p_value:g}), "
              f"chi-square {chi['statistic']:.1f} on {chi['dof']} dof, {_p(chi['p_value'])}, "
              f"{n} predictions")
    if new:
        shown = ", ".join(repr(label) for label in new[:NEW_LABELS_SHOWN])
        more = f" and {len(new) - NEW_LABELS_SHOWN} more" if len(new) > NEW_LABELS_SHOWN else ""
        detail += f"; {len(new)} label(s) never seen in the reference: {shown}{more}"
    return _check("label_shift", WARN if warn else OK, detail, psi=value, chi2=chi["statistic"],
                  p_value=chi["p_value"], dof=chi["dof"], new_labels=new)


def _ks_check(name: str, what: str, unit: str, fmt: str, ref: list[float], recent: list[float], n: int,
              statistic: float, t: DriftThresholds) -> dict:
    """A KS check that warns when KS >= `statistic` and p < t.p_value."""
    empty = {"ks": None, "p_value": None, "reference_mean": None, "recent_mean": None}
    short = _shortage(n, t) or _shortage(len(recent), t, f"recent predictions with a {what}")
    if short:
        return _check(name, INSUFFICIENT, short, **empty)
    if not ref:
        return _check(name, INSUFFICIENT, f"the reference has no {what} values; re-register the model to "
                      "compute them", **empty)
    result = ks(ref, recent)
    ref_mean, rec_mean = float(np.mean(ref)), float(np.mean(recent))
    warn = result["statistic"] >= statistic and result["p_value"] < t.p_value
    move = "rose" if rec_mean > ref_mean else "fell" if rec_mean < ref_mean else "stayed"
    verdict = f"{what} distribution shifted" if warn else f"{what} distribution is stable"
    detail = (f"{verdict}: mean {what} {move} from {ref_mean:{fmt}}{unit} to {rec_mean:{fmt}}{unit}, "
              f"KS {result['statistic']:.3f}, {_p(result['p_value'])} "
              f"(warn at KS >= {statistic:g} with p < {t.p_value:g}), {len(recent)} predictions")
    return _check(name, WARN if warn else OK, detail, ks=result["statistic"], p_value=result["p_value"],
                  reference_mean=ref_mean, recent_mean=rec_mean)


def _oov_check(ref: list[float], recent: list[float], n: int, t: DriftThresholds) -> dict:
    empty = {"reference_mean": None, "recent_mean": None, "increase": None}
    short = _shortage(n, t) or _shortage(len(recent), t, "recent predictions with an OOV rate")
    if short:
        return _check("oov_rate", INSUFFICIENT, short, **empty)
    if not ref:
        return _check("oov_rate", INSUFFICIENT, "the reference has no OOV rates; re-register the model to "
                      "compute them", **empty)
    ref_mean, rec_mean = float(np.mean(ref)), float(np.mean(recent))
    increase = rec_mean - ref_mean
    warn = increase > t.oov_increase
    verdict = "more out-of-vocabulary words" if warn else "out-of-vocabulary rate is stable"
    detail = (f"{verdict}: mean OOV rate {ref_mean:.1%} at registration, {rec_mean:.1%} now "
              f"({increase * 100:+.1f} points; warn above +{t.oov_increase * 100:.1f})")
    return _check("oov_rate", WARN if warn else OK, detail, reference_mean=ref_mean, recent_mean=rec_mean,
                  increase=increase)


def _feedback_rows(feedback: Iterable[Mapping], traffic: TrafficColumns) -> list[tuple[str, str]]:
    """(predicted, true) per feedback row; the latest row wins per prediction id. A missing
    `predicted` is looked up in the predictions by id; rows without either label are dropped."""
    feedback = list(feedback)
    predicted_by_id: dict[str, Any] = {}
    if traffic.ids is not None and any(isinstance(r, Mapping) and r.get("predicted") is None for r in feedback):
        predicted_by_id = {str(pid): (traffic.labels[code] if code >= 0 else None)
                           for pid, code in zip(traffic.ids, traffic.label.tolist()) if pid is not None}
    latest: dict[Any, tuple[float, int, tuple[str, str]]] = {}
    for i, row in enumerate(feedback):
        if not isinstance(row, Mapping):
            raise UserError(f"feedback row {i} is a {type(row).__name__}; expected a mapping")
        pid = row.get("prediction_id")
        predicted = row.get("predicted")
        if predicted is None and pid is not None:
            predicted = predicted_by_id.get(str(pid))
        if predicted is None or row.get("label") is None:
            continue
        key = ("row", i) if pid is None else str(pid)
        when = _number_or_none(row.get("time"))
        rank = (when if when is not None else float("-inf"), i)
        if key not in latest or rank >= latest[key][:2]:
            latest[key] = (*rank, (str(predicted), str(row["label"])))
    return [pair for *_, pair in latest.values()]


def _feedback_check(rows: list[tuple[str, str]], ref_accuracy: float | None, n: int, t: DriftThresholds) -> dict:
    empty = {"accuracy": None, "reference_accuracy": ref_accuracy, "count": len(rows)}
    if not rows:
        return _check("feedback_accuracy", INSUFFICIENT, "no feedback was collected", **empty)
    short = _shortage(n, t)
    if short:
        return _check("feedback_accuracy", INSUFFICIENT, short, **empty)
    accuracy = sum(predicted == true for predicted, true in rows) / len(rows)
    numbers = {"accuracy": accuracy, "reference_accuracy": ref_accuracy, "count": len(rows)}
    seen = f"feedback accuracy {accuracy:.3f} on {len(rows)} corrected predictions"
    if len(rows) < t.min_samples:
        return _check("feedback_accuracy", INSUFFICIENT, f"not enough data: {seen}, need at least "
                      f"{t.min_samples} for a verdict", **numbers)
    if ref_accuracy is None:
        return _check("feedback_accuracy", INSUFFICIENT, f"{seen}; the reference has no accuracy to compare "
                      "with", **numbers)
    floor = ref_accuracy - t.feedback_drop
    warn = accuracy < floor
    verdict = "accuracy dropped" if warn else "accuracy holds"
    detail = f"{verdict}: {seen} vs {ref_accuracy:.3f} at registration (warn below {floor:.3f})"
    return _check("feedback_accuracy", WARN if warn else OK, detail, **numbers)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _volume(times: np.ndarray) -> dict:
    """First/last time and [hour_start, count] per hour (empty hours filled with 0 up to MAX_FILLED_HOURS)."""
    if not len(times):
        return {"first": None, "last": None, "per_hour": []}
    hours, counts = np.unique((np.floor(times / 3600.0) * 3600).astype(np.int64), return_counts=True)
    buckets = dict(zip(hours.tolist(), counts.tolist()))
    start, end = int(hours[0]), int(hours[-1])
    if (end - start) // 3600 + 1 <= MAX_FILLED_HOURS:
        hours = range(start, end + 3600, 3600)
    else:
        hours = hours.tolist()
    return {"first": float(times.min()), "last": float(times.max()), "per_hour": [[h, buckets.get(h, 0)] for h in hours]}


def _over_time(traffic: TrafficColumns, top: int = 5) -> dict:
    """Per hour with traffic: mean confidence and the share of each of the `top` most frequent labels."""
    keep = np.isfinite(traffic.time)
    if not keep.any():
        return {"hours": [], "confidence": [], "label_share": {}}
    hours, slot = np.unique((np.floor(traffic.time[keep] / 3600.0) * 3600).astype(np.int64), return_inverse=True)
    counts = np.bincount(slot, minlength=len(hours)).astype(np.float64)
    conf = traffic.confidence[keep]
    has = np.isfinite(conf)
    conf_sum = np.bincount(slot[has], weights=conf[has], minlength=len(hours))
    conf_n = np.bincount(slot[has], minlength=len(hours))
    labels = traffic.label[keep]
    top_labels = Counter(traffic.label_counts()).most_common(top)
    return {"hours": [int(h) for h in hours],
            "confidence": [float(s / n) if n else None for s, n in zip(conf_sum, conf_n)],
            "label_share": {label: (np.bincount(slot, weights=(labels == traffic.labels.index(label)).astype(np.float64),
                                                minlength=len(hours)) / counts).tolist()
                            for label, _ in top_labels}}


def _latency(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def _overall(checks: list[dict]) -> str:
    statuses = {c["status"] for c in checks}
    if WARN in statuses:
        return WARN
    return OK if OK in statuses else INSUFFICIENT


def build_report(reference: dict, predictions: list[dict] | TrafficColumns, feedback: list[dict],
                 thresholds: DriftThresholds = DriftThresholds(), *, model: str = "",
                 version: str | None = None, window: str = "") -> dict:
    """The monitoring report of `predictions` and `feedback` against `reference` (JSON-serialisable).

    `predictions`: dicts (keys as in the prediction log) or the same as `TrafficColumns` (what
    `monitoring.monitor_report` reads from the log). They are not filtered by `version`: the caller
    selects the traffic; `version` and `window` are recorded as given. Missing or non-numeric fields of
    a prediction are left out of the checks that need them.
    """
    if not isinstance(reference, Mapping):
        raise UserError("the monitoring reference must be a JSON object with label_counts, confidences, ...; "
                        "re-register the model to recompute it")
    if not isinstance(predictions, TrafficColumns):
        predictions = list(predictions or [])
        for i, row in enumerate(predictions):
            if not isinstance(row, Mapping):
                raise UserError(f"prediction row {i} is a {type(row).__name__}; expected a mapping")
        predictions = TrafficColumns.from_rows(predictions)
    traffic = predictions
    t = thresholds
    n = len(traffic)

    ref_counts = clean_counts(reference.get("label_counts") or {}, "reference label_counts")
    ref_conf = _finite(reference.get("confidences") or [])
    ref_len = _finite(reference.get("lengths") or [])
    ref_oov = _finite(reference.get("oov_rates") or [])
    ref_accuracy = _number_or_none(reference.get("accuracy"))

    recent_counts = Counter(traffic.label_counts())
    conf = traffic.finite("confidence")
    lengths = traffic.finite("length")
    oov = traffic.finite("oov")
    rows = _feedback_rows(feedback or [], traffic)

    checks = [
        _label_check(ref_counts, recent_counts, n, t),
        _ks_check("confidence_shift", "confidence", "", ".3f", ref_conf, conf, n, t.ks_statistic, t),
        _ks_check("length_shift", "length", " words", ".1f", ref_len, lengths, n, t.length_ks_statistic, t),
        _oov_check(ref_oov, oov, n, t),
        _feedback_check(rows, ref_accuracy, n, t),
    ]
    return {
        "model": model,
        "version": version,
        "window": window,
        "status": _overall(checks),
        "predictions": n,
        "feedback": len(rows),
        "versions": traffic.version_counts(),
        "volume": _volume(traffic.finite("time")),
        "over_time": _over_time(traffic),
        "checks": checks,
        "warnings": [c["detail"] for c in checks if c["status"] == WARN],
        "label_distribution": {"reference": _distribution(ref_counts), "recent": _distribution(recent_counts)},
        "latency_ms": _latency(traffic.finite("latency_ms")),
        "reference": {"examples": reference.get("examples"), "accuracy": ref_accuracy},
        "thresholds": asdict(t),
        "samples": {
            "confidences": {"reference": _cap(ref_conf), "recent": _cap(conf)},
            "lengths": {"reference": _cap(ref_len), "recent": _cap(lengths)},
        },
    }


GAUGE_SOURCES = {
    "label_psi": ("label_shift", "psi"),
    "confidence_ks": ("confidence_shift", "ks"),
    "length_ks": ("length_shift", "ks"),
    "oov_rate": ("oov_rate", "recent_mean"),
    "feedback_accuracy": ("feedback_accuracy", "accuracy"),
}


def gauges(report: dict) -> dict[str, float]:
    """Prometheus gauge values of a report. A check without a verdict (status insufficient, e.g. no
    feedback or too few predictions) gives NaN; `warnings` is the number of warning checks."""
    by_name = {c.get("name"): c for c in report.get("checks", [])}
    out: dict[str, float] = {}
    for gauge, (check_name, key) in GAUGE_SOURCES.items():
        check = by_name.get(check_name) or {}
        value = check.get(key) if check.get("status") in (OK, WARN) else None
        out[gauge] = float(value) if value is not None else float("nan")
    out["warnings"] = float(len(report.get("warnings", [])))
    return out
