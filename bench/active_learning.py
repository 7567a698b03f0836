"""Active-learning learning curves with a simulated annotator (the gold labels), through the same
library functions `lmforge suggest` and `lmforge train` call.

    python bench/active_learning.py [--datasets sst2 banking77 conll] [--strategies random margin margin+diversity margin+random]
                                    [--seeds 3] [--rounds 8] [--name active_learning]
                                    [--random-extra SHARE ...] [--extra SHARE ...] [--min-steps N] [--jobs N --threads T]

Per dataset, strategy and seed: the first batch is the cold start (`suggest` without a run: cluster
medoids of MiniLM-L6 embeddings; `random`: a seeded random sample), then each round trains a fresh
model on everything labelled so far (minilm-l6, full fine-tuning, lmforge defaults except the epochs
below), scores it on the test set, and asks `suggest(run, pool, step, strategy=...)` for the next
batch, whose gold labels are looked up (the simulated annotator); `margin+random` takes half of each
batch from margin (no diversity step) and half at random, as the random curves draw. Already-labelled texts are passed
as `exclude`, as a user would pass their labelled file. A full-data run per dataset gives the target:
the table reports the labels (NER: labelled tokens) needed to reach 95% and 98% (NER: 99%) of the
full-data score, read off each curve by linear interpolation. `--full-data-seeds N` trains the full-data
run with N seeds, to show how much the target itself moves (the target stays seed 0's score).
`--round-training KEY=VALUE ...` changes how every round trains. Since 2026-12-06 a round scored on
fewer than 1,000 dev examples keeps the mean of its last 3 epochs' weights (lmforge's default for a
small dev set: the 10% hold-out of a few thousand labels picks the best of 5 epochs by noise, README);
the rows measured before then kept the best epoch: `--round-training average_last=0` trains them so.

Pools are subsampled to fit the machine (SST-2: 4,000 training sentences; Banking77: the 10,003
training texts; CoNLL-2003: 4,000 training sentences) and the test sets are official (SST-2: GLUE
dev). Results go to bench/results/<name>.json after every round and the curves to <name>.png.
`--random-extra` continues the random curves to larger label counts (to measure how many labels random
needs where active learning needs fewer); given again to a results file that holds random curves, it
continues them without training their measured rounds again. `--extra` continues every curve, the active
strategies too (`suggest` picks the difference to each share; a larger last batch); with `--jobs`, an
active curve's picks are recorded round by round (<name>.parts/*.picks), so given again it trains only its
last measured round (the model to suggest from; the same weights at a fixed thread count) and the new ones,
and a stopped run goes on from its last complete round. `--warm-start` trains each round after the first from the previous round's model (incremental
training) instead of a fresh one. `--jobs N` runs N curves at once in separate processes (a
machine with many cores or a GPU: training and suggest then run on the GPU); results are saved as each
curve completes. `LMFORGE_BENCH_DATA` points at a copy of the shared data on another machine.
Issue 14's goals: classification reaches 98% of the full-data accuracy with <= 20% of the labels and
>= 2x fewer labels than random; NER reaches 99% of the full-data F1 with <= 30% of the tokens.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, shared_data  # noqa: E402

DATASETS = {  # name: (task, pool size, first batch, batch per round, epochs)
    "sst2": ("text-classification", 4000, 50, 50, 5),
    "banking77": ("text-classification", 10003, 154, 154, 5),
    "conll": ("token-classification", 4000, 100, 100, 5),
}


def _key(text: str) -> str:
    return "".join(text.split())


def _record_key(record: dict) -> str:
    """The gold key of a record: its text, or its NER tokens joined."""
    return _key(record["text"] if "text" in record else "".join(record["tokens"]))


def load(dataset: str, pool_size: int, tmp: Path):
    """(pool file, test file, gold: key -> record) for a dataset; the pool file is what suggest reads."""
    data = shared_data()
    rng = random.Random(0)
    if dataset == "conll":
        from lmforge.data.ner_readers import read_ner

        sentences, _ = read_ner(data / "conll2003" / "train.iob2.txt")
        sentences = [s for s in sentences if s.words and s.words[0] != "-DOCSTART-"]
        rng.shuffle(sentences)
        gold = {}
        rows = []
        for s in sentences:
            key = _key("".join(s.words))
            if key not in gold and len(rows) < pool_size:
                gold[key] = {"tokens": s.words, "tags": s.tags}
                rows.append(gold[key])
        pool = tmp / f"{dataset}-pool.jsonl"
        pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return pool, data / "conll2003" / "test.iob2.txt", gold
    if dataset == "sst2":
        path, text_col, label_col, test = data / "sst2" / "glue" / "train.tsv", "sentence", "label", data / "sst2" / "glue" / "dev.tsv"
        delimiter = "\t"
    else:
        path, text_col, label_col, test = data / "banking77" / "train.csv", "text", "category", data / "banking77" / "test.csv"
        delimiter = ","
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL))
    rng.shuffle(rows)
    gold = {}
    for row in rows:
        key = _key(row[text_col])
        if key not in gold and len(gold) < pool_size:
            gold[key] = {"text": row[text_col].strip(), "label": row[label_col]}
    pool = tmp / f"{dataset}-pool.jsonl"  # JSONL, not one text per line: some texts hold a newline (Banking77)
    pool.write_text("".join(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n" for r in gold.values()), encoding="utf-8")
    test_copy = tmp / f"{dataset}-test.jsonl"
    with test.open(encoding="utf-8", newline="") as fh:
        test_rows = list(csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL))
    test_copy.write_text("".join(json.dumps({"text": r[text_col].strip(), "label": r[label_col]}) + "\n" for r in test_rows))
    return pool, test_copy, gold


MIN_STEPS = 0  # --min-steps: rounds of full fine-tuning train at least this many optimizer steps (epochs raised)
METHOD = "full"  # --method fewshot: classification rounds train lmforge's few-shot learner instead
FULL_SEEDS: dict = {}  # dataset: {seed: score} of --full-data-seeds
FEWSHOT_PAIRS = None  # --fewshot-pairs: fewshot.pairs_per_example (empty: lmforge's default)
WARM_START = False  # --warm-start: rounds after the first start from the previous round's model
FULL_TRAINING: dict = {}  # --full-data-training: training settings for the full-data run only
ROUND_TRAINING: dict = {}  # --round-training: training settings for every round of every curve


def train_on(task: str, labelled: Path, test: Path, out: Path, epochs: float, seed: int,
             method: str | None = None, base: Path | None = None, training: dict | None = None) -> tuple[Path, float, float]:
    """A minilm-l6 run on the labelled file, fresh or (`base`: an earlier run) from that run's model;
    (run, test score, seconds)."""
    from rich.console import Console

    from lmforge.config import config_from_dict
    from lmforge.runs import RunFolder
    from lmforge.training.loop import train

    # classification is scored here, not by train: a few labels need not cover every test class (Banking77),
    # and train rightly refuses a test label it has never seen; those test examples count as errors
    ner = task == "token-classification"
    fewshot = (method or METHOD) == "fewshot" and not ner
    if MIN_STEPS and not fewshot:  # batches of 16 sequences (the default below 10,000 examples)
        per_epoch = -(-sum(1 for line in labelled.open(encoding="utf-8") if line.strip()) // 16)
        epochs = max(epochs, -(-MIN_STEPS // per_epoch))
    data = {"train": str(labelled), "format": "auto", **({"test": str(test)} if ner else {})}
    model = str(RunFolder(base).model_dir) if base else "minilm-l6"  # --warm-start: the previous round's model
    raw = {"name": out.name, "task": task, "model": model, "output_dir": str(out.parent), "data": data,
           "training": {"seed": seed, "tensorboard": False, **({} if fewshot else {"epochs": epochs}), **(training or {})}}
    if fewshot:  # lmforge's few-shot defaults (one contrastive pass, the head's C by cross-validation)
        raw["method"] = "fewshot"
        if FEWSHOT_PAIRS:
            raw["fewshot"] = {"pairs_per_example": FEWSHOT_PAIRS}
    start = time.perf_counter()
    run = train(config_from_dict(raw), out.parent, overwrite=True, console=Console(file=open("/dev/null", "w")))
    if ner:
        score = json.loads((run / "metrics.json").read_text())["test"]["f1"]
    else:
        from lmforge.predictor import Predictor

        rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()]
        predictions = Predictor.from_run(run, device=_device()).predict([row["text"] for row in rows])
        score = sum(p["label"] == row["label"] for p, row in zip(predictions, rows)) / len(rows)
    return run, score, time.perf_counter() - start


def size_of(records: list[dict]) -> int:
    """Labels used: examples, or labelled tokens for NER."""
    return sum(len(r["tokens"]) for r in records) if records and "tokens" in records[0] else len(records)


def _device() -> str | None:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def curve(dataset: str, strategy: str, seed: int, rounds: int, tmp: Path, results: dict, save,
          random_extra: tuple[float, ...] = (), known: list = (), extra: tuple[float, ...] = (),
          picks: Path | None = None) -> list[tuple[int, float]]:
    """One learning curve. `known`: the curve's points measured before. A random curve's picks are
    seeded, so they are drawn again and only the rounds not measured yet are trained (--random-extra
    continues it); an active curve's picks are recorded round by round in `picks`, so it is continued
    from them: its last measured round is trained again (the model to suggest from) and the rounds
    before are read back (--extra continues it)."""
    from lmforge.active.suggest import suggest

    task, pool_size, first, step, epochs = DATASETS[dataset]
    pool, test, gold = load(dataset, pool_size, tmp)
    labelled_file = tmp / f"{dataset}-{strategy}-{seed}-labelled.jsonl"
    position = {key: i for i, key in enumerate(sorted(gold))}  # where a pick is recorded
    replay = read_picks(picks, gold)[:len(known)] if picks and strategy != "random" and known and not WARM_START else []
    if strategy == "random":
        keys = random.Random(seed).sample(sorted(gold), first)
        chosen = [gold[k] for k in keys]
    elif replay:
        chosen = replay[0]
    else:
        cold = suggest(None, pool, first, seed=seed, task=task, device=_device()).records
        chosen = [gold[_record_key(r)] for r in cold]
    points, run, counts = [], None, []
    extra = extra_sizes(strategy, len(gold), last_round(dataset, rounds), random_extra, extra)
    for round_no in range(rounds + len(extra)):
        if round_no < len(replay):
            chosen = list(replay[round_no])
        labelled_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen), encoding="utf-8")
        counts.append(len(chosen))
        if picks:
            write_picks(picks, position, chosen, counts)
        read_back = strategy == "random" or round_no < len(replay) - 1  # the last replayed round is trained again
        if read_back and round_no < len(known) and known[round_no][0] == size_of(chosen):
            score, seconds, when = known[round_no][1], 0.0, " (measured before)"
        else:
            # --warm-start: from the previous round's model, so two run folders take turns
            out = tmp / "runs" / f"{dataset}-{strategy.replace('+', '-')}-{seed}{f'-{round_no % 2}' * WARM_START}"
            run, score, seconds = train_on(task, labelled_file, test, out, epochs, seed,
                                           base=run if WARM_START and round_no else None, training=ROUND_TRAINING)
            when = f" (measured before: {known[round_no][1]:.4f})" if round_no < len(replay) else ""
        points.append((size_of(chosen), score))
        print(f"{dataset} {strategy} seed {seed} round {round_no}: {len(chosen)} labelled ({size_of(chosen)}), "
              f"test {score:.4f}, {seconds:.0f} s{when}", flush=True)
        results.setdefault(dataset, {}).setdefault(strategy, {})[str(seed)] = points
        save()
        if round_no == rounds + len(extra) - 1:
            break
        if strategy != "random" and round_no < len(replay) - 1:
            continue  # the next round's picks are read back
        more = step if round_no < rounds - 1 else extra[round_no - rounds + 1] - len(chosen)  # --extra: up to the share
        if strategy == "random":
            chosen += _random_picks(chosen, gold, more, seed * 1000 + round_no)
            continue
        base, _, second = strategy.partition("+")  # margin+diversity; margin+random: half the batch drawn at random
        mixed = second == "random"
        batch = suggest(run, pool, more - more // 2 if mixed else more, strategy=base, diversity=second == "diversity",
                        exclude=[labelled_file], seed=seed, device=_device()).records
        chosen += [gold[_record_key(r)] for r in batch]
        if mixed:
            chosen += _random_picks(chosen, gold, more // 2, seed * 1000 + round_no)
    return points


def _random_picks(chosen: list[dict], gold: dict, k: int, seed: int) -> list[dict]:
    """k gold records not chosen yet, drawn with `seed` (the random curves' picks)."""
    taken = {_record_key(r) for r in chosen}
    rest = [key for key in sorted(gold) if key not in taken]
    return [gold[key] for key in random.Random(seed).sample(rest, min(k, len(rest)))]


def write_picks(path: Path, position: dict[str, int], chosen: list[dict], counts: list[int]) -> None:
    """An active curve's picks so far: positions in the sorted pool (`position`: key -> index), in the
    order chosen, and how many each round had (JSON, written whole then renamed: a stopped run leaves
    the last complete round)."""
    keys = [position[_record_key(r)] for r in chosen]
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".tmp")
    part.write_text(json.dumps({"counts": counts, "picks": keys}) + "\n")
    part.replace(path)


