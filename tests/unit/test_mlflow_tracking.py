"""Optional MLflow tracking: parameters, step metrics, final metrics and artefacts of a run, the store
chosen by tracking.uri / $MLFLOW_TRACKING_URI / a local file store, and one MLflow run across a resume."""

from __future__ import annotations

import json

import pytest

from conftest import make_config
from lmforge.config import load_config


def _client(uri):
    from lmforge.training.mlflow_log import _client as client

    return client(uri)


def test_a_run_is_logged_to_mlflow(tmp_path, tiny_model, cls_data, monkeypatch):
    from lmforge.training.loop import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(make_config(tmp_path, tiny_model, cls_data, epochs=2))
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"mlflow": True, "experiment": "tests"})})
    run = train(cfg, tmp_path)
    info = json.loads((run / "run.json").read_text())
    uri = info["mlflow_tracking_uri"]
    assert uri == (tmp_path / "runs" / "mlruns").resolve().as_uri()  # the default: a local store beside the runs
    client = _client(uri)
    mlrun = client.get_run(info["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == cfg.name
    assert mlrun.data.params["training.epochs"] == "2.0" and mlrun.data.params["task"] == "text-classification"
    losses = client.get_metric_history(mlrun.info.run_id, "train/loss")
    logged = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [m.step for m in losses] == [row["step"] for row in logged if row["split"] == "train" and "loss" in row]
    metrics = json.loads((run / "metrics.json").read_text())
    assert mlrun.data.metrics["final/dev/accuracy"] == pytest.approx(metrics["dev"]["accuracy"])
    artefacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"config.yaml", "metrics.json", "run.json", "eval"} <= artefacts
    assert "model" not in artefacts  # weights stay in the run folder
    import os

    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # the process environment is left as it was


def test_tracking_uri_from_the_environment_and_the_config(tmp_path, monkeypatch):
    from lmforge.training.mlflow_log import tracking_uri

    cfg = load_config(make_config(tmp_path, tmp_path, {"train": tmp_path / "t.csv", "dev": tmp_path / "d.csv"}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(cfg) == "http://127.0.0.1:5000"
    given = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": "file:///elsewhere"})})
    assert tracking_uri(given) == "file:///elsewhere"


def test_missing_mlflow_is_a_clear_error(monkeypatch):
    import builtins

    from lmforge.errors import UserError
    from lmforge.training import mlflow_log

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(UserError, match=r"pip install 'lmforge\[mlflow\]'"):
        mlflow_log._client("file:///tmp/nowhere")


def test_unknown_tracking_keys_are_refused(tmp_path):
    from lmforge.config import config_from_dict

    with pytest.raises(Exception, match="tracking"):
        config_from_dict({"task": "text-classification", "data": {"train": "x.csv"}, "tracking": {"mlfow": True}}, "c.yaml")
