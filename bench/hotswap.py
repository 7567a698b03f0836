"""Hot swap under load: `lmforge serve registry:NAME` while 32 keep-alive clients send one-sentence
requests; a promotion at t=10 s and a rollback at t=25 s, no restart. Records every request's start
time, latency, status and the version that answered, then reports failed requests (goal: 0), the
steady-state latency, the latency in the seconds around each swap (the blip) and how long after the
registry change the first answer of the new version came.

    python bench/hotswap.py --registry /tmp/lmforge-bench/continual/registry --name clinc --to 3 [--clients 32] [--seconds 40]

The registry comes from bench/continual.py (v1 production; v3 = the update with replay).
Results: bench/results/hotswap.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save
from serve_load import free_port, post_predict, wait_ready

SENTENCES = ["what is my bank balance", "book a table for two at an italian place", "how do i say hello in french",
             "set an alarm for six am", "my card was stolen", "what is the weather like tomorrow",
             "transfer fifty dollars to my savings", "play some jazz music"]


async def _client(port: int, stop_at: float, records: list, started_at: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.perf_counter() < stop_at:
            body = json.dumps({"texts": [SENTENCES[i % len(SENTENCES)]]}).encode()
            i += 1
            t0 = time.perf_counter()
            status, payload = await post_predict(reader, writer, body)
            version = json.loads(payload).get("model_version") if status == 200 else None
            records.append((t0 - started_at, time.perf_counter() - t0, status, version))
    except (OSError, asyncio.IncompleteReadError) as err:
        records.append((time.perf_counter() - started_at, 0.0, 0, f"connection: {err}"))
    finally:
        writer.close()


def _quantiles(latencies: list[float]) -> dict:
    if not latencies:
        return {}
    lat = sorted(latencies)
    q = lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1)  # noqa: E731
    return {"requests": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(1000 * lat[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", type=Path, default=Path("/tmp/lmforge-bench/continual/registry"))
    parser.add_argument("--name", default="clinc")
    parser.add_argument("--to", type=int, default=3, help="the version promoted at t=10 s")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--result", default="hotswap")
    args = parser.parse_args()
    from lmforge.lifecycle import Registry

    registry = Registry(args.registry)
    before = registry.production(args.name)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", f"registry:{args.name}", "--registry", str(args.registry),
                             "--port", str(port), "--log-level", "warning"], env=env)
    events: dict[str, float] = {}
    try:
        wait_ready(port, proc)
        records: list = []
        started_at = time.perf_counter()

        def operator() -> None:
            time.sleep(10)
            events["promote"] = time.perf_counter() - started_at
            registry.promote(args.name, args.to, force=True)
            time.sleep(15)
            events["rollback"] = time.perf_counter() - started_at
            registry.rollback(args.name)

        thread = threading.Thread(target=operator)
        thread.start()

        async def load() -> None:
            stop_at = started_at + args.seconds
            await asyncio.gather(*(_client(port, stop_at, records, started_at) for _ in range(args.clients)))

        asyncio.run(load())
        thread.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    failed = [r for r in records if r[2] != 200]
    ok = [r for r in records if r[2] == 200]
    new_tag, old_tag = f"{args.name}:v{args.to}", before.ref
    first_new = min((r[0] + r[1] for r in ok if r[3] == new_tag), default=None)
    back_old = min((r[0] + r[1] for r in ok if r[3] == old_tag and r[0] > events["rollback"]), default=None)
    steady = [r[1] for r in ok if r[0] < events["promote"] - 1 and r[0] > 2]
    around = lambda t: [r[1] for r in ok if t - 0.5 <= r[0] <= t + 5]  # noqa: E731
    results = {"clients": args.clients, "seconds": args.seconds, "requests": len(records), "failed": len(failed),
               "first_failures": [str(r) for r in failed[:3]],
               "throughput_rps": round(len(ok) / args.seconds, 1),
               "versions_seen": sorted({r[3] for r in ok}),
               "promote": {"from": old_tag, "to": new_tag, "at_s": round(events["promote"], 2),
                           "first_answer_of_new_version_after_s": round(first_new - events["promote"], 2) if first_new else None,
                           "latency_next_5s": _quantiles(around(events["promote"]))},
               "rollback": {"at_s": round(events["rollback"], 2),
                            "first_answer_of_old_version_after_s": round(back_old - events["rollback"], 2) if back_old else None,
                            "latency_next_5s": _quantiles(around(events["rollback"]))},
               "steady_state": _quantiles(steady)}
    print(json.dumps(results, indent=2))
    save(args.result, results)


if __name__ == "__main__":
    main()