def read_picks(path: Path, gold: dict) -> list[list[dict]]:
    """The chosen records of each recorded round (empty when nothing was recorded)."""
    if not path.is_file():
        return []
    recorded = json.loads(path.read_text())
    order = sorted(gold)
    return [[gold[order[i]] for i in recorded["picks"][:count]] for count in recorded["counts"]]


def last_round(dataset: str, rounds: int) -> int:
    """Labels after the last of `rounds` rounds (the first batch, then a step a round)."""
    _, _, first, step, _ = DATASETS[dataset]
    return first + (rounds - 1) * step


def record_full(full: dict, dataset: str, seed: int, score: float) -> None:
    """A full-data score: seed 0's is the target, other seeds' (--full-data-seeds) go to FULL_SEEDS."""
    if seed:
        FULL_SEEDS.setdefault(dataset, {})[str(seed)] = score
    else:
        full[dataset] = score


def extra_sizes(strategy: str, pool: int, last: int, random_extra: tuple = (), extra: tuple = ()) -> list[int]:
    """Label counts a curve continues to after its rounds: --extra for every strategy, --random-extra for random."""
    shares = set(extra) | (set(random_extra) if strategy == "random" else set())
    return sorted(size for size in {round(share * pool) for share in shares} if size > last)


def full_score(dataset: str, tmp: Path, seed: int = 0) -> float:
    """The target: full fine-tuning on the whole pool (whatever --method the curves use); other seeds
    (--full-data-seeds) show how much the target itself moves."""
    task, pool_size, *_, epochs = DATASETS[dataset]
    pool, test, gold = load(dataset, pool_size, tmp)
    everything = tmp / f"{dataset}-all.jsonl"
    everything.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in gold.values()), encoding="utf-8")
    _, score, seconds = train_on(task, everything, test, tmp / "runs" / f"{dataset}-full", epochs, seed, method="full",
                                 training=FULL_TRAINING)
    print(f"{dataset} full data ({len(gold)}, seed {seed}): test {score:.4f}, {seconds:.0f} s", flush=True)
    return score


