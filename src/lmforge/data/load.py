"""Reading the splits a config names: train, dev (or a seeded stratified hold-out) and test."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..config import ProjectConfig
from ..errors import UserError


@dataclass
class Splits:
    train: list
    dev: list
    test: list | None
    dev_is_holdout: bool
    scheme: str | None = None  # NER: the scheme the files were read in


def read_split(cfg: ProjectConfig, path: Path, *, scheme: str | None = None, require_labels: bool = True):
    """Read one labelled file the way the config says (through its task). Returns (examples, scheme or None)."""
    from ..tasks import get_task

    return get_task(cfg.task).read(cfg, path, scheme=scheme, require_labels=require_labels)


def load_splits(cfg: ProjectConfig, base: Path) -> Splits:
    from ..config import SENTENCE_METHODS

    train, scheme = [], None
    for path in cfg.train_paths(base):  # several files: read one after the other, in the scheme of the first
        examples, scheme = read_split(cfg, path, scheme=scheme)
        train += examples
    test = None
    if cfg.data.test:
        test, _ = read_split(cfg, cfg.resolve_path(cfg.data.test, base), scheme=scheme)
    if cfg.data.dev:
        dev, _ = read_split(cfg, cfg.resolve_path(cfg.data.dev, base), scheme=scheme)
        return Splits(train, dev, test, False, scheme)
    if cfg.method in SENTENCE_METHODS:  # a few examples per class are all there is to learn from: no hold-out
        return Splits(train, [], test, False, scheme)
    from ..tasks import get_task

    by_document = get_task(cfg.task).holdout_by_document
    train, dev = holdout(train, cfg.data.dev_fraction, cfg.training.seed, by_document=by_document)
    return Splits(train, dev, test, True, scheme)


def holdout(examples: list, fraction: float, seed: int, by_document: bool = False) -> tuple[list, list]:
    """Seeded hold-out. Classification: stratified by (first) label, so rare classes keep at least one
    training example; when every class is too small for its share to round to one example (2-3 examples
    per class), one example each of randomly chosen classes that have two or more. NER: whole documents
    are held out, so no document is split across train/dev."""
    rng = random.Random(seed)
    groups: dict[object, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        key = ex.doc_id if by_document else (ex.labels[0] if getattr(ex, "labels", None) else "")
        groups[key].append(i)
    held: set[int] = set()
    if by_document:
        docs = list(groups)
        rng.shuffle(docs)
        n_dev_docs = max(1, round(len(docs) * fraction)) if len(docs) > 1 else 0
        for doc in docs[:n_dev_docs]:
            held.update(groups[doc])
        if not held:  # one document: hold out sentences instead
            idx = list(range(len(examples)))
            rng.shuffle(idx)
            held.update(idx[: max(1, round(len(idx) * fraction))])
    else:
        for key in sorted(groups, key=str):
            idx = groups[key]
            rng.shuffle(idx)
            n = round(len(idx) * fraction)
            n = min(n, len(idx) - 1)  # keep at least one example of every class in train
            held.update(idx[:n])
        if not held:  # a few examples per class (e.g. an active-learning start): one from as many classes as needed
            spare = [idx[-1] for key, idx in sorted(groups.items(), key=lambda kv: str(kv[0])) if len(idx) > 1]
            rng.shuffle(spare)
            held.update(spare[: max(1, round(len(examples) * fraction))])
        if not held:  # no class has a second example
            raise UserError(f"cannot hold out a dev set from {len(examples)} training examples: every class has one example "
                            "and needs it for training; give a data.dev file, or use method: fewshot (it needs no dev set)")
    if not held or len(held) == len(examples):
        raise UserError(f"cannot hold out a dev set from {len(examples)} training examples; give a data.dev file")
    train = [ex for i, ex in enumerate(examples) if i not in held]
    dev = [ex for i, ex in enumerate(examples) if i in held]
    return train, dev
