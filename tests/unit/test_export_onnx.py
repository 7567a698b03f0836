"""ONNX export: fused graph, int8, parity gate, atomic writes, stale/missing exports, dynamic shapes.

The session run folders (`cls_run`, `ner_run`) are copied into temporary folders before exporting,
so they are never modified."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lmforge.errors import UserError
from lmforge.export import onnx as export_mod
from lmforge.export.onnx import export_onnx
from lmforge.onnx_runtime import load_onnx_forward
from lmforge.predictor import Predictor

CLS_TEXTS = ["the movie was very good", "the acting was awful", "a flight and a hotel", "superb",
             "the plot was not boring but the acting was terrible and the film was bad",
             "what a great and excellent movie , the plot was superb"]
NER_TEXTS = ["alice visited paris", "bob works for acme in london", "the globex office in berlin",
             "carol met alice and bob in paris today", "zzz qqq"]
# Largest probability difference from the PyTorch fp32 model, measured on these fixtures (dev data and
# the texts above): fp32 graphs 0.0 at 6 decimals (fused kernels differ only by float rounding, < 1e-6);
# int8 graphs 0.0006-0.0027. The bounds leave ~10x headroom for other CPUs' kernels while still failing a
# graph that is wrong rather than rounded (a dropped mask or swapped input moves probabilities by >> 0.02).
TOLERANCE = {"onnx-fp32": 1e-4, "onnx-int8": 0.02}


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cls_run, ner_run) -> dict[tuple[str, str], tuple[Path, dict]]:
    """(task, quantize) -> (run copy exported into run/onnx, the returned report)."""
    out = {}
    for task, run in (("cls", cls_run), ("ner", ner_run)):
        for quantize in ("int8", None):
            copy = _copy(run, tmp_path_factory.mktemp(f"{task}-{quantize}") / "run")
            out[task, quantize or "fp32"] = (copy, export_onnx(copy, quantize=quantize))
    return out


def _probabilities(pred: dict) -> list[float]:
    return list(pred["probabilities"].values()) if "probabilities" in pred else [e["score"] for e in pred["entities"]]


@pytest.mark.parametrize("task", ["cls", "ner"])
@pytest.mark.parametrize("quantize", ["int8", "fp32"])
def test_onnx_predictor_agrees_with_torch(exported, task, quantize):
    run, report = exported[task, quantize]
    assert report["parity"]["agreement"] == 1.0 and report["parity"]["disagreements"] == 0
    texts = CLS_TEXTS if task == "cls" else NER_TEXTS
    reference = Predictor.from_run(run, bf16=False).predict(texts)
    onnx = Predictor.from_run(run, backend="onnx")
    assert onnx.backend == f"onnx-{quantize}"
    got = onnx.predict(texts)
    assert onnx.torch._runner is None  # the PyTorch forward (and its bf16 copy) never ran
    for want, have in zip(reference, got):
        if task == "cls":
            assert have["label"] == want["label"]
        else:
            assert have["tags"] == want["tags"]
            assert [(e["type"], e["start"], e["end"]) for e in have["entities"]] == [(e["type"], e["start"], e["end"]) for e in want["entities"]]
        assert np.allclose(_probabilities(have), _probabilities(want), atol=TOLERANCE[onnx.backend], rtol=0)


def test_export_json(exported):
    run, report = exported["cls", "int8"]
    folder = run / "onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.onnx"]
    assert not [p for p in run.iterdir() if p.name.startswith(".onnx")]  # no staging folder left behind
    info = json.loads((folder / "export.json").read_text())
    assert report == {**info, "path": str(folder / "model.onnx")}
    assert info["format"] == "onnx" and info["quantize"] == "int8" and info["backend"] == "onnx-int8"
    assert info["model_version"] == Predictor.from_run(run).version
    # the tiny BERT has 2 layers: 2 attention blocks, 2 skip-LayerNorms each, one embedding LayerNorm
    assert info["fused"] is True and info["fusion_note"] is None
    assert info["fused_nodes"]["Attention"] == 2 and info["fused_nodes"]["SkipLayerNormalization"] == 4
    assert info["fused_nodes"]["EmbedLayerNormalization"] == 1
    assert info["quantized_nodes"]["QAttention"] == 2 and info["quantized_nodes"]["MatMulInteger"] > 0
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and info["opset"] == 17
    assert info["parity"]["examples"] == 12 and info["parity"]["compared"] == "labels"
    assert info["parity"]["data"].endswith("dev.csv") and info["forced"] is False
    assert info["sizes"]["model_onnx_bytes"] == (folder / "model.onnx").stat().st_size
    assert info["sizes"]["model_onnx_bytes"] < info["sizes"]["fp32_onnx_bytes"]
    assert {"torch", "onnxruntime", "onnx", "transformers"} <= set(info["versions"])
    fp32 = exported["cls", "fp32"][1]
    assert fp32["quantize"] is None and fp32["backend"] == "onnx-fp32" and fp32["quantized_nodes"] == {}
    ner = exported["ner", "int8"][1]
    assert ner["parity"]["compared"] == "word tags" and ner["parity"]["units"] > ner["parity"]["examples"]
    assert ner["task"] == "token-classification" and ner["fused"] is True


def test_dynamic_batch_and_sequence(exported):
    for task in ("cls", "ner"):
        run, _ = exported[task, "fp32"]
        predictor = Predictor.from_run(run, bf16=False)
        forward, _ = load_onnx_forward(run)
        for texts in (["alice"], ["the movie was very good", "bad", "alice visited paris and london today with bob", "acme",
                                  "a b c d e f g h i j k l m n o p", "superb plot", "x y"]):
            batch = dict(predictor.tokenizer(texts, padding=True, return_tensors="pt"))
            want = predictor.forward(batch)
            got = forward(batch)
            assert got.shape == want.shape and got.dtype == np.float32
            real = batch["attention_mask"].numpy().astype(bool)
            if got.ndim == 3:  # padded positions of token outputs are never read
                got, want = got[real], want[real]
            assert np.abs(got - want).max() < 1e-4


def test_parity_failure_writes_nothing_unless_forced(tmp_path, cls_run, monkeypatch):
    run = _copy(cls_run, tmp_path / "run")
    real = export_mod.onnx_forward
    monkeypatch.setattr(export_mod, "onnx_forward", lambda session: (lambda batch: -real(session)(batch)))
    with pytest.raises(UserError) as err:
        export_onnx(run)
    message = str(err.value)
    differ = int(re.search(r"of 12 labels: (\d+) differ", message).group(1))
    assert "parity check failed" in message and 0 < differ <= 12 and "--force" in message and "--min-agreement" in message
    assert not (run / "onnx").exists() and not [p for p in run.iterdir() if p.name.startswith(".onnx")]
    report = export_onnx(run, quantize=None, force=True)
    assert report["forced"] is True and (run / "onnx" / "model.onnx").is_file()
    assert export_onnx(run, quantize=None, min_agreement=0.0)["forced"] is False  # a lower bar accepts it


@pytest.mark.parametrize("bad", [1.01, -0.1, float("nan")])
def test_min_agreement_outside_0_1_is_refused(cls_run, bad):
    with pytest.raises(UserError, match="--min-agreement .* between 0 and 1"):
        export_onnx(cls_run, min_agreement=bad)


def test_int8_uses_7_bit_weights_without_vnni(tmp_path, cls_run):
    """Full-range 8-bit weights saturate ONNX Runtime's int8 kernels on CPUs without VNNI."""
    run = _copy(cls_run, tmp_path / "run")
    report = export_onnx(run)
    assert report["reduce_range"] is (not export_mod.has_vnni())
    assert report["parity"]["agreement"] == 1.0


