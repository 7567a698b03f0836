"""Beyond English: me5-small beside minilm-l6 on Chinese sentiment and NER (official splits), and
on English SST-2, with lmforge's defaults through the CLI a user runs (init -> train).

    python bench/multilingual.py [--only me5-small/chnsenticorp ...] [--epochs chnsenticorp=1 ...]

Each job is `lmforge init --model M --train ... --dev ... --test ...` then `lmforge train CFG`;
the test (or, for SST-2, dev) figure comes from the run's metrics.json. Results are written after
every job to bench/results/multilingual.json, so a long run that is stopped keeps what finished.

The epochs per dataset (ChnSentiCorp 3, Resume 8, Weibo 20) and the NER batch of 8 sentences (Weibo:
head learning rate 1e-3, body 5e-5, the mean of the last 10 epochs' weights kept: training.average_last)
are the settings of the README figures; everything else is what init and
train choose (init sizes ChnSentiCorp's max_length to 256; me5-small's word embeddings stay frozen).

Goals (issue 13): ChnSentiCorp test accuracy >= 92, Resume NER test entity F1 >= 93, Weibo NER
(lenient tags) >= 60. Published references (BERT-base-chinese, a bigger model): 94-95, ~95, ~68.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, shared_data

LMFORGE = str(Path(sys.executable).with_name("lmforge"))
DATASETS = {  # name: (task, train, dev, test, epochs, extra overrides)
    "chnsenticorp": ("text-classification", "chnsenticorp/train.tsv", "chnsenticorp/dev.tsv", "chnsenticorp/test.tsv", 3, []),
    "resume_ner": ("token-classification", "resume_ner/train.char.bmes", "resume_ner/dev.char.bmes", "resume_ner/test.char.bmes", 8,
                   ["training.batch_size=8"]),
    "weibo_ner": ("token-classification", "weibo_ner/weiboNER_2nd_conll.train", "weibo_ner/weiboNER_2nd_conll.dev",
                  "weibo_ner/weiboNER_2nd_conll.test", 20, ["training.batch_size=8", "training.head_learning_rate=1e-3",
                                                            "training.learning_rate=5e-5", "training.average_last=10"]),
    "sst2_20k": ("text-classification", None, "sst2/glue/dev.tsv", None, 1, []),  # train: a seeded 20,000-row sample
}
ORDER = ["me5-small/chnsenticorp", "me5-small/resume_ner", "me5-small/weibo_ner", "minilm-l6/resume_ner",
         "minilm-l6/weibo_ner", "me5-small/sst2_20k", "minilm-l6/sst2_20k", "minilm-l6/chnsenticorp"]
REFERENCES = {"chnsenticorp": "BERT-base-chinese ~94-95 accuracy", "resume_ner": "BERT-base-chinese ~95 F1 (Lattice LSTM 94.46)",
              "weibo_ner": "BERT-base-chinese ~68 F1", "sst2_20k": "MiniLM-L6 91.5 (full train set, published)"}
GOALS = {"chnsenticorp": 0.92, "resume_ner": 0.93, "weibo_ner": 0.60}


def sst2_sample(tmp: Path, rows: int = 20_000) -> Path:
    lines = (shared_data() / "sst2" / "glue" / "train.tsv").read_text(encoding="utf-8").splitlines()
    body = lines[1:]
    random.Random(0).shuffle(body)
    out = tmp / "sst2_train_20k.tsv"
    out.write_text("\n".join([lines[0], *body[:rows]]) + "\n", encoding="utf-8")
    return out


def run_job(model: str, dataset: str, epochs: float, tmp: Path, more: list[str] = ()) -> dict:
    task, train, dev, test, _, extra = DATASETS[dataset]
    data = shared_data()
    train_path = sst2_sample(tmp) if train is None else data / train
    cfg = tmp / f"{model}-{dataset}.yaml"
    init = [LMFORGE, "init", "--task", task, "--model", model, "--train", str(train_path), "--dev", str(data / dev), "-o", str(cfg)]
    if test:
        init += ["--test", str(data / test)]
    subprocess.run(init, check=True)
    name = f"{model}-{dataset}"
    overrides = [f"name={name}", f"output_dir={tmp / 'runs'}", f"training.epochs={epochs}", "training.tensorboard=false", *extra, *more]
    start = time.perf_counter()
    proc = run_child([LMFORGE, "train", str(cfg), *overrides])
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    run = tmp / "runs" / name
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    split = "test" if "test" in metrics else "dev"
    key = "f1" if task == "token-classification" else "accuracy"
    result = {split + "_" + key: round(metrics[split][key], 4), "dev_" + key: round(metrics["dev"][key], 4),
              "epochs": epochs, "steps": info.get("steps"), "train_seconds": info.get("train_seconds"),
              "seconds_per_epoch": round(info["train_seconds"] / epochs, 1) if info.get("train_seconds") else None,
              "wall_seconds": round(wall, 1), "tokens_per_second": metrics.get("training", {}).get("tokens_per_second"),
              "overrides": overrides[2:], "stderr_tail": [line for line in proc.stderr.splitlines() if "warn" in line.lower()][-5:]}
    if test:
        result["metrics"] = {k: v for k, v in metrics[split].items() if isinstance(v, (int, float))}
    if "transitions" in metrics:  # NER: the weight of the training tag bigrams chosen on dev, and dev F1 at each
        result["transitions"] = {k: metrics["transitions"][k] for k in ("value", "dev_f1_by_weight")}
    return result


def run_child(command: list[str]) -> subprocess.CompletedProcess:
    """Run `lmforge train`, capturing its output; if this bench is stopped (Ctrl-C or a plain kill),
    the training stops with it instead of running on alone."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        out, err = proc.communicate()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="jobs as MODEL/DATASET (default: all, in a fixed order)")
    parser.add_argument("--epochs", nargs="*", default=[], help="DATASET=EPOCHS overrides")
    parser.add_argument("--set", nargs="*", default=[], help="more KEY=VALUE overrides for every job (e.g. training.freeze_embeddings=true)")
    parser.add_argument("--name", default="multilingual")
    parser.add_argument("--keep-runs", type=Path, help="write the run folders here (kept) instead of a temporary folder")
    args = parser.parse_args()
    epochs = {name: spec[4] for name, spec in DATASETS.items()}
    epochs.update({k: float(v) for k, v in (e.split("=", 1) for e in args.epochs)})
    path = RESULTS / f"{args.name}.json"
    results = json.loads(path.read_text())["results"] if path.is_file() else {}
    with contextlib.nullcontext(str(args.keep_runs)) if args.keep_runs else tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name).resolve()
        tmp.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        for job in args.only or ORDER:
            model, dataset = job.split("/")
            print(f"== {job} ({epochs[dataset]} epoch(s))", flush=True)
            results[job] = run_job(model, dataset, epochs[dataset], tmp, args.set)
            print(job, json.dumps(results[job]), flush=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"machine": machine(), "references": REFERENCES, "goals": GOALS,
                                        "results": results}, indent=2) + "\n")
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
