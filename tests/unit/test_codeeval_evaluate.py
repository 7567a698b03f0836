"""evaluate_code end to end with fake generators: canonical answers score 1, garbage 0, files say so."""

from __future__ import annotations

import json

import pytest

from lmforge.codeeval import SandboxLimits, evaluate_code, load_humaneval, shared_data_dir

pytestmark = pytest.mark.skipif(not (shared_data_dir() / "humaneval").is_dir(), reason="shared data not present")
LIMITS = SandboxLimits(timeout=5)


@pytest.fixture(scope="module")
def problems():
    return load_humaneval()


def canonical(problems):
    """A fake generator answering each prompt with its problem's reference in a fenced block."""
    by_prompt = {p.prompt: p.reference for p in problems}
    calls = []

    def generate(prompts: list[str]) -> list[str]:
        calls.append(len(prompts))
        return [f"Sure:\n```python\n{by_prompt[prompt]}\n```" for prompt in prompts]
    return generate, calls


def test_canonical_answers_score_one(problems, tmp_path):
    generate, calls = canonical(problems)
    progress = []
    summary = evaluate_code(problems, generate, limit=3, batch_size=2, output_dir=tmp_path, limits=LIMITS, workers=2,
                            progress=lambda stage, done, total: progress.append((stage, done, total)),
                            metadata={"model": "fake"})
    assert calls == [2, 1]
    assert progress[-1] == ("execute", 3, 3) and ("generate", 3, 3) in progress
    assert summary["pass_at_k"] == {"pass@1": 1.0} and summary["status_counts"] == {"passed": 3}
    assert (summary["benchmark"], summary["problems"], summary["samples"], summary["model"]) == ("humaneval", 3, 1, "fake")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["sample"], r["status"]) for r in rows] == [(f"HumanEval/{i}", 0, "passed") for i in range(3)]
    assert rows[0]["code"].startswith("from typing import List") and rows[0]["message"] == ""
    assert {"generation_seconds", "execution_seconds", "limits", "sandbox"} <= set(summary)


def test_garbage_scores_zero(problems, tmp_path):
    answers = iter(["I don't know.", "```python\ndef f(:\n```", "```python\nwhile True: pass\n```"])
    summary = evaluate_code(problems, lambda prompts: [next(answers) for _ in prompts], limit=3, output_dir=tmp_path,
                            limits=SandboxLimits(timeout=1))
    assert summary["pass_at_k"] == {"pass@1": 0.0}
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["error", "error", "timeout"]
    assert rows[0]["completion"] == "I don't know."


def test_several_samples_give_unbiased_pass_at_k(problems):
    generate, _ = canonical(problems)
    rounds = iter([generate, lambda prompts: ["```python\npass\n```"] * len(prompts)])
    summary = evaluate_code(problems, lambda prompts: next(rounds)(prompts), samples=2, k=(1, 2, 5), limit=2,
                            batch_size=8, limits=LIMITS)
    assert summary["pass_at_k"] == {"pass@1": 0.5, "pass@2": 1.0} and summary["skipped_k"] == [5]
    assert summary["status_counts"] == {"passed": 2, "failed": 2}


def test_a_generator_returning_the_wrong_count_is_refused(problems):
    with pytest.raises(ValueError, match="list of 2 strings"):
        evaluate_code(problems, lambda prompts: ["x"], limit=2)
