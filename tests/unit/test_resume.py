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
from lmforge.studio.catalog import status_of
from lmforge.training.state import TrainState
from lmforge.training.steps import train_steps


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory):
    # dropout on, so that the RNG state has to be restored for an exact resume
    return build_tiny_model(tmp_path_factory.mktemp("tiny-dropout"), layers=4, hidden=64, dropout=0.1)


@pytest.mark.parametrize("averaging", [{}, {"average_last": 3}, {"precision": "bf16"}], ids=["best", "average_last", "bf16_copy"])
def test_resume_after_kill_matches_uninterrupted(tmp_path, dropout_model, averaging):
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(240, 5)),
            "dev": write_csv(tmp_path / "dev.csv", sentiment_rows(30, 6))}
    cfg = make_config(tmp_path, dropout_model, data, epochs=5, learning_rate=1e-3, save_every_steps=7,
                      batch_size=8, num_threads=1, **averaging)
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
    # the studio tells the killed run from a live one: its recorded process is gone
    assert info["pid"] == proc.pid and info["total_steps"] > 50
    assert status_of(info) == "interrupted"

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
    if "average_last" in averaging:  # the window of evaluations survived the kill: the last 3 of the 5 epoch ends
        assert mb["training"]["averaged_steps"] == ma["training"]["averaged_steps"] == [90, 120, 150]
    steps = [json.loads(l)["step"] for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["split"] == "train"]
    assert steps == sorted(set(steps)), "log has duplicated steps after resume"


def test_run_json_records_how_training_ended(tmp_path, tiny_model, cls_data, monkeypatch):
    """Ctrl-C writes `interrupted`, an error `failed` with its message; resume marks it `training` again."""
    from lmforge.config import load_config
    from lmforge.training import loop

    cfg = load_config(make_config(tmp_path, tiny_model, cls_data, epochs=1))

    def ctrl_c(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_train_until_done", ctrl_c)
    with pytest.raises(SystemExit):
        loop.train(cfg, tmp_path, output=tmp_path / "stopped")
    assert json.loads((tmp_path / "stopped" / "run.json").read_text())["status"] == "interrupted"

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk <full>")

    monkeypatch.undo()
    monkeypatch.setattr(loop, "finalize_run", broken)
    with pytest.raises(RuntimeError):
        loop.train(cfg, tmp_path, output=tmp_path / "failed")
    info = json.loads((tmp_path / "failed" / "run.json").read_text())
    assert info["status"] == "failed" and info["error"] == "disk <full>" and status_of(info) == "failed"
    monkeypatch.undo()
    loop.resume(tmp_path / "stopped")
    info = json.loads((tmp_path / "stopped" / "run.json").read_text())
    assert info["status"] == "complete" and status_of(info) == "finished"


def test_resume_of_finished_run_is_refused(tmp_path, tiny_model, cls_data):
    cfg = make_config(tmp_path, tiny_model, cls_data, epochs=1)
    assert run_cli("train", cfg, "--output", tmp_path / "r").returncode == 0
    r = run_cli("train", "--resume", tmp_path / "r")
    assert r.returncode == 2 and "finished" in r.stderr


class _RecordingStepper:
    """Stands in for `steps.Stepper`: records the groups of feature indices each step is given."""

    def __init__(self, lengths):
        self.features = [{"input_ids": [0] * n} for n in lengths]
        self.task = self
        self.groups = []

    def loss_units(self, feature) -> int:
        return 1

    def step(self, group, units) -> float:
        self.groups.append(group)
        return float(units)


def _steps(stepper, state, lengths, n):
    plan_args = dict(batch_size=3, max_tokens=None, group_by_length=True, seed=4)
    gen = train_steps(stepper, state, lengths, plan_args, accumulation=2)
    return [next(gen) for _ in range(n)]


def test_step_generator_continues_from_a_saved_state_exactly():
    lengths = [3 + i % 7 for i in range(20)]  # 7 batches of 3 (the last of 2), 4 steps per epoch
    straight = _RecordingStepper(lengths)
    results = _steps(straight, TrainState(), lengths, 10)
    assert [r.step for r in results] == list(range(1, 11))
    assert [r.end_of_epoch for r in results].count(True) == 2 and results[3].end_of_epoch
    assert results[3].epoch_progress == 1.0 and results[4].epoch_progress == 1.25
    assert sum(len(b) for g in straight.groups[:4] for b in g) == 20  # every example once per epoch

    first = _RecordingStepper(lengths)
    state = TrainState()
    _steps(first, state, lengths, 5)  # into the second epoch
    saved = TrainState.from_json(json.loads(json.dumps(state.to_json())))
    assert saved == state and (saved.step, saved.epoch, saved.group) == (5, 1, 1)
    rest = _RecordingStepper(lengths)
    _steps(rest, saved, lengths, 5)
    assert first.groups + rest.groups == straight.groups


def test_train_state_reads_the_plain_dict_of_earlier_checkpoints():
    old = {"step": 14, "epoch": 1, "group": 3, "best": 0.75, "best_step": 7, "bad_evals": 1,
           "last_eval_step": 14, "train_seconds": 2.5, "real_tokens": 900}
    assert TrainState.from_json(old).to_json() == {**old, "dev_seconds": 0.0, "dev_passes": 0}
