"""Active learning (`lmforge suggest`): uncertainty measures, the diversity step, the pool and
exclusion rules, the records' round trip through the readers, cold start and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from lmforge.active.scoring import cluster_medoids, diverse_top, label_uncertainty, mnlp, multilabel_uncertainty
from lmforge.active.suggest import SUGGESTION_KEY, suggest, write_suggestions
from lmforge.data.classification_readers import read_classification
from lmforge.data.ner_readers import read_ner
from lmforge.errors import UserError


def test_uncertainty_measures():
    assert label_uncertainty(np.array([0.5, 0.5]), "margin") == pytest.approx(1.0)
    assert label_uncertainty(np.array([0.9, 0.1]), "margin") == pytest.approx(0.2)
    assert label_uncertainty(np.array([1 / 3] * 3), "entropy") == pytest.approx(1.0)
    assert label_uncertainty(np.array([1.0, 0.0, 0.0]), "entropy") == pytest.approx(0.0)
    assert label_uncertainty(np.array([0.7, 0.2, 0.1]), "least-confidence") == pytest.approx(0.3)
    assert multilabel_uncertainty(np.array([0.5, 0.99]), 0.5, "margin") == pytest.approx(1.0)
    assert multilabel_uncertainty(np.array([0.01, 0.99]), 0.5, "margin") < 0.05
    assert mnlp([1.0, 1.0]) == 0.0 and mnlp([0.5]) == pytest.approx(np.log(2))
    # length-normalised: a long sure sentence does not outrank a short unsure one
    assert mnlp([0.99] * 40) < mnlp([0.6, 0.6])


def test_diversity_takes_one_per_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(4)
    emb = np.concatenate([centres[i] + 0.01 * rng.standard_normal((5, 4)) for i in range(4)])
    emb = np.concatenate([emb, np.ones((30, 4))])  # far less uncertain: never among the candidates
    scores = np.concatenate([np.full(5, 0.9) + 0.001 * np.arange(5), np.full(15, 0.5), np.zeros(30)])  # cluster 0 is the most uncertain
    asked: list = []
    picked, clusters = diverse_top(scores, lambda idx: asked.append(list(idx)) or emb[idx], 4, seed=0)
    assert sorted(asked[0]) == list(range(20))  # only the top 4 x 5 candidates are embedded
    assert len(set(np.argmax(emb[picked], axis=1))) == 4  # one per true cluster, not four from cluster 0
    assert picked[0] == 4 and len(set(clusters)) == 4 and max(picked) < 20
    medoids, shares = cluster_medoids(emb[:20], 4, seed=0)
    assert len(set(np.argmax(emb[medoids], axis=1))) == 4 and shares == [0.25] * 4


def _pool(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "pool.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


POOL = ["the movie was great", "the plot was dull", "the acting was okay", "very good film", "a boring movie",
        "the film was fine", "great acting", "dull plot", "okay movie", "the film was very good"]


def test_classification_suggestions_round_trip_and_skip_what_is_labelled(cls_run, tmp_path):
    from lmforge.runs import RunFolder

    cfg = RunFolder(cls_run).config
    first_train = read_classification(Path(cfg.data.train))[0].text
    pool = _pool(tmp_path, [*POOL, "", POOL[0], "  ", first_train, POOL[3] + "  "])
    result = suggest(cls_run, pool, 5, seed=1)
    texts = [r["text"] for r in result.records]
    assert len(texts) == 5 == len(set(texts)) and first_train not in texts
    assert any("repeated" in note for note in result.notes) and any("already labelled" in note for note in result.notes)
    assert any("2 blank line(s) skipped" in note for note in result.notes)
    scores = [r[SUGGESTION_KEY]["score"] for r in result.records]
    assert scores == sorted(scores, reverse=True)
    assert all(r["label"] in ("negative", "neutral", "positive") and r[SUGGESTION_KEY]["why"] for r in result.records)
    out = tmp_path / "to_label.jsonl"
    write_suggestions(result, out)
    back = read_classification(out)  # the reader accepts the file as written (the suggest object is ignored)
    assert [ex.text for ex in back] == texts and [ex.labels[0] for ex in back] == [r["label"] for r in result.records]
    again = suggest(cls_run, pool, 5, seed=1)
    assert again.records == result.records  # a fixed seed gives the same suggestions
    later = suggest(cls_run, pool, 5, seed=1, exclude=[out])  # labelled once: never suggested again
    assert not set(texts) & {r["text"] for r in later.records}


def test_more_than_the_pool_returns_everything_with_a_note(cls_run, tmp_path):
    pool = _pool(tmp_path, POOL[:3])
    result = suggest(cls_run, pool, 50)
    assert len(result.records) == 3 and any("only 3" in note for note in result.notes)


def test_strategies_and_random(cls_run, tmp_path):
    pool = _pool(tmp_path, POOL)
    for strategy in ("margin", "entropy", "least-confidence", "random"):
        result = suggest(cls_run, pool, 3, strategy=strategy, diversity=False)
        assert len(result.records) == 3 and result.records[0][SUGGESTION_KEY]["strategy"] == strategy
    with pytest.raises(UserError, match="mnlp: this run offers|offers margin"):
        suggest(cls_run, pool, 3, strategy="mnlp")


def test_ner_suggestions_are_pre_annotated_and_read_back(ner_run, tmp_path):
    pool = _pool(tmp_path, ["paris visited alice today", "in london acme works", "the office of globex in berlin was closed",
                            "nobody went anywhere", "berlin and paris and london", "acme globex acme"])
    result = suggest(ner_run, pool, 3, seed=0)
    assert len(result.records) == 3
    for record in result.records:
        assert len(record["tokens"]) == len(record["tags"]) and record[SUGGESTION_KEY]["strategy"] == "mnlp+diversity"
        assert "entities" in record[SUGGESTION_KEY]
    out = tmp_path / "ner.jsonl"
    write_suggestions(result, out)
    examples, scheme = read_ner(out)
    assert [ex.words for ex in examples] == [r["tokens"] for r in result.records]
    assert [ex.tags for ex in examples] == [r["tags"] for r in result.records]
    # a pool already split into words (the training format): the words are kept as given, the tags unused
    conll = tmp_path / "pool.conll"
    conll.write_text("U.S. B-LOC\nvisited O\nparis B-LOC\n\nacme O\nglobex O\n\n")
    split = suggest(ner_run, conll, 5)
    assert sorted(r["tokens"] for r in split.records) == [["U.S.", "visited", "paris"], ["acme", "globex"]]


def test_cold_start_picks_diverse_unlabelled_texts(tiny_model, tmp_path):
    pool = _pool(tmp_path, POOL)
    result = suggest(None, pool, 4, model=str(tiny_model), seed=0)
    assert len(result.records) == 4 and len({r["text"] for r in result.records}) == 4
    assert all(r["label"] is None and r[SUGGESTION_KEY]["strategy"] == "cold-start" for r in result.records)
    ner = suggest(None, pool, 2, model=str(tiny_model), task="token-classification")
    assert all(set(r["tags"]) == {"O"} for r in ner.records)


def test_suggest_on_a_named_device_gives_the_same_suggestions(cls_run, tiny_model, tmp_path):
    """device= moves the scoring model (a GPU machine: "cuda"); on the CPU the picks are unchanged."""
    pool = _pool(tmp_path, POOL)
    assert suggest(cls_run, pool, 3, seed=0, device="cpu").records == suggest(cls_run, pool, 3, seed=0).records
    cold = [suggest(None, pool, 3, model=str(tiny_model), seed=0, device=device).records for device in (None, "cpu")]
    assert cold[0] == cold[1]


def test_suggest_cli_writes_the_file_and_refuses_bad_input(cls_run, tmp_path):
    pool = _pool(tmp_path, POOL)
    out = tmp_path / "s.jsonl"
    r = run_cli("suggest", cls_run, "--pool", pool, "-n", "4", "-o", out)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 4 and "4 suggestion(s)" in r.stderr
    for args, message in [
        (("suggest", cls_run, "--pool", tmp_path / "missing.txt"), "not found"),
        (("suggest", cls_run, "--pool", pool, "--strategy", "loudest"), "--strategy loudest"),
        (("suggest", cls_run, "--pool", pool, "-n", "0"), "-n"),
        (("suggest", cls_run, "--pool", pool, "--task", "token-classification"), "cold start"),
        (("suggest", "--pool", pool, "--strategy", "margin"), "need a RUN"),
        (("suggest", cls_run), "--pool"),
    ]:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    r = run_cli("suggest", cls_run, "--pool", bad)
    assert r.returncode == 2 and "bad.txt" in r.stderr and "Traceback" not in r.stderr


def test_half_margin_half_random_recipe_through_the_cli(cls_run, tmp_path):
    """The README's margin + random round (SST-2: 98% of full data from 2.7x fewer labels than random
    picks): margin without the diversity step, then random picks that leave the first file's texts out."""
    pool = _pool(tmp_path, POOL)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    r = run_cli("suggest", cls_run, "--pool", pool, "-n", "3", "--strategy", "margin", "--no-diversity", "-o", first)
    assert r.returncode == 0, r.stderr
    r = run_cli("suggest", cls_run, "--pool", pool, "-n", "3", "--strategy", "random", "--exclude", first, "-o", second)
    assert r.returncode == 0, r.stderr
    texts = [[ex.text for ex in read_classification(path)] for path in (first, second)]  # pre-filled: the readers take them
    assert len(texts[0]) == len(texts[1]) == 3 and not set(texts[0]) & set(texts[1])
    strategies = [[json.loads(line)[SUGGESTION_KEY]["strategy"] for line in path.read_text().splitlines()] for path in (first, second)]
    assert strategies == [["margin"] * 3, ["random"] * 3]
