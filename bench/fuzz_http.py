"""Hostile HTTP traffic against a real `lmforge serve` process: N requests, a mix of requests
generated from the server's own OpenAPI document (schemathesis: valid and invalid), mutated JSON
bodies (lone surrogates, raw invalid UTF-8, wrong types, booleans for integers, huge and deep
values, odd content types, chunked bodies) and raw protocol junk; then stalled connections (bodies
that stop, huge declared chunks, request heads that never finish). Tallies the answers by status
class and counts what must never happen: 5xx answers, connections dropped without an answer,
tracebacks in a response, tracebacks in the server log, stalled connections still open after the
timeout; finally checks that /health and a normal request still answer.

    python bench/fuzz_http.py --run RUN_DIR [--n 2000] [--seed 0] [--name fuzz_http]

RUN_DIR is any run folder `lmforge serve` takes (classifier, NER, or a generation model); a tiny
one is enough. `run(run_dir, n, seed)` returns the summary (bench/fuzz.py calls it).
Goal (issue 11): 0 server errors, 0 dropped connections, 0 tracebacks, 0 stalls left open.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import free_port, stop_server, wait_ready

ROUTES = {"classification": {"/v1/predict": {"texts": ["the film was great"]},
                             "/v1/explain": {"text": "the film was great", "steps": 4}},
          "generation": {"/v1/generate": {"prompt": "say hi", "max_new_tokens": 4}}}
WEIRD_VALUES = ["\ud800", "ok \udfff", "\ud83d\ude00", "", " ", "\u0000", "\u200b\ufeff", "\u0301\u0301", "\u202e evil",
                "x" * 5000, True, False, None, 0, -1, 1, 2.5, 10**30, -(10**30), 1e308, "5", [], {}, [[[]]],
                ["a", "b"], ["a", "\ud800"], [1, None], {"a": 1}, ["ok"] * 100]
CONTENT_TYPES = ["application/json", None, "application/x-www-form-urlencoded", "text/plain", "application/xml",
                 "multipart/form-data; boundary=x", "application/json; charset=klingon", "application/octet-stream"]
TRACEBACK_MARKERS = (b"Traceback (most recent call last)", b'File "/')


@contextlib.contextmanager
def serving(run_dir: str):
    """A `lmforge serve` process on a free port: yields (port, process, log path)."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="lmforge-fuzz-")) / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", str(run_dir), "--port", str(port),
                                 "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_ready(port, proc)
        yield port, proc, log
    finally:
        stop_server(proc)


def served_kind(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=10) as r:
        return "generation" if json.loads(r.read())["task"] == "generation" else "classification"


# -- one exchange ------------------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.by_class: Counter = Counter()
        self.by_status: Counter = Counter()
        self.dropped = 0
        self.tracebacks = 0
        self.examples: list[str] = []  # the first few requests that got a 5xx, a traceback or no answer

    def record(self, data: bytes, status: int | None, body: bytes) -> None:
        if status is None:
            self.dropped += 1
        else:
            self.by_class[f"{status // 100}xx"] += 1
            self.by_status[status] += 1
        traceback = any(m in body for m in TRACEBACK_MARKERS)
        self.tracebacks += traceback
        if (status is None or status >= 500 or traceback) and len(self.examples) < 5:
            self.examples.append(f"{status}: {data[:200]!r} -> {body[:200]!r}")


