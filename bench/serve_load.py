"""Serving under load, side by side in one run: (a) `lmforge serve --backend onnx` (int8, micro-
batching), (b) `lmforge serve` (torch backend), (c) the naive baseline (bench/naive_server.py: a
FastAPI route calling a transformers pipeline per request). Same model, same SST-2 dev sentences,
one sentence per request, C concurrent clients on keep-alive loopback connections for a fixed number
of requests. Prints throughput, p50/p95/p99 latency, errors and ratios; also the /v1/explain latency
for a 20-word sentence. Servers run one at a time, each alone with the load generator.

    python bench/serve_load.py --run RUN_DIR [--clients 32] [--requests 3000] [--only onnx torch naive] [--name serve_load]
    python bench/serve_load.py --run RUN_DIR --baseline-src /tmp/wt-before/src --only onnx-before onnx torch-before torch

--baseline-src runs "onnx-before" / "torch-before" servers from an earlier lmforge source tree (a git worktree at an
older commit), so a change is measured against the code it replaces in the same run.

RUN_DIR is a trained SST-2 classifier (bench/onnx_speed.py trains one when asked); the ONNX int8
export is made first if the run has none. Goal (issue #3): (a) >= 4x the naive baseline's
throughput, p99 <= 100 ms, zero errors.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio streams (like wrk), so that
the client's own CPU use, on the same 2 cores, stays small and equal for every server.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, save, shared_data

EXPLAIN_TEXT = ("the acting is superb and the story moves quickly , but the ending feels rushed and "
                "the jokes rarely land at all")  # 21 words and a comma


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit("server never became ready")


async def post_predict(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> tuple[int, bytes]:
    """One POST /v1/predict on a keep-alive connection: (status, payload)."""
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    payload = await reader.readexactly(length)
    return (int(status_line.split()[1]) if status_line else 0), payload


async def _one_connection(port: int, bodies: list[bytes], latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            started = time.perf_counter()
            status, payload = await post_predict(reader, writer, body)
            latencies.append(time.perf_counter() - started)
            if status != 200 or b"predictions" not in payload:
                errors.append(f"{status}: {payload[:200]!r}")
    except (OSError, asyncio.IncompleteReadError) as err:
        errors.append(f"connection: {err}")
    finally:
        writer.close()


async def _load(port: int, texts: list[str], clients: int, requests: int) -> dict:
    bodies = [json.dumps({"texts": [texts[i % len(texts)]]}).encode() for i in range(requests)]
    shares = [bodies[c::clients] for c in range(clients)]
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(_one_connection(port, share, latencies, errors) for share in shares))
    wall = time.perf_counter() - started
    lat = sorted(latencies)
    q = lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2)  # noqa: E731
    return {"requests": len(lat), "errors": len(errors), "first_errors": errors[:3], "seconds": round(wall, 2),
            "throughput_rps": round(len(lat) / wall, 1), "p50_ms": q(0.50), "p95_ms": q(0.95), "p99_ms": q(0.99),
            "mean_ms": round(1000 * statistics.fmean(lat), 2)}


def batch_sizes(port: int) -> float | None:
    """Mean texts per forward pass, from lmforge's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = re.search(r"^lmforge_batch_size_sum ([\d.e+]+)$", text, re.M)
    count = re.search(r"^lmforge_batch_size_count ([\d.e+]+)$", text, re.M)
    return round(float(total.group(1)) / float(count.group(1)), 2) if total and count and float(count.group(1)) else None


