"""The HTTP API: every endpoint, status code and limit (TestClient), micro-batching under
concurrency, graceful shutdown of a real uvicorn server, and a real `lmforge serve` process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest
from fastapi.testclient import TestClient

from lmforge.predictor import Predictor
from lmforge.serve.app import WARMUP_TEXT, create_app
from lmforge.serve.settings import ServeSettings
from conftest import free_port

TEXTS = ["the movie great was", "the plot awful was", "the film book was", "very acting superb film"]


def _client(predictor, **settings) -> TestClient:
    return TestClient(create_app(predictor, ServeSettings(**settings)), raise_server_exceptions=False)


def _wait_ready(client, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get("/ready")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def test_health_ready_and_model_info(cls_predictor, cls_run):
    with _client(cls_predictor) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = _wait_ready(c)
        assert ready["model_version"] == cls_predictor.version
        info = c.get("/v1/model").json()
        assert info["task"] == "text-classification"
        assert info["labels"] == ["negative", "neutral", "positive"]
        assert info["method"] == "full" and info["backend"] == "torch"
        assert info["version"] == cls_predictor.version
        assert "dev" in json.dumps(info["metrics"])  # the run's metrics.json
        assert c.get("/docs").status_code == 200 and "/v1/predict" in c.get("/openapi.json").text


def test_predict_matches_the_predictor_and_keeps_order(cls_predictor):
    expected = cls_predictor.predict(TEXTS)
    with _client(cls_predictor) as c:
        r = c.post("/v1/predict", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == cls_predictor.version
    assert [p["label"] for p in body["predictions"]] == [p["label"] for p in expected]
    for got, want in zip(body["predictions"], expected):
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert set(got["probabilities"]) == {"negative", "neutral", "positive"}
    assert r.headers["x-request-id"]


def test_predict_ner_entities_with_offsets(ner_predictor):
    text = "alice visited paris"
    with _client(ner_predictor) as c:
        r = c.post("/v1/predict", json={"texts": [text, "bob works for acme in london"]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert set(preds[0]) == {"entities"}
    assert [(e["type"], e["text"]) for e in preds[0]["entities"]] == [("PER", "alice"), ("LOC", "paris")]
    for e in preds[0]["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1


@pytest.mark.parametrize("body, status, limit, value", [
    ({"texts": ["a film"] * 5}, 413, "max_texts", 4),
    ({"texts": ["x" * 41]}, 413, "max_chars", 40),
])
def test_request_limits_name_the_limit(cls_predictor, body, status, limit, value):
    with _client(cls_predictor, max_texts=4, max_chars=40) as c:
        r = c.post("/v1/predict", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["limit"] == limit and err["value"] == value and str(value) in err["message"]


def test_body_size_limit_declared_and_streamed(cls_predictor):
    big = json.dumps({"texts": ["the film was great " * 20] * 5}).encode()
    with _client(cls_predictor, max_body_bytes=500) as c:
        r = c.post("/v1/predict", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["limit"] == "max_body_bytes"
        chunks = iter([big[:300], big[300:]])  # no content-length: chunked transfer
        r = c.post("/v1/predict", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["value"] == 500
        assert c.post("/v1/predict", json={"texts": ["a film"]}).status_code == 200


@pytest.mark.parametrize("payload, fragment", [
    ({"texts": ["ok"], "extra": 1}, "extra"),
    ({"texts": []}, "texts"),
    ({"texts": ["  "]}, "texts[0] is empty"),
    ({"texts": [["a", "b"]]}, "pair"),
    ({"text": "no texts key"}, "texts"),
])
def test_bad_requests_get_422_with_a_reason(cls_predictor, payload, fragment):
    with _client(cls_predictor) as c:
        r = c.post("/v1/predict", json=payload)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]["message"]


def test_json_without_a_json_content_type_is_read_as_json(cls_predictor):
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the README's curl must work."""
    body = json.dumps({"texts": ["the movie great was"]}).encode()
    with _client(cls_predictor) as c:
        for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}):
            r = c.post("/v1/predict", content=body, headers=headers)
            assert r.status_code == 200, r.text
            assert len(r.json()["predictions"]) == 1


