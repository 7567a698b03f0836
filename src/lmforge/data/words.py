"""Raw text split into words with character offsets, the way a model's tokenizer splits it: what
token classification predicts one tag for."""

from __future__ import annotations

import re

from .types import TokenExample

CJK_CHARS = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"  # ideographs, CJK and fullwidth punctuation
CJK_CHAR = re.compile(f"[{CJK_CHARS}]")
_CJK = re.compile(f"([{CJK_CHARS}])")


def words_of(tokenizer, text: str, doc_id: int = 0) -> TokenExample:
    """Split raw text into words with character offsets, the way the model's tokenizer does
    (punctuation split off; CJK characters one word each)."""
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    spans = [span for _, span in pre.pre_tokenize_str(text)] if pre is not None else []
    if not spans:
        spans = [m.span() for m in re.finditer(r"\S+", text)]
    words, offsets = [], []
    for start, end in spans:
        # the offsets index the original text; the piece strings may be rewritten (Ġ, ▁ markers)
        for m in re.finditer(r"\S+", text[start:end]):
            pos = start + m.start()
            for part in (p for p in _CJK.split(m.group()) if p):
                words.append(part)
                offsets.append((pos, pos + len(part)))
                pos += len(part)
    return TokenExample(words=words, doc_id=doc_id, text=text, offsets=offsets)

