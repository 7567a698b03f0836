"""Explanations of predictions: integrated-gradients token and word attributions for one text
(`explain_text`), shown as a terminal heat-map or an HTML page, and aggregated over a dataset into
the most influential words per class (`explain_dataset`, `write_global_report`).

`explain_text` returns a dict:
    target       classification: the explained label; NER: the entity dict plus its "index"
    probability  f(input): the target's probability (NER: mean tag probability over the entity's words)
    prediction   `Predictor.predict` output for the text
    tokens       [{"token", "start", "end", "score"[, "segment"]}] non-special tokens, char offsets into
                 the text (segment 1: into text_pair)
    words        [{"word", "start", "end"[, "segment"], "score"}] token scores summed per word
    delta        sum of token scores - (f_x - f_baseline): captum's convergence delta
    f_x, f_baseline, steps, method ("integrated_gradients"), baseline ("pad" or "mask")
    truncated    the model saw only part of the text (classification: cut to max_length; NER: one window)
    text, text_pair
"""

from .attributions import explain_text, token_rows, word_rows
from .dataset import explain_dataset, render_global_markdown, write_global_report
from .render import convergence_note, render_html, render_terminal, write_html

__all__ = ["explain_text", "token_rows", "word_rows", "explain_dataset", "write_global_report",
           "render_global_markdown", "render_html", "render_terminal", "write_html", "convergence_note"]
