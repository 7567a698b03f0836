"""What a user or a hostile client sends never costs another request its answer, never gets a
traceback, and never gets a 5xx for bad input (issue 11): text that is not valid Unicode, numbers
of the wrong kind, a request that breaks the model inside a shared batch, a 500 on a keep-alive
connection, and the offline API docs with typed responses."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from lmforge.predictor import Predictor
from lmforge.serve.app import create_app
from lmforge.serve.batcher import MicroBatcher
from lmforge.serve.settings import ServeSettings
from conftest import free_port

GOOD = ["the movie great was", "the plot awful was", "the film book was", "very acting superb film"]


def _client(predictor, prediction_log=None, **settings) -> TestClient:
    app = create_app(predictor, ServeSettings(**settings), prediction_log=prediction_log)
    return TestClient(app, raise_server_exceptions=False)


def _raw(payload: dict) -> bytes:
    """JSON with lone surrogates escaped as \\udXXX (httpx cannot encode them as UTF-8)."""
    return json.dumps(payload).encode()


def _error(r) -> dict:
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r.json()["error"]


# --- text that is not valid Unicode --------------------------------------------------------------

@pytest.mark.parametrize("path, body, field", [
    ("/v1/predict", _raw({"texts": [*GOOD[:3], "\ud800"]}), "texts[3]"),
    ("/v1/predict", b'{"texts": ["a film", "bad \xed\xa0\x80 bytes"]}', "texts[1]"),  # a surrogate as raw bytes
    ("/v1/explain", _raw({"text": "\udc00 the film"}), "text"),
    ("/v1/explain", _raw({"text": "the film", "target": "pos\ud83ditive"}), "target"),
    ("/v1/explain", _raw({"text": "the film", "text_pair": "\ud800"}), "text_pair"),
])
def test_text_that_is_not_unicode_is_a_422_naming_the_item(cls_predictor, path, body, field):
    with _client(cls_predictor) as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        message = _error(r)["message"]
        assert message.startswith(f"{field}:") and "Unicode" in message
        assert c.post("/v1/predict", json={"texts": GOOD}).status_code == 200


def test_feedback_text_that_is_not_unicode_is_a_422(cls_predictor, tmp_path):
    from lmforge.lifecycle.predlog import PredictionLog

    log = PredictionLog(tmp_path / "log.sqlite", "senti")
    with _client(cls_predictor, prediction_log=log) as c:
        for payload, field in (({"prediction_id": "\ud800", "label": "neutral"}, "prediction_id"),
                               ({"prediction_id": "abc", "label": "neu\udfff"}, "label")):
            r = c.post("/v1/feedback", content=_raw(payload), headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
            assert _error(r)["message"].startswith(f"{field}:")


# --- one failing request in a shared batch -------------------------------------------------------

def test_batcher_gives_a_failure_only_to_the_request_that_caused_it():
    seen: list[list] = []

    def fn(items: list) -> list:
        seen.append(list(items))
        time.sleep(0.01)
        if "poison" in items:
            raise ValueError("cannot encode poison")
        return [item.upper() for item in items]

    async def scenario():
        batcher = MicroBatcher(fn, max_batch=16, max_wait_s=0.05, max_queue=100)
        await batcher.start()
        try:
            jobs = [["a", "b"], ["c"], ["x", "poison"], ["d", "e", "f"]]
            return await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)
        finally:
            await batcher.stop()

    good1, good2, failed, good3 = asyncio.run(scenario())
    assert seen[0] == ["a", "b", "c", "x", "poison", "d", "e", "f"]  # all four shared the first batch
    assert (good1, good2, good3) == (["A", "B"], ["C"], ["D", "E", "F"])
    assert isinstance(failed, ValueError) and "poison" in str(failed)


def test_a_request_that_breaks_the_model_fails_alone(cls_run):
    predictor = Predictor.from_run(cls_run)
    want = {t: p["label"] for t, p in zip(GOOD, predictor.predict(GOOD))}
    original, batches = predictor.predict, []

    def fragile(batch, progress=None):
        batches.append(list(batch))
        time.sleep(0.02)  # long enough for the concurrent requests to share a batch
        if any("poison" in t for t in batch):
            raise RuntimeError("the tokenizer choked")
        return original(batch)

    predictor.predict = fragile
    app = create_app(predictor, ServeSettings(max_batch_size=32, max_wait_ms=100))

    async def scenario():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                texts = [*GOOD, "poison pill", *GOOD]
                return await asyncio.gather(*(client.post("/v1/predict", json={"texts": [t]}) for t in texts))

    answers = asyncio.run(scenario())
    assert any(len(b) > 1 and "poison pill" in b for b in batches)  # the poison really shared a batch
    poisoned = answers[len(GOOD)]
    assert poisoned.status_code == 500 and _error(poisoned)["request_id"] == poisoned.headers["x-request-id"]
    assert "choked" not in poisoned.text
    for r in answers[:len(GOOD)] + answers[len(GOOD) + 1:]:
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] in want.values()


# --- numbers of the wrong kind --------------------------------------------------------------------

@pytest.mark.parametrize("payload, field", [
    ({"text": "the movie great was", "steps": 1}, "steps"),  # captum needs at least 2
    ({"text": "the movie great was", "steps": True}, "steps"),
    ({"text": "the movie great was", "steps": 2.0}, "steps"),
    ({"text": "the movie great was", "steps": "5"}, "steps"),
    ({"text": 5}, "text"),
])
def test_explain_numbers_must_be_real_integers(cls_predictor, payload, field):
    with _client(cls_predictor) as c:
        r = c.post("/v1/explain", json=payload)
    assert r.status_code == 422, r.text
    assert _error(r)["message"].startswith(f"{field}:")


def test_ner_entity_must_be_an_integer(ner_predictor):
    with _client(ner_predictor) as c:
        for entity in (True, 0.0, "0", -1):
            r = c.post("/v1/explain", json={"text": "alice visited paris", "entity": entity, "steps": 4})
            assert r.status_code == 422 and _error(r)["message"].startswith("entity:"), r.text
        assert c.post("/v1/explain", json={"text": "alice visited paris", "entity": 0, "steps": 4}).status_code == 200


# --- a 500 on a keep-alive connection -------------------------------------------------------------


def test_a_500_is_an_ordinary_response_and_the_connection_stays_usable(cls_run):
    import uvicorn

    predictor = Predictor.from_run(cls_run)
    original = predictor.predict

    def broken_on_poison(batch, progress=None):
        if "poison" in batch:
            raise RuntimeError("secret internal detail")
        return original(batch)

    predictor.predict = broken_on_poison
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, ServeSettings()), host="127.0.0.1", port=port,
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.time() + 30
        while True:
            try:
                conn.request("GET", "/ready")
                ready = conn.getresponse()
                ready.read()
                if ready.status == 200:
                    break
            except OSError:
                conn.close()
            assert time.time() < deadline, "server never became ready"
            time.sleep(0.1)
        sock = conn.sock
        conn.request("POST", "/v1/predict", body=b'{"texts": ["poison"]}', headers={"content-type": "application/json"})
        failed = conn.getresponse()
        body = json.loads(failed.read())
        assert failed.status == 500 and body["error"]["code"] == "internal_error"
        assert failed.getheader("x-request-id") == body["error"]["request_id"]
        assert "secret" not in json.dumps(body) and (failed.getheader("connection") or "") != "close"
        conn.request("POST", "/v1/predict", body=json.dumps({"texts": GOOD}).encode(), headers={"content-type": "application/json"})
        after = conn.getresponse()
        assert after.status == 200 and len(json.loads(after.read())["predictions"]) == len(GOOD)
        assert conn.sock is sock  # the same keep-alive connection answered
        conn.close()
    finally:
        server.should_exit = True
        thread.join(30)


# --- offline docs and typed responses ------------------------------------------------------------

def test_docs_pages_use_only_local_assets(cls_predictor):
    with _client(cls_predictor, api_key="k") as c:  # the docs stay open without the key
        for page, wanted in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            r = c.get(page)
            assert r.status_code == 200
            urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", r.text)
            urls = [a or b for a, b in urls]
            assert any(u.endswith(wanted) for u in urls), urls
            for url in urls:
                assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url}"
                asset = c.get(url)
                assert asset.status_code == 200, url
            assert "cdn" not in r.text.lower()
        js = c.get(next(u for u in urls if u.endswith(".js")))
        assert "javascript" in js.headers["content-type"] and len(js.content) > 100_000


def test_openapi_documents_typed_responses_and_errors(cls_predictor):
    with _client(cls_predictor) as c:
        spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    predict = spec["paths"]["/v1/predict"]["post"]["responses"]
    for status in ("401", "408", "413", "422", "500", "503"):
        assert predict[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), status
    names = json.dumps(schemas["PredictResponse"])
    for part in ("ClassPrediction", "MultiLabelPrediction", "EntityPrediction"):
        assert part in names
    assert {"label", "score", "probabilities"} <= set(schemas["ClassPrediction"]["properties"])
    assert {"type", "text", "start", "end", "score"} <= set(schemas["Entity"]["properties"])
    assert "examples" in json.dumps(schemas["PredictResponse"]) or "example" in json.dumps(predict["200"])
    assert schemas["ExplainRequest"]["properties"]["steps"]["anyOf"][0]["minimum"] == 2
    for path in ("/v1/explain", "/v1/model"):
        ok = spec["paths"][path]["post" if path == "/v1/explain" else "get"]["responses"]["200"]
        assert "$ref" in json.dumps(ok), path


def test_responses_keep_their_shape(cls_predictor, ner_predictor):
    """Typed response models must not change what existing clients get: same keys in the same order."""
    import pydantic_core

    for predictor, texts in ((cls_predictor, GOOD[:2]), (ner_predictor, ["alice visited paris"])):
        want = predictor.predict(texts)
        with _client(predictor) as c:
            r = c.post("/v1/predict", json={"texts": texts})
        got = r.json()["predictions"]
        if "entities" in want[0]:
            want = [{"entities": w["entities"]} for w in want]
        assert [list(p) for p in got] == [list(w) for w in want]
        assert [list(e) for p in got for e in p.get("entities", [])] == [list(e) for w in want for e in w.get("entities", [])]
        assert r.content == pydantic_core.to_json(r.json())  # today's serializer, byte for byte
    with _client(cls_predictor) as c:
        r = c.post("/v1/explain", json={"text": "the movie great was", "steps": 4})
    body = r.json()
    assert list(body)[:3] == ["model_version", "target", "probability"] and list(body["tokens"][0]) == ["token", "start", "end", "score"]
    assert r.content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def test_multi_label_pair_responses_match_their_models(tiny_model, tmp_path):
    """The typed responses of a multi-label pair classifier (labels, segments) validate and keep their keys."""
    import yaml
    from conftest import jsonl, make_config

    from lmforge.config import load_config
    from lmforge.training.loop import train

    rows = [{"text": "rain today" if i % 2 else "card today", "text2": "please", "labels": ["weather"] if i % 2 else ["banking"]}
            for i in range(12)]
    data = {"train": jsonl(tmp_path / "train.jsonl", rows), "dev": jsonl(tmp_path / "dev.jsonl", rows[:4])}
    path = make_config(tmp_path, tiny_model, data, epochs=1)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(multi_label=True, label_field="labels", text_pair_field="text2")
    path.write_text(yaml.safe_dump(cfg))
    predictor = Predictor.from_run(train(load_config(path), tmp_path))
    want = predictor.predict([("rain today", "please")])
    with _client(predictor) as c:
        r = c.post("/v1/predict", json={"texts": [["rain today", "please"]]})
        assert r.status_code == 200, r.text
        assert [list(p) for p in r.json()["predictions"]] == [list(w) for w in want] == [["labels", "probabilities"]]
        r = c.post("/v1/explain", json={"text": "rain today", "text_pair": "please", "steps": 3})
        assert r.status_code == 200, r.text
        body = r.json()
    assert {t["segment"] for t in body["tokens"]} == {0, 1} and list(body["words"][0]) == ["word", "start", "end", "segment", "score"]
    assert list(body["prediction"]) == ["labels", "probabilities"]


def test_api_keys_compare_as_bytes(cls_predictor):
    """HTTP headers are bytes: a key with non-ASCII characters, sent as UTF-8, is accepted."""
    with _client(cls_predictor, api_key="clé-ünï-2") as c:
        ok = c.post("/v1/predict", json={"texts": GOOD[:1]}, headers={"Authorization": "Bearer clé-ünï-2".encode()})
        assert ok.status_code == 200, ok.text
        for header in ("Bearer clé-ünï-3".encode(), b"Bearer", b"Basic abc"):
            r = c.post("/v1/predict", json={"texts": GOOD[:1]}, headers={"Authorization": header})
            assert r.status_code == 401 and _error(r)["code"] == "unauthorized"


def test_keys_the_model_adds_are_passed_on(cls_run):
    """The typed responses do not drop a key a newer predictor adds to its results."""
    predictor = Predictor.from_run(cls_run)
    original = predictor.predict
    predictor.predict = lambda texts, progress=None: [{**p, "calibrated": True} for p in original(texts)]
    with _client(predictor) as c:
        r = c.post("/v1/predict", json={"texts": GOOD[:1]})
    assert r.status_code == 200 and list(r.json()["predictions"][0]) == ["label", "score", "probabilities", "calibrated"]