def test_malformed_json_and_unknown_route(cls_predictor):
    with _client(cls_predictor) as c:
        r = c.post("/v1/predict", content=b'{"texts": [', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = c.get("/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "http_error"
        assert c.get("/v1/predict").status_code == 405


def test_unexpected_failure_is_an_opaque_500_with_the_cause_logged(cls_run, caplog):
    predictor = Predictor.from_run(cls_run)
    with _client(predictor) as c:
        _wait_ready(c)

        def broken(texts, progress=None):
            raise RuntimeError("secret internal detail")

        predictor.predict = broken
        with caplog.at_level(logging.ERROR, logger="lmforge.serve"):
            r = c.post("/v1/predict", json={"texts": ["a film"]})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error" and "secret" not in r.text and err["request_id"]
    assert "secret internal detail" in caplog.text


def test_openapi_documents_the_error_responses(cls_predictor):
    doc = TestClient(create_app(cls_predictor, ServeSettings())).get("/openapi.json").json()
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    predict = doc["paths"]["/v1/predict"]["post"]["responses"]
    assert sorted(predict) == ["200", "401", "408", "413", "422", "500", "503"]
    for status in ("401", "408", "413", "422", "500", "503"):
        assert predict[status]["content"] == error_body and predict[status]["description"], status
    assert doc["components"]["schemas"]["ErrorResponse"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["code", "message"]
    metrics = doc["paths"]["/metrics"]["get"]["responses"]  # a plain-text route: its errors are still JSON
    assert metrics["401"]["content"] == error_body and metrics["500"]["content"] == error_body


def test_serve_modules_import_without_a_cycle():
    """The HTTP base knows no task: importing it alone loads neither route module."""
    code = ("import sys, lmforge.serve.base\n"
            "assert not {'lmforge.serve.predict_routes', 'lmforge.serve.generation_routes', 'lmforge.serve.app'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_api_key(cls_predictor):
    with _client(cls_predictor, api_key="s3cret-key") as c:
        assert c.get("/health").status_code == 200  # probes stay open
        r = c.post("/v1/predict", json={"texts": ["a film"]})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/predict", json={"texts": ["a film"]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        ok = {"Authorization": "Bearer s3cret-key"}
        assert c.post("/v1/predict", json={"texts": ["a film"]}, headers=ok).status_code == 200
        assert c.get("/v1/model", headers=ok).status_code == 200


def test_overload_gives_503(cls_predictor):
    with _client(cls_predictor, max_queue=2) as c:
        _wait_ready(c)
        r = c.post("/v1/predict", json={"texts": ["a film", "the plot", "very good"]})
    assert r.status_code == 503 and r.json()["error"]["limit"] == "max_queue"


def test_metrics_count_requests_batches_and_model(cls_predictor):
    with _client(cls_predictor) as c:
        _wait_ready(c)
        c.post("/v1/predict", json={"texts": TEXTS})
        c.post("/v1/predict", json={"texts": ["x" * 3000]})
        text = c.get("/metrics").text
    assert 'lmforge_requests_total{route="/v1/predict",status="200"} 1.0' in text
    assert 'lmforge_requests_total{route="/v1/predict",status="413"} 1.0' in text
    assert "lmforge_request_latency_seconds_bucket" in text and "lmforge_batch_size_count" in text
    assert "lmforge_queue_depth 0.0" in text
    assert f'version="{cls_predictor.version}"' in text


def test_explain_endpoint(cls_predictor):
    with _client(cls_predictor, max_explain_steps=100) as c:
        r = c.post("/v1/explain", json={"text": "the movie great was", "steps": 40})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == cls_predictor.version
        assert [w["word"] for w in body["words"]] == ["the", "movie", "great", "was"]
        assert "delta" in body and body["target"] in cls_predictor.task.labels
        r = c.post("/v1/explain", json={"text": "the movie great was", "target": "nope"})
        assert r.status_code == 422 and "positive" in r.json()["error"]["message"]
        r = c.post("/v1/explain", json={"text": "the movie great was", "steps": 101})
        assert r.status_code == 413 and r.json()["error"]["limit"] == "max_explain_steps"


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(cls_run):
    predictor = Predictor.from_run(cls_run)
    texts = [f"the {w} {s} was" for w in ("movie", "film", "plot", "acting") for s in ("great", "awful", "book", "superb", "boring")]
    expected = {t: p["label"] for t, p in zip(texts, predictor.predict(texts))}
    expected_scores = {t: p["score"] for t, p in zip(texts, predictor.predict(texts))}
    sizes: list[int] = []
    original = predictor.predict

    def recording(batch, progress=None):
        sizes.append(sum(1 for t in batch if t != WARMUP_TEXT))
        time.sleep(0.02)  # a model step long enough for requests to pile up
        return original(batch)

    predictor.predict = recording
    app = create_app(predictor, ServeSettings(max_batch_size=8, max_wait_ms=20))

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                async def one(text):
                    r = await client.post("/v1/predict", json={"texts": [text]})
                    return text, r
                return await asyncio.gather(*(one(t) for t in texts))

    results = asyncio.run(scenario())
    for text, r in results:
        assert r.status_code == 200
        pred = r.json()["predictions"][0]
        assert pred["label"] == expected[text]
        assert pred["score"] == pytest.approx(expected_scores[text], abs=1e-5)
    served = [s for s in sizes if s]  # batches that held request texts (not only the warm-up's)
    assert sum(served) == len(texts)
    assert max(served) > 1 and len(served) < len(texts)
    assert max(served) <= 8



def test_graceful_shutdown_finishes_in_flight_requests(cls_run):
    import uvicorn

    predictor = Predictor.from_run(cls_run)
    original = predictor.predict
    slow = threading.Event()

    def slow_predict(batch, progress=None):
        if slow.is_set():
            time.sleep(1.0)
        return original(batch)

    predictor.predict = slow_predict
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, ServeSettings()), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    _poll_ready(base)
    slow.set()
    answer = {}

    def request():
        answer["r"] = httpx.post(f"{base}/v1/predict", json={"texts": ["the movie great was"]}, timeout=30)

    client = threading.Thread(target=request)
    client.start()
    time.sleep(0.3)  # the request is inside the model now
    server.should_exit = True  # what SIGINT/SIGTERM do
    client.join(30)
    thread.join(30)
    assert answer["r"].status_code == 200
    assert answer["r"].json()["predictions"][0]["label"] in predictor.task.labels
    assert not thread.is_alive()


def _poll_ready(base: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base} never became ready")


def test_real_lmforge_serve_process(cls_run, tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MY_KEY": "k-123"}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", str(cls_run), "--port", str(port),
                             "--api-key-env", "MY_KEY", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _poll_ready(base, proc=proc)
        req = urllib.request.Request(f"{base}/v1/predict", data=json.dumps({"texts": TEXTS}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer k-123"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        assert len(body["predictions"]) == len(TEXTS) and body["model_version"].startswith("tex-full-")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(urllib.request.Request(f"{base}/v1/predict", data=b'{"texts": ["a"]}',
                                                          headers={"Content-Type": "application/json"}), timeout=10)
        assert denied.value.code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a well-behaved process does
    stderr = proc.stderr.read()
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr


def test_serve_cli_errors(cls_run):
    from conftest import run_cli

    r = run_cli("serve", cls_run, "--api-key-env", "LMFORGE_TEST_UNSET_KEY")
    assert r.returncode == 2 and "LMFORGE_TEST_UNSET_KEY" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = run_cli("serve", cls_run, "--port", str(busy))
    assert r.returncode == 2 and "already in use" in r.stderr
    r = run_cli("serve", cls_run, "--backend", "onnx", "--port", str(free_port()))
    assert r.returncode == 2 and "lmforge export" in r.stderr