def needed(points: list[tuple[int, float]], target: float) -> float | None:
    """Labels at which the curve first reaches `target` (linear interpolation); None if never."""
    previous = None
    for size, score in points:
        if score >= target:
            if previous is None:
                return float(size)
            (s0, v0) = previous
            return s0 + (size - s0) * (target - v0) / max(score - v0, 1e-12)
        previous = (size, score)
    return None


def plot(results: dict, full: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = [d for d in results if results[d]]
    if not datasets:  # only full-data runs (--strategies with none): nothing to draw
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for strategy, seeds in results[dataset].items():
            curves = [np.array(points) for points in seeds.values()]
            length = min(len(c) for c in curves)  # curves cut short (a stopped run) are drawn as far as every seed went
            xs = np.mean([c[:length, 0] for c in curves], axis=0)
            ys = np.array([c[:length, 1] for c in curves])
            ax.errorbar(xs, ys.mean(axis=0), yerr=ys.std(axis=0), label=f"{strategy} ({len(curves)} seed{'s' * (len(curves) > 1)})", capsize=2)
        if dataset in full:
            ax.axhline(full[dataset], color="grey", linestyle="--", label="full data")
            if FULL_SEEDS.get(dataset):  # the spread of the full-data runs over seeds
                scores = [full[dataset], *FULL_SEEDS[dataset].values()]
                ax.axhspan(min(scores), max(scores), color="grey", alpha=0.15, label=f"full data, {len(scores)} seeds")
            ax.set_ylim(top=max(ax.get_ylim()[1], full[dataset] + 0.01))
        ax.set_title(dataset)
        ax.set_xlabel("labelled tokens" if DATASETS[dataset][0] == "token-classification" else "labelled examples")
        ax.set_ylabel("test F1" if DATASETS[dataset][0] == "token-classification" else "test accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _strategy_for(dataset: str, strategy: str) -> str:
    return strategy if DATASETS[dataset][0] != "token-classification" else strategy.replace("margin", "mnlp")


def _job(job: tuple, rounds: int, random_extra: tuple, settings: dict, threads: int | None, parts: Path, min_steps: int = 0,
         method: str = "full", fewshot_pairs: int | None = None, known: list = (), extra: tuple = (), warm_start: bool = False,
         full_training: dict | None = None, round_training: dict | None = None):
    """One curve (or the full-data run) in a worker process: its points (or score). Each round's points
    are also written to parts/<dataset>-<strategy>-<seed>.json, so a stopped run keeps what it measured."""
    import torch

    global MIN_STEPS, METHOD, FEWSHOT_PAIRS, WARM_START
    DATASETS.update(settings)
    MIN_STEPS, METHOD, FEWSHOT_PAIRS, WARM_START = min_steps, method, fewshot_pairs, warm_start
    FULL_TRAINING.update(full_training or {})
    ROUND_TRAINING.update(round_training or {})
    if threads:
        torch.set_num_threads(threads)
    kind, dataset, strategy, seed = job
    with tempfile.TemporaryDirectory() as tmp_name:
        if kind == "full":
            return full_score(dataset, Path(tmp_name), seed)
        mine: dict = {}
        part = picks_path(parts, dataset, strategy, seed).with_suffix(".json")

        def save_part() -> None:
            parts.mkdir(parents=True, exist_ok=True)
            part.write_text(json.dumps(mine) + "\n")

        return curve(dataset, _strategy_for(dataset, strategy), seed, rounds, Path(tmp_name), mine, save_part, random_extra, known, extra,
                     picks_path(parts, dataset, strategy, seed))


def picks_path(parts: Path, dataset: str, strategy: str, seed: int) -> Path:
    """Where an active curve's picks are recorded, beside its part file <dataset>-<strategy>-<seed>.json."""
    return parts / f"{dataset}-{strategy.replace('+', '-')}-{seed}.picks"


def labels_needed(results: dict, full: dict, rounds: int) -> dict:
    """Per dataset and strategy, each complete curve's labels to reach 95% and 98% (NER: 99%) of full data."""
    out = {}
    for dataset, strategies in results.items():
        if dataset not in full:
            continue
        levels = (0.99,) if DATASETS[dataset][0] == "token-classification" else (0.95, 0.98)
        for strategy, seeds in strategies.items():
            for level in levels:
                values = [needed(points, level * full[dataset]) for points in seeds.values() if len(points) >= rounds]
                out.setdefault(dataset, {}).setdefault(strategy, {})[f"{int(level * 100)}%"] = values
    return out


def merge_parts(results: dict, folder: Path) -> None:
    """Add the per-curve part files of a stopped --jobs run to `results` (the longer curve wins)."""
    for part in sorted(folder.glob("*.json")):
        for dataset, strategies in json.loads(part.read_text()).items():
            for strategy, seeds in strategies.items():
                for seed, points in seeds.items():
                    if len(points) > len(results.get(dataset, {}).get(strategy, {}).get(seed, [])):
                        results.setdefault(dataset, {}).setdefault(strategy, {})[seed] = points


def run_parallel(jobs: list, args, results: dict, full: dict, save, known: dict) -> None:
    """The jobs in `args.jobs` spawned processes; each result is saved as it arrives, and one failed
    curve does not lose the others."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    parts = RESULTS / f"{args.name}.parts"
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_job, job, args.rounds, tuple(args.random_extra), dict(DATASETS), args.threads, parts,
                               args.min_steps, args.method, args.fewshot_pairs, known.get(job, []), tuple(args.extra), args.warm_start,
                               FULL_TRAINING, ROUND_TRAINING): job for job in jobs}
        print(f"{len(jobs)} job(s) on {args.jobs} processes", flush=True)
        for future in as_completed(futures):
            kind, dataset, strategy, seed = futures[future]
            try:
                value = future.result()
            except Exception as err:
                print(f"{kind} {dataset} {strategy} seed {seed} failed: {err!r}", flush=True)
                continue
            if kind == "full":
                record_full(full, dataset, seed, value)
            else:
                results.setdefault(dataset, {}).setdefault(_strategy_for(dataset, strategy), {})[str(seed)] = value
            save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--strategies", nargs="*", default=["random", "margin", "margin+diversity"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-from", type=int, default=0, help="curves for seeds seed-from .. seeds-1 (another process runs the others)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--name", default="active_learning")
    parser.add_argument("--pool-size", type=int, default=None, help="smaller pools (a quick check)")
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None, help="first batch and batch per round")
    parser.add_argument("--random-extra", type=float, nargs="*", default=[],
                        help="shares of the pool (e.g. 0.3 0.4 0.5) the random curves continue to after the rounds")
    parser.add_argument("--extra", type=float, nargs="*", default=[],
                        help="shares of the pool every curve (active strategies too) continues to after the rounds")
    parser.add_argument("--jobs", type=int, default=1, help="curves run at once, each in its own process")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (with --jobs)")
    parser.add_argument("--min-steps", type=int, default=0,
                        help="full fine-tuning: train each round at least this many optimizer steps (epochs raised; 0: --epochs as given)")
    parser.add_argument("--method", choices=["full", "fewshot"], default="full",
                        help="classification rounds: full fine-tuning, or lmforge's few-shot learner (method: fewshot); "
                             "the full-data target is always full fine-tuning")
    parser.add_argument("--warm-start", action="store_true",
                        help="each round after the first trains from the previous round's model instead of a fresh "
                             "minilm-l6 (incremental training, as Shen et al. 2017); the full-data run is always fresh")
    parser.add_argument("--fewshot-pairs", type=int, default=None, help="with --method fewshot: fewshot.pairs_per_example")
    parser.add_argument("--full-data-from", type=Path, default=None,
                        help="take the full-data scores from an earlier results file of this bench (same pools and epochs) "
                             "instead of training them again")
    parser.add_argument("--full-data-seeds", type=int, default=1,
                        help="also train the full-data run with seeds 1 .. N-1 (saved as full_data_seeds: how much the "
                             "target moves; the target stays seed 0's score)")
    parser.add_argument("--full-data-training", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings for the full-data run only, e.g. batch_size=16 hidden_dropout=0.1 (NER: "
                             "the recipe lmforge uses below 10,000 sentences, to check the target does not rest on the "
                             "large-set defaults)")
    parser.add_argument("--round-training", nargs="*", default=[], metavar="KEY=VALUE",
                        help="training settings for every round of every curve (not the full-data run), e.g. "
                             "average_last=0 (the epoch the dev hold-out picks, as before 2026-12-06, instead of the "
                             "mean of the last 3 epochs' weights that lmforge keeps for fewer than 1,000 dev examples)")
    parser.add_argument("--merge-parts", type=Path, default=None,
                        help="only merge the per-curve part files of a stopped --jobs run (a folder) into <name>.json and plot")
    args = parser.parse_args()
    global MIN_STEPS, METHOD, FEWSHOT_PAIRS, WARM_START
    MIN_STEPS, METHOD, FEWSHOT_PAIRS, WARM_START = args.min_steps, args.method, args.fewshot_pairs, args.warm_start
    from lmforge.config import ConfigError, parse_override

    for flag, items, into in (("--full-data-training", args.full_data_training, FULL_TRAINING),
                              ("--round-training", args.round_training, ROUND_TRAINING)):
        for item in items:  # read as lmforge reads `key=value` overrides (3e-5 a number, ...)
            try:
                keys, value = parse_override(item)
            except ConfigError as err:
                parser.error(f"{flag}: {err}")
            into[".".join(keys)] = value
    for strategy in args.strategies:  # a typo fails here, not after the first round's training
        base, plus, second = strategy.partition("+")
        if strategy != "random" and (base not in ("margin", "entropy", "least-confidence") or plus and second not in ("diversity", "random")):
            parser.error(f"--strategies {strategy}: random, or margin / entropy / least-confidence, optionally +diversity or +random")
    if args.warm_start and args.random_extra:
        parser.error("--warm-start: random curves continued by --random-extra skip their measured rounds, so no model "
                     "to start from; use --extra (every curve runs from its start)")
    for name, (task, size, first, step, epochs) in list(DATASETS.items()):
        DATASETS[name] = (task, args.pool_size or size, args.batch or first, args.batch or step, args.epochs or epochs)
    path = RESULTS / f"{args.name}.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    results, full = state.get("results", {}), state.get("full_data", {})
    FULL_SEEDS.update(state.get("full_data_seeds", {}))
    own: dict = state.get("full_data_own", {})  # this file's own full-data scores that --full-data-from replaced
    if args.full_data_from:  # the target from there (same pool size and epochs), replacing this file's own
        earlier = json.loads(args.full_data_from.read_text())
        for dataset in args.datasets:
            theirs = earlier.get("settings", {}).get(dataset)
            if dataset in earlier.get("full_data", {}) and theirs and theirs[1] == DATASETS[dataset][1] and theirs[-1] == DATASETS[dataset][-1]:
                if dataset in full and full[dataset] != earlier["full_data"][dataset]:
                    own.setdefault(dataset, full[dataset])
                full[dataset] = earlier["full_data"][dataset]

    # how the curves ran: a merge keeps what the run recorded
    ran_how = ({k: state.get(k) for k in ("full_data_training", "round_training", "jobs", "threads_per_job")} if args.merge_parts
               else {"full_data_training": FULL_TRAINING, "round_training": ROUND_TRAINING, "jobs": args.jobs,
                     "threads_per_job": args.threads})

    def save() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        ran_on = state["machine"] if args.merge_parts and "machine" in state else machine()  # merging here: where it ran
        path.write_text(json.dumps({"machine": ran_on, "settings": {k: DATASETS[k] for k in args.datasets},
                                    "method": args.method, "fewshot_pairs": args.fewshot_pairs, "min_steps": args.min_steps, "warm_start": args.warm_start,
                                    **ran_how,
                                    "full_data": full, "full_data_seeds": FULL_SEEDS, "full_data_from": str(args.full_data_from or state.get("full_data_from") or ""),
                                    "full_data_own": own, "results": results, "table": table()}, indent=2) + "\n")

    def table() -> dict:
        return labels_needed(results, full, args.rounds)

    if args.merge_parts:
        merge_parts(results, args.merge_parts)
        save()
        plot(results, full, RESULTS / f"{args.name}.png")
        print(json.dumps(table(), indent=2))
        return
    jobs = [("full", dataset, "", 0) for dataset in args.datasets if dataset not in full]
    jobs += [("full", dataset, "", seed) for dataset in args.datasets for seed in range(1, args.full_data_seeds)
             if str(seed) not in FULL_SEEDS.get(dataset, {})]
    known: dict = {}  # job: the points measured before (random curves; active curves whose picks were recorded)
    for dataset in args.datasets:
        for seed in range(args.seed_from, args.seeds):  # seed by seed: a stopped run leaves whole seeds (every strategy)
            for strategy in args.strategies:
                done = results.get(dataset, {}).get(_strategy_for(dataset, strategy), {}).get(str(seed), [])
                if strategy == "random" and done and args.random_extra:  # continued: measured rounds are not trained again
                    jobs.append(("curve", dataset, strategy, seed))
                    known[jobs[-1]] = done
                elif len(done) < args.rounds + len(extra_sizes(strategy, DATASETS[dataset][1], last_round(dataset, args.rounds), (), tuple(args.extra))):
                    # a curve cut short (the run was stopped), or to be continued past its rounds: from its recorded
                    # picks (--jobs runs record them), else again from its start
                    jobs.append(("curve", dataset, strategy, seed))
                    if done and args.jobs > 1 and picks_path(RESULTS / f"{args.name}.parts", dataset, strategy, seed).is_file():
                        known[jobs[-1]] = done
    if args.jobs <= 1:
        with tempfile.TemporaryDirectory() as tmp_name:
            for kind, dataset, strategy, seed in jobs:
                if kind == "full":
                    record_full(full, dataset, seed, full_score(dataset, Path(tmp_name), seed))
                else:
                    curve(dataset, _strategy_for(dataset, strategy), seed, args.rounds, Path(tmp_name), results, save,
                          tuple(args.random_extra), known.get((kind, dataset, strategy, seed), []), tuple(args.extra))
                save()
    else:
        run_parallel(jobs, args, results, full, save, known)
    plot(results, full, RESULTS / f"{args.name}.png")
    save()
    print(json.dumps(table(), indent=2))


if __name__ == "__main__":
    main()
