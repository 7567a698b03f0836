"""Why one streamed generation runs at about half the in-process batch-1 speed: the thread it runs on.

PyTorch's CPU build parallelises each operator with OpenMP (libgomp), and OpenMP keeps one thread
pool per application thread that runs parallel work. Once two application threads have run torch
operators (say the main thread loaded the model and a worker thread generates), libgomp manages
more threads than there are cores and stops spinning between parallel regions ("throttled" waiting),
so every one of a decode step's hundreds of small operators pays a sleep and a wake-up.

This runs the same greedy batch-1 generation (SmolLM2-135M, 64 new tokens) four ways, in one run:

    python bench/thread_pools.py [--rounds 3] [--name thread_pools]

- main: model loaded and generation run on the main thread (the in-process bench figure);
- worker: model loaded on the main thread, generation on another thread (what `Generator.stream`
  and the server's model thread do);
- worker, streamed: the same with a TextIteratorStreamer read on the main thread (`stream()`);
- all in one thread: loading and generation both on one non-main thread (the main thread never runs
  a torch operator, so there is only one pool).

Results go to bench/results/NAME.json. Set OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment to
see their effect (they must be set before the process starts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint."
NEW_TOKENS = 64


def _load():
    from lmforge.generation.generator import Generator

    generator = Generator.from_pretrained("smollm2-135m")
    return generator, generator.encode(PROMPT)


def _timed(generator, ids, streamer=None) -> float:
    start = time.perf_counter()
    generator._generate_batch([ids], NEW_TOKENS, 0.0, 1.0, [], True, streamer=streamer)
    return time.perf_counter() - start


def _on_thread(fn):
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def _one_thread(rounds: int) -> list[float]:
    """Loading and generation on one fresh thread: the main thread runs no torch operator."""
    def body() -> list[float]:
        generator, ids = _load()
        _timed(generator, ids)  # warm-up
        return [_timed(generator, ids) for _ in range(rounds)]
    return _on_thread(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="thread_pools")
    args = parser.parse_args()

    times: dict[str, list[float]] = {"all in one thread": _one_thread(args.rounds)}  # first: before main touches torch
    from transformers import TextIteratorStreamer

    generator, ids = _load()
    _timed(generator, ids)  # warm-up
    times["main"] = [_timed(generator, ids) for _ in range(args.rounds)]
    times["worker"] = [_on_thread(lambda: _timed(generator, ids)) for _ in range(args.rounds)]

    def streamed() -> float:
        streamer = TextIteratorStreamer(generator.tokenizer, skip_prompt=True, skip_special_tokens=True)
        out: list[float] = []
        worker = threading.Thread(target=lambda: out.append(_timed(generator, ids, streamer)))
        worker.start()
        for _ in streamer:
            pass
        worker.join()
        return out[0]
    times["worker, streamed"] = [streamed() for _ in range(args.rounds)]

    main_rate = NEW_TOKENS / statistics.median(times["main"])
    rows = {}
    for name, seconds in times.items():
        rate = NEW_TOKENS / statistics.median(seconds)
        rows[name] = {"tokens_per_second": round(rate, 1), "ratio_to_main": round(rate / main_rate, 2),
                      "seconds": [round(s, 3) for s in seconds]}
        print(f"{name:18s} {rate:6.1f} tokens/s  {rate / main_rate:.2f}x main", flush=True)
    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS") if k in os.environ}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps({"machine": machine(), "env": env, "new_tokens": NEW_TOKENS, "rounds": args.rounds, "results": rows},
                              indent=2) + "\n")
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
