"""Resume after `kill -9`: the same final weights and metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import build_tiny_model, make_config, run_cli, sentiment_rows, write_csv


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory):
    # dropout on, so that the RNG state has to be restored for an exact resume
    return build_tiny_model(tmp_path_factory.mktemp("tiny-dropout"), layers=4, hidden=64, dropout=0.1)


def test_resume_after_kill_matches_uninterrupted(tmp_path, dropout_model):
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(240, 5)),
            "dev": write_csv(tmp_path / "dev.csv", sentiment_rows(30, 6))}
    cfg = make_config(tmp_path, dropout_model, data, epochs=5, learning_rate=1e-3, save_every_steps=7,
                      batch_size=8, num_threads=1)
    ok = run_cli("train", cfg, "--output", tmp_path / "straight")
    assert ok.returncode == 0, ok.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "train", str(cfg), "--output", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    latest = run / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 50:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "training", "the run finished before it could be killed; make it longer"
    assert not (run / "model").exists()

    resumed = run_cli("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(run / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    mb = json.loads((run / "metrics.json").read_text())
    assert ma["dev"] == mb["dev"] and ma["training"]["best_step"] == mb["training"]["best_step"]
    steps = [json.loads(l)["step"] for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["split"] == "train"]
    assert steps == sorted(set(steps)), "log has duplicated steps after resume"


def test_resume_of_finished_run_is_refused(tmp_path, tiny_model, cls_data):
    cfg = make_config(tmp_path, tiny_model, cls_data, epochs=1)
    assert run_cli("train", cfg, "--output", tmp_path / "r").returncode == 0
    r = run_cli("train", "--resume", tmp_path / "r")
    assert r.returncode == 2 and "finished" in r.stderr
