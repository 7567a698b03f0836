"""lmforge studio over HTTP (FastAPI's TestClient): pages, run status, files by index, compare,
registry actions with confirmation and CSRF, the playground, the API key, and hostile text."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lmforge.lifecycle.registry import Registry
from lmforge.studio.app import StudioSettings, create_app
from lmforge.studio.catalog import curves, read_log, run_id, status_of
from lmforge.studio.charts import line_chart

HOSTILE = '<script>alert("x")</script>" onmouseover="alert(1)\u202eevil\u0301'
FAILED_GATE = {"passed": False, "checks": [{"name": "dev macro_f1 within 1 point of v1", "passed": False, "detail": "0.80 < 0.87"}]}


def _copy_run(src: Path, dest: Path, **info) -> Path:
    shutil.copytree(src, dest)
    path = dest / "run.json"
    data = json.loads(path.read_text())
    data.update(info)
    path.write_text(json.dumps(data))
    return dest


@pytest.fixture(scope="module")
def studio_dirs(tmp_path_factory, cls_run, ner_run):
    root = tmp_path_factory.mktemp("studio")
    runs = root / "runs"
    runs.mkdir()
    _copy_run(cls_run, runs / "cls")
    _copy_run(ner_run, runs / "ner")
    _copy_run(cls_run, runs / "group" / "live", status="training", pid=os.getpid(), host=os.uname().nodename, total_steps=1000)
    _copy_run(cls_run, runs / "killed", status="training", pid=2**22 + 12345, host=os.uname().nodename)
    _copy_run(cls_run, runs / "broken", status="failed", error=HOSTILE)
    (runs / "not-a-run").mkdir()
    (runs / "not-a-run" / "notes.txt").write_text("hello")
    registry = Registry(root / "registry")
    registry.add("sentiment", runs / "cls")
    registry.promote("sentiment", 1)
    registry.add("sentiment", runs / "cls", parent=1, gate={"passed": True, "checks": []})
    registry.add("sentiment", runs / "cls", parent=1, gate=FAILED_GATE)
    return {"runs": runs, "registry": root / "registry"}


@pytest.fixture
def client(studio_dirs):
    app = create_app(StudioSettings(runs=[studio_dirs["runs"]], registry=studio_dirs["registry"]))
    with TestClient(app) as c:
        yield c


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def test_runs_page_lists_every_run_with_its_status(client, studio_dirs):
    page = client.get("/runs")
    assert page.status_code == 200
    rows = dict(re.findall(r'<tr data-run="([0-9a-f]{12})" data-status="(\w+)"', page.text))
    assert len(rows) == 5  # not-a-run is not listed
    assert rows[run_id(studio_dirs["runs"] / "cls")] == "finished"
    assert rows[run_id(studio_dirs["runs"] / "group" / "live")] == "running"
    assert rows[run_id(studio_dirs["runs"] / "killed")] == "interrupted"
    assert rows[run_id(studio_dirs["runs"] / "broken")] == "failed"
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text  # the failure text, escaped
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_status_from_run_json():
    host = os.uname().nodename
    assert status_of({"status": "complete"}) == "finished"
    assert status_of({"status": "training", "pid": os.getpid(), "host": host}) == "running"
    assert status_of({"status": "training", "pid": os.getpid(), "host": "another-host"}) == "interrupted"
    assert status_of({"status": "training"}) == "interrupted"  # a run written before pids were recorded
    assert status_of({"status": "interrupted"}) == "interrupted"


def test_live_progress_json(client, studio_dirs):
    live = run_id(studio_dirs["runs"] / "group" / "live")
    data = client.get("/api/progress").json()["runs"]  # no ids: the running ones
    assert [row["id"] for row in data] == [live]
    row = data[0]
    assert row["status"] == "running" and row["total_steps"] == 1000 and row["step"] > 0 and row["loss"] is not None
    assert row["eta_s"] is not None and row["eta_s"] > 0


def test_run_page_shows_curves_reports_and_files(client, studio_dirs):
    rid = run_id(studio_dirs["runs"] / "cls")
    page = client.get(f"/runs/{rid}")
    assert page.status_code == 200
    assert page.text.count('<svg class="chart"') >= 2  # train loss and dev metrics at least
    assert "Evaluation: dev" in page.text and "per-class" in page.text
    assert "model.safetensors" in page.text  # listed ...
    files = re.findall(rf'href="/runs/{rid}/files/(\d+)">([^<]+)<', page.text)
    names = {name: int(i) for i, name in files}
    assert "model/model.safetensors" not in names  # ... but not served
    assert "metrics.json" in names
    body = client.get(f"/runs/{rid}/files/{names['metrics.json']}")
    assert body.status_code == 200 and json.loads(body.text)["dev"]
    png = [i for i, n in files if n.endswith(".png")]
    assert png and client.get(f"/runs/{rid}/files/{png[0]}").headers["content-type"] == "image/png"


def test_no_path_reaches_the_file_system(client, studio_dirs):
    rid = run_id(studio_dirs["runs"] / "cls")
    for url in (f"/runs/{rid}/files/999", f"/runs/{rid}/files/-1", "/runs/../../etc/passwd", "/runs/%2e%2e%2fetc",
                f"/runs/{rid}/files/..%2fconfig.yaml", "/runs/000000000000", "/static/../app.py"):
        response = client.get(url)
        assert response.status_code in (404, 422), url
        assert "root:" not in response.text and "def create_app" not in response.text


def test_weights_are_not_served(client, studio_dirs):
    from lmforge.studio.pages_runs import run_files
    from lmforge.studio.catalog import read_entry

    entry = read_entry(studio_dirs["runs"] / "cls")
    index = [name for name, _, _ in run_files(entry)].index("model/model.safetensors")
    response = client.get(f"/runs/{entry.id}/files/{index}")
    assert response.status_code == 403 and "images and text files" in response.text


def test_compare_highlights_differences(client, studio_dirs):
    a, b = run_id(studio_dirs["runs"] / "cls"), run_id(studio_dirs["runs"] / "ner")
    page = client.get(f"/compare?id={a}&id={b}")
    assert page.status_code == 200
    differing = re.findall(r'<tr class="differs"><th>([^<]+)</th>', page.text)
    assert "task" in differing and "name" in differing
    assert page.text.count('<svg class="chart"') >= 1
    assert client.get(f"/compare?id={a}").status_code == 400
    assert "choose 2 to 5" in client.get(f"/compare?id={a}").text


def test_promote_needs_confirmation_and_csrf(client, studio_dirs):
    registry = Registry(studio_dirs["registry"])
    page = client.get("/registry/sentiment/2/promote")
    assert page.status_code == 200
    assert "v2 (candidate) becomes production" in page.text and "v1 (production now) is archived" in page.text
    assert registry.production("sentiment").version == 1  # the confirmation page changed nothing
    # without the page's token: refused, nothing changes
    refused = client.post("/registry/sentiment/2/promote", data={"csrf": "0" * 64})
    assert refused.status_code == 403 and registry.production("sentiment").version == 1
    done = client.post("/registry/sentiment/2/promote", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert done.status_code == 303
    assert registry.production("sentiment").version == 2
    shown = client.get(done.headers["location"]).text
    assert "sentiment v2 promoted to production" in shown
    assert re.search(r'data-version="2" data-stage="production"', shown)
    # roll back: the confirmation names both versions; the POST puts v1 back
    confirm = client.get("/registry/sentiment/rollback")
    assert "v2 (production now) is archived" in confirm.text and "v1 becomes production again" in confirm.text
    client.post("/registry/sentiment/1/rollback", data={"csrf": _csrf(confirm.text)})
    assert registry.production("sentiment").version == 1
    assert registry.history("sentiment")[-1]["actor"].endswith("(studio)")


def test_failed_gate_needs_force(client, studio_dirs):
    registry = Registry(studio_dirs["registry"])
    page = client.get("/registry/sentiment/3/promote")
    assert "failed its gate" in page.text and "0.80 &lt; 0.87" in page.text and 'name="force"' in page.text
    refused = client.post("/registry/sentiment/3/promote", data={"csrf": _csrf(page.text)})
    assert refused.status_code == 409 and "failed its gate" in refused.text
    assert registry.get("sentiment", 3).stage == "candidate"
    client.post("/registry/sentiment/3/promote", data={"csrf": _csrf(page.text), "force": "on"})
    version = registry.get("sentiment", 3)
    assert version.stage == "production" and version.forced
    assert "forced" in registry.history("sentiment")[-1]["note"]
    client.post("/registry/sentiment/1/rollback", data={"csrf": _csrf(client.get("/registry/sentiment/rollback").text)})


def test_registry_errors_are_pages_not_tracebacks(client):
    assert client.get("/registry/no-such-model/history").status_code == 404
    assert client.get("/registry/sentiment/99/promote").status_code == 409
    assert client.get("/registry/bad%20name/1/promote").status_code == 404
    assert client.get("/registry/sentiment/1/explode").status_code == 404
    assert client.get("/registry/sentiment/abc/promote").status_code == 422


def test_playground_predicts_and_explains(client, studio_dirs):
    rid = run_id(studio_dirs["runs"] / "cls")
    page = client.get(f"/playground?source=run:{rid}")
    assert f'value="run:{rid}" data-generation="no" selected' in page.text
    result = client.post("/playground", data={"csrf": _csrf(page.text), "source": f"run:{rid}", "text": "great " + HOSTILE, "explain": "on"})
    assert result.status_code == 200
    assert 'id="label"' in result.text and 'id="heatmap"' in result.text
    assert "<script>alert" not in result.text and 'onmouseover="alert' not in result.text
    empty = client.post("/playground", data={"csrf": _csrf(page.text), "source": f"run:{rid}", "text": "  "})
    assert empty.status_code == 422 and "type a text" in empty.text
    unknown = client.post("/playground", data={"csrf": _csrf(page.text), "source": "run:ffffffffffff", "text": "x"})
    assert unknown.status_code == 404
    registered = client.post("/playground", data={"csrf": _csrf(page.text), "source": "reg:sentiment:1", "text": "great", "explain": "off"})
    assert registered.status_code == 200 and 'id="label"' in registered.text  # a registered version predicts too


def test_playground_marks_entities(client, studio_dirs):
    rid = run_id(studio_dirs["runs"] / "ner")
    page = client.get("/playground")
    result = client.post("/playground", data={"csrf": _csrf(page.text), "source": f"run:{rid}",
                                              "text": "Alice Smith visited Paris with <b>Bob</b>", "explain": "off"})
    assert result.status_code == 200 and 'id="entities"' in result.text
    assert "<b>Bob</b>" not in result.text and "&lt;b&gt;" in result.text


def test_api_key_guards_every_page(studio_dirs):
    app = create_app(StudioSettings(runs=[studio_dirs["runs"]], registry=studio_dirs["registry"], api_key="s3cret-key"))
    with TestClient(app) as c:
        first = c.get("/runs", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"].startswith("/login")
        assert c.get("/api/progress").status_code == 401
        assert c.post("/registry/sentiment/2/promote", data={"csrf": "x"}, follow_redirects=False).status_code in (303, 401)
        assert Registry(studio_dirs["registry"]).production("sentiment").version == 1
        wrong = c.post("/login", data={"key": "guess", "next": "/registry"}, follow_redirects=False)
        assert wrong.status_code == 401 and "not the studio" in wrong.text
        ok = c.post("/login", data={"key": "s3cret-key", "next": "/registry"}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/registry"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert c.get("/runs").status_code == 200
        # an open redirect is not possible through `next`
        away = c.post("/login", data={"key": "s3cret-key", "next": "//evil.example/x"}, follow_redirects=False)
        assert away.headers["location"] == "/runs"
    with TestClient(app) as bearer:
        assert bearer.get("/runs", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert bearer.get("/runs", headers={"Authorization": "Bearer nope"}, follow_redirects=False).status_code == 401


def test_hostile_forms_get_4xx(client):
    for body, kind in ((b"\xff\xfe", "application/x-www-form-urlencoded"), (b"a=1&" * 1200, "application/x-www-form-urlencoded"),
                       (b'{"text": "x"}', "application/json"), (b"x" * 1_100_000, "application/x-www-form-urlencoded")):
        response = client.post("/playground", content=body, headers={"content-type": kind})
        assert 400 <= response.status_code < 500, (body[:20], response.status_code)


def test_curves_and_chart_escape(cls_run):
    series = curves(read_log(Path(cls_run)))
    assert "train loss" in series and "dev metrics" in series
    svg = line_chart({HOSTILE: [(0, 1.0), (1, float("nan")), (2, 0.5)]}, "<b>t</b>")
    assert "<script>" not in svg and "<b>" not in svg and svg.count("<polyline") == 1
    assert "no data" in line_chart({}, "empty")


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, cls_run):
    """A registered model serving traffic that drifted (only negative texts), logged to its registry."""
    from conftest import negative_texts, registered_with_traffic

    root = tmp_path_factory.mktemp("monitored")
    registered_with_traffic(root, cls_run, negative_texts())
    (root / "runs").mkdir()
    return root


def test_monitor_shows_the_cli_report(monitored, capsys):
    from lmforge.cli import main
    from lmforge.lifecycle.predlog import PredictionLog

    app = create_app(StudioSettings(runs=[monitored / "runs"], registry=monitored / "reg"))
    app.state.studio.report_cache.budget = 60  # a slow machine must not see the "reading the log" page here
    with TestClient(app) as c:
        assert 'value="senti"' in c.get("/monitor").text
        page = c.get("/monitor?model=senti&since=1h")
        assert page.status_code == 200
        assert re.search(r'id="overall">warn<', page.text)
        assert "label_shift" in page.text and page.text.count('<svg class="chart"') == 3
        assert "senti:v1: 80 predictions" in page.text
        # the same numbers as `lmforge monitor --json`
        capsys.readouterr()
        assert main(["monitor", "senti", "--since", "1h", "--registry", str(monitored / "reg"), "--json"]) == 3
        report = json.loads(capsys.readouterr().out)
        label = next(check for check in report["checks"] if check["name"] == "label_shift")
        assert f"PSI {label['psi']:.3f}" in page.text and label["detail"].split(":")[0] in page.text
        # the page keeps its report until the log changes: one more prediction shows at once
        log = PredictionLog(Registry(monitored / "reg").db_path, "senti")
        log.start()
        log.record({"id": "extra-1", "version": 1, "version_tag": "senti:v1", "label": "negative", "confidence": 0.9,
                    "latency_ms": 3.0, "length": 4, "oov": 0.0})
        log.flush()
        log.stop()
        stale = c.get("/monitor?model=senti&since=1h").text  # shown at once, the new report computed meanwhile
        assert "senti:v1: 80 predictions" in stale and "refresh now" in stale
        assert "senti:v1: 81 predictions" in c.get("/monitor?model=senti&since=1h&refresh=1").text
        assert c.get("/monitor?model=nobody").status_code == 404
        assert c.get("/monitor?model=senti&since=yesterday").status_code == 422


def test_playground_generates_whole_and_streamed(tmp_path, tiny_decoder):
    """A generation run in the playground: the form's completion equals the streamed pieces joined."""
    import yaml

    from conftest import jsonl
    from lmforge.config import load_config
    from lmforge.training.loop import train

    rows = [{"prompt": "say hi", "completion": "hello there"}, {"prompt": "how are you", "completion": "fine thanks"}]
    cfg = {"name": "gen", "task": "generation", "model": str(tiny_decoder), "method": "full", "output_dir": str(tmp_path / "runs"),
           "data": {"train": str(jsonl(tmp_path / "train.jsonl", rows * 4)), "dev": str(jsonl(tmp_path / "dev.jsonl", rows))},
           "training": {"epochs": 2, "batch_size": 4, "tensorboard": False, "precision": "fp32"}}
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump(cfg))
    run = train(load_config(tmp_path / "gen.yaml"), tmp_path)
    app = create_app(StudioSettings(runs=[tmp_path / "runs"], registry=tmp_path / "none"))
    with TestClient(app) as c:
        page = c.get("/playground")
        source = f"run:{run_id(run)}"
        assert f'value="{source}" data-generation="yes"' in page.text
        whole = c.post("/playground", data={"csrf": _csrf(page.text), "source": source, "text": "say <hi>", "max_new_tokens": "6"})
        assert whole.status_code == 200 and 'id="completion"' in whole.text
        completion = re.search(r'<pre class="completion" id="completion">(.*?)</pre>', whole.text, re.S).group(1)
        streamed = c.post("/api/generate", json={"source": source, "prompt": "say <hi>", "max_new_tokens": 6},
                          headers={"X-CSRF-Token": _csrf(page.text)})
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in streamed.text.split("\n\n") if line.startswith("data: ")]
        import html

        assert events[-1]["done"] and "".join(e.get("text", "") for e in events) == html.unescape(completion)
        assert c.post("/api/generate", json={"source": source, "prompt": "x"}).status_code == 403  # no CSRF token
        assert c.post("/api/generate", json={"source": source, "prompt": ""}, headers={"X-CSRF-Token": _csrf(page.text)}).status_code == 422


