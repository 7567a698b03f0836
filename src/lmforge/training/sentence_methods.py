"""Text classification from few labels: `method: fewshot` and `method: zeroshot`.

Both build a sentence-embedding classifier (models/pooled.py: the encoder, mean pooling,
normalisation, a linear head) and end like every run (`finalize_run`: model/, dev and test
evaluated through the Predictor, model card), so evaluate, predict, explain, serve, export, the
registry and update treat the run like any other.

- **fewshot** (the SetFit recipe, Tunstall et al. 2022): sentence pairs are drawn from the few
  labelled examples (per example and draw, one pair with an example of the same label, target 1,
  and one with another label, target 0); the encoder is fine-tuned on them with a
  sentence-transformers contrastive loss (CosineSimilarityLoss as SetFit, or CoSENTLoss), and a
  logistic-regression head (scikit-learn) is fitted on the tuned embeddings and copied into the
  linear head: no pickle.
- **zeroshot**: no training. The head's rows are the normalised embeddings of the label texts
  (`data.label_descriptions`, else the label names) times a fixed scale, so a text goes to the label
  whose text it is most similar to (cosine), and the softmax gives probabilities.

A few-shot run takes minutes, so it is not checkpointed: an interrupted one is started again.
With `training.precision` bf16 (auto: on a CPU or GPU with native bf16) the encoder's forward runs
under bf16 autocast in the contrastive stage and when the head's embeddings are computed, as the
Predictor then predicts; the loss and the head fit stay in fp32.
"""

from __future__ import annotations

from collections import Counter

import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from ..errors import UserError
from ..inference import autocast_context, inference_model
from ..models.build import inference_attention, uses_bf16
from ..runs import RunFolder, mark_run
from ..tasks.base import collate
from .finalize import finalize_run
from .progress import TrainProgress
from .setup import Prepared, build_model
from .steps import optimizer, schedule
from .tracking import Tracker, mlflow_for

ZERO_SHOT_SCALE = 20.0  # logits = scale x cosine (sentence-transformers' MultipleNegativesRankingLoss scale)
EMBED_BATCH = 64


def run_sentence_method(p: Prepared, run_dir: Path, console: Console, max_steps: int | None = None) -> Path:
    from transformers import set_seed

    cfg = p.cfg
    set_seed(cfg.training.seed)
    start = time.perf_counter()
    model = build_model(p)
    examples = f"{len(p.splits.train)} train examples" if p.splits.train else "no training examples (label texts only)"
    console.print(f"[bold]{cfg.name}[/]: {cfg.task}, {cfg.method}, {len(p.task.labels)} labels, {examples}, "
                  f"{len(p.splits.dev)} dev examples")
    for warning in p.warnings:
        console.print(f"[bold yellow]warning: {warning}")
    steps, tokens = 0, 0
    if cfg.method == "fewshot":
        check_fewshot(p)
        tracker = Tracker(RunFolder(run_dir).logs_dir, cfg.training.tensorboard, mlflow=mlflow_for(cfg, run_dir))
        try:
            examples, features = training_examples(p)
            steps, tokens = contrastive_stage(model, p, examples, features, console, tracker, max_steps)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: a few-shot run is not checkpointed; start it again with --overwrite")
            raise SystemExit(130)
        finally:
            tracker.close()
        head_c = fit_logistic_head(model, p, features, head_weights(p, examples))
        mark_run(run_dir, head_c=head_c)  # the head's C as fitted (fewshot.head_c: auto chooses it)
    else:
        set_label_text_head(model, p)
        head_c = None
    seconds = time.perf_counter() - start
    console.print(f"{cfg.method}: {steps} contrastive steps, head ready in {seconds:.1f} s"
                  + (f" (C = {head_c:g}, {'cross-validated' if cfg.fewshot.head_c == 'auto' else 'fewshot.head_c'})" if head_c else ""))
    trainable = sum(x.numel() for x in model.parameters() if x.requires_grad) if steps else 0
    total = sum(x.numel() for x in model.parameters())
    state = {"step": steps, "best_step": None, "train_seconds": seconds, "real_tokens": tokens}
    model.eval()
    finalize_run(run_dir, p, model, RunFolder(run_dir).checkpoints_dir, state, False, console, trainable, total)
    return run_dir