def test_wrong_logits_fail_parity_and_keep_previous_export(tmp_path, cls_run, monkeypatch):
    run = _copy(cls_run, tmp_path / "run")
    messages = []
    export_onnx(run, quantize=None, progress=messages.append)
    assert any("parity" in m for m in messages)
    before = (run / "onnx" / "export.json").read_text()
    real = export_mod.onnx_forward
    monkeypatch.setattr(export_mod, "onnx_forward", lambda session: (lambda batch: -real(session)(batch)))
    with pytest.raises(UserError, match=r"agrees with the PyTorch model on \d+\.\d+% of 12 labels.*max probability difference"):
        export_onnx(run)
    assert (run / "onnx" / "export.json").read_text() == before  # the previous export is untouched
    assert sorted(p.name for p in (run / "onnx").iterdir()) == ["export.json", "model.onnx"]


def test_missing_export(cls_run):
    with pytest.raises(UserError, match=r"onnx/model\.onnx not found; run `lmforge export .* --format onnx --quantize int8` first"):
        Predictor.from_run(cls_run, backend="onnx")


def test_stale_export(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    run = _copy(exported["cls", "int8"][0], tmp_path / "run")
    weights = run / "model" / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if k.startswith("classifier"))
    state[name] = state[name] + 0.01
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(UserError, match="is stale.*re-export"):
        Predictor.from_run(run, backend="onnx")


