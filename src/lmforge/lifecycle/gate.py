"""The promotion gate of a continual update: does the candidate keep what the parent knew, and did it
learn the new data?

Checks (thresholds configurable, defaults in `GateThresholds`), on every old evaluation set:
- accuracy: the candidate's is at most `max_old_accuracy_drop` points below the parent's;
- macro-F1 over the union label set (the set's gold labels and every label either model answered on
  it): at most `max_old_drop` points below the parent's. A label with no gold example in the set and
  no prediction scores F1 1 (nothing to find, nothing wrongly claimed), so a candidate that answers old
  examples with a new label loses that label's F1 as well as the old class's recall; a macro-F1 over
  the gold classes alone barely moves when forgetting sends old examples to new labels;
and on the new data's held-out part: the candidate's macro-F1 reaches `new_floor`.
The report also gives, per old set, how many examples the candidate answered with a label the parent
does not know, and the F1 of every old class before and after (worst drops first).

`lmforge update` scores the gate on examples that neither trained the candidate nor chose its
checkpoint (`lifecycle.update.gate_split`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from ..data.types import TextExample


@dataclass(frozen=True)
class GateThresholds:
    max_old_drop: float = 1.0   # macro-F1 points (union label set) the candidate may lose on each old evaluation set
    new_floor: float = 0.7      # macro-F1 the candidate must reach on the new held-out data
    max_old_accuracy_drop: float = 1.0  # accuracy points the candidate may lose on each old evaluation set


def set_scores(gold: list[str], predicted: list[str], classes: list[str] | None = None) -> dict:
    """Accuracy, and per-class F1 and macro-F1 over `classes` (default: the gold classes of the set).
    F1 = 2tp / (2tp + fp + fn); a class with no gold example and no prediction scores 1."""
    classes = sorted(set(gold)) if classes is None else list(classes)
    tp: Counter = Counter(g for g, p in zip(gold, predicted) if g == p)
    gold_n, pred_n = Counter(gold), Counter(predicted)
    # 2tp + fp + fn = (tp + fp) + (tp + fn) = predicted count + gold count
    per_class = {c: (2 * tp[c] / (pred_n[c] + gold_n[c]) if pred_n[c] + gold_n[c] else 1.0) for c in classes}
    accuracy = sum(tp.values()) / len(gold) if gold else 0.0
    return {"examples": len(gold), "accuracy": round(float(accuracy), 5),
            "macro_f1": round(sum(per_class.values()) / len(classes), 5) if classes else 0.0,
            "per_class_f1": {c: round(float(f), 5) for c, f in per_class.items()}}


def _labels(predictor, examples: list[TextExample]) -> list[str]:
    return [p["label"] for p in predictor.predict_examples(examples)] if examples else []


def old_set_scores(gold: list[str], before: list[str], after: list[str], parent_labels: set[str]) -> dict:
    """Parent (`before`) and candidate (`after`) on one old set: accuracy and union-label macro-F1 of
    each, the drops in points, and the candidate's answers outside the parent's labels."""
    classes = sorted(set(gold) | set(before) | set(after))
    b, a = set_scores(gold, before, classes), set_scores(gold, after, classes)
    return {"kind": "old", "parent": _summary(b), "candidate": _summary(a), "labels_scored": len(classes),
            "accuracy_drop_points": round((b["accuracy"] - a["accuracy"]) * 100, 2),
            "macro_f1_drop_points": round((b["macro_f1"] - a["macro_f1"]) * 100, 2),
            "answered_with_new_label": sum(label not in parent_labels for label in after)}


def _old_checks(name: str, scores: dict, thresholds: GateThresholds) -> list[dict]:
    b, a = scores["parent"], scores["candidate"]
    acc_drop, f1_drop = scores["accuracy_drop_points"], scores["macro_f1_drop_points"]
    return [{"name": f"old:{name} accuracy", "passed": acc_drop <= thresholds.max_old_accuracy_drop,
             "detail": f"accuracy {b['accuracy'] * 100:.2f} -> {a['accuracy'] * 100:.2f} (drop {acc_drop:.2f} points; "
                       f"at most {thresholds.max_old_accuracy_drop:g} allowed); {scores['answered_with_new_label']} of "
                       f"{a['examples']} answered with a new label"},
            {"name": f"old:{name} macro-F1", "passed": f1_drop <= thresholds.max_old_drop,
             "detail": f"macro-F1 over {scores['labels_scored']} labels (gold and answered) {b['macro_f1'] * 100:.2f} -> "
                       f"{a['macro_f1'] * 100:.2f} (drop {f1_drop:.2f} points; at most {thresholds.max_old_drop:g} allowed)"}]


def _parent_labels(parent, examples_gold: list[str], before: list[str]) -> set[str]:
    task = getattr(parent, "task", None)
    return set(task.labels) if task is not None else set(examples_gold) | set(before)


def gate_report(parent, candidate, old_sets: dict[str, list[TextExample]], new_set: list[TextExample],
                thresholds: GateThresholds = GateThresholds()) -> dict:
    """Evaluate `parent` and `candidate` (Predictors) and decide. Returns a JSON-serialisable report."""
    checks, sets = [], {}
    old_gold: list[str] = []
    old_parent: list[str] = []
    old_candidate: list[str] = []
    for name, examples in old_sets.items():
        gold = [ex.labels[0] for ex in examples]
        before, after = _labels(parent, examples), _labels(candidate, examples)
        old_gold += gold
        old_parent += before
        old_candidate += after
        sets[name] = old_set_scores(gold, before, after, _parent_labels(parent, gold, before))
        checks += _old_checks(name, sets[name], thresholds)
    if new_set:
        gold = [ex.labels[0] for ex in new_set]
        after = set_scores(gold, _labels(candidate, new_set))
        sets["new"] = {"kind": "new", "candidate": _summary(after)}
        checks.append({"name": "new", "passed": after["macro_f1"] >= thresholds.new_floor,
                       "detail": f"macro-F1 {after['macro_f1'] * 100:.2f} on {len(gold)} held-out new examples "
                                 f"(floor {thresholds.new_floor * 100:.2f})"})
    per_class = []
    if old_gold:
        b, a = set_scores(old_gold, old_parent), set_scores(old_gold, old_candidate)
        for label in b["per_class_f1"]:
            before, after = b["per_class_f1"][label], a["per_class_f1"][label]
            per_class.append({"label": label, "parent_f1": before, "candidate_f1": after,
                              "drop_points": round((before - after) * 100, 2)})
        per_class.sort(key=lambda row: -row["drop_points"])
    overall = old_set_scores(old_gold, old_parent, old_candidate, _parent_labels(parent, old_gold, old_parent)) \
        if old_gold else None
    return {"passed": all(c["passed"] for c in checks), "thresholds": asdict(thresholds), "checks": checks,
            "failed": [c["name"] for c in checks if not c["passed"]], "sets": sets, "old_overall": overall,
            "old_classes": per_class}


def gate_failed(report: dict | None) -> bool:
    """Whether a stored gate report says the candidate failed (None: no gate, e.g. a first version)."""
    return isinstance(report, dict) and report.get("passed") is False


def failing_checks(report: dict) -> list[str]:
    """"name (detail)" of every failed check of a stored gate report (what a refused promote lists)."""
    checks = report.get("checks")
    if not isinstance(checks, list):
        return []
    return [f"{c.get('name', '?')}" + (f" ({c['detail']})" if c.get("detail") else "")
            for c in checks if isinstance(c, dict) and c.get("passed") is False]


def _summary(scores: dict) -> dict:
    return {k: scores[k] for k in ("examples", "accuracy", "macro_f1")}


def gate_markdown(report: dict, title: str) -> str:
    """The gate report as Markdown (written next to gate.json)."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [f"# {title}: gate {verdict}", ""]
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    if failed:
        lines += [f"Failed: {', '.join(failed)}.", ""]
    selection = report.get("checkpoint_selection")
    if selection:
        lines += [f"The checkpoint was chosen on {selection['examples']} held-out examples ({selection['file']}); the "
                  "gate scores the other half of each held-out set, which chose nothing.", ""]
    lines += ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {'pass' if c['passed'] else 'FAIL'} | {c['detail']} |" for c in report["checks"]]
    lines += ["", "Old sets: accuracy, and macro-F1 over the set's gold labels plus every label answered on it "
              "(an old example answered with a new label counts against that label too).", "",
              "| set | examples | parent acc | candidate acc | acc drop | parent macro-F1 | candidate macro-F1 | "
              "macro-F1 drop | answered with a new label |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{v * 100:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
    rows = [(name, s) for name, s in report["sets"].items() if s["kind"] == "old"]
    if report.get("old_overall"):
        rows.append(("all old sets", report["old_overall"]))
    for name, s in rows:
        p, c = s["parent"], s["candidate"]
        lines.append(f"| {name} | {c['examples']} | {fmt(p['accuracy'])} | {fmt(c['accuracy'])} | {s['accuracy_drop_points']:.2f} | "
                     f"{fmt(p['macro_f1'])} | {fmt(c['macro_f1'])} | {s['macro_f1_drop_points']:.2f} | {s['answered_with_new_label']} |")
    if "new" in report["sets"]:
        c = report["sets"]["new"]["candidate"]
        lines += ["", f"New held-out examples: {c['examples']}, candidate accuracy {fmt(c['accuracy'])}, "
                      f"macro-F1 {fmt(c['macro_f1'])}."]
    if report["old_classes"]:
        lines += ["", "Old classes with the largest F1 drop:", "", "| class | parent F1 | candidate F1 | drop (points) |",
                  "|---|---|---|---|"]
        lines += [f"| {r['label']} | {r['parent_f1'] * 100:.1f} | {r['candidate_f1'] * 100:.1f} | {r['drop_points']:.1f} |"
                  for r in report["old_classes"][:15]]
    return "\n".join(lines) + "\n"
