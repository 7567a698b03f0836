"""The generation (prompt/completion and chat JSONL) reader on input Python cannot hold as text."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.data.generation_readers import read_generation
from lmforge.errors import DataError

from conftest import write

GOOD = '{"prompt": "say hi", "completion": "hi"}'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"prompt": "a\\ud800", "completion": "b"}', "'prompt' holds an unpaired surrogate escape \\ud800"),
        ('{"prompt": "a", "completion": "b\\udfff"}', "'completion' holds an unpaired surrogate escape \\udfff"),
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\\ud801"}]}',
         "messages[1].content holds an unpaired surrogate escape \\ud801"),
        ('{"prompt": "a", "completion": "b", "n": ' + "1" * 5000 + "}", "a number has more than 4,300 digits"),
        ('{"prompt": "a", "completion": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"prompt": "a", "completion": "b", "completion": "c"}', "key 'completion' appears twice in one object"),
        ('{"messages": [{"role": "\\ud800", "content": "x"}]}', "messages[0].role is '\\ud800'; expected one of"),
    ],
)
def test_values_python_cannot_hold_are_line_problems(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, "sft.jsonl", GOOD + "\n" + line + "\n")
    with pytest.raises(DataError) as excinfo:
        read_generation(path)
    (problem,) = excinfo.value.problems
    assert problem.startswith(f"{path}:2: ") and expected in problem, problem
    str(excinfo.value).encode("utf-8")  # the message itself can be printed


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "sft.jsonl", (GOOD + "\n").encode("utf-16"))
    with pytest.raises(DataError, match=r"sft.jsonl:1: is UTF-16 LE text"):
        read_generation(path)