def explain_latency(port: int, repeats: int = 10) -> dict:
    body = json.dumps({"text": EXPLAIN_TEXT}).encode()
    times = []
    for _ in range(repeats + 1):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/explain", data=body, headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            result = json.loads(r.read())
        times.append(time.perf_counter() - started)
    times = times[1:]  # the first call builds captum's graph
    return {"words": len(EXPLAIN_TEXT.split()), "steps": result.get("steps"), "p50_ms": round(1000 * statistics.median(times), 1),
            "max_ms": round(1000 * max(times), 1), "delta": result.get("delta")}


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (in-flight requests finish), then SIGKILL after a minute."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_server(name: str, command: list[str], port: int, texts: list[str], args, src: Path | None = None) -> dict:
    print(f"== {name}: {' '.join(command)}" + (f" (PYTHONPATH={src})" if src else ""), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    log = tempfile.TemporaryFile(mode="w+")  # a pipe read only at the end blocks a server that logs a lot
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_ready(port, proc)
        asyncio.run(_load(port, texts, args.clients, min(200, args.requests)))  # warm-up
        result = asyncio.run(_load(port, texts, args.clients, args.requests))
        result["mean_batch_size"] = batch_sizes(port)
        if name.startswith("lmforge-torch"):
            result["explain"] = explain_latency(port)
    finally:
        stop_server(proc)
    print(name, json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="trained SST-2 run folder")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--only", nargs="*", default=["onnx", "torch", "naive"], choices=["onnx", "torch", "naive", "onnx-before", "torch-before"])
    parser.add_argument("--baseline-src", type=Path, help="an earlier lmforge src/ folder for the *-before servers")
    parser.add_argument("--name", default="serve_load", help="results file name under bench/results/")
    args = parser.parse_args()
    with (shared_data() / "sst2" / "glue" / "dev.tsv").open(encoding="utf-8") as fh:
        texts = [row["sentence"].strip() for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    run = args.run.resolve()
    lmforge = [sys.executable, "-m", "lmforge.cli", "serve", str(run), "--log-level", "warning"]
    if any(name.startswith("onnx") for name in args.only) and not (run / "onnx" / "model.onnx").is_file():
        subprocess.run([sys.executable, "-m", "lmforge.cli", "export", str(run), "--quantize", "int8"], check=True)
    results = {}
    for name in args.only:
        port = free_port()
        if name.endswith("-before"):
            if args.baseline_src is None:
                raise SystemExit(f"--only {name} needs --baseline-src")
            label, extra = {"onnx-before": ("lmforge-onnx-int8-before", ["--backend", "onnx"]), "torch-before": ("lmforge-torch-before", [])}[name]
            results[label] = run_server(label, [*lmforge, *extra, "--port", str(port)], port, texts, args, args.baseline_src.resolve())
        elif name == "onnx":
            results["lmforge-onnx-int8"] = run_server("lmforge-onnx-int8", [*lmforge, "--backend", "onnx", "--port", str(port)], port, texts, args)
        elif name == "torch":
            results["lmforge-torch"] = run_server("lmforge-torch", [*lmforge, "--port", str(port)], port, texts, args)
        elif name == "naive":
            command = [sys.executable, str(ROOT / "bench" / "naive_server.py"), "--model", str(run / "model"), "--port", str(port)]
            results["naive-pipeline"] = run_server("naive-pipeline", command, port, texts, args)
    base = results.get("naive-pipeline")
    print(f"\n{'server':<20}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}{'batch':>7}{'x naive':>9}")
    for name, r in results.items():
        ratio = r["throughput_rps"] / base["throughput_rps"] if base else float("nan")
        r["throughput_vs_naive"] = round(ratio, 2)
        print(f"{name:<20}{r['throughput_rps']:>9}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['p99_ms']:>9}{r['errors']:>8}"
              f"{str(r.get('mean_batch_size') or '-'):>7}{ratio:>9.2f}")
    for name in ("onnx-int8", "torch"):
        before, now = results.get(f"lmforge-{name}-before"), results.get(f"lmforge-{name}")
        if before and now:
            now["throughput_vs_before"] = round(now["throughput_rps"] / before["throughput_rps"], 2)
            print(f"lmforge-{name}: {now['throughput_vs_before']}x the throughput of the baseline source")
    if "lmforge-torch" in results:
        print(f"\n/v1/explain, {EXPLAIN_TEXT.count(' ') + 1} words: {results['lmforge-torch']['explain']}")
    save(args.name, {"clients": args.clients, "requests": args.requests, "texts": "SST-2 dev sentences, one per request",
                        "run": run.name, "baseline_src": str(args.baseline_src) if args.baseline_src else None, "results": results})


if __name__ == "__main__":
    main()
