"""`lmforge suggest`: the texts of a pool most worth labelling next, written as pre-filled JSONL.

With a run: every pool text is predicted through the run's Predictor (the one inference path) and
scored by the task's uncertainty measure (active/scoring.py); the diversity step clusters the top
candidates on the run's own sentence embeddings (mean-pooled encoder states) so the batch is not N
near-duplicates. Without a run (cold start): the pool is embedded with a packaged encoder and the
medoid of each of N clusters is suggested.

Texts already labelled are never suggested: those of the run's train/dev/test files and of any
`exclude` file (earlier suggestion files, once labelled), compared without whitespace. Blank lines
and repeated texts in the pool are skipped and counted. Each record is in the format the task's
JSONL reader accepts, with the prediction pre-filled to confirm or correct, plus a `suggest` object
(rank, score, strategy, why, source) that the readers ignore.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import write_text_atomic
from .scoring import cluster_medoids, diverse_top

SUGGESTION_KEY = "suggest"


@dataclass
class Suggestions:
    records: list[dict]
    pool_texts: int  # distinct, not-yet-labelled texts scored
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _key(text: str) -> str:
    return "".join(text.split())


def _text_of(example) -> str:
    text = getattr(example, "text", None)
    if text is None:
        return " ".join(getattr(example, "words", []) or [])
    pair = getattr(example, "text_pair", None)
    return text if pair is None else f"{text}\t{pair}"


def labelled_keys(cfg, base: Path, exclude: list[Path]) -> set[str]:
    """Whitespace-free texts of the run's data files and of the `exclude` files (read by the task's reader;
    unlabelled records, e.g. suggestions not yet filled in, count too)."""
    paths = [*cfg.train_paths(base), *(cfg.resolve_path(p, base) for p in (cfg.data.dev, cfg.data.test) if p)]
    return _keys_of(cfg, [path for path in paths if path.is_file()]) | _exclude_keys(cfg, exclude)


def read_pool(predictor, pool: Path, known: set[str]) -> tuple[list, list[str]]:
    """The pool's examples, each text once, none already labelled; and notes on what was skipped."""
    from ..predict_files import read_inputs

    if not Path(pool).is_file():
        raise UserError(f"--pool {pool}: file not found")
    if predictor.task.token_level and Path(pool).suffix.lower() != ".txt":
        from ..data.load import read_split

        # NER sentences already split into words (the training format, CoNLL or JSONL): its tags are not used
        examples = read_split(predictor.config, Path(pool), require_labels=False)[0]
    else:
        examples = read_inputs(predictor, Path(pool))
    seen: set[str] = set()
    kept, repeated, labelled = [], 0, 0
    for ex in examples:
        key = _key(_text_of(ex))
        if key in known:
            labelled += 1
        elif key in seen:
            repeated += 1
        else:
            seen.add(key)
            kept.append(ex)
    blank = _blank_lines(Path(pool)) if Path(pool).suffix.lower() == ".txt" else 0
    notes = [f"{pool}: {len(examples):,} texts read"
             + (f", {blank:,} blank line(s) skipped" if blank else "")
             + (f", {repeated:,} repeated text(s) skipped" if repeated else "")
             + (f", {labelled:,} already labelled left out" if labelled else "")]
    return kept, notes


def _blank_lines(path: Path) -> int:
    with path.open(encoding="utf-8", errors="replace") as fh:
        return sum(1 for line in fh if not line.strip())


def suggest(run_dir: Path | None, pool: Path, n: int, *, strategy: str = "auto", diversity: bool = True,
            exclude: list[Path] | None = None, seed: int = 0, model: str = "minilm-l6",
            task: str = "text-classification", backend: str = "torch", device: str | None = None) -> Suggestions:
    """The n pool texts most worth labelling (see the module doc). device: where the model scores the
    pool ("cuda" on a GPU machine); default: the CPU."""
    if n < 1:
        raise UserError(f"-n {n}: ask for at least one suggestion")
    start = time.perf_counter()
    if run_dir is None:
        result = _cold_start(pool, n, exclude or [], seed, model, task, device)
    else:
        result = _from_run(Path(run_dir), pool, n, strategy, diversity, exclude or [], seed, backend, device)
    if len(result.records) < n:
        result.notes.append(f"only {len(result.records)} text(s) are left to label in the pool; all are suggested (-n {n})")
    result.seconds = time.perf_counter() - start
    return result


def _from_run(run_dir: Path, pool: Path, n: int, strategy: str, diversity: bool, exclude: list[Path], seed: int,
              backend: str, device: str | None = None) -> Suggestions:
    from ..predictor import Predictor

    predictor = Predictor.from_run(run_dir, backend=backend, device=device)
    task = predictor.task
    if not task.suggest_strategies:
        raise UserError(f"{run_dir}: lmforge suggest works on classification and NER runs; this is a {predictor.config.task} run")
    choices = (*task.suggest_strategies, "random")
    strategy = task.suggest_strategies[0] if strategy == "auto" else strategy
    if strategy not in choices:
        raise UserError(f"--strategy {strategy}: this run offers {', '.join(choices)} (or auto: {task.suggest_strategies[0]})")
    known = labelled_keys(predictor.config, run_dir, exclude)
    examples, notes = read_pool(predictor, pool, known)
    if not examples:
        return Suggestions([], 0, notes + ["nothing left to suggest: every pool text is labelled already"])
    if strategy == "random":
        order = random.Random(seed).sample(range(len(examples)), min(n, len(examples)))
        why = ["random pick"] * len(order)
        predictions = predictor.predict_examples([examples[i] for i in order])
        scores = [0.0] * len(order)
        picked = list(zip(order, scores, why, predictions))
    else:
        predictions = predictor.predict_examples(examples)
        rated = [task.informativeness(p, strategy) for p in predictions]
        scores = np.array([s for s, _ in rated])
        if diversity and n < len(examples):
            embed = lambda idx: sentence_embeddings(predictor, [examples[i] for i in idx])  # noqa: E731
            order, clusters = diverse_top(scores, embed, n, seed)
            reasons = [f"{rated[i][1]}; most uncertain of cluster {c + 1} of {n}" for i, c in zip(order, clusters)]
        else:
            order = [int(i) for i in np.argsort(-scores, kind="stable")[:n]]
            reasons = [rated[i][1] for i in order]
        picked = [(i, float(scores[i]), why, predictions[i]) for i, why in zip(order, reasons)]
    label = f"{strategy}+diversity" if diversity and strategy != "random" else strategy
    records = []
    for rank, (i, score, why, prediction) in enumerate(picked, 1):
        record = task.suggestion(examples[i], prediction, predictor.config.data)
        record[SUGGESTION_KEY] = {"rank": rank, "score": round(score, 6), "strategy": label, "why": why,
                                  "source": examples[i].source, "run": str(run_dir.resolve()), **_shown(prediction)}
        records.append(record)
    return Suggestions(records, len(examples), notes)


