"""`lmforge evaluate MODEL --benchmark NAME`: pass@k of a model on a code benchmark."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

CLOSING_FENCE = "\n```\n"
STATIC_ROWS = 8  # a static batch's size
CONTINUOUS_ROWS = 16  # rows of the continuous batch: on 100 MBPP problems 0.40x static's time at 16, 0.51x at 8
# (bench/continuous_batching.py; on a CPU with native bf16 more rows cost little more per step)


def evaluate_benchmark(model: str, benchmark: str, *, limit: int | None = None, samples: int = 1, k: tuple[int, ...] | None = None,
                       temperature: float | None = None, top_p: float = 0.95, max_new_tokens: int = 512, seed: int = 0,
                       rows: int | None = None, workers: int | None = None, output: Path | None = None,
                       stop_at_fence: bool = True, continuous: bool = True) -> dict:
    """pass@k of a model (a run folder or a model short name / folder) on a code benchmark: generate
    `samples` completions per problem (greedy for one sample, sampling at `temperature` for more),
    run each in the sandbox, and write results.jsonl + summary.json to `output`.

    `stop_at_fence` ends a completion at its first closing code fence (a line that is just ```): the
    code extractor reads the first fenced block anyway, so what a chat model writes after it (prose,
    usage examples) only costs time. Opening fences carry a language tag (```python) and do not stop.

    `continuous` (greedy only): `rows` completions (default CONTINUOUS_ROWS) decode at once and a
    finished one is replaced by the next problem at once (generation/refill.py), instead of each
    static batch of `rows` (default STATIC_ROWS) waiting for its longest completion; all problems are
    handed over at once, so the batch only drains at the very end."""
    from ..errors import UserError
    from ..generation.generator import Generator
    from ..threads import on_short_thread
    from .benchmarks import load_benchmark
    from .evaluate import evaluate_code

    if samples < 1:
        raise UserError(f"--samples {samples}: give at least 1")
    k = tuple(k or ((1,) if samples == 1 else tuple(x for x in (1, 10, 100) if x <= samples)))
    if max(k) > samples:
        raise UserError(f"--k {max(k)} needs at least that many --samples (got {samples})")
    if temperature is None:
        temperature = 0.0 if samples == 1 else 0.8
    if samples > 1 and temperature == 0:
        raise UserError("--samples > 1 with --temperature 0 would repeat one greedy answer; give a temperature (e.g. 0.8)")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise UserError(f"--rows {rows!r}: give a positive integer")
    refill = continuous and temperature == 0
    rows = rows or (CONTINUOUS_ROWS if refill else STATIC_ROWS)
    problems = load_benchmark(benchmark, limit=limit)
    with Console(stderr=True).status(f"loading {model}", spinner="dots"):
        # off the main thread: the continuous batch decodes on its own thread, which must not share the
        # cores with the main thread's OpenMP pool (lmforge/threads.py; bench/continuous_batching.py:
        # 36.4 -> 28.6 s on 24 MBPP problems)
        generator = on_short_thread(lambda: Generator.from_pretrained(model))
    calls = {"n": 0, "done": 0}

    def generate(prompts: list[str]) -> list[str]:
        calls["n"] += 1

        def one_done(_: int) -> None:
            calls["done"] += 1
            if refill:  # one hand-over of every problem: progress per completion
                progress("generate", calls["done"], len(prompts))

        results = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     stop=[CLOSING_FENCE] if stop_at_fence else None,
                                     seed=None if temperature == 0 else seed + calls["n"], batch_size=rows,
                                     continuous=continuous, on_done=one_done)
        return [r["text"] for r in results]

    target = output or _benchmark_dir(model, benchmark, samples, temperature)
    bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
    stages: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in stages:
            stages[stage] = bar.add_task(f"{benchmark} {stage}", total=total)
        bar.update(stages[stage], completed=done, total=total)

    bar.start()
    try:
        summary = evaluate_code(problems, generate, samples=samples, k=k, output_dir=target, workers=workers,
                                batch_size=max(len(problems), 1) if refill else rows,
                                progress=progress,
                                metadata={"model": str(model), "model_version": getattr(generator, "version", None),
                                          "temperature": temperature, "top_p": top_p if temperature else None,
                                          "max_new_tokens": max_new_tokens, "seed": seed,
                                          "batching": "continuous" if refill else "static", "rows": rows,
                                          "stop": [CLOSING_FENCE] if stop_at_fence else []})
    finally:
        bar.stop()
    return {**summary, "output": str(target)}


def _benchmark_dir(model: str, benchmark: str, samples: int, temperature: float) -> Path:
    from ..runs import RunFolder, is_run_folder

    tag = f"{benchmark}-n{samples}" + (f"-t{temperature:g}" if temperature else "-greedy")
    folder = Path(model)
    if is_run_folder(folder):  # a run folder: results live with the run
        return RunFolder(folder).eval_dir(tag)
    return Path("runs") / "benchmarks" / f"{folder.name}-{tag}"
