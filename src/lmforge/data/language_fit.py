"""Does the model read the language of the data? Two cheap checks that stop a silent failure.

- The unknown-token rate of the training data under the model's tokenizer: MiniLM's uncased
  English WordPiece vocabulary turns 63% of Chinese review tokens into [UNK]; a model trained on
  that learns nothing and says nothing. `validate` and `train` report the rate and warn above
  UNKNOWN_WARN, naming a packaged model that covers the text.
- The share of letters outside the Latin script, which `init` uses to pick the multilingual
  packaged model for a training file that is mostly Chinese, Arabic, Cyrillic, ...
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

UNKNOWN_WARN = 0.02  # above 2% of the tokens unknown, the model cannot read the text
MULTILINGUAL_MODEL = "me5-small"
NON_LATIN_PICK = 0.5  # init picks MULTILINGUAL_MODEL when more than half of the letters are not Latin


def unknown_rate(features: Iterable[dict], tokenizer) -> tuple[int, int]:
    """(unknown tokens, tokens) over encoded features, special tokens ([CLS], <s>, ...) left out."""
    unk = tokenizer.unk_token_id
    others = {getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "cls", "sep", "mask")}
    if unk is None or unk in others:  # byte-level BPE (GPT-2, SmolLM2): "unknown" is the end-of-text token, never a gap
        return 0, 0
    special = set(tokenizer.all_special_ids) - {unk}
    unknown = total = 0
    for feature in features:
        ids = feature["input_ids"]
        total += sum(1 for i in ids if i not in special)
        unknown += sum(1 for i in ids if i == unk)
    return unknown, total


def unknown_warning(unknown: int, total: int, model: str) -> str | None:
    """The warning for an unknown-token rate above UNKNOWN_WARN (None when the model reads the text)."""
    if not total or unknown / total <= UNKNOWN_WARN:
        return None
    advice = (f"use a model whose vocabulary covers the text: model: {MULTILINGUAL_MODEL} (packaged, ~100 languages)"
              if model != MULTILINGUAL_MODEL else "check the text's encoding and content")
    return (f"{unknown / total:.1%} of the training tokens ({unknown:,} of {total:,}) are unknown to the tokenizer of "
            f"{model}: the model cannot read this text; {advice}")


def non_latin_share(texts: Iterable[str]) -> tuple[float, int]:
    """(share of letters that are not Latin script, letters counted)."""
    latin = other = 0
    for text in texts:
        for ch in text:
            if not ch.isalpha():
                continue
            if ch.isascii() or unicodedata.name(ch, "").startswith("LATIN"):
                latin += 1
            else:
                other += 1
    letters = latin + other
    return (other / letters if letters else 0.0), letters


def model_for_texts(texts: list[str], default: str) -> tuple[str, str | None]:
    """(model, note) for `init`: MULTILINGUAL_MODEL when most letters are not Latin script."""
    share, letters = non_latin_share(texts)
    if letters and share > NON_LATIN_PICK:
        return MULTILINGUAL_MODEL, (f"model: {MULTILINGUAL_MODEL}: {share:.0%} of the letters in the first {len(texts):,} "
                                    f"training texts are not Latin script, which {default} cannot read; "
                                    "--model to choose another")
    return default, None
