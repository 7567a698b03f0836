"""The promotion gate of a continual update: does the candidate keep what the parent knew, and did it
learn the new data?

Checks (thresholds configurable, defaults in `GateThresholds`):
- for every old evaluation set: the candidate's macro-F1 is at most `max_old_drop` points below the
  parent's (macro-F1 over the classes present in that set, so new labels never dilute it);
- on the new data's held-out part: the candidate's macro-F1 reaches `new_floor`.
The report also lists the F1 of every old class before and after (worst drops first).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..data.types import TextExample


@dataclass(frozen=True)
class GateThresholds:
    max_old_drop: float = 1.0   # macro-F1 points the candidate may lose on each old evaluation set
    new_floor: float = 0.7      # macro-F1 the candidate must reach on the new held-out data


def set_scores(gold: list[str], predicted: list[str]) -> dict:
    """Accuracy and macro-F1 over the gold classes of a set, plus per-class F1."""
    from sklearn.metrics import f1_score

    classes = sorted(set(gold))
    per_class = f1_score(gold, predicted, labels=classes, average=None, zero_division=0)
    accuracy = sum(g == p for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0
    return {"examples": len(gold), "accuracy": round(float(accuracy), 5),
            "macro_f1": round(float(per_class.mean()) if classes else 0.0, 5),
            "per_class_f1": {c: round(float(f), 5) for c, f in zip(classes, per_class)}}


def _labels(predictor, examples: list[TextExample]) -> list[str]:
    return [p["label"] for p in predictor.predict_examples(examples)] if examples else []


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
        b, a = set_scores(gold, before), set_scores(gold, after)
        drop = round((b["macro_f1"] - a["macro_f1"]) * 100, 2)
        sets[name] = {"kind": "old", "parent": _summary(b), "candidate": _summary(a), "macro_f1_drop_points": drop}
        checks.append({"name": f"old:{name}", "passed": drop <= thresholds.max_old_drop,
                       "detail": f"macro-F1 {b['macro_f1'] * 100:.2f} -> {a['macro_f1'] * 100:.2f} "
                                 f"(drop {drop:.2f} points; at most {thresholds.max_old_drop:g} allowed)"})
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
    return {"passed": all(c["passed"] for c in checks), "thresholds": asdict(thresholds), "checks": checks,
            "sets": sets, "old_classes": per_class}


def _summary(scores: dict) -> dict:
    return {k: scores[k] for k in ("examples", "accuracy", "macro_f1")}


def gate_markdown(report: dict, title: str) -> str:
    """The gate report as Markdown (written next to gate.json)."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [f"# {title}: gate {verdict}", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {'pass' if c['passed'] else 'FAIL'} | {c['detail']} |" for c in report["checks"]]
    lines += ["", "| set | parent acc | parent macro-F1 | candidate acc | candidate macro-F1 |", "|---|---|---|---|---|"]
    for name, s in report["sets"].items():
        p = s.get("parent") or {}
        c = s["candidate"]
        fmt = lambda v: f"{v * 100:.2f}" if isinstance(v, float) else "-"  # noqa: E731
        lines.append(f"| {name} | {fmt(p.get('accuracy'))} | {fmt(p.get('macro_f1'))} | {fmt(c['accuracy'])} | {fmt(c['macro_f1'])} |")
    if report["old_classes"]:
        lines += ["", "Old classes with the largest F1 drop:", "", "| class | parent F1 | candidate F1 | drop (points) |",
                  "|---|---|---|---|"]
        lines += [f"| {r['label']} | {r['parent_f1'] * 100:.1f} | {r['candidate_f1'] * 100:.1f} | {r['drop_points']:.1f} |"
                  for r in report["old_classes"][:15]]
    return "\n".join(lines) + "\n"
