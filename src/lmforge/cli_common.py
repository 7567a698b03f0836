"""What the CLI modules share: the consoles, and checks and formatting of what users type."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from .errors import UserError

err = Console(stderr=True)
out = Console()


def check_text(option: str, *values: str) -> None:
    """Text typed on the command line must be valid Unicode (a terminal in a non-UTF-8 locale hands
    Python undecodable bytes as lone surrogates, which no tokenizer can encode)."""
    from .data.text_files import has_surrogate

    if any(has_surrogate(v) for v in values):
        raise UserError(f"{option}: the text is not valid UTF-8 (check the terminal's encoding, e.g. LANG=C.UTF-8)")


def stage(status, message: str) -> None:
    """A long job's stage: printed as it starts (kept in the scrollback) and shown beside the spinner."""
    err.print(f"[dim]{escape(message)}…[/dim]", highlight=False)
    status.update(message)


def printable(text: str) -> str:
    """`text` with lone surrogates (from file names or data the user gave) shown as escapes: the
    terminal's UTF-8 encoder would fail on them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shorten(text: str, keep: int = 120) -> str:
    return text if len(text) <= keep else f"{text[:keep // 2]}…{text[-keep // 2:]} ({len(text)} characters)"
