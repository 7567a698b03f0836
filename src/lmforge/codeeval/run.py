"""`lmforge evaluate MODEL --benchmark NAME`: pass@k of a model on a code benchmark."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

CLOSING_FENCE = "\n```\n"
CONTINUOUS_CHUNK = 8  # with continuous batching, generate() gets 8 x batch_size problems at a time (progress per chunk)


def evaluate_benchmark(model: str, benchmark: str, *, limit: int | None = None, samples: int = 1, k: tuple[int, ...] | None = None,
                       temperature: float | None = None, top_p: float = 0.95, max_new_tokens: int = 512, seed: int = 0,
                       batch_size: int = 8, workers: int | None = None, output: Path | None = None,
                       stop_at_fence: bool = True, continuous: bool = True) -> dict:
    """pass@k of a model (a run folder or a model short name / folder) on a code benchmark: generate
    `samples` completions per problem (greedy for one sample, sampling at `temperature` for more),
    run each in the sandbox, and write results.jsonl + summary.json to `output`.

    `stop_at_fence` ends a completion at its first closing code fence (a line that is just ```): the
    code extractor reads the first fenced block anyway, so what a chat model writes after it (prose,
    usage examples) only costs time. Opening fences carry a language tag (```python) and do not stop.

    `continuous` (greedy only): `batch_size` completions decode at once and a finished one is replaced
    by the next problem at once (generation/continuous.py), instead of each batch of `batch_size`
    waiting for its longest completion; problems are handed over CONTINUOUS_CHUNK batches at a time."""
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
    problems = load_benchmark(benchmark, limit=limit)
    with Console(stderr=True).status(f"loading {model}", spinner="dots"):
        # off the main thread: the continuous batch decodes on its own thread, which must not share the
        # cores with the main thread's OpenMP pool (lmforge/threads.py; bench/continuous_batching.py:
        # 36.4 -> 28.6 s on 24 MBPP problems)
        generator = on_short_thread(lambda: Generator.from_pretrained(model))
    calls = {"n": 0}

    def generate(prompts: list[str]) -> list[str]:
        calls["n"] += 1
        results = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     stop=[CLOSING_FENCE] if stop_at_fence else None,
                                     seed=None if temperature == 0 else seed + calls["n"], batch_size=batch_size,
                                     continuous=continuous)
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
                                batch_size=batch_size * CONTINUOUS_CHUNK if continuous and temperature == 0 else batch_size,
                                progress=progress,
                                metadata={"model": str(model), "model_version": getattr(generator, "version", None),
                                          "temperature": temperature, "top_p": top_p if temperature else None,
                                          "max_new_tokens": max_new_tokens, "seed": seed,
                                          "batching": "continuous" if continuous and temperature == 0 else "static",
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
