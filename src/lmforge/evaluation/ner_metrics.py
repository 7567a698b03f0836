"""Entity-level metrics for token classification (NER).

Scores with seqeval in **strict** mode under the IOB2 scheme: an entity counts only when its type
and exact span match, and a span must start with `B-`. (seqeval's default "lenient" mode, the
conlleval behaviour, would also accept spans that begin with a stray `I-`; that flatters a model
that emits ill-formed tag sequences, so we do not use it.)

All numbers are plain Python floats/ints so the report serialises to JSON.
"""

from __future__ import annotations

import math
import re
import warnings

from seqeval.metrics import classification_report as _seqeval_report
from seqeval.scheme import IOB2

# IOB2 tags seqeval's strict IOB2 parser understands; anything else makes it raise a KeyError.
_TAG_RE = re.compile(r"^(O|[BI]-.+)$")
_AVERAGES = {"micro": "micro avg", "macro": "macro avg", "weighted": "weighted avg"}


def _num(value: float) -> float:
    # seqeval's macro average is a mean over zero entity types (NaN) when no entity exists.
    value = float(value)
    return 0.0 if math.isnan(value) else value


def _prf(row: dict) -> dict:
    return {
        "precision": _num(row["precision"]),
        "recall": _num(row["recall"]),
        "f1": _num(row["f1-score"]),
        "support": int(row["support"]),
    }


def _validate(y_true: list[list[str]], y_pred: list[list[str]]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred differ in number of sentences: {len(y_true)} vs {len(y_pred)}"
        )
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} true tags but {len(p)} predicted tags")
    bad = sorted({tag for seq in (*y_true, *y_pred) for tag in seq if not _TAG_RE.match(tag)})
    if bad:
        raise ValueError(f"tags must be 'O', 'B-TYPE' or 'I-TYPE' (IOB2); found {bad[:20]}")


def _token_accuracy(y_true: list[list[str]], y_pred: list[list[str]]) -> float:
    total = sum(len(seq) for seq in y_true)
    if total == 0:
        return 0.0
    hits = sum(t == p for ts, ps in zip(y_true, y_pred) for t, p in zip(ts, ps))
    return hits / total


def entity_report(y_true: list[list[str]], y_pred: list[list[str]]) -> dict:
    """Entity-level report for IOB2 tag sequences (one list of tags per sentence).

    Returns `{"num_sentences", "precision", "recall", "f1" (overall = micro), "per_type": {TYPE:
    {precision, recall, f1, support}}, "micro", "macro", "weighted", "token_accuracy"}`; each
    average is `{precision, recall, f1, support}` with support = number of true entities.
    With no entities at all every score is 0.0 (no warnings). Raises ValueError on length
    mismatches or tags that are not IOB2.
    """
    y_true = [list(seq) for seq in y_true]
    y_pred = [list(seq) for seq in y_pred]
    _validate(y_true, y_pred)

    report: dict = {"num_sentences": len(y_true)}
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    if not y_true:
        # seqeval rejects an empty corpus outright; an empty split still gets a full report.
        raw: dict = {}
    else:
        with warnings.catch_warnings():
            # No entities -> numpy "mean of empty slice" and seqeval's undefined-metric warnings;
            # the zeros we report are the documented answer, so the warnings are noise.
            warnings.simplefilter("ignore")
            raw = _seqeval_report(
                y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
            )

    averages = {
        key: (_prf(raw[name]) if name in raw else dict(zero)) for key, name in _AVERAGES.items()
    }
    per_type = {
        name: _prf(row) for name, row in sorted(raw.items()) if name not in _AVERAGES.values()
    }
    report["precision"] = averages["micro"]["precision"]
    report["recall"] = averages["micro"]["recall"]
    report["f1"] = averages["micro"]["f1"]
    report["per_type"] = per_type
    report.update(averages)
    report["token_accuracy"] = _token_accuracy(y_true, y_pred)
    return report


def entity_f1(y_true: list[list[str]], y_pred: list[list[str]]) -> float | None:
    """`entity_report(y_true, y_pred)["f1"]`, computed the way seqeval computes its micro average but
    without the full report (tuning a decoding setting scores dev many times), for sequences that
    are all valid IOB2 (every I-X continues an X entity): there strict IOB2 entities are exactly the
    B-X I-X* runs. None when a sequence is not valid IOB2 (use `entity_report`)."""
    from ..data.schemes import tags_to_spans

    if len(y_true) != len(y_pred) or not all(_valid_iob2(seq) for seq in (*y_true, *y_pred)):
        return None
    true_count = pred_count = hits = 0
    for gold, pred in zip(y_true, y_pred):
        if len(gold) != len(pred):
            return None
        gold_spans, pred_spans = set(tags_to_spans(list(gold))), set(tags_to_spans(list(pred)))
        true_count, pred_count, hits = true_count + len(gold_spans), pred_count + len(pred_spans), hits + len(gold_spans & pred_spans)
    precision = hits / pred_count if pred_count else 0.0
    recall = hits / true_count if true_count else 0.0
    denominator = 1.0 * precision + recall  # seqeval's (1 + beta^2) p r / (beta^2 p + r) at beta 1, in its order
    return (1 + 1.0) * precision * recall / denominator if denominator else 0.0


def _valid_iob2(tags) -> bool:
    previous = "O"
    for tag in tags:
        if not _TAG_RE.match(tag) or (tag[0] == "I" and (previous == "O" or previous[2:] != tag[2:])):
            return False
        previous = tag
    return True
