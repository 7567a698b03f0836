"""How fast the studio's pages render with 200 runs and 100,000 logged predictions (issue 15: < 300 ms).

    python bench/studio_pages.py [--run runs/intents] [--runs 200] [--predictions 100000] [--repeats 5]

Setup (in a temporary folder): the run (default: the demo's runs/intents; `bash scripts/demo.sh`
makes it) copied 200 times without its weights (config, labels, run.json, metrics, evaluation reports,
and a 600-line metrics log each, with varied metrics and statuses); the run registered as model
`bench` (with its monitoring reference) and 100,000 predictions spread over 7 days written to the
registry's prediction log; a 500-record suggestion file as a labelling queue.
Measured: each page through the app in process (FastAPI's TestClient: routing, the library reads, the
templates, no network), the median of --repeats after one warm-up, and the slowest. The Monitor page
keeps a report until the prediction log changes and then shows it while the new one is computed, so
it is also measured with a new prediction logged before every view, as the first view of a window
(no report yet; the log already read into memory by an earlier view), and on a cold start (nothing
read: the page answers at once that it is reading the log and reloads itself; the time until the
report is shown is printed beside it).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402

GOAL_MS = 300


def copy_runs(src: Path, root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    base_metrics = json.loads((src / "metrics.json").read_text())
    info = json.loads((src / "run.json").read_text())
    out = []
    for i in range(n):
        dest = root / f"run-{i:03d}"
        dest.mkdir(parents=True)
        for name in ("config.yaml", "labels.json"):
            shutil.copy2(src / name, dest / name)
        if (src / "eval").is_dir():
            shutil.copytree(src / "eval", dest / "eval")
        metrics = json.loads(json.dumps(base_metrics))
        for split in ("dev", "test"):
            for key, value in (metrics.get(split) or {}).items():
                if isinstance(value, float):
                    metrics[split][key] = min(1.0, max(0.0, value + rng.uniform(-0.1, 0.05)))
        (dest / "metrics.json").write_text(json.dumps(metrics))
        status = rng.choices(["complete", "failed", "interrupted"], [0.9, 0.05, 0.05])[0]
        (dest / "run.json").write_text(json.dumps({**info, "status": status, "started": time.time() - rng.uniform(0, 8e5),
                                                   "error": "out of memory" if status == "failed" else None}))
        (dest / "logs").mkdir()
        rows = []
        loss = 2.5
        for step in range(1, 601):
            loss *= rng.uniform(0.985, 1.01)
            rows.append({"step": step, "split": "train", "loss": loss, "lr": 1e-4 * (1 - step / 600), "epoch": step / 200,
                         "tokens_per_s": rng.uniform(400, 700)})
            if step % 100 == 0:
                rows.append({"step": step, "split": "dev", "accuracy": rng.uniform(0.6, 0.9), "macro_f1": rng.uniform(0.5, 0.9)})
        (dest / "logs" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        out.append(dest)
    return out


def log_predictions(registry, name: str, labels: list[str], n: int, seed: int = 0) -> None:
    from lmforge.lifecycle import db
    from lmforge.lifecycle.predlog import COLUMNS, _connect

    rng = random.Random(seed)
    now = time.time()
    conn = _connect(registry.db_path)
    try:
        rows = []
        for _ in range(n):
            label = rng.choice(labels)
            rows.append({"id": uuid.uuid4().hex, "model": name, "version": 1, "version_tag": f"{name}-v1",
                         "time": now - rng.uniform(0, 7 * 86400), "label": label, "confidence": rng.uniform(0.3, 1.0),
                         "latency_ms": rng.uniform(5, 50), "length": rng.randint(3, 30), "oov": rng.uniform(0, 0.05),
                         "text_hash": None, "text": None})
        with db.transaction(conn):
            conn.executemany(f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
                             [tuple(r[c] for c in COLUMNS) for r in rows])
    finally:
        conn.close()


def timed(client, url: str, repeats: int) -> dict:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    while 'id="pending"' in response.text:  # a Monitor window's first report is still being computed
        time.sleep(0.05)
        response = client.get(url)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "bytes": len(response.content)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/intents"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not (args.run / "model" / "config.json").is_file():
        sys.exit(f"{args.run}: not a finished run; `bash scripts/demo.sh` makes runs/intents, or give --run")
    from fastapi.testclient import TestClient

    from lmforge.lifecycle import Registry
    from lmforge.lifecycle.register import register_run
    from lmforge.studio.app import StudioSettings, create_app
    from lmforge.studio.catalog import run_id

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        runs = copy_runs(args.run, tmp / "runs", args.runs)
        shutil.copytree(args.run, tmp / "runs" / "playground-run", ignore=shutil.ignore_patterns("checkpoints", "onnx"))
        registry = Registry(tmp / "registry")
        register_run(registry, "bench", args.run)
        registry.promote("bench", 1)
        labels = json.loads((args.run / "labels.json").read_text())["labels"]
        log_predictions(registry, "bench", labels, args.predictions)
        texts = [f"example text number {i} about {random.Random(i).choice(labels)}" for i in range(500)]
        queue = tmp / "to_label.jsonl"
        queue.write_text("".join(json.dumps({"text": t, "label": labels[i % len(labels)], "suggest": {"rank": i + 1}}) + "\n"
                                 for i, t in enumerate(texts)))
        setup_s = time.perf_counter() - start
        app = create_app(StudioSettings(runs=[tmp / "runs"], registry=tmp / "registry", label_files=[queue]))
        pages = {
            "runs": "/runs",
            "run": f"/runs/{run_id(runs[0])}",
            "compare (5 runs)": "/compare?" + "&".join(f"id={run_id(r)}" for r in runs[:5]),
            "registry": "/registry",
            f"monitor ({args.predictions:,} predictions, all)": "/monitor?model=bench&since=all",
            "monitor (24h)": "/monitor?model=bench&since=24h",
            "playground": "/playground",
            "label item": None,
        }
        results = {}
        with TestClient(app) as client:
            qid = next(iter(app.state.studio.queues))
            pages["label item"] = f"/label/{qid}/1"
            for name, url in pages.items():
                results[name] = timed(client, url, args.repeats)
                print(f"{name:40s} median {results[name]['median_ms']:7.1f} ms   max {results[name]['max_ms']:7.1f} ms", flush=True)
            # the monitor keeps a report until the log changes, then shows it while the new one is computed
            monitor = "/monitor?model=bench&since=all"
            cache = app.state.studio.report_cache

            def settle():
                while cache.jobs:
                    time.sleep(0.05)

            def measure(name, before):
                times = []
                for i in range(args.repeats):
                    settle()
                    before(i)
                    start_ = time.perf_counter()
                    assert client.get(monitor).status_code == 200
                    times.append((time.perf_counter() - start_) * 1000)
                settle()
                results[name] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
                print(f"{name:40s} median {results[name]['median_ms']:7.1f} ms   max {results[name]['max_ms']:7.1f} ms", flush=True)

            measure("monitor, traffic arriving (1 new prediction before each view)",
                    lambda i: log_predictions(registry, "bench", labels, 1, seed=1000 + i))
            measure(f"monitor, first view of a window (the {args.predictions:,} predictions in memory)",
                    lambda i: (cache.reports.clear(), cache.latest.clear()))
            # a studio just started: nothing read yet; the page answers at once ("reading the log", reloading
            # itself) and the report follows when the log has been read
            cold, ready = [], []
            for i in range(args.repeats):
                settle()
                cache.reports.clear(), cache.latest.clear(), cache.stores.clear()
                start_ = time.perf_counter()
                page = client.get(monitor)
                cold.append((time.perf_counter() - start_) * 1000)
                assert page.status_code == 200 and ('id="pending"' in page.text or 'id="overall"' in page.text)
                while 'id="overall"' not in page.text:
                    time.sleep(0.02)
                    page = client.get(monitor)
                ready.append((time.perf_counter() - start_) * 1000)
            settle()
            for name, times in ((f"monitor, cold start: first view ({args.predictions:,} predictions not read yet)", cold),):
                results[name] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
                print(f"{name:40s} median {results[name]['median_ms']:7.1f} ms   max {results[name]['max_ms']:7.1f} ms", flush=True)
            report_ready = {"median_ms": round(statistics.median(ready), 1), "max_ms": round(max(ready), 1)}
            print(f"  (cold start: the report itself shown after median {report_ready['median_ms']:.0f} ms, max "
                  f"{report_ready['max_ms']:.0f} ms: the log read into memory once)", flush=True)
    slow = [name for name, r in results.items() if r["median_ms"] >= GOAL_MS]
    print(f"goal < {GOAL_MS} ms: " + ("met by every page" if not slow else "not met by " + ", ".join(slow)))
    save("studio_pages", {"runs": args.runs, "predictions": args.predictions, "repeats": args.repeats, "setup_s": round(setup_s, 1),
                          "goal_ms": GOAL_MS, "pages": results, "slow": slow, "monitor_cold_start_report_shown": report_ready})


if __name__ == "__main__":
    main()
