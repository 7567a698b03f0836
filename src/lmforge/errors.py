"""User-facing errors.

A `UserError` is something the user can fix (bad config, bad data, missing file). The CLI prints its
message on stderr without a traceback and exits with code 2. Anything else is a bug: exit code 1.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message says what was found, what was expected and what to do."""

    exit_code = 2


class ConfigError(UserError):
    """The config file or a `key=value` override is invalid. Lists every problem at once."""


class DataError(UserError):
    """A data file is unreadable or has bad rows. Each problem names `file:line`."""

    def __init__(self, problems: list[str], total: int | None = None):
        self.problems = list(problems)
        total = len(problems) if total is None else total
        self.total = total
        shown = "\n".join(f"  - {p}" for p in problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"{total} data {noun}:\n{shown}{more}")

    def __reduce__(self):  # pickled across processes (DDP ranks, worker pools) it keeps its problems, not the message's characters
        return type(self), (self.problems, self.total)


class ProblemCollector:
    """Collects per-row problems so that a reader can report many at once (up to `limit` shown)."""

    def __init__(self, limit: int = 10):
        self.limit = limit
        self.problems: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.problems) < self.limit:
            self.problems.append(message)

    def raise_if_any(self) -> None:
        if self.total:
            raise DataError(self.problems, self.total)
