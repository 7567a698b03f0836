"""Measure code correctness: generate completions, run each against its tests in the sandbox, report pass@k.

`evaluate_code(problems, generate, samples=n, k=(1, ...))` calls `generate(prompts) -> completions` with
chunks of at most `batch_size` prompts, `samples` times over the problems (sampling settings such as
temperature belong to the `generate` callable; pass a greedy one with samples=1). Every candidate runs
in its own sandbox process (`run_program`), `workers` at a time; nothing generated runs in this process.

Written to `output_dir` (atomically, when given):
- `results.jsonl`: one line per (problem, sample): task_id, sample, status, message, duration, code
  (the extracted candidate), completion (the raw model answer);
- `summary.json`: benchmark, problems, samples, pass@k for every k <= samples, counts by status, wall
  seconds of generation and of execution, the sandbox limits and mechanisms, plus `metadata`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmforge.codeeval.benchmarks import Problem
from lmforge.codeeval.extract import extract_code
from lmforge.codeeval.passk import mean_pass_at_k
from lmforge.codeeval.sandbox import SandboxLimits, run_program, sandbox_info
from lmforge.files import write_json_atomic, write_text_atomic

Generate = Callable[[list[str]], list[str]]
Progress = Callable[[str, int, int], None]  # (stage "generate" | "execute", done, total)


@dataclass(frozen=True)
class SampleResult:
    """One executed candidate."""

    task_id: str
    sample: int
    status: str
    message: str
    duration: float
    code: str
    completion: str


def evaluate_code(problems: Sequence[Problem], generate: Generate, *, samples: int = 1, k: Sequence[int] = (1,),
                  output_dir: Path | None = None, workers: int | None = None, batch_size: int = 16,
                  limits: SandboxLimits = SandboxLimits(), limit: int | None = None,
                  progress: Progress | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate `samples` completions per problem (the first `limit` problems when given), execute them
    and return the summary (also written with the per-sample results to `output_dir`)."""
    if samples < 1 or batch_size < 1:
        raise ValueError(f"samples and batch_size must be >= 1; got samples={samples}, batch_size={batch_size}")
    problems = list(problems)[:limit] if limit is not None else list(problems)
    start = time.monotonic()
    completions = generate_completions(problems, generate, samples=samples, batch_size=batch_size, progress=progress)
    generation_seconds = time.monotonic() - start
    start = time.monotonic()
    results = execute_completions(problems, completions, workers=workers, limits=limits, progress=progress)
    execution_seconds = time.monotonic() - start
    summary = summarize(problems, results, samples=samples, k=k, metadata=metadata, limits=limits, workers=workers,
                        seconds={"generation": generation_seconds, "execution": execution_seconds})
    if output_dir is not None:
        write_results(Path(output_dir), results, summary)
    return summary


def generate_completions(problems: Sequence[Problem], generate: Generate, *, samples: int = 1, batch_size: int = 16,
                         progress: Progress | None = None) -> list[list[str]]:
    """completions[i][s] = sample `s` for problem `i`; `generate` sees chunks of at most `batch_size` prompts."""
    prompts = [problem.prompt for problem in problems]
    completions: list[list[str]] = [[] for _ in problems]
    total, done = len(prompts) * samples, 0
    if progress:  # the bar appears before the first (slow) batch is done
        progress("generate", 0, total)
    for _ in range(samples):
        for first in range(0, len(prompts), batch_size):
            chunk = prompts[first:first + batch_size]
            answers = generate(chunk)
            if not isinstance(answers, list) or len(answers) != len(chunk) or not all(isinstance(a, str) for a in answers):
                raise ValueError(f"generate() must return a list of {len(chunk)} strings, one per prompt; "
                                 f"got {type(answers).__name__} of length {len(answers) if hasattr(answers, '__len__') else '?'}")
            for offset, answer in enumerate(answers):
                completions[first + offset].append(answer)
            done += len(chunk)
            if progress:
                progress("generate", done, total)
    return completions


def execute_completions(problems: Sequence[Problem], completions: Sequence[Sequence[str]], *,
                        workers: int | None = None, limits: SandboxLimits = SandboxLimits(),
                        progress: Progress | None = None) -> list[SampleResult]:
    """Extract and run every completion against its problem's tests, `workers` sandboxes at a time
    (default: the CPU count). Results come back in (problem, sample) order."""
    if len(completions) != len(problems):
        raise ValueError(f"{len(completions)} completion lists for {len(problems)} problems")
    jobs = [(problem, sample, text) for problem, texts in zip(problems, completions) for sample, text in enumerate(texts)]

    def run(job: tuple[Problem, int, str]) -> SampleResult:
        problem, sample, text = job
        code = extract_code(problem, text)
        outcome = run_program(problem.program(code), limits)
        return SampleResult(problem.task_id, sample, outcome.status, outcome.message, outcome.duration, code, text)

    results = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for result in pool.map(run, jobs):
            results.append(result)
            if progress:
                progress("execute", len(results), len(jobs))
    return results


def summarize(problems: Sequence[Problem], results: Sequence[SampleResult], *, samples: int, k: Sequence[int],
              seconds: dict[str, float], limits: SandboxLimits, workers: int | None = None,
              metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary dict: pass@k for each requested k <= samples (larger ones are listed as skipped)."""
    correct = Counter(r.task_id for r in results if r.status == "passed")
    counts = [(samples, correct[problem.task_id]) for problem in problems]
    usable = sorted({value for value in k if 1 <= value <= samples})
    return {
        "benchmark": "+".join(sorted({problem.benchmark for problem in problems})),
        "problems": len(problems),
        "samples": samples,
        "pass_at_k": {f"pass@{value}": round(mean_pass_at_k(counts, value), 6) for value in usable} if problems else {},
        "skipped_k": sorted({value for value in k if value not in usable}),
        "status_counts": dict(Counter(r.status for r in results)),
        "generation_seconds": round(seconds["generation"], 3),
        "execution_seconds": round(seconds["execution"], 3),
        "workers": workers or os.cpu_count() or 1,
        "limits": {**asdict(limits), "hidden_paths": list(limits.hidden_paths)},
        "sandbox": sandbox_info(),
        **(metadata or {}),
    }


def write_results(output_dir: Path, results: Sequence[SampleResult], summary: dict[str, Any]) -> None:
    lines = "".join(json.dumps(asdict(result)) + "\n" for result in results)
    write_text_atomic(output_dir / "results.jsonl", lines)
    write_json_atomic(output_dir / "summary.json", summary)