def _shown(prediction: dict) -> dict:
    """What the labeller sees of the prediction beside the pre-filled fields."""
    if "entities" in prediction:
        return {"entities": [{k: e[k] for k in ("type", "text", "start", "end", "score")} for e in prediction["entities"]]}
    top = sorted(prediction["probabilities"].items(), key=lambda kv: -kv[1])[:3]
    return {"probabilities": dict(top)}


def _cold_start(pool: Path, n: int, exclude: list[Path], seed: int, model: str, task: str, device: str | None = None) -> Suggestions:
    """No model yet: diverse texts (cluster medoids of the base encoder's embeddings)."""
    from ..config import config_from_dict
    from ..models.build import load_model, load_tokenizer
    from ..models.resolve import resolve_model
    from ..predictor import Predictor
    from ..tasks import get_task

    if get_task(task).decoder:
        raise UserError(f"--task {task}: suggest is for text-classification and token-classification")
    from transformers import AutoModel

    cfg = config_from_dict({"task": task, "model": model, "data": {"train": str(pool)}}, "suggest")
    path = resolve_model(model, Path.cwd())
    tokenizer = load_tokenizer(path)
    placeholder = get_task(task).for_run(cfg, {"labels": ["O"]}, tokenizer)  # reads the pool and writes records; predicts nothing
    predictor = Predictor(load_model(AutoModel, path).to(device or "cpu"), tokenizer, placeholder, cfg)
    known = _exclude_keys(cfg, exclude)
    examples, notes = read_pool(predictor, pool, known)
    if not examples:
        return Suggestions([], 0, notes + ["nothing left to suggest: every pool text is labelled already"])
    emb = sentence_embeddings(predictor, examples)
    order, shares = cluster_medoids(emb, n, seed)
    records = []
    for rank, (i, share) in enumerate(zip(order, shares), 1):
        record = placeholder.suggestion(examples[i], None, cfg.data)
        record[SUGGESTION_KEY] = {"rank": rank, "score": round(share, 6), "strategy": "cold-start",
                                  "why": f"typical text of a cluster holding {share:.1%} of the pool", "source": examples[i].source}
        records.append(record)
    return Suggestions(records, len(examples), notes)


def _exclude_keys(cfg, exclude: list[Path]) -> set[str]:
    missing = [path for path in exclude if not Path(path).is_file()]
    if missing:
        raise UserError(f"--exclude {missing[0]}: file not found")
    return _keys_of(cfg, [Path(path) for path in exclude])


def _keys_of(cfg, paths: list[Path]) -> set[str]:
    """Whitespace-free texts of labelled (or not yet labelled) files, read by the task's reader."""
    from ..data.load import read_split

    return {_key(_text_of(ex)) for path in paths for ex in read_split(cfg, path, require_labels=False)[0]}


def sentence_embeddings(predictor, examples: list) -> np.ndarray:
    """Normalised mean-pooled encoder states [N, H] of the examples' texts, through the model's own
    encoder (a sentence classifier's, a fine-tuned classifier's or tagger's body, or a plain encoder)."""
    import torch

    from ..inference import run_batches
    from ..models.pooled import mean_pool

    model, tok = predictor.torch.runner(), predictor.tokenizer  # with bf16, the copy the predictions run
    if hasattr(model, "get_base_model"):  # a peft wrapper
        model = model.get_base_model()
    encoder = model.body if hasattr(model, "embed") else getattr(model, getattr(model, "base_model_prefix", ""), model)
    device = next(encoder.parameters()).device
    max_length = predictor.config.data.max_length
    texts = [ex.text if ex.text is not None else " ".join(ex.words) for ex in examples]  # pairs: the first text
    enc = tok(texts, truncation=True, max_length=max_length)
    features = [{k: enc[k][i] for k in ("input_ids", "token_type_ids") if k in enc} for i in range(len(examples))]

    @torch.inference_mode()
    def forward(batch):
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = encoder(**batch).last_hidden_state
        pooled = torch.nn.functional.normalize(mean_pool(hidden.float(), batch["attention_mask"]), dim=-1)
        return pooled.cpu().numpy()

    encoder.eval()
    return np.stack(run_batches(features, tok.pad_token_id, forward))


def write_suggestions(result: Suggestions, output: Path | None) -> str:
    """JSONL text of the records; written atomically to `output` when given."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records)
    if output is not None:
        write_text_atomic(Path(output), text)
    return text
