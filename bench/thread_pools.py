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

With `--encoder RUN` (any classification or NER run folder) it also times `Predictor.predict` on 32
sentences, each way in a fresh process: loaded and predicting on the main thread; loaded on the main
thread and predicting on another (what the server did before); loaded on a short-lived thread and
predicting on another (what `lmforge serve` does now).

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


ENCODER_TEXTS = [f"EU rejects German call number {i} to boycott British lamb and Peter Blackburn said so in Brussels ."
                 for i in range(32)]


def _encoder_child(run: str, way: str, rounds: int) -> float:
    """Seconds per predict() of ENCODER_TEXTS, the median of `rounds` timed rounds of 10 calls."""
    def load():
        from lmforge.predictor import Predictor

        return Predictor.from_run(run)

    def timed(predictor) -> float:
        predictor.predict(ENCODER_TEXTS)
        out = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(10):
                predictor.predict(ENCODER_TEXTS)
            out.append((time.perf_counter() - start) / 10)
        return statistics.median(out)
    if way == "main":
        return timed(load())
    predictor = _on_thread(load) if way == "loaded off main" else load()
    return _on_thread(lambda: timed(predictor))


def _encoder(run: str, rounds: int) -> dict:
    import subprocess

    rows = {}
    for way in ("main", "loaded on main, predicting on another thread", "loaded off main"):
        proc = subprocess.run([sys.executable, __file__, "--encoder", run, "--child", way, "--rounds", str(rounds)],
                              capture_output=True, text=True, check=True)
        seconds = float(proc.stdout.strip().splitlines()[-1])
        rows[way] = {"ms_per_batch_of_32": round(seconds * 1000, 1)}
    base = rows["main"]["ms_per_batch_of_32"]
    for way, row in rows.items():
        row["speed_vs_main"] = round(base / row["ms_per_batch_of_32"], 2)
        print(f"encoder {way:48s} {row['ms_per_batch_of_32']:6.1f} ms  {row['speed_vs_main']:.2f}x main", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="thread_pools")
    parser.add_argument("--encoder", help="also time an encoder run folder's predictions")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(_encoder_child(args.encoder, args.child, args.rounds))
        return

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
    encoder = _encoder(args.encoder, args.rounds) if args.encoder else None
    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS") if k in os.environ}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps({"machine": machine(), "env": env, "new_tokens": NEW_TOKENS, "rounds": args.rounds, "results": rows,
                               "encoder": encoder and {"run": args.encoder, "results": encoder}},
                              indent=2) + "\n")
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