def test_loopback_studio_refuses_other_host_names(studio_dirs):
    """DNS rebinding: a page on evil.example re-bound to 127.0.0.1 sends Host: evil.example."""
    app = create_app(StudioSettings(runs=[studio_dirs["runs"]], registry=studio_dirs["registry"],
                                    allowed_hosts=["127.0.0.1", "localhost", "::1"]))
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        assert c.get("/runs").status_code == 200
        assert c.get("/runs", headers={"host": "localhost:8080"}).status_code == 200
        assert c.get("/runs", headers={"host": "[::1]:8080"}).status_code == 200
        refused = c.get("/runs", headers={"host": "evil.example:8080"})
        assert refused.status_code == 400 and "address it was started on" in refused.text


def test_monitor_first_view_does_not_wait_for_a_long_read(monitored, monkeypatch):
    """Until the first report of a window exists, the page says it is reading the log and reloads itself."""
    import threading
    import time

    from lmforge.lifecycle import monitoring

    release, real = threading.Event(), monitoring.monitor_report

    def slow(*args, **kwargs):  # a long read: it ends when the test says so, not when the machine is fast
        release.wait(60)
        return real(*args, **kwargs)
    monkeypatch.setattr(monitoring, "monitor_report", slow)
    app = create_app(StudioSettings(runs=[monitored / "runs"], registry=monitored / "reg"))
    cache = app.state.studio.report_cache
    cache.budget = 0.0
    with TestClient(app) as c:
        first = c.get("/monitor?model=senti&since=7d")
        release.set()
        assert first.status_code == 200 and 'id="pending"' in first.text
        assert '<meta http-equiv="refresh" content="1">' in first.text and 'id="overall"' not in first.text
        deadline = time.time() + 60
        while cache.jobs and time.time() < deadline:
            time.sleep(0.05)
        ready = c.get("/monitor?model=senti&since=7d")
        assert 'id="overall">warn<' in ready.text and 'id="pending"' not in ready.text and "http-equiv" not in ready.text
        assert len(cache.stores) == 1  # the log was read once, into memory, for every later window
        assert 'id="overall"' in c.get("/monitor?model=senti&since=1h&refresh=1").text


def test_monitor_reports_are_computed_at_start(monitored):
    import time

    app = create_app(StudioSettings(runs=[monitored / "runs"], registry=monitored / "reg", warm_monitor=True))
    cache = app.state.studio.report_cache
    deadline = time.time() + 60
    while not cache.reports and time.time() < deadline:
        time.sleep(0.05)
    assert [key[:3] for key in cache.reports] == [("senti", None, "24h")]
    with TestClient(app) as c:
        page = c.get("/monitor?model=senti")  # the default window: ready, not computed for this request
        assert page.status_code == 200 and "as of" in page.text and "refresh now" not in page.text
