"""How long may a training text be? `init` sizes data.max_length for tasks whose inputs must fit in it.

NER splits a sentence longer than data.max_length across windows whose parts do not see each other:
on Weibo NER (me5-small, where 7% of the training sentences are longer than 128 tokens) test F1 at
256 was 58.69 ± 1.75 against 57.15 ± 3.42 at 128 (3 seeds each, bench/multilingual.py).
Classification truncates every text at data.max_length tokens (default 128). Chinese reviews under
me5-small's tokenizer are 77 tokens on average but 13% of ChnSentiCorp's training texts are longer
than 128: their ends, where a review often turns, were never seen. `init` measures the first
training texts and writes the smallest of 128, 256, 512 that cuts at most 2% of them.
"""

from __future__ import annotations

from collections.abc import Sequence

LENGTH_CHOICES = (128, 256, 512)
TOLERATED_CUT = 0.02  # share of training texts that may be truncated


def fitting_max_length(lengths: Sequence[int], default: int, model_limit: int | None = None, *, unit: str = "texts",
                       overflow: str = "longer texts are cut at data.max_length") -> tuple[int, str | None]:
    """(max_length, note): `default` when it cuts at most TOLERATED_CUT of `lengths` (token counts
    with special tokens), else the smallest larger choice that does (or the model's limit); the note
    says why, for init's summary."""
    if not lengths:
        return default, None
    longer = lambda limit: sum(n > limit for n in lengths) / len(lengths)  # noqa: E731
    if longer(default) <= TOLERATED_CUT:
        return default, None
    limit = model_limit or LENGTH_CHOICES[-1]
    choice = next((c for c in LENGTH_CHOICES if c > default and c <= limit and longer(c) <= TOLERATED_CUT), None)
    if choice is None:
        choice = max((c for c in LENGTH_CHOICES if c <= limit), default=default)
    if choice <= default:
        return default, None
    return choice, (f"data.max_length: {choice} — {longer(default):.0%} of the first {len(lengths):,} training {unit} are longer "
                    f"than {default} tokens ({longer(choice):.1%} longer than {choice}); {overflow}")
