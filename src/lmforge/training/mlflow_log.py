"""Optional MLflow tracking (`tracking.mlflow: true`; `pip install 'lmforge[mlflow]'`): the run's
parameters (the flattened config), every logged metric with its step, and at the end the headline
metrics and the run's artefacts (config, labels, run.json, metrics, evaluation reports, the metrics
log; not the weights). The store: `tracking.uri`, else $MLFLOW_TRACKING_URI, else a local file store
`<output_dir>/mlruns` (`mlflow ui --backend-store-uri <that folder>` shows it). The MLflow run id is kept
in run.json, so a resumed training continues the same MLflow run."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..files import read_json

RUN_ID_KEY = "mlflow_run_id"
URI_KEY = "mlflow_tracking_uri"
ARTEFACTS = ("config.yaml", "labels.json", "run.json", "metrics.json", "README.md", "eval", "logs/metrics.jsonl")
MAX_PARAM_CHARS = 6000


def tracking_uri(cfg) -> str:
    return cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or (Path(cfg.output_dir) / "mlruns").resolve().as_uri()


@contextmanager
def _file_store_allowed(uri: str):
    """MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE is set; set it while the store is made."""
    if not uri.startswith("file:") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError("tracking.mlflow needs MLflow: pip install 'lmforge[mlflow]' (or set tracking.mlflow: false)") from None
    with _file_store_allowed(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # the store is made (and cached) here
    return client


def _flat(data, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:MAX_PARAM_CHARS]
    return out


class MlflowLog:
    """One MLflow run for one lmforge run (started, or continued on resume)."""

    def __init__(self, cfg, run_dir: Path):
        from mlflow.entities import Param

        self.uri = tracking_uri(cfg)
        self.client = _client(self.uri)
        info = read_json(Path(run_dir) / "run.json") if (Path(run_dir) / "run.json").is_file() else {}
        self.run_id = info.get(RUN_ID_KEY) if info.get(URI_KEY) == self.uri else None
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(cfg.tracking.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.tracking.experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=cfg.name, tags={"lmforge.run_dir": str(Path(run_dir).resolve())}).info.run_id
            params = [Param(k, v) for k, v in _flat(cfg.model_dump(mode="json")).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            from ..runs import mark_run

            mark_run(run_dir, **{RUN_ID_KEY: self.run_id, URI_KEY: self.uri})

    def log(self, step: int, values: dict, prefix: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{k}", float(v), now, int(step)) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)


def finish_mlflow(run_dir: Path, status: str = "FINISHED") -> None:
    """Log a finished run's headline metrics and artefacts and close its MLflow run (no-op without one)."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    run_id, uri = info.get(RUN_ID_KEY), info.get(URI_KEY)
    if not run_id or not uri:
        return
    client = _client(uri)
    if status == "FINISHED":
        from mlflow.entities import Metric

        metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
        now = int(time.time() * 1000)
        final = [Metric(f"final/{split}/{k}", float(v), now, 0) for split, values in metrics.items() if isinstance(values, dict)
                 for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if final:
            client.log_batch(run_id, metrics=final)
        for name in ARTEFACTS:
            path = run_dir / name
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=name)
            elif path.is_file():
                client.log_artifact(run_id, str(path), artifact_path=str(Path(name).parent) if "/" in name else None)
    client.set_terminated(run_id, status)
