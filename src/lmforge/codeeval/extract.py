"""Turn a model's answer into the candidate code that the tests run against.

Rules, in order:
1. Fenced code: the first ```python / ```py / ``` block that defines the entry point (HumanEval), else the
   first such block. An unclosed fence (generation cut off) runs to the end of the text.
2. No fence: the raw text; if it does not parse as Python and a line starts with `def`, `class`, `import`
   or `from`, the text from that line on (drops chatty preambles).
3. HumanEval: the original prompt (imports, helper functions, the signature and docstring) always comes
   first. An answer that defines the entry point at top level is appended after it (it redefines the
   docstring-only stub); otherwise the answer is a function body and is indented under the signature.
"""

from __future__ import annotations

import ast
import re
import textwrap

from lmforge.codeeval.benchmarks import Problem

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON_TAGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(def |class |import |from |async def |@)", re.M)


def extract_code(problem: Problem, completion: str) -> str:
    """The complete candidate code (everything but the tests) for `problem` from the model's `completion`."""
    code = _fenced_code(completion, problem.entry_point)
    if code is None:
        code = _raw_code(completion)
    if not problem.code_prefix:
        return code.strip("\n") + "\n"
    return _complete_function(problem, code)


def _fenced_code(text: str, entry_point: str | None) -> str | None:
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    if not blocks:
        return None
    if entry_point:
        for body in blocks:
            if _defines(body, entry_point):
                return body
    return blocks[0]


def _raw_code(text: str) -> str:
    if _parses(text):
        return text
    start = _CODE_START.search(text)
    return text[start.start():] if start else text


def _complete_function(problem: Problem, code: str) -> str:
    prefix = problem.code_prefix.rstrip("\n") + "\n"
    whole = textwrap.dedent(code).strip("\n")  # a whole function may come indented as a block
    if problem.entry_point and _defines(whole, problem.entry_point):
        return f"{prefix}\n\n{whole}\n"
    return prefix + _as_body(code)


def _as_body(code: str) -> str:
    """A function body indented by four spaces (a body written flush left is indented; one already
    indented is kept as it is)."""
    lines = code.strip("\n").splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first and not first[0].isspace():
        return textwrap.indent(textwrap.dedent("\n".join(lines)), "    ") + "\n"
    return "\n".join(lines) + "\n"


def _defines(code: str, name: str) -> bool:
    """Whether `code` defines function `name` at top level (by parsing; by pattern when it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return re.search(rf"^(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name for node in tree.body)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True
