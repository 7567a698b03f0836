"""The in-memory records every reader produces and every task consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TextExample:
    """One classification row. `labels` has one entry (multi-class) or any number (multi-label);
    it is empty for unlabelled input (predict)."""

    text: str
    text_pair: str | None = None
    labels: list[str] = field(default_factory=list)
    source: str = ""  # "file:line", for error messages


@dataclass
class TokenExample:
    """One NER sentence: words and their tags in the internal IOB2 (BIO) scheme.

    `doc_id` groups consecutive sentences of one document (`-DOCSTART-`); sentences with the
    same doc_id are neighbours and may serve as context for each other.
    `offsets` are (start, end) character spans of each word in `text` when the example came from
    raw text (predict); None for pre-tokenized input.
    """

    words: list[str]
    tags: list[str] = field(default_factory=list)
    doc_id: int = 0
    source: str = ""
    text: str | None = None
    offsets: list[tuple[int, int]] | None = None


@dataclass
class ChatExample:
    """One generation example as a chat: a prompt/completion pair is [user, assistant]. The loss
    covers the assistant messages; a chat without one is a prompt to complete (generate)."""

    messages: list[dict[str, str]]
    source: str = ""

    @property
    def prompt(self) -> str:
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")
