"""Evaluation metrics and report writing, checked against hand-computed values."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from lmforge.evaluation.classification_metrics import (
    classification_report,
    expected_calibration_error,
    multilabel_report,
)
from lmforge.evaluation.ner_metrics import entity_report
from lmforge.evaluation.report import write_report
from lmforge.tasks.classification import MULTI_LABEL_REPORT, SINGLE_LABEL_REPORT
from lmforge.tasks.token_classification import NER_REPORT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# 3-class example. Confusion matrix (rows true, cols predicted):
#   a: [2, 1, 0]   b: [0, 1, 1]   c: [0, 0, 1]
# precision a=2/2 b=1/2 c=1/2; recall a=2/3 b=1/2 c=1/1; f1 a=0.8 b=0.5 c=2/3; accuracy 4/6.
LABELS = ["a", "b", "c"]
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "c", "c"]

# Multi-label example:
#   x: tp1                -> P 1,   R 1,   F 1,   support 1
#   y: tp1 fn1            -> P 1,   R 1/2, F 2/3, support 2
#   z: tp1 fp1            -> P 1/2, R 1,   F 2/3, support 1
ML_LABELS = ["x", "y", "z"]
ML_TRUE = [["x", "y"], ["y"], ["z"], []]
ML_PRED = [["x"], ["y", "z"], ["z"], []]

approx = pytest.approx


def _three_class_report(with_probs: bool = False) -> dict:
    probs = None
    if with_probs:
        # Arg-max equals Y_PRED. Confidence 0.9 on the 4 correct predictions, 0.62 on the 2 wrong.
        probs = np.array(
            [
                [0.9, 0.05, 0.05],
                [0.9, 0.05, 0.05],
                [0.19, 0.62, 0.19],  # true a, predicted b
                [0.05, 0.9, 0.05],
                [0.19, 0.19, 0.62],  # true b, predicted c
                [0.05, 0.05, 0.9],
            ]
        )
    return classification_report(Y_TRUE, Y_PRED, LABELS, probs)


# --------------------------------------------------------------------------------------------
# Multi-class
# --------------------------------------------------------------------------------------------


def test_classification_per_class_and_confusion_matrix() -> None:
    r = _three_class_report()
    assert r["accuracy"] == approx(4 / 6)
    assert r["num_examples"] == 6
    pc = r["per_class"]
    assert list(pc) == LABELS
    assert pc["a"] == approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert pc["b"] == approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert r["confusion_matrix"] == {"labels": LABELS, "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}
    assert "calibration" not in r


def test_classification_averages() -> None:
    r = _three_class_report()
    # Single-label multi-class: micro P = R = F1 = accuracy.
    assert r["micro"] == approx({"precision": 4 / 6, "recall": 4 / 6, "f1": 4 / 6, "support": 6})
    assert r["macro"] == approx(
        {"precision": 2 / 3, "recall": 13 / 18, "f1": (0.8 + 0.5 + 2 / 3) / 3, "support": 6}
    )
    assert r["weighted"] == approx(
        {"precision": 0.75, "recall": 4 / 6, "f1": (3 * 0.8 + 2 * 0.5 + 2 / 3) / 6, "support": 6}
    )


def test_classification_values_are_builtin_types() -> None:
    r = _three_class_report(with_probs=True)
    # Round-trips through JSON unchanged: no numpy scalars hiding in the dict.
    assert json.loads(json.dumps(r)) == r


def test_classification_calibration() -> None:
    r = _three_class_report(with_probs=True)
    cal = r["calibration"]
    assert len(cal["bins"]) == 15
    # conf 0.9 (bin 13): 4 predictions, all correct -> |1 - 0.9| * 4/6
    # conf 0.62 (bin 9): 2 predictions, none correct -> |0 - 0.62| * 2/6
    assert cal["ece"] == approx(0.1 * 4 / 6 + 0.62 * 2 / 6)
    b13, b9 = cal["bins"][13], cal["bins"][9]
    assert (b13["count"], b13["accuracy"], b13["confidence"]) == approx((4, 1.0, 0.9))
    assert (b9["count"], b9["accuracy"], b9["confidence"]) == approx((2, 0.0, 0.62))
    assert sum(b["count"] for b in cal["bins"]) == 6


def test_classification_zero_division_is_zero() -> None:
    r = classification_report(["a", "a"], ["a", "a"], ["a", "b"])
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_classification_unknown_label_raises() -> None:
    with pytest.raises(ValueError, match="not in the label set.*'zzz'"):
        classification_report(["a", "zzz"], ["a", "a"], LABELS)
    with pytest.raises(ValueError, match="y_pred"):
        classification_report(["a", "b"], ["a", "q"], LABELS)


def test_classification_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        classification_report(["a"], ["a", "b"], LABELS)
    with pytest.raises(ValueError, match="shape"):
        classification_report(["a"], ["a"], LABELS, probs=np.ones((1, 2)) / 2)
    with pytest.raises(ValueError, match="duplicates"):
        classification_report(["a"], ["a"], ["a", "a"])


def test_classification_empty_input() -> None:
    r = classification_report([], [], LABELS, probs=np.zeros((0, 3)))
    assert r["accuracy"] == 0.0
    assert r["confusion_matrix"]["matrix"] == [[0, 0, 0]] * 3
    assert r["calibration"]["ece"] == 0.0


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def test_ece_hand_computed() -> None:
    # bin 13 (0.9): acc 1/2, conf 0.9 -> 0.4 * 2/4;  bin 9 (0.65): acc 1 -> 0.35 * 1/4;
    # bin 4 (0.3): acc 0 -> 0.3 * 1/4.  Total 0.2 + 0.0875 + 0.075.
    ece, bins = expected_calibration_error([0.9, 0.9, 0.65, 0.3], [1, 0, 1, 0])
    assert ece == approx(0.3625)
    assert [b["count"] for b in bins if b["count"]] == [1, 1, 2]
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0
    assert all(set(b) == {"lo", "hi", "count", "accuracy", "confidence"} for b in bins)


def test_ece_edges_and_perfect_calibration() -> None:
    # 1.0 lands in the last bin, 0.0 in the first; a confident and always-right model has ECE 0.
    ece, bins = expected_calibration_error([1.0, 1.0, 0.0], [True, True, False], n_bins=10)
    assert ece == 0.0
    assert bins[-1]["count"] == 2 and bins[0]["count"] == 1
    assert expected_calibration_error([], [])[0] == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error([1.5], [1])


# --------------------------------------------------------------------------------------------
# Multi-label
# --------------------------------------------------------------------------------------------


def test_multilabel_report() -> None:
    r = multilabel_report(ML_TRUE, ML_PRED, ML_LABELS)
    assert r["exact_match"] == approx(0.5)  # rows 3 and 4 match exactly
    assert r["per_class"]["x"] == approx({"precision": 1, "recall": 1, "f1": 1, "support": 1})
    assert r["per_class"]["y"] == approx({"precision": 1, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r["per_class"]["z"] == approx({"precision": 0.5, "recall": 1, "f1": 2 / 3, "support": 1})
    # micro: tp 3, fp 1, fn 1.
    assert r["micro"] == approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    assert r["macro"]["f1"] == approx(7 / 9)
    assert r["weighted"]["precision"] == approx(0.875)
    # samples: per-row P 1, 1/2, 1; R 1/2, 1, 1; F1 2/3, 2/3, 1; the empty/empty row is exactly
    # right and scores 1 (unlike sklearn's average="samples" with zero_division=0).
    assert r["samples"] == approx({"precision": 7 / 8, "recall": 7 / 8, "f1": 5 / 6, "support": 4})


def test_multilabel_samples_average_perfect_model_scores_one() -> None:
    rows = [["x"], [], ["y", "z"], []]
    r = multilabel_report(rows, rows, ML_LABELS)
    assert r["exact_match"] == 1.0
    assert r["samples"]["f1"] == 1.0
    # Predicting nothing for an example that has labels still scores 0 on it.
    r = multilabel_report([["x"], []], [[], []], ML_LABELS)
    assert r["samples"] == approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1})
    assert "confusion_matrix" not in r and "calibration" not in r


def test_multilabel_calibration_is_per_pair() -> None:
    truth = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    probs = np.where(truth == 1, 0.95, 0.05)
    r = multilabel_report(ML_TRUE, ML_PRED, ML_LABELS, probs)
    cal = r["calibration"]
    assert sum(b["count"] for b in cal["bins"]) == 12  # 4 examples x 3 labels
    # 8 negatives at 0.05 (fraction positive 0) and 4 positives at 0.95 (fraction 1).
    assert cal["ece"] == approx(0.05)


def test_multilabel_unknown_label_raises() -> None:
    with pytest.raises(ValueError, match="not in the label set"):
        multilabel_report([["x", "w"]], [["x"]], ML_LABELS)


# --------------------------------------------------------------------------------------------
# NER
# --------------------------------------------------------------------------------------------


def test_entity_report_strict_differs_from_lenient() -> None:
    from seqeval.metrics import f1_score

    y_true = [["B-PER", "I-PER", "O"]]
    y_pred = [["I-PER", "I-PER", "O"]]
    # Lenient (conlleval) mode accepts a span that starts with I-; strict IOB2 does not.
    assert f1_score(y_true, y_pred) == approx(1.0)
    r = entity_report(y_true, y_pred)
    assert r["f1"] == 0.0 and r["precision"] == 0.0 and r["recall"] == 0.0
    assert r["per_type"]["PER"]["support"] == 1
    assert r["token_accuracy"] == approx(2 / 3)


def test_entity_report_hand_computed() -> None:
    y_true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    y_pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    r = entity_report(y_true, y_pred)
    # 3 true and 3 predicted entities, 2 right.
    assert (r["precision"], r["recall"], r["f1"]) == approx((2 / 3, 2 / 3, 2 / 3))
    assert r["micro"]["support"] == 3
    assert r["per_type"]["PER"] == approx({"precision": 1, "recall": 1, "f1": 1, "support": 1})
    assert r["per_type"]["LOC"] == approx({"precision": 0, "recall": 0, "f1": 0, "support": 1})
    org = {"precision": 0.5, "recall": 1, "f1": 2 / 3, "support": 1}
    assert r["per_type"]["ORG"] == approx(org)
    assert r["macro"]["f1"] == approx(5 / 9)
    assert r["weighted"]["f1"] == approx(5 / 9)
    assert r["token_accuracy"] == approx(5 / 6)
    assert json.loads(json.dumps(r)) == r


def test_entity_report_no_entities_is_quiet_zeros() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        r = entity_report([["O", "O"]], [["O", "O"]])
        empty = entity_report([], [])
    for rep in (r, empty):
        assert rep["f1"] == 0.0 and rep["per_type"] == {}
        assert rep["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["token_accuracy"] == 1.0


def test_entity_report_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="IOB2"):
        entity_report([["X", "O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="sentence 0"):
        entity_report([["O", "O"]], [["O"]])


# --------------------------------------------------------------------------------------------
# Report files
# --------------------------------------------------------------------------------------------


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def test_write_report_classification(tmp_path: Path) -> None:
    report = _three_class_report(with_probs=True)
    paths = write_report(report, tmp_path / "out", style=SINGLE_LABEL_REPORT, title="Demo eval")
    assert set(paths) == {"json", "markdown", "confusion_matrix", "reliability"}
    assert all(p.parent == tmp_path / "out" for p in paths.values())
    assert json.loads(paths["json"].read_text()) == report
    md = paths["markdown"].read_text()
    assert md.startswith("# Demo eval")
    for needle in ("| a |", "| b |", "| c |", "0.8000", "0.5000", "0.6667", "Confusion matrix",
                   "| a | 2 | 1 | 0 |", "ECE", "reliability.png"):
        assert needle in md, needle
    assert _is_png(paths["confusion_matrix"]) and _is_png(paths["reliability"])
    # Atomic writes leave no temp files behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["report.json", "report.md", "confusion_matrix.png", "reliability.png"]
    )


def test_write_report_many_classes_points_to_png(tmp_path: Path) -> None:
    labels = [f"class_{i}" for i in range(60)]
    y_true = labels * 2
    y_pred = labels[1:] + labels[:1] + labels
    paths = write_report(classification_report(y_true, y_pred, labels), tmp_path,
                         style=SINGLE_LABEL_REPORT, title="Many")
    md = paths["markdown"].read_text()
    assert "class_59" in md and "confusion_matrix.png" in md
    assert "true \\ predicted" not in md  # no 60-column table
    assert "reliability" not in paths
    assert _is_png(paths["confusion_matrix"])


def test_write_report_multilabel_and_ner(tmp_path: Path) -> None:
    probs = np.where(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]) == 1, 0.8, 0.1)
    ml = multilabel_report(ML_TRUE, ML_PRED, ML_LABELS, probs)
    paths = write_report(ml, tmp_path / "ml", style=MULTI_LABEL_REPORT, title="ML")
    assert set(paths) == {"json", "markdown", "reliability"}
    md = paths["markdown"].read_text()
    assert "Exact match" in md and "samples" in md and "| z |" in md
    assert _is_png(paths["reliability"])

    ner = entity_report([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])
    paths = write_report(ner, tmp_path / "ner", style=NER_REPORT, title="NER")
    assert set(paths) == {"json", "markdown", "entity_scores"}
    md = paths["markdown"].read_text()
    assert "| PER |" in md and "Token accuracy" in md and "1.0000" in md and "entity_scores.png" in md
    assert _is_png(paths["entity_scores"])


def test_ner_entity_plot_shows_every_type_and_none_without_entities(tmp_path: Path, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from lmforge.evaluation.plots import plot_entity_scores

    true = [["B-PER", "O", "B-LOC", "B-ORG"], ["B-LOC", "I-LOC", "O", "O"]]
    pred = [["B-PER", "O", "B-ORG", "B-ORG"], ["B-LOC", "I-LOC", "O", "B-PER"]]
    per_type = entity_report(true, pred)["per_type"]
    captured = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):  # read the drawn axes before the figure is closed
        ax = fig.axes[0]
        captured["ticks"] = [t.get_text() for t in ax.get_yticklabels()]
        captured["widths"] = sorted(round(p.get_width(), 4) for p in ax.patches)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    path = plot_entity_scores(per_type, tmp_path / "e.png")
    assert _is_png(path)
    assert captured["ticks"] == ["LOC  (n=2)", "ORG  (n=1)", "PER  (n=1)"]  # most frequent first
    expected = sorted(round(per_type[t][m], 4) for t in per_type for m in ("precision", "recall", "f1"))
    assert captured["widths"] == expected
    empty = write_report(entity_report([["O", "O"]], [["O", "O"]]), tmp_path / "none", style=NER_REPORT, title="x")
    assert "entity_scores" not in empty


def test_multilabel_report_markdown_shows_threshold_and_empty_share(tmp_path: Path) -> None:
    report = multilabel_report(ML_TRUE, ML_PRED, ML_LABELS)
    report["threshold"] = 0.3125
    md = write_report(report, tmp_path, style=MULTI_LABEL_REPORT, title="ML")["markdown"].read_text()
    assert "| Decision threshold (a label is predicted at probability >= this) | 0.3125 |" in md
    assert "| Examples with no predicted label (share) | 0.2500 |" in md


def test_entity_f1_is_seqevals_strict_micro_f1_for_valid_iob2_and_refuses_the_rest():
    """The fast F1 that tunes NER decoding equals entity_report's f1 to the last bit on valid IOB2
    (random sequences, hyphenated and dotted types, empty sentences and corpora); ill-formed tags or
    lengths give None, so that the caller falls back to seqeval."""
    import random

    from lmforge.evaluation.ner_metrics import entity_f1, entity_report

    rng = random.Random(0)
    types = ["PER", "LOC", "GPE.NAM", "WORK-OF-ART"]

    def sentence(n):
        out, previous = [], "O"
        for _ in range(n):
            r = rng.random()
            tag = "O" if r < 0.5 else f"B-{rng.choice(types)}" if r < 0.75 or previous == "O" else f"I-{previous[2:]}"
            out.append(tag)
            previous = tag
        return out

    for _ in range(500):
        lengths = [rng.randint(0, 12) for _ in range(rng.randint(0, 10))]
        gold = [sentence(n) for n in lengths]
        pred = [sentence(n) if rng.random() < 0.5 else list(g) for n, g in zip(lengths, gold)]
        assert entity_f1(gold, pred) == entity_report(gold, pred)["f1"]
    assert entity_f1([["I-PER"]], [["O"]]) is None  # not valid IOB2 (seqeval strict drops it)
    assert entity_f1([["B-PER", "I-LOC"]], [["O", "O"]]) is None
    assert entity_f1([["B-PER"]], [["O", "O"]]) is None and entity_f1([["O"]], []) is None
