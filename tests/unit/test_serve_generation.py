"""POST /v1/generate on the shared server machinery: plain and streamed (server-sent events)
responses, batching of concurrent prompts, limits, auth, and a model trained with lmforge."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from lmforge.generation.generator import Generator
from lmforge.serve.app import create_generation_app
from lmforge.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def generator(tiny_decoder):
    return Generator.from_pretrained(tiny_decoder)


def _client(generator, **settings) -> TestClient:
    return TestClient(create_generation_app(generator, ServeSettings(**settings)), raise_server_exceptions=False)


def _ready(client) -> None:
    deadline = time.time() + 30
    while client.get("/ready").status_code != 200:
        assert time.time() < deadline, "never ready"
        time.sleep(0.05)


def test_generate_matches_the_generator(generator):
    want = generator.generate(["say hi"], max_new_tokens=6)[0]
    with _client(generator) as c:
        _ready(c)
        r = c.post("/v1/generate", json={"prompt": "say hi", "max_new_tokens": 6})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["text"] == want["text"] and body["model_version"] == generator.version
        assert body["finish_reason"] in ("stop", "length") and body["tokens"] <= 6
        info = c.get("/v1/model").json()
        assert info["task"] == "generation" and info["limits"]["max_new_tokens"] == 512
        assert 'route="/v1/generate",status="200"' in c.get("/metrics").text


def test_stream_sends_the_same_text_as_events(generator):
    want = generator.generate(["how are you"], max_new_tokens=8)[0]["text"]
    with _client(generator) as c:
        _ready(c)
        with c.stream("POST", "/v1/generate", json={"prompt": "how are you", "max_new_tokens": 8, "stream": True}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["done"] is True and events[-1]["model_version"] == generator.version
    assert "".join(e["text"] for e in events[:-1]).strip() == want.strip()


def test_concurrent_prompts_each_get_their_own_answer(generator):
    prompts = ["say hi", "how are you", "what is two plus three", "write a function that reverses string s"] * 2
    want = {p: generator.generate([p], max_new_tokens=5)[0]["text"] for p in set(prompts)}
    with _client(generator, max_wait_ms=50) as c:
        _ready(c)
        got: dict[int, str] = {}

        def ask(i: int, prompt: str) -> None:
            got[i] = c.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 5}).json()["text"]

        threads = [threading.Thread(target=ask, args=(i, p)) for i, p in enumerate(prompts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batches = c.get("/metrics").text
    assert [got[i] for i in range(len(prompts))] == [want[p] for p in prompts]
    count = next(float(line.split()[-1]) for line in batches.splitlines() if line.startswith("lmforge_batch_size_count"))
    assert count < len(prompts) + 3  # 3 warm-up batches; concurrent prompts shared at least one batch


def test_limits_and_validation(generator):
    with _client(generator, max_new_tokens=16, max_prompt_chars=50, api_key="k3y") as c:
        auth = {"Authorization": "Bearer k3y"}
        assert c.post("/v1/generate", json={"prompt": "say hi"}).status_code == 401
        r = c.post("/v1/generate", json={"prompt": "say hi", "max_new_tokens": 17}, headers=auth)
        assert r.status_code == 413 and r.json()["error"]["limit"] == "max_new_tokens" and r.json()["error"]["value"] == 16
        r = c.post("/v1/generate", json={"prompt": "x" * 51}, headers=auth)
        assert r.status_code == 413 and r.json()["error"]["limit"] == "max_prompt_chars"
        r = c.post("/v1/generate", json={"prompt": "say hi", "temperature": -1}, headers=auth)
        assert r.status_code == 422 and "temperature" in r.json()["error"]["message"]
        r = c.post("/v1/generate", json={"prompt": "say hi", "bogus": 1}, headers=auth)
        assert r.status_code == 422 and "bogus" in r.json()["error"]["message"]
        r = c.post("/v1/generate", json={"prompt": "   "}, headers=auth)
        assert r.status_code == 422
        assert c.post("/v1/predict", json={"texts": ["x"]}, headers=auth).status_code == 404  # not a classifier


@pytest.mark.parametrize("payload, field", [
    ({"prompt": "say \ud800 hi"}, "prompt"),
    ({"prompt": "say hi", "stop": ["fine", "\udfff"]}, "stop[1]"),
    ({"prompt": "say hi", "max_new_tokens": True}, "max_new_tokens"),
    ({"prompt": "say hi", "max_new_tokens": 4.0}, "max_new_tokens"),
    ({"prompt": "say hi", "seed": True}, "seed"),
    ({"prompt": "say hi", "seed": 2**70}, "seed"),  # beyond torch.manual_seed's range
    ({"prompt": "say hi", "temperature": True}, "temperature"),
    ({"prompt": "say hi", "temperature": 5e-324}, "temperature"),  # found by the fuzzer: inf logits, then a 500
    ({"prompt": "say hi", "stream": 1}, "stream"),
    ({"prompt": "say hi", "chat": "yes"}, "chat"),
])
def test_generate_rejects_bad_text_and_numbers_of_the_wrong_kind(generator, payload, field):
    with _client(generator) as c:
        r = c.post("/v1/generate", content=json.dumps(payload).encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["message"].startswith(f"{field}:")


def test_a_prompt_that_fails_is_not_blamed_on_the_prompts_batched_with_it(generator):
    """The generator refuses a prompt longer than the model's positions; the good prompts generated
    in the same batch still get their text."""
    with _client(generator, max_wait_ms=200) as c:
        _ready(c)
        got: dict[str, object] = {}

        def ask(prompt: str) -> None:
            got[prompt] = c.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 3, "chat": False})

        too_long = "hi " * 600  # 600 tokens; the tiny model has 512 positions
        prompts = ["say hi", "how are you", too_long]
        threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got["say hi"].status_code == 200 and got["how are you"].status_code == 200
    assert got[too_long].status_code == 422 and "positions" in got[too_long].json()["error"]["message"]


@pytest.mark.parametrize("rows", [8, 0])
def test_concurrent_streams_with_and_without_the_continuous_batch(generator, rows, monkeypatch):
    """Greedy streams decode together on the continuous batch (rows > 0) or gathered into static batches
    (0): the same texts."""
    prompts = ["say hi", "how are you", "what is two plus three", "write a function that reverses string s"]
    want = [r["text"] for r in generator.generate(prompts, max_new_tokens=10)]
    got: dict[int, str] = {}
    batches: list[int] = []
    real = generator.stream_batch_into

    def spy(emits, batch_prompts, **kwargs):
        batches.append(len(batch_prompts))
        return real(emits, batch_prompts, **kwargs)
    monkeypatch.setattr(generator, "stream_batch_into", spy)
    with _client(generator, continuous_rows=rows, max_wait_ms=1000 if rows == 0 else 5) as c:
        _ready(c)
        assert (generator.engine is not None) == bool(rows)

        def stream(i: int) -> None:
            with c.stream("POST", "/v1/generate", json={"prompt": prompts[i], "max_new_tokens": 10, "stream": True}) as r:
                events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
            assert events[-1].get("done") is True, events[-1]
            got[i] = "".join(e["text"] for e in events[:-1])

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert generator.engine is None  # stopped with the server
    assert [got.get(i, "").strip() for i in range(len(prompts))] == [w.strip() for w in want]
    if rows == 0:  # the four streams were decoded in batches, not one by one
        assert sum(batches) == len(prompts) and max(batches) > 1, batches
    else:
        assert batches == []


def test_greedy_requests_join_the_continuous_batch_and_sampled_ones_the_micro_batcher(generator, monkeypatch):
    """With the continuous batch, a plain greedy request decodes on it (beside the streams) rather than as a
    job that would pause it; a sampled request keeps the micro-batcher's static batches; the texts are
    those of `generate`, and a refused prompt is still a 422."""
    prompts = ["say hi", "how are you", "what is two plus three"]
    want = [r["text"] for r in generator.generate(prompts, max_new_tokens=7)]
    sampled = generator.generate(["say hi"], max_new_tokens=5, temperature=0.8, seed=3)[0]["text"]
    with _client(generator, continuous_rows=4, max_wait_ms=5) as c:
        _ready(c)
        engine = generator.engine
        calls: list[int] = []
        real = engine.run_many

        def spy(encoded, **kwargs):
            calls.append(len(encoded))
            return real(encoded, **kwargs)
        monkeypatch.setattr(engine, "run_many", spy)
        got: dict[int, str] = {}

        def ask(i: int) -> None:
            got[i] = c.post("/v1/generate", json={"prompt": prompts[i], "max_new_tokens": 7}).json()["text"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        r = c.post("/v1/generate", json={"prompt": "say hi", "max_new_tokens": 5, "temperature": 0.8, "seed": 3})
        assert r.status_code == 200 and r.json()["text"] == sampled
        bad = c.post("/v1/generate", json={"prompt": "hi " * 600, "max_new_tokens": 3, "chat": False})
        assert bad.status_code == 422 and "positions" in bad.json()["error"]["message"]
        metrics = c.get("/metrics").text
    assert [got[i] for i in range(len(prompts))] == want
    assert calls == [1, 1, 1]
    count = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("lmforge_batch_size_count"))
    assert count == 3 + 1  # the 3 warm-up batches and the sampled request


def test_a_gathered_stream_that_fails_leaves_the_streams_batched_with_it_alone(generator):
    """Static serving gathers streams into one batch; a prompt longer than the model's positions gets
    its own error event and the others their text."""
    too_long = "hi " * 600  # 600 tokens; the tiny model has 512 positions
    prompts = ["say hi", "how are you", too_long]
    want = {p: generator.generate([p], max_new_tokens=6, chat=False)[0]["text"] for p in prompts[:2]}
    events: dict[str, list] = {}
    with _client(generator, continuous_rows=0, max_wait_ms=1000) as c:
        _ready(c)

        def stream(prompt: str) -> None:
            with c.stream("POST", "/v1/generate", json={"prompt": prompt, "max_new_tokens": 6, "chat": False, "stream": True}) as r:
                events[prompt] = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
        threads = [threading.Thread(target=stream, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    for prompt in prompts[:2]:
        assert events[prompt][-1].get("done") is True, events[prompt]
        assert "".join(e["text"] for e in events[prompt][:-1]).strip() == want[prompt].strip()
    assert "positions" in events[too_long][-1]["error"]


def test_a_stream_whose_job_cannot_start_ends_with_an_error_event(generator):
    """When the model thread refuses the job (e.g. the server shutting down), the stream still ends: an
    error event, no hang."""
    import asyncio

    from lmforge.serve.generation_routes import sse_events

    async def refuse(fn):
        raise RuntimeError("the continuous-batching engine is closed")

    async def collect() -> list[str]:
        params = {"max_new_tokens": 4, "temperature": 0.5, "top_p": 1.0, "stop": (), "seed": 1, "chat": True}
        return [event async for event in sse_events(generator, refuse, "say hi", params)]

    events = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    assert len(events) == 1 and '"error"' in events[0]
