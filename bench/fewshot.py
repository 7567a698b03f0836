"""Few-shot text classification: lmforge `method: fewshot` beside SetFit (PyPI), plain lmforge fine-tuning
on the same examples, and lmforge zero-shot from the label names; SST-2 and Banking77, N examples per class.

    bash bench/setfit_env.sh                  # once: SetFit in bench/.setfit-env (not in .venv)
    python bench/fewshot.py                   # sst2 + banking77, N = 8 and 64, seeds 0-4, every method
    python bench/fewshot.py --datasets sst2 --n 8 --seeds 1 --methods lmforge-fewshot setfit
    python bench/fewshot.py --set fewshot.loss=cosent training.learning_rate=3e-5 --name fewshot-cosent
    python bench/fewshot.py --only 'sst2/n8/*' --test-limit 200 --name fewshot-sanity   # quick sanity

What runs (one job at a time; every job is its own process):

- Data. SST-2: GLUE train.tsv, scored on GLUE dev.tsv (872 rows; the GLUE test labels are hidden);
  labels 0/1 are written as `negative`/`positive`. Banking77: the official train.csv / test.csv
  (3,080 rows, 77 intents). For a dataset, N and seed s, N training examples per class are drawn from
  train with random.Random(f"{dataset}/{N}/{s}") (classes in sorted order, then the sample shuffled)
  and written to one CSV (text,label) that EVERY method of that (dataset, N, s) trains on. A class
  with fewer than N training rows gives all it has (Banking77 at N=64: 4 of 77 intents have 35-61);
  each result stores `examples` and `short_labels`.
- lmforge-fewshot: `lmforge init --method fewshot --model minilm-l6 --train FEW --test TEST`, then
  `lmforge train CFG training.seed=s` plus the --set overrides. All N examples train: a sentence
  method holds nothing out for dev. Defaults: fewshot.pairs_per_example 20, fewshot.epochs 1,
  fewshot.batch_size 16, CosineSimilarityLoss, learning rate 2e-5, logistic head C=1.
- setfit: bench/setfit_child.py on lmforge's interpreter with SetFit from bench/.setfit-env
  (same torch/transformers/sentence-transformers builds), the same MiniLM-L6 folder lmforge resolves
  for minilm-l6 (resolve_model), the same few-shot file and seed. Its settings MIRROR lmforge's
  few-shot ones: num_iterations = fewshot.pairs_per_example, num_epochs = fewshot.epochs (an integer),
  batch_size = fewshot.batch_size, body learning rate = training.learning_rate (2e-5), max_length 128
  (data.max_length); taken from --set when given there, so `--set fewshot.pairs_per_example=2` makes
  both tiny. --setfit-iterations pins num_iterations instead. Everything else is SetFit's default
  (CosineSimilarityLoss, warmup 0.1, weight decay 0.01, LogisticRegression() head).
- lmforge-full: plain fine-tuning (method full, lmforge's defaults: learning rate 1e-4, batch 16,
  linear schedule, warmup 0.1) on the same few-shot file, with two choices that a few-shot setting
  forces, both documented here and stored with the results:
    * no dev hold-out: the default hold-out (10% of train) cannot be made at N=2 and would take one
      of 8 examples per class at N=8, and a dev file of OTHER labelled examples would hand plain
      fine-tuning labels the few-shot methods never see. So data.dev is the few-shot file itself and
      training.eval_every_steps is set past the last step: the one evaluation is at the end and the
      run keeps its FINAL weights (no checkpoint selection, no early stopping);
    * training.epochs = --full-epochs (default 20): lmforge's default 3 epochs of 16 examples
      (SST-2, N=8) are 3 optimizer steps, far too few; 20 passes fit the few examples. This is a
      fixed budget chosen before seeing test figures, not tuned.
- zeroshot: `lmforge init --method zeroshot --labels ...`, data.test and data.label_descriptions set
  in the YAML, then `lmforge train`. No examples and no training randomness, so it runs once per
  dataset (not per N or seed). Label texts: SST-2 "a negative review" / "a positive review";
  Banking77 the intent names with underscores as spaces ("card arrival").

Timing: `train_seconds` is lmforge's run.json train_seconds (model build + training + head fit,
without dev/test evaluation and saving) and, for SetFit, model load + trainer.train() (the same
span). Wall seconds of each whole job are stored too.

Results go to bench/results/<--name>.json (default fewshot.json) after every job, so a stopped run
keeps what finished; a rerun skips jobs already there with the same settings and no error (--rerun:
do them again). The table at the end: per dataset and N, mean ± std (sample std over seeds) test
accuracy in points and mean train seconds per method, then lmforge-fewshot minus SetFit in points
(mean of per-seed differences, same examples) and the time ratio lmforge-fewshot / SetFit.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, machine, shared_data

LMFORGE = str(Path(sys.executable).with_name("lmforge"))
SETFIT_SITE = ROOT / "bench" / ".setfit-env" / "site-packages"
SETFIT_CHILD = ROOT / "bench" / "setfit_child.py"
METHODS = ["lmforge-fewshot", "setfit", "lmforge-full", "zeroshot"]
DATASETS = ["sst2", "banking77"]
SST2_NAMES = {"0": "negative", "1": "positive"}
SST2_DESCRIPTIONS = {"negative": "a negative review", "positive": "a positive review"}
MODEL = "minilm-l6"
FEWSHOT_DEFAULTS = {"fewshot.pairs_per_example": 20, "fewshot.epochs": 1, "fewshot.batch_size": 16,
                    "training.learning_rate": 2e-5, "data.max_length": 128}


# -- data ------------------------------------------------------------------------------------------

def load(dataset: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, str]]:
    """(train rows, test rows, {label: zero-shot label text}); rows are (text, label)."""
    data = shared_data()
    if dataset == "sst2":
        def read(path: Path) -> list[tuple[str, str]]:
            with path.open(newline="", encoding="utf-8") as f:
                return [(r["sentence"].strip(), SST2_NAMES[r["label"]])
                        for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
        return read(data / "sst2/glue/train.tsv"), read(data / "sst2/glue/dev.tsv"), dict(SST2_DESCRIPTIONS)
    if dataset == "banking77":
        def read(path: Path) -> list[tuple[str, str]]:
            with path.open(newline="", encoding="utf-8") as f:
                return [(r["text"].strip(), r["category"]) for r in csv.DictReader(f)]
        names = json.loads((data / "banking77/categories.json").read_text())
        return read(data / "banking77/train.csv"), read(data / "banking77/test.csv"), {n: n.replace("_", " ") for n in names}
    raise SystemExit(f"unknown dataset {dataset!r}; choose from {DATASETS}")


def sample(rows: list[tuple[str, str]], n: int, key: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """n rows per label, seeded by key; the same key gives the same rows to every method.

    A label with fewer than n training rows gives all of them; those labels and their counts are
    returned beside the rows (and stored with every job's result), never silently.
    """
    rng = random.Random(key)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    groups = sorted(by_label.items())
    short = {label: len(group) for label, group in groups if len(group) < n}
    out = [row for _, group in groups for row in rng.sample(group, min(n, len(group)))]
    rng.shuffle(out)
    return out, short


def stratified_head(rows: list[tuple[str, str]], limit: int | None) -> list[tuple[str, str]]:
    """--test-limit: a seeded, label-stratified subset of the test rows (quick sanity runs only)."""
    if not limit or limit >= len(rows):
        return rows
    shuffled = rows[:]
    random.Random("test-limit").shuffle(shuffled)
    labels = sorted({label for _, label in rows})
    per = max(1, limit // len(labels))
    out = [row for label in labels for row in [r for r in shuffled if r[1] == label][:per]]
    return out


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


# -- the methods -------------------------------------------------------------------------------------

def _env() -> dict:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _lmforge(init: list[str], overrides: list[str], tmp: Path, name: str, edit=None) -> dict:
    cfg = tmp / f"{name}.yaml"
    proc = subprocess.run([LMFORGE, "init", *init, "-o", str(cfg)], capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        return {"error": "init: " + (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    if edit is not None:
        import yaml

        doc = yaml.safe_load(cfg.read_text())
        edit(doc)
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    runs = tmp / "runs"
    args = [f"name={name}", f"output_dir={runs}", "training.tensorboard=false", *overrides]
    start = time.perf_counter()
    proc = subprocess.run([LMFORGE, "train", str(cfg), *args], capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode, "overrides": args[3:]}
    run = runs / name
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    shutil.rmtree(run, ignore_errors=True)  # a saved model per job adds up (tens of jobs)
    return {"test_accuracy": round(metrics["test"]["accuracy"], 4), "train_seconds": round(info["train_seconds"], 2),
            "wall_seconds": round(wall, 1), "steps": info.get("steps"), "train_examples": info.get("data", {}).get("train_examples"),
            "test_examples": info.get("data", {}).get("test_examples"), "overrides": args[3:],
            "warnings": [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if "warning" in line.lower()][-5:]}


def run_fewshot(few: Path, test: Path, seed: int, sets: list[str], tmp: Path, name: str) -> dict:
    init = ["--task", "text-classification", "--method", "fewshot", "--model", MODEL, "--train", str(few), "--test", str(test)]
    return _lmforge(init, [f"training.seed={seed}", *sets], tmp, name)


def run_full(few: Path, test: Path, seed: int, epochs: float, tmp: Path, name: str) -> dict:
    init = ["--task", "text-classification", "--model", MODEL, "--train", str(few), "--dev", str(few), "--test", str(test)]
    overrides = [f"training.seed={seed}", f"training.epochs={epochs}", f"training.eval_every_steps={10**9}"]
    return _lmforge(init, overrides, tmp, name)


def run_zeroshot(test: Path, descriptions: dict[str, str], tmp: Path, name: str) -> dict:
    labels = sorted(descriptions)
    if any("," in label for label in labels):
        raise SystemExit("a label name holds a comma: --labels cannot list it")

    def edit(doc: dict) -> None:
        doc.setdefault("data", {})
        doc["data"]["test"] = str(test)
        doc["data"]["label_descriptions"] = {label: descriptions[label] for label in labels}

    init = ["--task", "text-classification", "--method", "zeroshot", "--model", MODEL, "--labels", ",".join(labels)]
    result = _lmforge(init, [], tmp, name, edit)
    result["label_texts"] = {label: descriptions[label] for label in labels[:5]}
    return result


def setfit_settings(sets: list[str], iterations: int | None) -> dict:
    """SetFit's knobs mirrored from lmforge's few-shot ones (defaults, then --set)."""
    values = {key: float(value) for key, value in FEWSHOT_DEFAULTS.items()}
    for item in sets:
        key, _, value = item.partition("=")
        if key in values:
            values[key] = float(value)
    epochs = values["fewshot.epochs"]
    if epochs != int(epochs):
        raise SystemExit("SetFit's num_epochs is an integer: give fewshot.epochs a whole number, or run without setfit")
    return {"num_iterations": iterations or int(values["fewshot.pairs_per_example"]), "num_epochs": int(epochs),
            "batch_size": int(values["fewshot.batch_size"]), "body_learning_rate": float(values["training.learning_rate"]),
            "max_length": int(values["data.max_length"])}


def run_setfit(few: Path, test: Path, seed: int, settings: dict, model_dir: Path) -> dict:
    if not (SETFIT_SITE / "setfit").is_dir():
        return {"error": f"SetFit is not installed in {SETFIT_SITE.relative_to(ROOT)}: run `bash bench/setfit_env.sh` first"}
    cmd = [sys.executable, str(SETFIT_CHILD), "--model", str(model_dir), "--train", str(few), "--test", str(test),
           "--seed", str(seed), "--num-iterations", str(settings["num_iterations"]), "--epochs", str(settings["num_epochs"]),
           "--batch-size", str(settings["batch_size"]), "--learning-rate", str(settings["body_learning_rate"]),
           "--max-length", str(settings["max_length"])]
    env = {**_env(), "PYTHONPATH": str(SETFIT_SITE), "HF_DATASETS_OFFLINE": "1", "WANDB_DISABLED": "true"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    return {**json.loads(lines[-1]), "wall_seconds": round(wall, 1), "settings": settings}


# -- the table ---------------------------------------------------------------------------------------

def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: dict, datasets: list[str], ns: list[int], methods: list[str]) -> tuple[dict, str]:
    summary, lines = {}, []
    header = f"{'dataset':<10} {'N':>3}  {'method':<16} {'seeds':>5}  {'accuracy':>13}  {'train s':>8}"
    lines += [header, "-" * len(header)]
    for dataset in datasets:
        zero = results.get(f"{dataset}/zeroshot")
        if "zeroshot" in methods and zero and "error" not in zero:
            lines.append(f"{dataset:<10} {'0':>3}  {'zeroshot':<16} {'-':>5}  {100 * zero['test_accuracy']:>13.1f}  {zero['train_seconds']:>8.1f}")
            summary[f"{dataset}/zeroshot"] = {"accuracy": zero["test_accuracy"], "train_seconds": zero["train_seconds"]}
        for n in ns:
            per_method = {}
            for method in (m for m in methods if m != "zeroshot"):
                runs = {key.rsplit("/seed", 1)[1]: r for key, r in results.items()
                        if key.startswith(f"{dataset}/n{n}/{method}/seed") and "error" not in r}
                if not runs:
                    continue
                per_method[method] = runs
                acc_mean, acc_std = _mean_std([100 * r["test_accuracy"] for r in runs.values()])
                secs = statistics.fmean(r["train_seconds"] for r in runs.values())
                summary[f"{dataset}/n{n}/{method}"] = {"seeds": len(runs), "accuracy_mean": round(acc_mean, 2),
                                                       "accuracy_std": round(acc_std, 2), "train_seconds_mean": round(secs, 1)}
                lines.append(f"{dataset:<10} {n:>3}  {method:<16} {len(runs):>5}  {acc_mean:>6.1f} ± {acc_std:>4.1f}  {secs:>8.1f}")
            ours, theirs = per_method.get("lmforge-fewshot"), per_method.get("setfit")
            shared = sorted(set(ours or ()) & set(theirs or ()))
            if shared:
                diffs = [100 * (ours[s]["test_accuracy"] - theirs[s]["test_accuracy"]) for s in shared]
                d_mean, d_std = _mean_std(diffs)
                ratio = statistics.fmean(ours[s]["train_seconds"] for s in shared) / statistics.fmean(theirs[s]["train_seconds"] for s in shared)
                summary[f"{dataset}/n{n}/lmforge-fewshot_vs_setfit"] = {"seeds": len(shared), "points_mean": round(d_mean, 2),
                                                                       "points_std": round(d_std, 2), "time_ratio": round(ratio, 2)}
                lines.append(f"{dataset:<10} {n:>3}  {'fewshot - setfit':<16} {len(shared):>5}  {d_mean:>+6.1f} ± {d_std:>4.1f}  "
                             f"{ratio:>7.2f}x  (time: lmforge-fewshot / setfit)")
    return summary, "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------

def versions() -> dict:
    out = {}
    for package in ("torch", "transformers", "sentence-transformers", "scikit-learn", "lmforge"):
        try:
            from importlib.metadata import version

            out[package] = version(package)
        except Exception:  # noqa: BLE001 - informative only
            pass
    dist = next(SETFIT_SITE.glob("setfit-*.dist-info"), None) if SETFIT_SITE.is_dir() else None
    out["setfit"] = dist.name.removesuffix(".dist-info").split("-", 1)[1] if dist else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--n", nargs="+", type=int, default=[8, 64], help="examples per class")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1 (sample and training seed)")
    parser.add_argument("--seed-list", nargs="+", type=int, default=None, help="these seeds instead of 0..S-1")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only jobs whose key matches one of these patterns, e.g. 'sst2/n8/*' 'sst2/n8/setfit/seed0' 'banking77/zeroshot'")
    parser.add_argument("--test-limit", type=int, default=None, help="quick sanity: score on a stratified subset of this many test rows")
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides for lmforge-fewshot (mirrored into SetFit where it has the knob)")
    parser.add_argument("--setfit-iterations", type=int, default=None, help="SetFit num_iterations (default: fewshot.pairs_per_example)")
    parser.add_argument("--full-epochs", type=float, default=20, help="lmforge-full: training.epochs on the few examples")
    parser.add_argument("--name", default="fewshot", help="results file bench/results/NAME.json")
    parser.add_argument("--rerun", action="store_true", help="run jobs again even when the results file has them")
    args = parser.parse_args()

    from lmforge.models.resolve import resolve_model

    model_dir = Path(resolve_model(MODEL, ROOT))
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    sf = setfit_settings(args.set, args.setfit_iterations)
    settings = {"lmforge-fewshot": {"set": args.set}, "setfit": sf,
                "lmforge-full": {"epochs": args.full_epochs, "dev": "the few-shot file itself", "weights": "final"},
                "zeroshot": {}, "test_limit": args.test_limit}
    path = RESULTS / f"{args.name}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    results = stored.get("results", {})
    job_settings = stored.get("job_settings", {})

    def save() -> None:  # the summary covers every job in the file, not only this invocation's
        ns = sorted({int(key.split("/")[1][1:]) for key in results if key.split("/")[1].startswith("n")})
        summary, _ = summarise(results, DATASETS, ns, METHODS)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": machine(), "versions": versions(), "model_dir": str(model_dir),
                                    "protocol": __doc__.split("What runs", 1)[1].strip(), "summary": summary,
                                    "job_settings": job_settings, "results": results}, indent=2) + "\n")

    def wanted(key: str) -> bool:
        return not args.only or any(fnmatch.fnmatchcase(key, pattern) for pattern in args.only)

    def done(key: str, method: str) -> bool:
        old = results.get(key)
        return (not args.rerun and old is not None and "error" not in old
                and job_settings.get(key) == {"method": settings[method], "test_limit": args.test_limit})

    def record(key: str, method: str, result: dict) -> None:
        results[key] = result
        job_settings[key] = {"method": settings[method], "test_limit": args.test_limit}
        shown = {k: result[k] for k in ("test_accuracy", "train_seconds", "wall_seconds", "steps", "error") if k in result}
        print(f"   {key}: {json.dumps(shown)[:600]}", flush=True)
        save()

    with tempfile.TemporaryDirectory(prefix="lmforge-fewshot-") as tmp_name:
        tmp = Path(tmp_name)
        for dataset in args.datasets:
            train_rows, test_rows, descriptions = load(dataset)
            test = write_csv(tmp / f"{dataset}-test.csv", stratified_head(test_rows, args.test_limit))
            key = f"{dataset}/zeroshot"
            if "zeroshot" in args.methods and wanted(key) and not done(key, "zeroshot"):
                print(f"== {key}", flush=True)
                record(key, "zeroshot", run_zeroshot(test, descriptions, tmp, f"{dataset}-zeroshot"))
            for n in args.n:
                for seed in seeds:
                    jobs = [m for m in args.methods if m != "zeroshot" and wanted(f"{dataset}/n{n}/{m}/seed{seed}")
                            and not done(f"{dataset}/n{n}/{m}/seed{seed}", m)]
                    if not jobs:
                        continue
                    rows, short = sample(train_rows, n, f"{dataset}/{n}/{seed}")
                    if short:
                        print(f"   {dataset}, N = {n}: fewer than {n} training examples for {len(short)} labels, "
                              f"all of theirs are used: {short}", flush=True)
                    few = write_csv(tmp / f"{dataset}-n{n}-seed{seed}.csv", rows)
                    for method in jobs:
                        key = f"{dataset}/n{n}/{method}/seed{seed}"
                        print(f"== {key}", flush=True)
                        name = f"{dataset}-n{n}-{method}-seed{seed}"
                        if method == "lmforge-fewshot":
                            result = run_fewshot(few, test, seed, args.set, tmp, name)
                        elif method == "setfit":
                            result = run_setfit(few, test, seed, sf, model_dir)
                        else:
                            result = run_full(few, test, seed, args.full_epochs, tmp, name)
                        result.update(examples=len(rows), short_labels=short)
                        record(key, method, result)
    save()
    _, table = summarise(results, args.datasets, args.n, args.methods)
    print()
    print(table)
    print(f"\nresults written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
