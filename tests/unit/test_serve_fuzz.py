"""Fuzzing real `lmforge serve` processes on loopback (issue 11): requests generated from the
server's own OpenAPI document (schemathesis, valid and invalid), a catalogue of hostile requests
sent as raw bytes, and stalled connections. Classification, NER and generation servers, each on a
tiny random-initialised model. Nothing may get a 5xx, a traceback, or a connection dropped without
an answer, and the server must answer normally afterwards.

The servers run with short timeouts (1 s) and small limits so that the whole module stays fast;
the example counts are fixed and generation is derandomized, so a failure reproduces."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import free_port

LAUNCH = ("import json, sys\n"
          "from lmforge.serve.server import serve\n"
          "from lmforge.serve.settings import ServeSettings\n"
          "serve(sys.argv[1], ServeSettings(**json.loads(sys.argv[2])), log_level='warning')\n")
SETTINGS = {"body_timeout_s": 1.0, "header_timeout_s": 1.0, "max_chars": 300, "max_texts": 8, "explain_steps": 4,
            "max_explain_steps": 8, "max_new_tokens": 6, "max_prompt_chars": 200, "max_wait_ms": 2}
NORMAL = {"classification": ("/v1/predict", {"texts": ["the movie great was"]}),
          "ner": ("/v1/predict", {"texts": ["alice visited paris"]}),
          "generation": ("/v1/generate", {"prompt": "say hi", "max_new_tokens": 3})}



class Server:
    """A `serve()` process on a free loopback port; its stderr goes to a file for the traceback check."""

    def __init__(self, target, log_path, **settings):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        config = json.dumps({**SETTINGS, **settings, "port": self.port})
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(target), config], env=env,
                                         stdout=subprocess.DEVNULL, stderr=log)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
            try:
                with urllib.request.urlopen(f"{self.base}/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.base} never became ready:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def servers(cls_run, ner_run, tiny_decoder, tmp_path_factory):
    """One server per kind, started together (they load side by side)."""
    logs = tmp_path_factory.mktemp("serve-fuzz")
    started = {"classification": Server(cls_run, logs / "cls.log"), "ner": Server(ner_run, logs / "ner.log"),
               "generation": Server(tiny_decoder, logs / "gen.log")}
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


# --- raw HTTP ------------------------------------------------------------------------------------

def exchange(port: int, data: bytes, *, sock: socket.socket | None = None, timeout: float = 15):
    """Send raw bytes; (status, headers, body, socket) of the answer. A connection closed or reset
    before a complete response fails the test: that is a dropped connection."""
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(data)
    response = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode("latin-1"))
    try:
        response.begin()
        body = response.read()
    except (OSError, http.client.HTTPException) as err:
        raise AssertionError(f"no answer to {data[:120]!r}: {err!r}") from None
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body, sock


def post(path: str, body: bytes, content_type: str | None = "application/json", method: str = "POST",
         extra: str = "") -> bytes:
    kind = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{kind}Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _common_cases(route: str) -> list[tuple[str, bytes]]:
    deep_arrays = b"[" * 100_000 + b"]" * 100_000
    deep_objects = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    return [
        ("invalid UTF-8", post(route, b'{"texts": ["\xff\xfe"], "prompt": "\xc3\x28"}')),
        ("deep arrays", post(route, deep_arrays)),
        ("deep objects", post(route, deep_objects)),
        ("deep inside a field", post(route, b'{"texts": ' + deep_arrays + b', "prompt": ' + deep_arrays + b"}")),
        ("5000-digit number", post(route, b'{"steps": ' + b"9" * 5000 + b', "max_new_tokens": 1' + b"0" * 5000 + b"}")),
        ("1e999", post(route, b'{"steps": 1e999, "max_new_tokens": -1e999, "temperature": 1e999}')),
        ("NaN and Infinity", post(route, b'{"steps": NaN, "temperature": NaN, "top_p": Infinity}')),
        ("empty body", post(route, b"")),
        ("null", post(route, b"null")),
        ("array", post(route, b"[1, 2]")),
        ("string", post(route, b'"texts"')),
        ("plain text", post(route, b"hello there", "text/plain")),
        ("xml", post(route, b"<texts><t>hi</t></texts>", "application/xml")),
        ("multipart", post(route, b"--b\r\nContent-Disposition: form-data; name=texts\r\n\r\nhi\r\n--b--\r\n",
                           "multipart/form-data; boundary=b")),
        ("multipart without boundary", post(route, b"--b--", "multipart/form-data")),
        ("binary", post(route, bytes(range(256)), "application/octet-stream")),
        ("odd charset", post(route, b'{"texts": ["hi"]}', "application/json; charset=klingon")),
        ("utf-16 JSON", post(route, '{"texts": ["hi"], "prompt": "hi"}'.encode("utf-16"))),
        ("no content type", post(route, b'{"texts": ["hi"]}', None)),
        ("garbage method", post(route, b"{}", method="FROB")),
        ("DELETE", post(route, b"", method="DELETE")),
        ("expect 100-continue", post(route, b'{"texts": ["hi"]}', extra="Expect: 100-continue\r\n")),
        ("chunked, well formed", f"POST {route} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                 f"Content-Type: application/json\r\n\r\n5\r\n{{\"a\":\r\n2\r\n1}}\r\n0\r\n\r\n".encode()),
        ("NUL in path", get(b"/%00")),
        ("dot-dot path", get(b"/docs/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd")),
        ("dot-dot path raw", get(b"/docs/assets/../../../../etc/passwd")),
        ("long path", get(b"/" + b"a" * 10_000)),
        ("junk query", get(b"/health?%ff%fe=%00&&=&a=" + b"x" * 1000)),
        ("non-ASCII path", get(b"/v1/\xff\xfe")),
        ("huge header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 40_000 + b"\r\n\r\n"),
        ("two content lengths", b"POST " + route.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                b"Content-Length: 9\r\n\r\n{}"),
        ("bad content length", b"POST " + route.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n{}"),
        ("bad header bytes", b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x00\r\n\r\n"),
        ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64) + b"\r\n\r\n"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\n"),
    ]


def _route_cases(kind: str) -> list[tuple[str, bytes]]:
    def body(route: str, payload: str) -> tuple[str, bytes]:
        return (f"{route} {payload[:60]}", post(route, payload.encode()))

    if kind == "generation":
        return [body("/v1/generate", p) for p in (
            '{"prompt": "\\ud800"}', '{"prompt": "hi \\udfff there"}', '{"prompt": "hi", "stop": ["\\ud83d"]}',
            '{"prompt": "hi", "stop": [""]}', '{"prompt": "hi", "stop": "x"}', '{"prompt": "hi", "seed": -1}',
            '{"prompt": "hi", "seed": 18446744073709551616}', '{"prompt": "hi", "seed": true}',
            '{"prompt": "hi", "max_new_tokens": 0}', '{"prompt": "hi", "max_new_tokens": 100000000000000000000}',
            '{"prompt": "hi", "max_new_tokens": 2.0}', '{"prompt": "hi", "temperature": 1e-300}',
            '{"prompt": "hi", "temperature": 4.9, "top_p": 1e-320, "max_new_tokens": 2}', '{"prompt": "hi", "top_p": 0}',
            '{"prompt": "hi", "stream": "yes"}', '{"prompt": "hi", "stream": true, "stop": ["a", "b"], "max_new_tokens": 3}',
            '{"prompt": "\\u0000\\u200b\\ufeff", "max_new_tokens": 2}', '{"prompt": "' + "hi " * 600 + '"}',
            '{"prompt": "hi", "chat": 1}', '{"prompt": ["hi"]}', '{"prompt": {"a": 1}}')]
    cases = [body("/v1/predict", p) for p in (
        '{"texts": ["\\ud800"]}', '{"texts": ["ok", "\\udc00\\ud800"]}', '{"texts": [["a", "\\ud800"]]}',
        '{"texts": "a film"}', '{"texts": [1, null, {}]}', '{"texts": [true]}', '{"texts": [["a"]]}',
        '{"texts": [["a", "b", "c"]]}', '{"texts": [["a", "b"]]}', '{"texts": ["\\u0000", "\\u200b", "\\ufeff\\u0301"]}',
        '{"texts": ["' + "x" * 301 + '"]}', '{"texts": ' + json.dumps(["a"] * 9) + "}", '{"texts": []}')]
    cases += [body("/v1/explain", p) for p in (
        '{"text": "\\ud800"}', '{"text": "a film", "target": "\\udfff"}', '{"text": "a film", "text_pair": "\\ud800"}',
        '{"text": "a film", "steps": 1}', '{"text": "a film", "steps": true}', '{"text": "a film", "steps": 0}',
        '{"text": "a film", "steps": -5}', '{"text": "a film", "steps": 2.0}', '{"text": "a film", "steps": "5"}',
        '{"text": "a film", "steps": 1000000000000000000000000000000}', '{"text": "a film", "entity": true}',
        '{"text": "a film", "entity": 1000000000000000000000}', '{"text": "a film", "entity": 3}',
        '{"text": "a film", "target": "nope"}', '{"text": "a film", "baseline": "zeros"}', '{"text": "\\u200b"}',
        '{"text": "\\u0301\\u0301", "steps": 2}', '{"text": "alice visited paris", "entity": 0, "steps": 2}',
        '{"text": "' + "alice " * 60 + '", "steps": 2}')]
    return cases


def _check_answer(name: str, status: int, headers: dict, body: bytes) -> None:
    assert status < 500, f"{name}: {status} {body[:300]!r}"
    assert b"Traceback" not in body and b'File "' not in body, f"{name}: {body[:300]!r}"
    if status >= 400 and headers.get("content-type", "").startswith("application/json"):
        error = json.loads(body)["error"]
        assert error["code"] and error["message"], name


def _still_fine(server: Server, kind: str) -> None:
    status, _, body, sock = exchange(server.port, get(b"/health"))
    sock.close()
    assert status == 200 and json.loads(body) == {"status": "ok"}
    route, payload = NORMAL[kind]
    status, _, body, sock = exchange(server.port, post(route, json.dumps(payload).encode()))
    sock.close()
    assert status == 200, body


@pytest.mark.parametrize("kind", ["classification", "ner", "generation"])
def test_hostile_requests_get_a_4xx_answer_and_leave_the_server_fine(servers, kind):
    server = servers[kind]
    route = NORMAL[kind][0]
    for name, data in _common_cases(route) + _route_cases(kind):
        status, headers, body, sock = exchange(server.port, data)
        _check_answer(name, status, headers, body)
        if headers.get("connection") != "close" and status != 400:
            # an answered request leaves the keep-alive connection usable
            try:
                again, _, _, _ = exchange(server.port, get(b"/health"), sock=sock)
            except AssertionError as err:
                raise AssertionError(f"after {name}: {err}") from None
            assert again == 200, name
        sock.close()
    _still_fine(server, kind)


# --- requests generated from the OpenAPI document ------------------------------------------------

def _fuzz_schema(server: Server, examples: int) -> None:
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                                   response_schema_conformance, status_code_conformance)

    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    session = requests.Session()  # one keep-alive connection for every case
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]
    for mode, extra in ((GenerationMode.POSITIVE, []), (GenerationMode.NEGATIVE, [negative_data_rejection])):
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None, phases=[Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(mode))
        def one(case):
            case.call_and_validate(base_url=server.base, session=session, checks=checks + extra, timeout=30)

        one()


@pytest.mark.parametrize("kind, examples", [("classification", 30), ("ner", 30), ("generation", 30)])
def test_requests_generated_from_the_openapi_document(servers, kind, examples):
    _fuzz_schema(servers[kind], examples)
    _still_fine(servers[kind], kind)


def test_feedback_route_fuzzed_from_its_schema(cls_run, tmp_path):
    """/v1/feedback exists on registry:NAME servers only; fuzzed in process, on a prediction log."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

    from lmforge.lifecycle.predlog import PredictionLog
    from lmforge.predictor import Predictor
    from lmforge.serve.app import create_app
    from lmforge.serve.settings import ServeSettings

    app = create_app(Predictor.from_run(cls_run), ServeSettings(), prediction_log=PredictionLog(tmp_path / "log.sqlite", "m"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path="/v1/feedback")
    for mode, extra in ((GenerationMode.POSITIVE, []), (GenerationMode.NEGATIVE, [negative_data_rejection])):
        @settings(max_examples=25, deadline=None, derandomize=True, database=None, phases=[Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(mode))
        def one(case):
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, *extra])

        one()


