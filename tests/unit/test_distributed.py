"""The same loop under torchrun with 2 CPU processes (gloo): the result matches a single-process
run with the same global batch."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from conftest import make_config, run_cli


def test_two_processes_match_one(tmp_path, tiny_model, ner_data):
    cfg = make_config(tmp_path, tiny_model, ner_data, task="token-classification", epochs=4, batch_size=8,
                      learning_rate=5e-3, num_threads=1)
    one = run_cli("train", cfg, "--output", tmp_path / "one", timeout=600)
    assert one.returncode == 0, one.stderr
    two = run_cli("train", cfg, "--nproc", "2", "--output", tmp_path / "two", timeout=600)
    assert two.returncode == 0, two.stderr
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["status"] == "complete", two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())["dev"]
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())["dev"]
    assert abs(ma["f1"] - mb["f1"]) < 1e-6
