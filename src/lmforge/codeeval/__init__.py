"""Code evaluation: pass@k of generated programs on HumanEval and MBPP, run in a sandbox.

- `load_benchmark` / `load_humaneval` / `load_mbpp` / `mbpp_training_pairs`: the problems and their prompts.
- `extract_code`: the candidate code in a model's answer.
- `run_program`: one program in a contained subprocess (`sandbox_info` says what contains it here).
- `evaluate_code`: generate, execute in parallel, write results.jsonl and summary.json.
- `pass_at_k` / `mean_pass_at_k`: the unbiased estimator of Chen et al. (2021).
"""

from __future__ import annotations

from lmforge.codeeval.benchmarks import (
    Problem,
    load_benchmark,
    load_humaneval,
    load_mbpp,
    mbpp_training_pairs,
    shared_data_dir,
)
from lmforge.codeeval.evaluate import SampleResult, evaluate_code, execute_completions
from lmforge.codeeval.extract import extract_code
from lmforge.codeeval.passk import mean_pass_at_k, pass_at_k
from lmforge.codeeval.sandbox import ExecutionResult, SandboxError, SandboxLimits, run_program, sandbox_info

__all__ = [
    "ExecutionResult",
    "Problem",
    "SampleResult",
    "SandboxError",
    "SandboxLimits",
    "evaluate_code",
    "execute_completions",
    "extract_code",
    "load_benchmark",
    "load_humaneval",
    "load_mbpp",
    "mbpp_training_pairs",
    "mean_pass_at_k",
    "pass_at_k",
    "run_program",
    "sandbox_info",
    "shared_data_dir",
]
