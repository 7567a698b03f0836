"""Soak: many requests from many keep-alive clients against one `lmforge serve` process, watching
for errors and for memory that grows. After a warm-up, the load runs in rounds; the server's
resident memory (RSS) is read after the warm-up and after every round.

    python bench/soak.py --run RUN_DIR [--requests 20000] [--clients 64] [--rounds 10] [--poison-every 0.2] [--name soak]

RUN_DIR is a classifier or NER run folder (one text per request, POST /v1/predict); SST-2 dev
sentences when ../shared/data has them, else generated sentences. With --poison-every S, one more
client sends a text that is not valid Unicode every S seconds (it must get a 4xx and fail no one
else). Goal (issue 11): 0 errors, RSS growth after the warm-up <= 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import _load, batch_sizes, free_port, post_predict, stop_server, wait_ready

POISON = b'{"texts": ["\\ud800 a lone surrogate"]}'
WORDS = "the a movie film plot acting was is very not good great awful boring book table flight alice paris acme".split()


def sentences() -> list[str]:
    """SST-2 dev sentences, or (without the shared data) 1,000 generated ones of 3 to 25 words."""
    from common import ROOT

    path = ROOT.parent / "shared" / "data" / "sst2" / "glue" / "dev.tsv"
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            return [row["sentence"].strip() for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    rng = random.Random(0)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 25))) for _ in range(1000)]


async def _poison(port: int, every: float, done: asyncio.Event, statuses: Counter) -> None:
    """Send POISON every `every` seconds on a keep-alive connection until `done`; reconnect when the
    server drops the connection (counted as "dropped")."""
    while not done.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            statuses["refused"] += 1
            await asyncio.sleep(every)
            continue
        try:
            while not done.is_set():
                status, _ = await post_predict(reader, writer, POISON)
                statuses[status] += 1
                try:
                    await asyncio.wait_for(done.wait(), every)
                except asyncio.TimeoutError:
                    pass
        except (OSError, asyncio.IncompleteReadError):
            statuses["dropped"] += 1
        finally:
            writer.close()


async def _round(port: int, texts: list[str], clients: int, requests: int, poison_every: float) -> dict:
    """One round of load, with the poisoning client beside it when `poison_every` > 0."""
    statuses: Counter = Counter()
    done = asyncio.Event()
    poisoner = asyncio.create_task(_poison(port, poison_every, done, statuses)) if poison_every > 0 else None
    result = await _load(port, texts, clients, requests)
    done.set()
    if poisoner is not None:
        await poisoner
    return {**result, "poison": dict(statuses)}


def rss_mb(proc: psutil.Process) -> float:
    return round(proc.memory_info().rss / 2**20, 1)


def soak(run_dir: str, requests: int, clients: int, rounds: int, poison_every: float = 0.0) -> dict:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # the server's log goes to a file: a pipe nobody reads fills up and blocks a server that logs a lot
    log = tempfile.NamedTemporaryFile("w+", prefix="lmforge-soak-", suffix=".log")
    server = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", str(run_dir), "--port", str(port),
                               "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    texts = sentences()
    try:
        wait_ready(port, server)
        process = psutil.Process(server.pid)
        warmup = asyncio.run(_load(port, texts, clients, max(clients, requests // 10)))
        after_warmup = rss_mb(process)
        trace, results, started = [], [], time.perf_counter()
        for _ in range(rounds):
            results.append(asyncio.run(_round(port, texts, clients, max(clients, requests // rounds), poison_every)))
            trace.append(rss_mb(process))
        seconds = time.perf_counter() - started
        mean_batch = batch_sizes(port)
    finally:
        stop_server(server)
        log.seek(0)
        stderr = log.read()
        log.close()
    done = sum(r["requests"] for r in results)
    poison = sum((Counter(r["poison"]) for r in results), Counter())
    errors = sum(r["errors"] for r in results) + warmup["errors"]
    return {"run": str(run_dir), "requests": done, "warmup_requests": warmup["requests"], "clients": clients,
            "errors": errors, "error_rate_pct": round(100 * errors / max(1, done + warmup["requests"]), 2),
            "poison_every_s": poison_every, "poison_answers": {str(k): v for k, v in poison.items()}, "first_errors": [e for r in [warmup, *results] for e in r["first_errors"]][:3],
            "throughput_rps": round(done / seconds, 1), "p99_ms_worst_round": max(r["p99_ms"] for r in results),
            "mean_batch_size": mean_batch, "rss_mb_after_warmup": after_warmup, "rss_mb_end": trace[-1],
            "rss_mb_by_round": trace, "rss_growth_pct": round(100 * (trace[-1] - after_warmup) / after_warmup, 2),
            "tracebacks_in_server_log": stderr.count("Traceback")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="classifier or NER run folder")
    parser.add_argument("--requests", type=int, default=20_000, help="requests after the warm-up (which adds 10%%)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--rounds", type=int, default=10, help="RSS is read after each round")
    parser.add_argument("--poison-every", type=float, default=0.0, help="seconds between invalid-Unicode requests (0: none)")
    parser.add_argument("--name", default="soak", help="results file name under bench/results/")
    args = parser.parse_args()
    result = soak(args.run, args.requests, args.clients, args.rounds, args.poison_every)
    print(f"soak: {result['requests']} requests ({args.clients} clients), {result['errors']} errors "
          f"({result['error_rate_pct']}%; poison answers {result['poison_answers']}), "
          f"{result['throughput_rps']} req/s; RSS {result['rss_mb_after_warmup']} MB after warm-up -> {result['rss_mb_end']} MB "
          f"at the end ({result['rss_growth_pct']:+.2f}%); by round {result['rss_mb_by_round']}")
    from common import save

    save(args.name, result)


if __name__ == "__main__":
    main()
