"""Monitoring statistics (checked against hand-computed values), the drift report and its renderings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from lmforge.errors import UserError
from lmforge.lifecycle import DriftThresholds, build_report, chi_square, ks, psi, render_table, write_html
from lmforge.lifecycle.drift import gauges

approx = pytest.approx

LABELS = ["card_lost", "balance", "transfer", "refund", "pin"]
PROBS = [0.4, 0.25, 0.15, 0.12, 0.08]
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, not on an hour boundary: hours are floored


# --------------------------------------------------------------------------------------------
# Fixtures: a reference and traffic drawn from the same (or a shifted) distribution
# --------------------------------------------------------------------------------------------


def _reference(rng: np.random.Generator, n: int = 1000) -> dict:
    counts = {label: int(c) for label, c in zip(LABELS, rng.multinomial(n, PROBS))}
    return {
        "label_counts": counts,
        "confidences": [round(float(x), 5) for x in rng.beta(8, 1.5, n)],
        "lengths": [int(x) for x in rng.poisson(12, n) + 1],
        "oov_rates": [round(float(x), 4) for x in rng.beta(1, 30, n)],
        "accuracy": 0.9,
        "examples": n,
    }


def _predictions(rng: np.random.Generator, n: int = 2000, *, probs=PROBS, conf=(8, 1.5), length=12,
                 oov=(1, 30), labels=LABELS) -> list[dict]:
    chosen = rng.choice(len(labels), size=n, p=probs)
    confidences = rng.beta(*conf, n)
    lengths = rng.poisson(length, n) + 1
    oovs = rng.beta(*oov, n)
    return [{"id": f"p{i}", "time": T0 + 10.0 * i, "version": "3", "label": labels[chosen[i]],
             "confidence": float(confidences[i]), "latency_ms": float(5 + i % 10), "length": int(lengths[i]),
             "oov": float(oovs[i])} for i in range(n)]


def _feedback(predictions: list[dict], n: int, accuracy: float) -> list[dict]:
    right = round(n * accuracy)
    return [{"prediction_id": p["id"], "predicted": p["label"],
             "label": p["label"] if i < right else p["label"] + "_x", "time": p["time"] + 1}
            for i, p in enumerate(predictions[:n])]


def _check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def _statuses(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


@pytest.fixture(scope="module")
def reference() -> dict:
    return _reference(np.random.default_rng(0))


@pytest.fixture(scope="module")
def stable_report(reference) -> dict:
    preds = _predictions(np.random.default_rng(1))
    return build_report(reference, preds, _feedback(preds, 200, 0.9), model="bank", version="bank:v3",
                        window="24h")


# --------------------------------------------------------------------------------------------
# PSI
# --------------------------------------------------------------------------------------------


def test_psi_hand_computed():
    # e = (0.5, 0.5), r = (0.8, 0.2):
    # (0.8 - 0.5) * ln(0.8 / 0.5) + (0.2 - 0.5) * ln(0.2 / 0.5)
    # = 0.3 * 0.470004 + (-0.3) * (-0.916291) = 0.141001 + 0.274887 = 0.415888
    expected = 0.3 * math.log(1.6) + (-0.3) * math.log(0.4)
    assert expected == approx(0.415888, abs=1e-6)
    assert psi({"a": 50, "b": 50}, {"a": 80, "b": 20}) == approx(expected, rel=1e-12)


def test_psi_identical_is_zero_and_scale_free():
    counts = {"a": 10, "b": 30, "c": 60}
    assert psi(counts, counts) == approx(0.0, abs=1e-15)
    assert psi(counts, {k: 3 * v for k, v in counts.items()}) == approx(0.0, abs=1e-12)


def test_psi_new_label_is_floored_at_eps():
    # Union {a, b}: e = (1, 0 -> eps), r = (0.5, 0.5).
    # (0.5 - 1) * ln(0.5 / 1) + (0.5 - 1e-4) * ln(0.5 / 1e-4)
    # = 0.346574 + 0.4999 * 8.517193 = 0.346574 + 4.257745 = 4.604319
    eps = 1e-4
    expected = (0.5 - 1) * math.log(0.5) + (0.5 - eps) * math.log(0.5 / eps)
    assert expected == approx(4.604319, abs=1e-6)
    assert psi({"a": 100}, {"a": 50, "b": 50}) == approx(expected, rel=1e-12)
    assert math.isfinite(psi({"a": 100}, {"b": 1}))


def test_psi_rejects_bad_counts():
    with pytest.raises(UserError):
        psi({"a": -1, "b": 2}, {"a": 1})
    with pytest.raises(UserError):
        psi({"a": 0}, {"a": 1})  # no reference counts at all


# --------------------------------------------------------------------------------------------
# Chi-square and KS
# --------------------------------------------------------------------------------------------


def test_chi_square_matches_scipy_on_smoothed_expected_counts():
    reference = {"a": 30, "b": 10}
    recent = {"a": 20, "b": 15, "c": 5}  # "c" never seen in the reference
    # Union (a, b, c), reference + 0.5 each: (30.5, 10.5, 0.5), total 41.5; recent total 40.
    expected = np.array([30.5, 10.5, 0.5]) / 41.5 * 40
    by_hand = chisquare([20, 15, 5], expected)
    result = chi_square(reference, recent)
    assert result["statistic"] == approx(float(by_hand.statistic), rel=1e-12)
    assert result["p_value"] == approx(float(by_hand.pvalue), rel=1e-9)
    assert result["dof"] == 2
    assert math.isfinite(result["statistic"])


def test_chi_square_single_category():
    assert chi_square({"a": 3}, {"a": 5}) == {"statistic": 0.0, "p_value": 1.0, "dof": 0}


def test_ks_hand_computed():
    # Disjoint samples: ECDFs differ by 1 at x = 3. Exact two-sided p for n = m = 3 and D = 1:
    # only the 2 of C(6, 3) = 20 orderings with the samples fully separated reach D = 1 -> 0.1.
    result = ks([1, 2, 3], [4, 5, 6])
    assert result["statistic"] == 1.0
    assert result["p_value"] == approx(0.1)
    # [1, 2, 3, 4] vs [3, 4, 5, 6]: at x = 2 the ECDFs are 2/4 and 0/4 -> D = 0.5.
    assert ks([1, 2, 3, 4], [3, 4, 5, 6])["statistic"] == approx(0.5)
    with pytest.raises(UserError):
        ks([], [1.0])


# --------------------------------------------------------------------------------------------
# build_report
# --------------------------------------------------------------------------------------------


def test_no_drift_when_traffic_follows_the_reference(stable_report):
    assert _statuses(stable_report) == {
        "label_shift": "ok", "confidence_shift": "ok", "length_shift": "ok", "oov_rate": "ok",
        "feedback_accuracy": "ok"}
    assert stable_report["warnings"] == []
    assert stable_report["status"] == "ok"
    assert stable_report["predictions"] == 2000 and stable_report["feedback"] == 200
    assert json.loads(json.dumps(stable_report, allow_nan=False)) == stable_report


def test_report_shape(stable_report):
    r = stable_report
    assert (r["model"], r["version"], r["window"]) == ("bank", "bank:v3", "24h")
    assert [c["name"] for c in r["checks"]] == ["label_shift", "confidence_shift", "length_shift", "oov_rate",
                                               "feedback_accuracy"]
    label = _check(r, "label_shift")
    assert {"psi", "chi2", "p_value", "detail"} <= set(label)
    conf = _check(r, "confidence_shift")
    assert {"ks", "p_value", "reference_mean", "recent_mean"} <= set(conf)
    assert {"reference_mean", "recent_mean", "increase"} <= set(_check(r, "oov_rate"))
    assert set(r["latency_ms"]) == {"p50", "p95", "p99"} and r["latency_ms"]["p50"] == approx(9.5)
    assert sum(r["label_distribution"]["recent"].values()) == approx(1.0)
    assert sum(r["label_distribution"]["reference"].values()) == approx(1.0)
    # 2000 predictions 10 s apart from T0 span 20,000 s; every hour in between is listed.
    volume = r["volume"]
    assert volume["first"] == T0 and volume["last"] == T0 + 19990
    assert sum(c for _, c in volume["per_hour"]) == 2000
    starts = [h for h, _ in volume["per_hour"]]
    assert starts[0] == int(T0 // 3600) * 3600 and all(b - a == 3600 for a, b in zip(starts, starts[1:]))
    assert len(r["samples"]["confidences"]["recent"]) == 2000
    assert len(r["samples"]["lengths"]["reference"]) == 1000
    # over time: the hours with traffic, their mean confidence and the top labels' shares
    over = r["over_time"]
    assert over["hours"] == [h for h, c in volume["per_hour"] if c]
    assert len(over["confidence"]) == len(over["hours"]) and all(0 <= c <= 1 for c in over["confidence"])
    assert 1 <= len(over["label_share"]) <= 5
    for i in range(len(over["hours"])):
        assert sum(shares[i] for shares in over["label_share"].values()) <= 1 + 1e-9


def test_samples_are_capped(reference):
    preds = _predictions(np.random.default_rng(2), n=6000)
    report = build_report(reference, preds, [])
    assert len(report["samples"]["confidences"]["recent"]) == 5000
    assert report["samples"]["confidences"]["recent"][0] == preds[0]["confidence"]
    assert report["samples"]["confidences"]["recent"][-1] == preds[-1]["confidence"]


def test_label_shift_warns(reference):
    preds = _predictions(np.random.default_rng(3), probs=[0.1, 0.1, 0.15, 0.25, 0.4])
    report = build_report(reference, preds, [])
    check = _check(report, "label_shift")
    assert check["status"] == "warn" and check["psi"] >= 0.2 and check["p_value"] < 0.01
    assert check["detail"] in report["warnings"]
    assert report["status"] == "warn"
    assert _check(report, "confidence_shift")["status"] == "ok"


def test_new_labels_are_reported(reference):
    labels = LABELS + ["crypto"]
    preds = _predictions(np.random.default_rng(4), probs=[0.35, 0.25, 0.15, 0.12, 0.08, 0.05], labels=labels)
    check = _check(build_report(reference, preds, []), "label_shift")
    assert check["new_labels"] == ["crypto"]
    assert "'crypto'" in check["detail"]
    assert math.isfinite(check["psi"]) and math.isfinite(check["chi2"])


def test_confidence_shift_warns(reference):
    preds = _predictions(np.random.default_rng(5), conf=(4, 2))  # mean 0.67 instead of 0.84
    report = build_report(reference, preds, [])
    check = _check(report, "confidence_shift")
    assert check["status"] == "warn" and check["ks"] >= 0.1
    assert check["recent_mean"] < check["reference_mean"]
    assert "fell" in check["detail"]
    assert _check(report, "label_shift")["status"] == "ok"


def test_length_and_oov_warn(reference):
    preds = _predictions(np.random.default_rng(6), length=25, oov=(1, 5))  # oov mean 0.17 vs 0.03
    report = build_report(reference, preds, [])
    assert _check(report, "length_shift")["status"] == "warn"
    oov = _check(report, "oov_rate")
    assert oov["status"] == "warn" and oov["increase"] == approx(oov["recent_mean"] - oov["reference_mean"])
    assert oov["increase"] > 0.05


def test_feedback_accuracy_computed_and_warned(reference):
    preds = _predictions(np.random.default_rng(7))
    feedback = _feedback(preds, 100, 0.7)
    # A second correction of an already-corrected prediction replaces the first (latest wins).
    feedback.append({"prediction_id": "p0", "predicted": preds[0]["label"], "label": "other", "time": T0 + 1e5})
    report = build_report(reference, preds, feedback)
    check = _check(report, "feedback_accuracy")
    assert check["count"] == 100 and report["feedback"] == 100
    assert check["accuracy"] == approx(69 / 100)
    assert check["reference_accuracy"] == 0.9
    assert check["status"] == "warn" and check["detail"] in report["warnings"]
    ok = _check(build_report(reference, preds, _feedback(preds, 100, 0.88)), "feedback_accuracy")
    assert ok["status"] == "ok" and ok["accuracy"] == approx(0.88)


def test_no_feedback_is_insufficient(reference):
    report = build_report(reference, _predictions(np.random.default_rng(8), n=100), [])
    check = _check(report, "feedback_accuracy")
    assert check["status"] == "insufficient" and "no feedback" in check["detail"]
    assert check["accuracy"] is None
    assert math.isnan(gauges(report)["feedback_accuracy"])


def test_fewer_than_min_samples_is_insufficient(reference):
    preds = _predictions(np.random.default_rng(9), n=29, probs=[0.0, 0.0, 0.0, 0.0, 1.0])
    report = build_report(reference, preds, _feedback(preds, 29, 0.0))
    assert set(_statuses(report).values()) == {"insufficient"}
    assert all("not enough data" in c["detail"] for c in report["checks"])
    assert report["warnings"] == [] and report["status"] == "insufficient"
    # The same traffic with a lower bar gets verdicts.
    lower = build_report(reference, preds, [], DriftThresholds(min_samples=20))
    assert _check(lower, "label_shift")["status"] == "warn"


def test_empty_traffic_is_insufficient_without_error(reference):
    report = build_report(reference, [], [])
    assert set(_statuses(report).values()) == {"insufficient"}
    assert report["predictions"] == 0 and report["feedback"] == 0
    assert report["volume"] == {"first": None, "last": None, "per_hour": []}
    assert report["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    json.dumps(report, allow_nan=False)
    values = gauges(report)
    assert values["warnings"] == 0.0
    assert all(math.isnan(v) for k, v in values.items() if k != "warnings")


def test_gauges(stable_report):
    values = gauges(stable_report)
    assert set(values) == {"label_psi", "confidence_ks", "length_ks", "oov_rate", "feedback_accuracy", "warnings"}
    assert values["label_psi"] == _check(stable_report, "label_shift")["psi"]
    assert values["oov_rate"] == _check(stable_report, "oov_rate")["recent_mean"]
    assert values["feedback_accuracy"] == approx(0.9)
    assert values["warnings"] == 0.0


def test_invalid_thresholds():
    with pytest.raises(UserError):
        DriftThresholds(p_value=0)
    with pytest.raises(UserError):
        DriftThresholds(min_samples=0)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def test_render_table_shows_statuses(reference):
    from rich.console import Console

    preds = _predictions(np.random.default_rng(10), probs=[0.1, 0.1, 0.15, 0.25, 0.4])
    preds[0]["label"] = "[bold]markup[/bold]"
    report = build_report(reference, preds, [], model="bank")
    console = Console(record=True, width=200)
    console.print(render_table(report))
    text = console.export_text()
    for name in ("label_shift", "confidence_shift", "feedback_accuracy"):
        assert name in text
    assert "warn" in text and "ok" in text and "insufficient" in text
    assert "[bold]markup[/bold]" in text  # labels are shown literally, not read as rich markup


def test_write_html(tmp_path, reference):
    script = "<script>alert(1)</script>"
    preds = _predictions(np.random.default_rng(11), n=300, probs=[0.1, 0.1, 0.15, 0.25, 0.4])
    for p in preds[:40]:
        p["label"] = script
    report = build_report(reference, preds, _feedback(preds, 50, 0.8), model="bank<&>", window="24h")
    path = write_html(report, tmp_path / "sub" / "report.html")
    assert path == tmp_path / "sub" / "report.html"
    page = path.read_text(encoding="utf-8")
    for name in ("label_shift", "confidence_shift", "length_shift", "oov_rate", "feedback_accuracy"):
        assert name in page
    assert page.count('<img src="data:image/png;base64,') == 4
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "bank&lt;&amp;&gt;" in page
    assert not list(path.parent.glob(".*.tmp"))


def test_write_html_without_samples_or_traffic(tmp_path, reference):
    report = build_report(reference, [], [])
    del report["samples"]
    page = write_html(report, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "insufficient" in page
    assert page.count("data:image/png;base64,") == 1  # only the reference label distribution


# --------------------------------------------------------------------------------------------
# The report from the prediction log's columns (what `lmforge monitor` and the studio read)
# --------------------------------------------------------------------------------------------


def _log(db_path, rows: list[dict]) -> None:
    from lmforge.lifecycle.predlog import PredictionLog

    log = PredictionLog(db_path, "bank")
    log.start()
    for row in rows:
        log.record(dict(row))
    log.flush()
    log.stop()


def test_report_from_log_columns_equals_report_from_rows(tmp_path, reference):
    """The same numbers whether the report reads dicts, the log's columns, or a store that read the log in
    two increments; gaps (None) and other models' and versions' rows included."""
    from lmforge.lifecycle.columns import TrafficStore, read_columns
    from lmforge.lifecycle.predlog import feedback_since, predictions_since

    preds = _predictions(np.random.default_rng(21), n=700, probs=[0.1, 0.1, 0.15, 0.25, 0.4])
    for i, p in enumerate(preds):
        p["version"] = 3 if i % 7 else 2
    preds[5]["confidence"] = None
    preds[6]["label"] = None
    preds[7]["latency_ms"] = None
    db_path = tmp_path / "registry.db"
    _log(db_path, preds[:400])
    _log(db_path, [{**preds[0], "id": "other-model-row"}])  # logged as "bank" too: a different id
    store = TrafficStore(db_path)
    assert len(store.columns("bank")) == 401
    _log(db_path, preds[400:])
    from lmforge.lifecycle.predlog import add_feedback

    for row in _feedback([p for p in preds[200:] if p["label"] is not None], 60, 0.75):
        add_feedback(db_path, "bank", row["prediction_id"], row["label"])
    since = T0 + 1000.0
    rows = predictions_since(db_path, "bank", since, version=3)
    fb = feedback_since(db_path, "bank", since, version=3)
    expected = build_report(reference, rows, fb, window="x")
    from_log = build_report(reference, read_columns(db_path, "bank", since=since, version=3)[0], fb, window="x")
    from_store = build_report(reference, store.columns("bank").window(since, 3), fb, window="x")
    assert len(store.columns("bank")) == 701  # only the new rows were read
    assert expected["predictions"] == len(rows) == sum(1 for i, p in enumerate(preds) if i % 7 and p["time"] >= since)
    assert json.dumps(from_log, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert json.dumps(from_store, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert expected["feedback"] > 0 and expected["versions"] == {"3": len(rows)}
    assert build_report(reference, store.columns("bank").window(since, 99), [])["predictions"] == 0
    assert build_report(reference, read_columns(db_path, "nobody")[0], [])["predictions"] == 0


def test_columns_read_non_numbers_as_missing():
    from lmforge.lifecycle.columns import TrafficColumns

    cols = TrafficColumns.from_rows([{"confidence": True, "length": "7", "oov": float("inf"), "label": 3},
                                     {"confidence": 0.5, "length": None, "oov": "x", "label": None}, {}])
    assert np.isnan(cols.confidence[0]) and cols.confidence[1] == 0.5
    assert cols.length[0] == 7.0 and np.isnan(cols.length[1])
    assert np.isnan(cols.oov).all()
    assert cols.label_counts() == {"3": 1} and cols.version_counts() == {"None": 3}