def test_prefix_run_is_refused(tmp_path, cls_run):
    run = _copy(cls_run, tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["method"] = "prefix"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match="method 'prefix'.*cannot be merged"):
        export_onnx(run)
    assert not (run / "onnx").exists()


def test_missing_dev_file_and_data_option(tmp_path, cls_run):
    from conftest import write_csv

    run = _copy(cls_run, tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    dev = Path(cfg["data"]["dev"])
    cfg["data"]["dev"] = str(tmp_path / "gone.csv")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UserError, match=r"gone\.csv: the run's dev file .* --data FILE"):
        export_onnx(run)
    unlabelled = write_csv(tmp_path / "texts.csv", [(t,) for t in CLS_TEXTS], header=("text",))
    report = export_onnx(run, data=unlabelled, output=tmp_path / "out")
    assert report["parity"]["examples"] == len(CLS_TEXTS) and report["parity"]["data"] == str(unlabelled)
    forward, backend = load_onnx_forward(run, tmp_path / "out")
    assert backend == "onnx-int8"
    assert dev.is_file()  # the session fixture's data is untouched


def test_output_must_be_an_export_folder(tmp_path, cls_run):
    run = _copy(cls_run, tmp_path / "run")
    with pytest.raises(UserError, match="not an ONNX export folder"):
        export_onnx(run, output=run)
    assert (run / "config.yaml").is_file()


def test_pairs_and_multi_label(tmp_path, tiny_model):
    """Text pairs feed token_type_ids with ones; multi-label agreement compares label sets."""
    from conftest import jsonl, make_config
    from lmforge.config import load_config
    from lmforge.training.loop import train

    rows = [{"text": " ".join((["rain"] if i % 2 == 0 else []) + (["card"] if i % 3 == 0 else []) + ["today"]), "text2": "please",
             "labels": (["weather"] if i % 2 == 0 else []) + (["banking"] if i % 3 == 0 else [])} for i in range(60)]
    path = make_config(tmp_path, tiny_model, {"train": jsonl(tmp_path / "train.jsonl", rows), "dev": jsonl(tmp_path / "dev.jsonl", rows[:12])},
                       epochs=10, learning_rate=2e-3)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(multi_label=True, label_field="labels", text_pair_field="text2")
    path.write_text(yaml.safe_dump(cfg))
    run = train(load_config(path), tmp_path)
    report = export_onnx(run, quantize=None)
    assert report["parity"]["compared"] == "label sets" and report["parity"]["agreement"] == 1.0
    pairs = [("rain card today", "please"), ("today", "please rain")]
    want = Predictor.from_run(run, bf16=False).predict(pairs)
    got = Predictor.from_run(run, backend="onnx").predict(pairs)
    for w, g in zip(want, got):
        assert g["labels"] == w["labels"]
        assert np.allclose(_probabilities(g), _probabilities(w), atol=TOLERANCE["onnx-fp32"], rtol=0)


def test_bad_quantize_value(cls_run):
    with pytest.raises(UserError, match="quantize='int4'"):
        export_onnx(cls_run, quantize="int4")


def test_export_cli_then_serve_onnx(tmp_path, cls_run):
    """`lmforge export` as a user runs it, then the exported graph served over the API: same labels
    as the PyTorch model, the ONNX backend named in /v1/model, explanations still available."""
    from conftest import run_cli
    from fastapi.testclient import TestClient

    from lmforge.serve.app import create_app
    from lmforge.serve.settings import ServeSettings

    run = _copy(cls_run, tmp_path / "run")
    r = run_cli("export", run, "--format", "onnx", "--quantize", "int8")
    assert r.returncode == 0, r.stderr
    assert "onnx-int8" in r.stdout and "100.00% of 12 labels" in r.stdout and "Attention" in r.stdout
    assert "checking parity" in r.stderr and (run / "onnx" / "model.onnx").is_file()
    bad = run_cli("export", run, "--format", "tflite")
    assert bad.returncode == 2 and "only onnx" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("export", run, "--quantize", "int4")
    assert bad.returncode == 2 and "use int8 or none" in bad.stderr

    want = Predictor.from_run(run, bf16=False).predict(CLS_TEXTS)
    with TestClient(create_app(Predictor.from_run(run, backend="onnx"), ServeSettings())) as client:
        assert client.get("/v1/model").json()["backend"] == "onnx-int8"
        body = client.post("/v1/predict", json={"texts": CLS_TEXTS}).json()
        assert [p["label"] for p in body["predictions"]] == [p["label"] for p in want]
        explained = client.post("/v1/explain", json={"text": CLS_TEXTS[0], "steps": 16})
        assert explained.status_code == 200 and explained.json()["words"]