class Connection:
    """A keep-alive client connection that sends raw bytes. It reconnects only when the server said
    it would close (Connection: close); a request that gets no answer is a dropped connection."""

    def __init__(self, port: int, timeout: float = 60):
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None

    def send(self, data: bytes) -> tuple[int | None, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        try:
            self.sock.sendall(data)
            response = http.client.HTTPResponse(self.sock, method=data.split(b" ", 1)[0].decode("latin-1") or "GET")
            response.begin()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return None, b""
        if response.will_close:
            self.close()
        return response.status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def exchange(port: int, data: bytes) -> tuple[int | None, bytes]:
    """Send raw bytes on a fresh connection: (status, body), or (None, b"") when no answer came."""
    connection = Connection(port)
    try:
        return connection.send(data)
    finally:
        connection.close()


def request(method: str, path: str, body: bytes, content_type: str | None, chunked: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if chunked:
        pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(
            f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# -- hostile requests --------------------------------------------------------------------------------
def mutated_body(rng: random.Random, payload: dict) -> bytes:
    """A request body derived from a valid one: fields replaced by odd values, dropped, added, or the
    bytes corrupted (raw surrogates, invalid UTF-8, truncation, deep nesting)."""
    body = dict(payload)
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        key = rng.choice(list(body) or ["texts"])
        if action < 0.3 and isinstance(body.get(key), list) and body[key]:
            items = list(body[key])
            items[rng.randrange(len(items))] = rng.choice(WEIRD_VALUES)
            body[key] = items + rng.choice([[], ["the plot was good"]])
        elif action < 0.6:
            body[key] = rng.choice(WEIRD_VALUES)
        elif action < 0.75:
            body.pop(key, None)
        elif action < 0.85:
            body[rng.choice(["extra", "steps", "entity", "seed", "stream", "target", "stop"])] = rng.choice(WEIRD_VALUES)
        else:
            body = {key: [body.get(key)] * rng.randint(0, 3)}
    raw = json.dumps(body).encode()
    corruption = rng.random()
    if corruption < 0.1:
        raw = raw.replace(b"\\ud800", b"\xed\xa0\x80").replace(b'"the', b'"\xed\xa0\x80the')
    elif corruption < 0.2:
        cut = rng.randrange(len(raw) + 1)
        raw = raw[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x00"]) + raw[cut:]
    elif corruption < 0.25:
        raw = raw[:rng.randrange(len(raw) + 1)]
    elif corruption < 0.28:
        depth = rng.choice([1000, 100_000])
        raw = b'{"texts": ' + b"[" * depth + b"]" * depth + b"}"
    elif corruption < 0.30:
        raw = b'{"steps": ' + b"9" * 5000 + b', "max_new_tokens": 1e999, "temperature": NaN}'
    return raw


def protocol_junk(rng: random.Random) -> bytes:
    return rng.choice([
        b"FROB /v1/predict HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /%00%ff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/\xff HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /docs/assets/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /docs/assets/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\xff" + os.urandom(40),
        b"GET / HTTP/1.1\r\n\r\n", b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
        b"GET /" + b"a" * rng.choice([100, 10_000]) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /v1/model HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /health HTTP/1.0\r\n\r\n",
    ])


def hostile(rng: random.Random, routes: dict) -> bytes:
    if rng.random() < 0.15:
        return protocol_junk(rng)
    path, payload = rng.choice(list(routes.items()))
    return request("POST", path, mutated_body(rng, payload), rng.choice(CONTENT_TYPES), chunked=rng.random() < 0.1)


def schema_requests(port: int, n: int, seed: int, tally: Tally) -> None:
    """n requests generated from /openapi.json by schemathesis, half valid and half invalid."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from schemathesis import GenerationMode

    base = f"http://127.0.0.1:{port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    session = requests.Session()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @hypothesis_seed(seed)
        @settings(max_examples=max(1, n // 2), deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(mode))
        def one(case):
            try:
                response = case.call(base_url=base, session=session, timeout=60)
            except requests.RequestException as err:
                tally.record(f"{case.method} {case.path} {case.body!r}".encode(), None, repr(err).encode())
                return
            tally.record(f"{case.method} {case.path} {case.body!r}".encode(), response.status_code, response.content)

        one()


# -- stalled connections -----------------------------------------------------------------------------
def stall_requests(path: str) -> list[bytes]:
    return [f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"te".encode(),
            f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n{{\"texts\"".encode(),
            b"GET /health HTTP/1.1\r\nHost: x\r\n", b""]


def stalled(port: int, count: int, path: str, limit: float = 25) -> dict:
    """Open `count` connections to `path` that stall (mid-body, mid-chunk, mid-head, silent) and wait
    for the server to answer and close them."""
    socks, kinds = [], stall_requests(path)
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(kinds[i % len(kinds)])
        socks.append(sock)
    outcome: Counter = Counter()
    deadline = time.monotonic() + limit
    for sock in socks:
        data = b""
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while chunk := sock.recv(65536):
                data += chunk
            outcome["answered_408" if data.startswith(b"HTTP/1.1 408") else "closed"] += 1
        except socket.timeout:
            outcome["still_open"] += 1
        except OSError:
            outcome["closed"] += 1
        sock.close()
    return {"sent": count, **outcome}


def still_fine(port: int, routes: dict) -> bool:
    path, payload = next(iter(routes.items()))
    health, _ = exchange(port, request("GET", "/health", b"", None))
    normal, _ = exchange(port, request("POST", path, json.dumps(payload).encode(), "application/json"))
    return health == 200 and normal == 200


def run(run_dir: str, n: int = 2000, seed: int = 0) -> dict:
    """Fuzz a server on `run_dir` with n requests (and n/50 stalled connections, at least 8)."""
    rng = random.Random(seed)
    started = time.perf_counter()
    with serving(run_dir) as (port, proc, log):
        routes = ROUTES[served_kind(port)]
        tally = Tally()
        n_schema = n * 2 // 5
        schema_requests(port, n_schema, seed, tally)
        connection = Connection(port)
        for _ in range(n - n_schema):
            data = hostile(rng, routes)
            tally.record(data, *connection.send(data))
        connection.close()
        stalls = stalled(port, max(8, n // 50), next(iter(routes)))
        fine = still_fine(port, routes)
        server_tracebacks = log.read_text(errors="replace").count("Traceback")
    summary = {"run": str(run_dir), "seed": seed, "requests": sum(tally.by_class.values()) + tally.dropped,
               "by_class": dict(sorted(tally.by_class.items())), "by_status": {str(k): v for k, v in sorted(tally.by_status.items())},
               "server_errors": tally.by_class.get("5xx", 0), "dropped_connections": tally.dropped,
               "tracebacks_in_responses": tally.tracebacks, "tracebacks_in_server_log": server_tracebacks,
               "stalled_connections": stalls, "health_and_normal_request_after": fine,
               "seconds": round(time.perf_counter() - started, 1), "examples": tally.examples}
    print(f"fuzz_http {Path(run_dir).name}: {summary['requests']} requests {summary['by_class']}; 5xx {summary['server_errors']}, "
          f"dropped {tally.dropped}, tracebacks {tally.tracebacks} (+{server_tracebacks} in the server log); "
          f"stalls {stalls}; fine after: {fine}; {summary['seconds']} s", flush=True)
    for example in tally.examples:
        print("  ", example)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (or model folder) to serve")
    parser.add_argument("--n", type=int, default=2000, help="requests to send")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="fuzz_http", help="results file name under bench/results/")
    args = parser.parse_args()
    summary = run(args.run, args.n, args.seed)
    from common import save

    save(args.name, summary)


if __name__ == "__main__":
    main()
