"""Aggregate generation throughput of a real `lmforge serve` with N concurrent streamed /v1/generate
requests: the continuous batch (`--continuous-rows 8`) against static serving (`--continuous-rows 0`: greedy
streams arriving together gathered into static batches), in one run; `--rows A B` compares other settings.

    python bench/generate_concurrency.py [--model smollm2-135m] [--clients 8] [--max-new-tokens 64 256] [--rounds 2]

Each client streams one greedy completion of a different prompt (long-answer prompts, so that most
run to max_new_tokens); tokens are counted by re-tokenising each streamed text. The servers are
started in turn (order alternating between rounds), warmed up, then hit by all clients at once;
aggregate tokens/s = all clients' tokens / wall time from the first request to the last event.
Also checked: the streamed texts are the same with and without the continuous batch.
Issue 16's goal: >= 2x the static path's aggregate tokens/s with 8 concurrent streams. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402

PROMPTS = ["Write a long story about a robot who learns to paint, with many details.",
           "Explain in detail how a bicycle works, part by part.",
           "Describe the water cycle step by step, at length.",
           "Write a detailed guide to planting a vegetable garden.",
           "Tell a long fairy tale about a fox and a crow.",
           "Explain at length why the sky is blue and what happens at sunset.",
           "Write a long letter to a friend about a trip to the mountains.",
           "Describe in detail a day in the life of a lighthouse keeper.",
           "Write a long essay on the history of bread.",
           "Explain how computers store numbers, in detail, with examples.",
           "Write a long dialogue between a teacher and a curious student.",
           "Describe a busy market in a big city at length.",
           "Write a detailed recipe for a vegetable soup with tips.",
           "Tell a long story about a ship lost at sea.",
           "Explain in detail how trains run on rails.",
           "Write a long poem about autumn leaves."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, rows: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", model, "--port", str(port), "--continuous-rows", str(rows),
                             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
    proc.kill()
    raise RuntimeError("server never ready")


def stream(base: str, prompt: str, max_new_tokens: int) -> str:
    body = json.dumps({"prompt": prompt, "max_new_tokens": max_new_tokens, "stream": True}).encode()
    req = urllib.request.Request(base + "/v1/generate", data=body, headers={"Content-Type": "application/json"})
    text = []
    with urllib.request.urlopen(req, timeout=1800) as r:
        for raw in r:
            line = raw.decode("utf-8").strip()
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(event["error"])
                text.append(event.get("text", ""))
    return "".join(text)


def concurrently(clients: int, work) -> tuple[float, list]:
    """`work(i)` for i in range(clients), each on its own thread, all started at once: (wall seconds, results).
    The first error of any client is raised after all have ended."""
    results: list = [None] * clients
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - reported after the burst
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start_ = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start_, results


def burst(base: str, clients: int, max_new_tokens: int) -> tuple[float, list[str]]:
    return concurrently(clients, lambda i: stream(base, PROMPTS[i % len(PROMPTS)], max_new_tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, nargs=2, default=[8, 0],
                        help="--continuous-rows of the two servers compared (0: static serving); the ratio is first / second")
    parser.add_argument("--name", default="generate_concurrency", help="results file name under bench/results/")
    args = parser.parse_args()
    names = {rows: "static" if rows == 0 else "continuous" if rows == 8 else f"continuous{rows}" for rows in args.rows}
    first, second = (names[rows] for rows in args.rows)
    from lmforge.generation.generator import Generator

    tokenizer = Generator.from_pretrained(args.model).tokenizer
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    results: dict = {}
    texts_by: dict = {}
    for r in range(args.rounds):
        for rows in (args.rows if r % 2 == 0 else args.rows[::-1]):
            name = names[rows]
            proc, base = start(args.model, rows)
            try:
                stream(base, PROMPTS[0], 4)  # one request through the whole path before timing
                for n in args.max_new_tokens:
                    seconds, texts = burst(base, args.clients, n)
                    tokens = sum(count(t) for t in texts)
                    results.setdefault(str(n), {}).setdefault(name, []).append({"seconds": round(seconds, 2), "tokens": tokens,
                                                                                "tokens_per_s": round(tokens / seconds, 1)})
                    texts_by.setdefault((n, name), texts)
                    print(f"round {r} {name:10s} {args.clients} streams x {n} tokens: {tokens} tokens in {seconds:.1f} s = "
                          f"{tokens / seconds:.1f} tokens/s", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    summary = {"model": args.model, "clients": args.clients, "rounds": args.rounds, "cpu_threads": os.cpu_count(), "runs": results,
               "rows": args.rows, f"ratio_{first}_over_{second}": {}, "same_texts": {}}
    for n, by in results.items():
        med = {name: statistics.median(x["tokens_per_s"] for x in runs) for name, runs in by.items()}
        ratio = summary[f"ratio_{first}_over_{second}"][n] = round(med[first] / med[second], 2)
        same = sum(a == b for a, b in zip(texts_by[(int(n), first)], texts_by[(int(n), second)]))
        summary["same_texts"][n] = f"{same}/{args.clients}"
        print(f"{n} tokens: {first} {med[first]:.1f} tokens/s, {second} {med[second]:.1f} tokens/s, "
              f"ratio {ratio:.2f}; same texts {summary['same_texts'][n]}")
    save(args.name, summary)


if __name__ == "__main__":
    main()