def check_fewshot(p: Prepared) -> None:
    """Every label needs examples to learn from, and the pairs need a same-label and a
    different-label partner somewhere; say what is missing (validate runs this too)."""
    counts = {label: 0 for label in p.task.labels}
    for ex in p.splits.train:
        for label in ex.labels:
            counts[label] = counts.get(label, 0) + 1
    empty = [label for label, n in counts.items() if n == 0]
    if empty:
        raise UserError(f"{p.cfg.data.train}: label(s) {', '.join(map(repr, empty[:10]))} have no training examples; method fewshot "
                        "needs at least one (2-64 work best) per label. Add examples, or leave the label out of data.labels")
    sets = [frozenset(ex.labels) for ex in p.splits.train]
    shared = any(n > 1 for n in counts.values())
    unrelated = any(not a & b for a in set(sets) for b in set(sets))
    if not shared or not unrelated:
        raise UserError(f"{p.cfg.data.train}: method fewshot learns from pairs of examples with the same label and with "
                        "different labels; give at least two examples of a label and examples of two labels (2-64 per label work best)")


# -- the contrastive stage ---------------------------------------------------------------------

def draw_pairs(label_sets: list[frozenset], per_example: int, seed: int) -> list[tuple[int, int, float]]:
    """SetFit's oversampling: for each draw and example, one partner sharing a label with it (target
    1.0) and one sharing none (target 0.0), where such partners exist. Deterministic for a seed;
    linear in the number of examples (partners are drawn, not searched)."""
    rng = random.Random(seed)
    members: dict[str, list[int]] = {}
    for i, labels in enumerate(label_sets):
        for label in sorted(labels):
            members.setdefault(label, []).append(i)
    everyone = range(len(label_sets))
    pairs = []
    for _ in range(per_example):
        for i, labels in enumerate(label_sets):
            label = rng.choice(sorted(labels)) if labels else None
            if label is not None and len(members[label]) > 1:
                j = rng.choice(members[label])
                while j == i:
                    j = rng.choice(members[label])
                pairs.append((i, j, 1.0))
            other = _unrelated(rng, everyone, label_sets, labels)
            if other is not None:
                pairs.append((i, other, 0.0))
    rng.shuffle(pairs)
    return pairs


def _unrelated(rng: random.Random, everyone: range, label_sets: list[frozenset], labels: frozenset) -> int | None:
    for _ in range(64):  # rejection sampling: nearly always quick
        j = rng.choice(everyone)
        if not labels & label_sets[j]:
            return j
    others = [j for j in everyone if not labels & label_sets[j]]
    return rng.choice(others) if others else None


def _loss(name: str, model):
    from sentence_transformers import losses

    return losses.CoSENTLoss(model) if name == "cosent" else losses.CosineSimilarityLoss(model)


def training_examples(p: Prepared) -> tuple[list, list]:
    """The labelled examples and their features; with fewshot.label_texts, each label's text
    (data.label_descriptions, else its name) joins them as one more example of that label."""
    examples, features = list(p.splits.train), list(p.train_features)
    if p.cfg.fewshot.label_texts:
        extra = p.task.examples_from_texts(label_texts(p))
        for ex, label in zip(extra, p.task.labels):
            ex.labels = [label]
        examples += extra
        features += p.task.encode_for_training(extra)
    return examples, features


def head_weights(p: Prepared, examples: list) -> list[float]:
    """Sample weights of the head fit: 1 per labelled example; each label text (the examples after the
    training split's) fewshot.label_text_weight, or as many as its label has examples."""
    given = p.cfg.fewshot.label_text_weight
    counts = Counter(label for ex in p.splits.train for label in ex.labels)
    extra = examples[len(p.splits.train):]
    return [1.0] * len(p.splits.train) + [given if given is not None else float(max(1, counts[ex.labels[0]])) for ex in extra]


