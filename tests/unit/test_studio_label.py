"""The studio's Label page over a real `lmforge suggest` file: labels stored as given, written to a
file the readers take, two labellers never handed the same item, NER tags checked, bad files refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lmforge.active.labelstore import LabelStore
from lmforge.active.suggest import suggest, write_suggestions
from lmforge.data.classification_readers import read_classification
from lmforge.data.ner_readers import read_ner
from lmforge.errors import UserError
from lmforge.studio.app import StudioSettings, create_app
from lmforge.studio.labelling import FileQueue

POOL = ["the food was <b>great</b>", "terrible service, never again", "it was fine i guess", "loved every minute",
        "awful, just awful", "nothing special", "best day ever", "the worst queue", "ok", "wonderful staff"]


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


@pytest.fixture
def queue_file(cls_run, tmp_path) -> Path:
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(POOL) + "\n")
    out = tmp_path / "to_label.jsonl"
    write_suggestions(suggest(cls_run, pool, 6, seed=0), out)
    return out


@pytest.fixture
def ner_queue(ner_run, tmp_path) -> Path:
    pool = tmp_path / "ner_pool.txt"
    pool.write_text("alice visited paris today\nacme opened an office in berlin\nbob and carol met in london\n")
    out = tmp_path / "ner.jsonl"
    write_suggestions(suggest(ner_run, pool, 3, seed=0), out)
    return out


def _client(tmp_path, *files) -> TestClient:
    (tmp_path / "runs").mkdir(exist_ok=True)
    return TestClient(create_app(StudioSettings(runs=[tmp_path / "runs"], registry=tmp_path / "reg", label_files=list(files))))


def test_label_three_and_find_them_stored(queue_file, tmp_path):
    queue = FileQueue(queue_file)
    assert queue.choices[:3] == ["negative", "neutral", "positive"] and not queue.ner and not queue.multi_label
    with _client(tmp_path, queue_file) as c:
        listing = c.get("/label")
        assert "to_label.jsonl" in listing.text and "0 / 6" in listing.text
        given = []
        for label in ("positive", "negative", "a brand-new label"):
            page = c.get(f"/label/{queue.id}")  # -> the next item
            assert page.status_code == 200 and "<b>great</b>" not in page.text  # the pool's markup shown as text
            key = re.search(rf'action="/label/{queue.id}/(\d+)" id="label-form"', page.text).group(1)
            field = "new_label" if label.startswith("a brand") else "label"
            done = c.post(f"/label/{queue.id}/{key}", data={"csrf": _csrf(page.text), field: label}, follow_redirects=False)
            assert done.status_code == 303
            given.append((key, label))
        assert len({k for k, _ in given}) == 3  # three different items
    stored = read_classification(queue.output)  # the readers take the file as written
    texts = {ex.text: ex.labels[0] for ex in stored}
    records = [json.loads(line) for line in queue_file.read_text().splitlines()]
    for key, label in given:
        assert texts[records[int(key) - 1]["text"]] == label
    assert len(stored) == 3


def test_two_labellers_get_different_items_and_nothing_is_lost(queue_file, tmp_path):
    queue = FileQueue(queue_file)
    with _client(tmp_path, queue_file) as a, _client(tmp_path, queue_file) as b:
        pa, pb = a.get(f"/label/{queue.id}"), b.get(f"/label/{queue.id}")
        ka = re.search(rf'/label/{queue.id}/(\d+)" id="label-form"', pa.text).group(1)
        kb = re.search(rf'/label/{queue.id}/(\d+)" id="label-form"', pb.text).group(1)
        assert ka != kb  # leased: each person is handed another item
        a.post(f"/label/{queue.id}/{ka}", data={"csrf": _csrf(pa.text), "label": "positive"})
        b.post(f"/label/{queue.id}/{kb}", data={"csrf": _csrf(pb.text), "label": "negative"})
        # b relabels a's item: both labels are kept, the latest is the label
        pa2 = b.get(f"/label/{queue.id}/{ka}")
        assert "Labelled already: positive" in pa2.text
        b.post(f"/label/{queue.id}/{ka}", data={"csrf": _csrf(pb.text), "label": "neutral"})
    history = LabelStore(queue_file.with_name("to_label.labels.db")).history()
    assert [(h["item"], h["value"]) for h in history] == [(ka, "positive"), (kb, "negative"), (ka, "neutral")]
    assert len({h["labeller"] for h in history}) == 2
    assert FileQueue(queue_file).progress() == (2, 6)


def test_skip_and_undo(queue_file, tmp_path):
    queue = FileQueue(queue_file)
    with _client(tmp_path, queue_file) as c:
        first = c.get(f"/label/{queue.id}")
        k1 = re.search(rf'/label/{queue.id}/(\d+)" id="label-form"', first.text).group(1)
        c.post(f"/label/{queue.id}/{k1}", data={"csrf": _csrf(first.text), "action": "skip"})
        second = c.get(f"/label/{queue.id}")
        k2 = re.search(rf'/label/{queue.id}/(\d+)" id="label-form"', second.text).group(1)
        assert k2 != k1
        c.post(f"/label/{queue.id}/{k2}", data={"csrf": _csrf(second.text), "label": "neutral"})
        third = c.get(f"/label/{queue.id}")
        assert f'href="/label/{queue.id}/{k2}" id="undo"' in third.text  # back to the one just labelled
        refused = c.post(f"/label/{queue.id}/{k2}", data={"csrf": "0" * 64, "label": "positive"})
        assert refused.status_code == 403
        empty = c.post(f"/label/{queue.id}/{k2}", data={"csrf": _csrf(third.text), "label": "  "})
        assert empty.status_code == 422 and "choose a label" in empty.text


def test_ner_queue_checks_tags(ner_queue, tmp_path):
    queue = FileQueue(ner_queue)
    assert queue.ner and set(queue.choices) >= {"PER", "LOC", "ORG"}
    with _client(tmp_path, ner_queue) as c:
        page = c.get(f"/label/{queue.id}")
        key = re.search(rf'/label/{queue.id}/(\d+)" id="label-form"', page.text).group(1)
        n = len(queue.item(key).tokens)
        bad = c.post(f"/label/{queue.id}/{key}", data={"csrf": _csrf(page.text), "tags": json.dumps(["I-PER"] + ["O"] * (n - 1))})
        assert bad.status_code == 422 and "token 1: I-PER cannot follow" in bad.text
        short = c.post(f"/label/{queue.id}/{key}", data={"csrf": _csrf(page.text), "tags": json.dumps(["O"])})
        assert short.status_code == 422 and f"for {n} tokens" in short.text
        tags = ["B-PER"] + ["O"] * (n - 1)
        ok = c.post(f"/label/{queue.id}/{key}", data={"csrf": _csrf(page.text), "tags": json.dumps(tags)}, follow_redirects=False)
        assert ok.status_code == 303
    examples, _ = read_ner(queue.output)
    assert [ex.tags for ex in examples] == [tags]


def test_bad_queue_files_are_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{not json\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not a JSON object"):
        FileQueue(bad)
    bad.write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        FileQueue(bad)
    with pytest.raises(UserError, match="file not found"):
        FileQueue(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="no records"):
        FileQueue(tmp_path / "empty.jsonl")


def test_unknown_queue_and_item(queue_file, tmp_path):
    with _client(tmp_path, queue_file) as c:
        assert c.get("/label/ffffffffffff").status_code == 404
        assert c.get(f"/label/{FileQueue(queue_file).id}/999").status_code == 404


def test_feedback_queue_labels_the_served_models_unconfident_predictions(cls_run, tmp_path):
    from conftest import registered_with_traffic, sentiment_rows
    from lmforge.lifecycle.predlog import feedback_since
    from lmforge.lifecycle.update import feedback_examples
    from lmforge.studio.labelling import FeedbackQueue

    registry = registered_with_traffic(tmp_path, cls_run, [t for t, _ in sentiment_rows(20, 13)][:6], store_texts=True)
    queue = FeedbackQueue(registry, "senti", below=1.01)  # every prediction counts as unconfident here
    assert queue.progress() == (0, 6) and queue.choices == ["negative", "neutral", "positive"]
    (tmp_path / "runs").mkdir()
    app = create_app(StudioSettings(runs=[tmp_path / "runs"], registry=tmp_path / "reg", label_files=["registry:senti"]))
    qid = next(iter(app.state.studio.queues))
    with TestClient(app) as c:
        page = c.get(f"/label/{qid}")
        key = re.search(rf'/label/{qid}/([0-9a-f]+)" id="label-form"', page.text).group(1)
        assert "the served model said" in page.text
        c.post(f"/label/{qid}/{key}", data={"csrf": _csrf(page.text), "label": "neutral"})
        listing = c.get("/label")
        assert re.search(r">1 / [1-6]<", listing.text)  # the studio's queue: confidence below 0.7
    stored = feedback_since(registry.db_path, "senti", 0.0)
    assert [(r["prediction_id"], r["label"]) for r in stored] == [(key, "neutral")]
    assert [ex.labels for ex in feedback_examples(registry, "senti")] == [["neutral"]]  # what update --from-feedback trains on
    with pytest.raises(UserError, match="no registry"):
        create_app(StudioSettings(runs=[tmp_path / "runs"], registry=tmp_path / "none", label_files=["registry:senti"]))