# --- slow and stalled clients --------------------------------------------------------------------

def _until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    sock.settimeout(limit)
    started, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"still open after {limit} s; got {data[:200]!r}") from None
    return data, time.monotonic() - started


def test_stalled_bodies_get_408_and_are_closed(servers):
    server = servers["classification"]
    stalls = ["POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
              '{"texts": ['.encode()] * 60
    stalls += [b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n{\"texts\""] * 20
    socks = []
    for data in stalls:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(data)
        socks.append(sock)
    _still_fine(server, "classification")  # stalled clients hold no one else up
    answers = [_until_closed(sock, 10) for sock in socks]
    for data, seconds in answers:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), data[:300]
        error = json.loads(body)["error"]
        assert error["code"] == "body_timeout" and error["limit"] == "body_timeout_s" and error["value"] == 1.0
        assert seconds < 5
    for sock in socks:
        sock.close()
    _still_fine(server, "classification")


def test_stalled_and_trickled_request_heads_are_closed(servers):
    server = servers["classification"]
    silent = socket.create_connection(("127.0.0.1", server.port))
    partial = socket.create_connection(("127.0.0.1", server.port))
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    for sock in (silent, partial):
        data, seconds = _until_closed(sock, 10)
        assert data == b"" and seconds < 5
        sock.close()

    trickle = socket.create_connection(("127.0.0.1", server.port))
    started, closed = time.monotonic(), threading.Event()
    try:
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"s" * 100:  # one byte every 0.1 s: 11 s in all
            trickle.send(bytes([byte]))
            time.sleep(0.1)
    except OSError:
        closed.set()
    assert closed.is_set() and time.monotonic() - started < 5  # closed at the 1 s head deadline
    trickle.close()
    _still_fine(server, "classification")


def test_server_logs_hold_no_traceback(servers):
    """Runs last: every request above was answered without an unexpected error in the server."""
    for kind, server in servers.items():
        _still_fine(server, kind)
        assert "Traceback" not in server.log(), f"{kind} server log:\n{server.log()[-3000:]}"