def contrastive_stage(model, p: Prepared, examples: list, features: list, console: Console, tracker: Tracker | None = None,
                      max_steps: int | None = None) -> tuple[int, int]:
    """Fine-tune the encoder on pairs drawn from `examples` (encoded as `features`). Returns
    (optimizer steps, real tokens seen)."""
    fs, t = p.cfg.fewshot, p.cfg.training
    pairs = draw_pairs([frozenset(ex.labels) for ex in examples], fs.pairs_per_example, t.seed)
    per_pass = math.ceil(len(pairs) / fs.batch_size)
    total = max(1, round(per_pass * fs.epochs))
    if max_steps:
        total = min(total, max_steps)
    params = [x for x in model.body.parameters() if x.requires_grad]
    opt = optimizer(model.body, p.cfg)  # AdamW as full fine-tuning: no decay on biases and norms
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(t.scheduler, int(t.warmup_ratio * total), total))
    loss_fn = _loss(fs.loss, model)
    feats, pad = features, p.tokenizer.pad_token_id
    device = next(model.parameters()).device
    bf16 = uses_bf16(t.precision, device)
    model.train()
    progress = TrainProgress(total, 0, enabled=True, console=console)
    tokens, started = 0, time.perf_counter()
    try:
        for step in range(total):
            if step and step % per_pass == 0:  # a new pass over the pairs, in a new (seeded) order
                random.Random(t.seed + step // per_pass).shuffle(pairs)
            offset = (step % per_pass) * fs.batch_size
            batch = pairs[offset:offset + fs.batch_size]
            # both sides of the pairs in one forward pass: one larger matrix product per layer
            both = collate([_inputs(feats[i]) for i, _, _ in batch] + [_inputs(feats[j]) for _, j, _ in batch], pad)
            targets = torch.tensor([target for _, _, target in batch], device=device)
            with autocast_context(device, bf16):
                embedded = model.embed(**{k: v.to(device) for k, v in both.items()})
            left, right = embedded.float().split(len(batch))
            loss = loss_fn.compute_loss_from_embeddings([left, right], targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            opt.step()
            sched.step()
            tokens += int(both["attention_mask"].sum())
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            value = loss.item()
            progress.update(step + 1, value, rate)
            if tracker is not None and ((step + 1) % t.log_every_steps == 0 or step + 1 == total):
                tracker.log(step + 1, {"loss": value, "learning_rate": sched.get_last_lr()[0], "tokens_per_second": rate})
    finally:
        progress.close()
    model.eval()
    return total, tokens


def _inputs(feature: dict) -> dict:
    return {k: v for k, v in feature.items() if k != "labels"}


# -- heads ---------------------------------------------------------------------------------------

@torch.inference_mode()
def embed_features(model, features: list[dict], pad_id: int, precision: str = "fp32") -> np.ndarray:
    """Normalised sentence embeddings [N, H] of encoded features, in order (length-sorted batches);
    precision: training.precision (bf16 as the Predictor decides it, on the bf16 copy it runs)."""
    model.eval()
    device = next(model.parameters()).device
    model = inference_model(model, uses_bf16(precision, device))
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    out = np.zeros((len(features), model.config.hidden_size), dtype=np.float32)
    with inference_attention(model):  # the attention the Predictor runs, not the training step's
        for start in range(0, len(order), EMBED_BATCH):
            chunk = order[start:start + EMBED_BATCH]
            batch = collate([_inputs(features[i]) for i in chunk], pad_id)
            out[chunk] = model.embed(**{k: v.to(device) for k, v in batch.items()}).float().cpu().numpy()
    return out


def logistic_fit(c: float, x: np.ndarray, y: np.ndarray, weights: np.ndarray):
    """scikit-learn's logistic regression fitted with sample weights. Its guess that targets with more
    distinct values than half the samples "could represent a regression problem" is silenced: with
    one or two examples per class (77 intents from 154 labels) that is what few-shot data looks like."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%", category=UserWarning)
        return LogisticRegression(C=c, max_iter=2000).fit(x, y, sample_weight=weights)


def fit_logistic_head(model, p: Prepared, features: list, weights: list[float] | None = None) -> float:
    """Fit scikit-learn's logistic regression on the tuned embeddings of the training examples (each
    with its sample weight, default 1) and copy it into the linear head (one multinomial model;
    multi-label: one binary model per label). Returns the C it was fitted with."""
    task, c = p.task, p.cfg.fewshot.head_c
    x = embed_features(model, features, p.tokenizer.pad_token_id, p.cfg.training.precision)
    w = np.ones(len(features)) if weights is None else np.asarray(weights, dtype=np.float64)
    n_labels, hidden = len(task.labels), x.shape[1]
    weight, bias = np.zeros((n_labels, hidden), dtype=np.float64), np.zeros(n_labels, dtype=np.float64)
    if task.multi_label:
        c = 1.0 if c == "auto" else c  # one C for every label's binary model
        y = np.array([f["labels"] for f in features], dtype=np.float64)  # [N, C]
        for k in range(n_labels):
            column = y[:, k]
            if column.min() == column.max():  # every example has it, or none: a constant at its smoothed log-odds
                share = (column.sum() + 1) / (len(column) + 2)
                bias[k] = math.log(share / (1 - share))
                continue
            clf = logistic_fit(c, x, column.astype(int), w)
            weight[k], bias[k] = clf.coef_[0], clf.intercept_[0]
    else:
        y = np.array([f["labels"] for f in features])
        if c == "auto":
            c = choose_head_c(x, y, w, p.cfg.training.seed)
        clf = logistic_fit(c, x, y, w)
        if len(clf.classes_) == 2:  # one logit z for classes_[1]: softmax([-z/2, z/2]) = sigmoid(z)
            weight[clf.classes_] = np.stack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
            bias[clf.classes_] = [-clf.intercept_[0] / 2, clf.intercept_[0] / 2]
        else:
            weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    _set_head(model, weight, bias)
    return float(c)


def label_texts(p: Prepared) -> list[str]:
    """Each label's text: its data.label_descriptions entry, else its name with underscores as spaces
    (`card_arrival` reads as "card arrival")."""
    descriptions = p.cfg.data.label_descriptions
    return [descriptions.get(label) or " ".join(label.replace("_", " ").split()) or label for label in p.task.labels]


def set_label_text_head(model, p: Prepared) -> None:
    """Zero-shot: each label's row is ZERO_SHOT_SCALE x the normalised embedding of its text."""
    texts = label_texts(p)
    features, _ = p.task.encode_for_inference(p.task.examples_from_texts(texts))
    rows = embed_features(model, features, p.tokenizer.pad_token_id, p.cfg.training.precision).astype(np.float64) * ZERO_SHOT_SCALE
    # multi-label: a label is as likely as not at cosine 0.5 (the threshold is then tuned on dev, when there is one)
    bias = np.full(len(texts), -0.5 * ZERO_SHOT_SCALE if p.task.multi_label else 0.0)
    _set_head(model, rows, bias)


def _set_head(model, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight).to(model.classifier.weight.dtype))
        model.classifier.bias.copy_(torch.from_numpy(bias).to(model.classifier.bias.dtype))


HEAD_CS = (0.1, 1.0, 10.0, 100.0)


def choose_head_c(x: np.ndarray, y: np.ndarray, weights: np.ndarray, seed: int) -> float:
    """`fewshot.head_c: auto`: the C of the logistic-regression head with the best weighted accuracy
    in stratified k-fold cross-validation on the training embeddings (k = the smallest class count,
    at most 4; the smaller C on a tie); 1.0 when a class has a single example."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(4, int(np.unique(y, return_counts=True)[1].min()))
    if folds < 2:
        return 1.0
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    scores = []
    for c in HEAD_CS:
        right = total = 0.0
        for fit, held in splits:
            clf = logistic_fit(c, x[fit], y[fit], weights[fit])
            right += float(((clf.predict(x[held]) == y[held]) * weights[held]).sum())
            total += float(weights[held].sum())
        scores.append(right / max(total, 1e-9))
    return HEAD_CS[int(np.argmax(scores))]  # argmax: the first (smallest C) of equal scores
