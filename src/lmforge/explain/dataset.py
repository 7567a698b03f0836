"""Global explanations: the words that most support each predicted class over a set of texts.

Every text is explained with `explain_text` (target = the predicted label). Word scores are
aggregated per predicted class by lowercased word: mean attribution and count. Words seen once are
left out unless that leaves fewer than `top_k` words for the class. The top words are those with the
highest mean score, i.e. that most support the class.

Token classification is supported too: each text's first predicted entity is explained and the
word scores are aggregated per entity type (texts without an entity are skipped and counted).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..files import write_text_atomic
from .attributions import explain_text

JSON_NAME = "global.json"
MD_NAME = "global.md"
PNG_NAME = "global.png"
PLOT_MAX_CLASSES = 12


def explain_dataset(predictor, examples: list, *, top_k: int = 15, steps: int = 20, limit: int | None = 200,
                    progress: Callable[[int], None] | None = None) -> dict:
    """Aggregate word attributions per predicted class (NER: per entity type of the first entity).

    `examples`: TextExample (classification) or TokenExample with `text` or `words` (NER), as
    `lmforge.predict_files.read_inputs` returns them. Returns {"classes": {class: [{"word", "mean_score",
    "count"}...]}, "examples": n explained, "skipped": n without an entity (NER), "steps", "top_k",
    "task", "unit" (what a class is), "per_class": {class: n texts}, "mean_abs_delta": mean |convergence delta| (large: use more
    steps)}."""
    if top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    ner = predictor.task.token_level
    chosen = examples[:limit] if limit else examples
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_class: dict[str, int] = defaultdict(int)
    explained = skipped = 0
    deltas: list[float] = []
    for ex in chosen:
        if ner:
            text = ex.text if getattr(ex, "text", None) is not None else " ".join(ex.words)
            try:
                result = explain_text(predictor, text, entity=0, steps=steps)
            except UserError:  # no entity predicted: the only error entity 0 can raise
                skipped += 1
                if progress is not None:
                    progress(1)
                continue
            key = result["target"]["type"]
        else:
            result = explain_text(predictor, ex.text, text_pair=ex.text_pair, steps=steps)
            key = result["target"]
        explained += 1
        deltas.append(abs(result["delta"]))
        per_class[key] += 1
        for w in result["words"]:
            scores[key][w["word"].lower()].append(w["score"])
        if progress is not None:
            progress(1)
    order = predictor.task.labels if not ner else sorted(scores)
    classes = {key: _top(scores[key], top_k) for key in order if key in scores}
    return {"classes": classes, "examples": explained, "skipped": skipped, "steps": steps, "top_k": top_k,
            "task": predictor.task.name, "unit": "entity type" if ner else "predicted class", "per_class": {k: per_class[k] for k in classes},
            "mean_abs_delta": round(sum(deltas) / len(deltas), 6) if deltas else 0.0}


def _top(words: dict[str, list[float]], top_k: int) -> list[dict]:
    rows = [{"word": w, "mean_score": round(sum(s) / len(s), 6), "count": len(s)} for w, s in words.items()]
    frequent = [r for r in rows if r["count"] >= 2]
    if len(frequent) >= top_k:
        rows = frequent
    rows.sort(key=lambda r: (-r["mean_score"], -r["count"], r["word"]))
    return rows[:top_k]


# -- report ----------------------------------------------------------------------------------------
def write_global_report(result: dict, out_dir: str | Path) -> list[Path]:
    """Write global.json, global.md (a table per class) and global.png (bar plots) into `out_dir`."""
    from ..evaluation.report import pretty_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / JSON_NAME, out_dir / MD_NAME, out_dir / PNG_NAME]
    write_text_atomic(paths[0], pretty_json(result) + "\n")
    write_text_atomic(paths[1], render_global_markdown(result))
    plot_global(result, paths[2])
    return paths


def render_global_markdown(result: dict) -> str:
    """The Markdown of global.md: one table of top words per class."""
    unit = result.get("unit", "predicted class")
    lines = ["# Most influential words", "",
             f"{result['examples']} texts explained with integrated gradients ({result['steps']} steps); "
             f"word attributions averaged per {unit}. Positive scores support the class. "
             f"Mean |convergence delta|: {result.get('mean_abs_delta', 0.0):.4f} (large values: use more steps).", ""]
    if result.get("skipped"):
        lines += [f"{result['skipped']} texts without a predicted entity were skipped.", ""]
    if not result["classes"]:
        lines += ["No texts were explained.", ""]
    for name, rows in result["classes"].items():
        n = result.get("per_class", {}).get(name, "?")
        lines += [f"## {_cell(name)} ({n} {'text' if n == 1 else 'texts'})", "",
                  "| Word | Mean score | Count |", "| --- | ---: | ---: |"]
        lines += [f"| {_cell(r['word'])} | {r['mean_score']:.4f} | {r['count']} |" for r in rows]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_global(result: dict, path: Path) -> Path:
    """One horizontal bar plot per class (at most PLOT_MAX_CLASSES, most frequent first)."""
    from ..evaluation.plots import pyplot, save_figure, short_label

    plt = pyplot()
    per_class = result.get("per_class", {})
    names = sorted(result["classes"], key=lambda n: -per_class.get(n, 0))
    shown = names[:PLOT_MAX_CLASSES]
    cols = min(3, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    height = max(3.0, 0.28 * max((len(result["classes"][n]) for n in shown), default=1) + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    if not shown:
        axes[0][0].text(0.5, 0.5, "no texts explained", ha="center", va="center")
    for ax, name in zip(axes.flat, shown):
        data = result["classes"][name][::-1]  # largest at the top
        values = [r["mean_score"] for r in data]
        ax.barh([short_label(r["word"]) for r in data], values, color=["#16a34a" if v >= 0 else "#dc2626" for v in values])
        ax.axvline(0, color="#333333", linewidth=0.8)
        ax.set_title(f"{short_label(name)} (n = {per_class.get(name, '?')})", fontsize=11)
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(axis="x", alpha=0.3)
    if len(names) > len(shown):
        fig.suptitle(f"{len(shown)} of {len(names)} classes shown (the most frequent); all are in {JSON_NAME}",
                     fontsize=11)
    save_figure(fig, path, dpi=110)
    return path


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
