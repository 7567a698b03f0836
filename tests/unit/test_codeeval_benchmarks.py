"""Benchmark loaders (the real shared files), prompts, training pairs, malformed files, extract_code."""

from __future__ import annotations

import gzip
import json

import pytest

from lmforge.codeeval import (Problem, extract_code, load_benchmark, load_humaneval, load_mbpp, mbpp_training_pairs,
                              run_program, shared_data_dir)
from lmforge.errors import UserError

pytestmark = pytest.mark.skipif(not (shared_data_dir() / "humaneval").is_dir(), reason="shared data not present")


@pytest.fixture(scope="module")
def humaneval():
    return {p.task_id: p for p in load_humaneval()}


def test_humaneval_has_164_problems_with_instruction_prompts(humaneval):
    assert len(humaneval) == 164
    first = humaneval["HumanEval/0"]
    assert first.entry_point == "has_close_elements" and first.benchmark == "humaneval"
    assert first.prompt.startswith("Complete the following Python function.")
    assert f"```python\n{first.code_prefix.rstrip()}\n```" in first.prompt
    assert first.test.rstrip().endswith("check(has_close_elements)")


def test_mbpp_splits_follow_the_original_release():
    test, train = load_mbpp("test"), load_mbpp("train")
    assert (len(test), test[0].task_id, test[-1].task_id) == (500, "MBPP/11", "MBPP/510")
    assert (len(train), train[0].task_id, train[-1].task_id) == (374, "MBPP/601", "MBPP/974")
    first = test[0]
    assert first.prompt.startswith("You are an expert Python programmer, and here is your task: Write a python function")
    assert "Your code should pass these tests:\n\nassert remove_Occ(\"hello\",\"l\") == \"heo\"\n" in first.prompt
    assert first.test.count("assert") == 3 and "\r" not in first.reference
    assert load_mbpp("test", challenge_tests=True)[0].test.count("assert") == 5
    assert len(load_benchmark("mbpp", limit=7)) == 7


def test_training_pairs_are_fenced_reference_code():
    pairs = mbpp_training_pairs()
    assert len(pairs) == 374 and set(pairs[0]) == {"prompt", "completion"}
    assert pairs[0]["prompt"] == load_mbpp("train")[0].prompt
    assert pairs[0]["completion"].startswith("```python\n") and pairs[0]["completion"].endswith("\n```")


def test_unknown_names_list_the_choices():
    with pytest.raises(UserError, match="humaneval, mbpp"):
        load_benchmark("apps")
    with pytest.raises(UserError, match="test, validation, train"):
        load_mbpp("dev")


def test_malformed_files_name_file_and_line(tmp_path):
    good = {"task_id": 11, "text": "t", "code": "c", "test_list": [], "test_setup_code": "", "challenge_test_list": []}
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({**good, "code": 3}) + "\n")
    with pytest.raises(UserError) as err:
        load_mbpp("test", path)
    assert f"{path}:2: not valid JSON" in str(err.value)
    assert f"{path}:3: missing or mistyped fields: code (str)" in str(err.value)
    broken = tmp_path / "HumanEval.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"task_id": "HumanEval/0"}\n')[:-8])
    with pytest.raises(UserError, match="HumanEval.jsonl.gz"):
        load_humaneval(broken)
    with pytest.raises(UserError, match="not found"):
        load_humaneval(tmp_path / "missing.jsonl.gz")


# --- extract_code ------------------------------------------------------------------------------------

FULL = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"


@pytest.mark.parametrize("answer", [
    f"Here you go:\n```python\n{FULL}```\nThis returns the fractional part.",           # fenced, chatty
    f"```py\n{FULL}",                                                                  # unclosed fence
    f"Example:\n```python\nprint(truncate_number(3.5))\n```\nCode:\n```python\n{FULL}```",  # picks the defining block
    "    return number % 1.0\n",                                                       # body only, indented
    "```python\nreturn number % 1.0\n```",                                             # body only, flush left
    f"Sure! Here is the function.\n{FULL}",                                            # raw text with a preamble
    "```python\n" + "".join(f"    {line}\n" for line in FULL.splitlines()) + "```",   # whole function, indented
])
def test_extracted_humaneval_answers_pass(humaneval, answer):
    problem = humaneval["HumanEval/2"]
    code = extract_code(problem, answer)
    assert code.startswith(problem.code_prefix.rstrip())  # the prompt's imports and helpers come first
    assert run_program(problem.program(code)).status == "passed", code


def test_humaneval_helpers_from_the_prompt_are_kept(humaneval):
    problem = humaneval["HumanEval/38"]  # decode_cyclic calls encode_cyclic, defined in the prompt
    answer = "```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```"
    assert run_program(problem.program(extract_code(problem, answer))).status == "passed"


def test_mbpp_answers_are_the_fenced_code():
    problem = Problem("mbpp", "MBPP/x", "p", "assert add(1, 2) == 3\n", None)
    assert extract_code(problem, "Answer:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.") == \
        "def add(a, b):\n    return a + b\n"
    assert extract_code(problem, "def add(a, b): return a + b") == "def add(a, b): return a + b\n"
