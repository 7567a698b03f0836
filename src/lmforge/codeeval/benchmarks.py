"""Code benchmarks as `Problem`s: HumanEval (164 problems) and MBPP (Austin et al. 2021).

A `Problem` carries what the model is shown (`prompt`, an instruction for a chat model: the generator applies
the chat template), what a completion continues (`code_prefix`), and the test program run after the
candidate code (`test`). `Problem.program(code)` is the whole program the sandbox executes.

The files live in the shared data folder (`../shared/data` next to the checkout, else `/work/shared/data`);
every loader also takes an explicit path. MBPP splits follow the original release: task ids 1-10 are the
few-shot examples, 11-510 test (500), 511-600 validation (90), 601-974 train (374).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import ProblemCollector, UserError

HUMANEVAL_FILE = Path("humaneval") / "HumanEval.jsonl.gz"
MBPP_FILE = Path("mbpp") / "mbpp.jsonl"
MBPP_SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}

HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Write the whole function, signature included, "
                         "in a single ```python code block.")


@dataclass(frozen=True)
class Problem:
    """One benchmark task. `program(code)` = the candidate code followed by the tests."""

    benchmark: str                # "humaneval" | "mbpp"
    task_id: str                  # "HumanEval/0", "MBPP/11"
    prompt: str                   # the user message given to the model
    test: str                     # test program appended after the candidate code; raises when it fails
    entry_point: str | None       # function under test (HumanEval); MBPP names it only inside the asserts
    code_prefix: str = ""         # HumanEval: signature + docstring that a body-only completion continues
    reference: str = ""           # reference solution as complete code (passes `test`)

    def program(self, code: str) -> str:
        return f"{code.rstrip()}\n\n\n{self.test}"


def shared_data_dir() -> Path:
    """The shared data folder: `../shared/data` beside the checkout, else `/work/shared/data`."""
    beside_checkout = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else Path("/work/shared/data")


def humaneval_prompt(signature_and_docstring: str) -> str:
    """The instruction-style HumanEval prompt: an instruction, then the original prompt in a code block."""
    return f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{signature_and_docstring.rstrip()}\n```\n"


def mbpp_prompt(text: str, tests: list[str]) -> str:
    """The MBPP prompt of Austin et al. (2021) without few-shot examples: the task text, then
    "Your code should pass these tests:" and the problem's three `test_list` asserts (the same asserts
    that score it; `challenge_test_list` is never shown)."""
    asserts = "\n".join(tests)
    return f"You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{asserts}\n"


def load_humaneval(path: Path | None = None) -> list[Problem]:
    """The 164 HumanEval problems, in file order. `path` defaults to the shared `HumanEval.jsonl.gz`."""
    path = _existing(path, HUMANEVAL_FILE)
    fields = {"task_id": str, "prompt": str, "canonical_solution": str, "test": str, "entry_point": str}
    problems = []
    for row in _read_rows(path, fields):
        problems.append(Problem(
            benchmark="humaneval", task_id=row["task_id"], prompt=humaneval_prompt(row["prompt"]),
            test=f"{row['test'].strip()}\n\n\ncheck({row['entry_point']})\n", entry_point=row["entry_point"],
            code_prefix=row["prompt"], reference=row["prompt"] + row["canonical_solution"]))
    return problems


def load_mbpp(split: str = "test", path: Path | None = None, *, challenge_tests: bool = False) -> list[Problem]:
    """MBPP problems of one split ("test": 500, "train": 374, "validation": 90, "prompt": 10), by task id.

    The test program is `test_setup_code` then the three `test_list` asserts (plus `challenge_test_list`
    when `challenge_tests`)."""
    ids = _split_ids(split)
    problems = []
    for row in _mbpp_rows(path):
        if row["task_id"] not in ids:
            continue
        tests = row["test_list"] + (row["challenge_test_list"] if challenge_tests else [])
        setup = row["test_setup_code"].replace("\r\n", "\n").strip()
        problems.append(Problem(
            benchmark="mbpp", task_id=f"MBPP/{row['task_id']}", prompt=mbpp_prompt(row["text"], row["test_list"]),
            test="\n".join([setup, *tests]).strip() + "\n", entry_point=None,
            reference=row["code"].replace("\r\n", "\n")))
    return problems


def mbpp_training_pairs(path: Path | None = None, split: str = "train") -> list[dict[str, str]]:
    """MBPP train problems (374) as {"prompt", "completion"} pairs for supervised fine-tuning.

    The prompt is exactly what evaluation shows the model (`mbpp_prompt`: task text, "Your code should pass
    these tests:", the three asserts); the completion is the reference code in a ```python fenced block,
    the form `extract_code` reads back."""
    return [{"prompt": p.prompt, "completion": f"```python\n{p.reference.strip()}\n```"}
            for p in load_mbpp(split, path)]


BENCHMARKS: dict[str, Callable[..., list[Problem]]] = {"humaneval": load_humaneval, "mbpp": load_mbpp}


def load_benchmark(name: str, path: Path | None = None, limit: int | None = None) -> list[Problem]:
    """The evaluation problems of a benchmark by name ("humaneval", or "mbpp" = its test split), the
    first `limit` of them when given."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown code benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    problems = BENCHMARKS[name](path=path)
    return problems if limit is None else problems[:limit]


def _split_ids(split: str) -> range:
    if split not in MBPP_SPLITS:
        raise UserError(f"unknown MBPP split {split!r}; choose one of: {', '.join(MBPP_SPLITS)}")
    return MBPP_SPLITS[split]


def _mbpp_rows(path: Path | None) -> Iterator[dict[str, Any]]:
    fields = {"task_id": int, "text": str, "code": str, "test_list": list, "test_setup_code": str,
              "challenge_test_list": list}
    return iter(_read_rows(_existing(path, MBPP_FILE), fields))


def _existing(path: Path | None, default: Path) -> Path:
    path = Path(path) if path is not None else shared_data_dir() / default
    if not path.is_file():
        raise UserError(f"benchmark file {path} not found; put the file there or pass its path explicitly")
    return path


def _read_rows(path: Path, fields: dict[str, type]) -> list[dict[str, Any]]:
    """JSON Lines (gzip-compressed when the name ends in .gz) whose rows must have `fields` with those types;
    every malformed row is reported at once, as file:line."""
    problems = ProblemCollector()
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = _parse_row(line, fields, f"{path}:{number}", problems)
                if row is not None:
                    rows.append(row)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UserError(f"cannot read benchmark file {path}: {exc}; replace it with an intact copy") from exc
    problems.raise_if_any()
    return rows


def _parse_row(line: str, fields: dict[str, type], where: str, problems: ProblemCollector) -> dict[str, Any] | None:
    from ..data.text_files import parse_json_line

    row, problem = parse_json_line(where, line)
    if problem is not None:
        problems.add(problem)
        return None
    if not isinstance(row, dict):
        problems.add(f"{where}: expected a JSON object, found {type(row).__name__}")
        return None
    wrong = [f"{key} ({kind.__name__})" for key, kind in fields.items() if not isinstance(row.get(key), kind)]
    if wrong:
        problems.add(f"{where}: missing or mistyped fields: {', '.join(wrong)}")
        return None
    return row
