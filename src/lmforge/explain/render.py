"""Show an explanation: a Rich heat-map in the terminal, or a self-contained HTML page.

Each word's background is green when it supports the target (positive score) and red when it
speaks against it, with intensity |score| / FULL_SCALE: a fixed reference in probability units, not
the largest score of the text, so a model that barely moves its probability looks pale instead of
decisive. Text between words, and words the model did not see (cut off), is shown unshaded.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..files import write_text_atomic

_GREEN = (22, 163, 74)
_RED = (220, 38, 38)
CONVERGENCE_TOLERANCE = 0.05  # |delta| above this: suggest more steps
# A word whose attribution moves the target's probability by this much (or more) is fully coloured.
# Scores add up to p(target) - p(baseline), so on a confident prediction the few decisive words of a
# sentence reach it; on a near-random model every word stays pale.
FULL_SCALE = 0.25
SCALE_NOTE = (f"intensity = |score| / {FULL_SCALE} (a word that moves the target's probability by {FULL_SCALE} "
              "or more is fully coloured)")


def _intensities(words: list[dict]) -> list[float]:
    return [max(-1.0, min(1.0, w["score"] / FULL_SCALE)) for w in words]


def _rgb(signed: float) -> tuple[int, int, int]:
    """White blended towards green (signed > 0) or red (signed < 0) by |signed| in [0, 1]."""
    base = _GREEN if signed >= 0 else _RED
    t = min(1.0, abs(signed))
    return tuple(round(255 + (c - 255) * t) for c in base)  # type: ignore[return-value]


def _segments(result: dict) -> list[tuple[str, list[tuple[dict, float]]]]:
    """(text, [(word, signed intensity)...]) per segment, words sorted by start."""
    words = result["words"]
    shade = _intensities(words)
    texts = [result.get("text") or " ".join(w["word"] for w in words)]
    if result.get("text_pair") is not None:
        texts.append(result["text_pair"])
    out = []
    for seg, text in enumerate(texts):
        mine = sorted(((w, s) for w, s in zip(words, shade) if w.get("segment", 0) == seg), key=lambda p: p[0]["start"])
        out.append((text, mine))
    return out


def _pieces(text: str, words: list[tuple[dict, float]]):
    """Yield (string, word or None, intensity) covering `text` in order."""
    pos = 0
    for w, s in words:
        if w["start"] < pos:
            continue
        if w["start"] > pos:
            yield text[pos:w["start"]], None, 0.0
        yield text[w["start"]:w["end"]], w, s
        pos = w["end"]
    if pos < len(text):
        yield text[pos:], None, 0.0


def target_line(result: dict) -> str:
    """One line: what was explained, its probability and the convergence delta."""
    target = result["target"]
    if isinstance(target, dict):
        what = f"entity {target['index']}: {target['type']} {target['text']!r} [{target['start']}:{target['end']}]"
    else:
        what = f"target: {target}"
    return (f"{what}   probability {result['probability']:.4f}   baseline {result['f_baseline']:.4f}   "
            f"delta {result['delta']:+.2e}   ({result['steps']} steps, {result['baseline']} baseline)")


def convergence_note(result: dict, tolerance: float = CONVERGENCE_TOLERANCE) -> str:
    """A hint to use more steps when the attributions do not add up to f(x) - f(baseline)."""
    if abs(result["delta"]) <= tolerance:
        return ""
    return (f"the scores do not add up to the probability change (delta {result['delta']:+.3f}); "
            f"explain again with more steps (now {result['steps']})")


def render_terminal(result: dict, console) -> None:
    """Print the heat-map of `result` (from `explain_text`) and a summary line on a Rich console."""
    from rich.text import Text

    for i, (text, words) in enumerate(_segments(result)):
        line = Text()
        if i:
            line.append("pair: ", style="dim")
        for piece, word, shade in _pieces(text, words):
            if word is None or shade == 0:
                line.append(piece)
            else:
                r, g, b = _rgb(shade)
                line.append(piece, style=f"black on rgb({r},{g},{b})")
        console.print(line)
    note = "   (the model saw only part of the text)" if result.get("truncated") else ""
    console.print(Text(target_line(result) + note, style="bold"))
    hint = convergence_note(result)
    if hint:
        console.print(Text(hint, style="yellow"))
    console.print(Text(f"green supports the target, red speaks against it; {SCALE_NOTE}", style="dim"))


_CSS = """body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#111}
.text{font-size:1.25em;line-height:2.1;white-space:pre-wrap}
.w{padding:.1em .15em;border-radius:.25em;cursor:default}
.meta{margin-top:1.5em;color:#333}.legend{color:#666;font-size:.9em}
.pos{background:rgb(22,163,74);color:#fff;padding:0 .3em}.neg{background:rgb(220,38,38);color:#fff;padding:0 .3em}"""


def render_fragment(result: dict) -> str:
    """The shaded text and its legend as an HTML fragment (inline styles, no scripts; all text escaped).
    The page `render_html` writes and the studio's playground both show this."""
    esc = html.escape
    blocks = []
    for i, (text, words) in enumerate(_segments(result)):
        parts = []
        for piece, word, shade in _pieces(text, words):
            if word is None:
                parts.append(esc(piece))
                continue
            r, g, b = _rgb(shade)
            tip = f"{word['word']}: {word['score']:+.6f}"
            parts.append(f'<span class="w" style="background:rgb({r},{g},{b})" title="{esc(tip)}">{esc(piece)}</span>')
        label = '<div class="legend">pair</div>' if i else ""
        blocks.append(f'{label}<div class="text">{"".join(parts)}</div>')
    truncated = "<p>The model saw only part of the text.</p>" if result.get("truncated") else ""
    hint = convergence_note(result)
    truncated += f"<p><strong>{esc(hint.capitalize())}.</strong></p>" if hint else ""
    return f"""{''.join(blocks)}
<div class="meta"><p>{esc(target_line(result))}</p>{truncated}
<p class="legend"><span class="pos">supports</span> <span class="neg">against</span> the target; {esc(SCALE_NOTE)}.
Hover a word for its score (integrated gradients, summed over its sub-word tokens).</p></div>"""


def render_html(result: dict, title: str | None = None) -> str:
    """A self-contained HTML page (inline CSS, no scripts or external resources; all text escaped)."""
    title = html.escape(title or "lmforge explanation")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body><h1>{title}</h1>
{render_fragment(result)}
</body></html>
"""


def write_html(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Write `render_html(result)` to `path` atomically; returns the path."""
    path = Path(path)
    write_text_atomic(path, render_html(result, title))
    return path
