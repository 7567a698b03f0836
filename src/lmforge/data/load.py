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
    """Read one labelled file the way the config says. Returns (examples, scheme or None)."""
    d = cfg.data
    if cfg.task == "generation":
        from .generation_readers import read_generation

        if d.format not in ("auto", "jsonl"):
            raise UserError(f"data.format: {d.format} is not a generation format; generation data is jsonl")
        examples = read_generation(path, prompt_field=d.prompt_field, completion_field=d.completion_field,
                                   messages_field=d.messages_field, require_completion=require_labels)
        return examples, None
    if cfg.task == "token-classification":
        from .ner_readers import read_ner

        if d.format in ("csv", "tsv"):
            raise UserError(f"data.format: {d.format} is not a NER format; use conll (column files) or jsonl")
        return read_ner(path, format=d.format, scheme=scheme or d.scheme)
    from .classification_readers import read_classification

    if d.format == "conll":
        raise UserError("data.format: conll is a NER format; use csv, tsv or jsonl for text-classification")
    examples = read_classification(
        path, format=d.format, text_field=d.text_field, text_pair_field=d.text_pair_field,
        label_field=d.label_field, multi_label=d.multi_label, label_delimiter=d.label_delimiter,
        require_labels=require_labels,
    )
    return examples, None


def load_splits(cfg: ProjectConfig, base: Path) -> Splits:
    train, scheme = read_split(cfg, cfg.resolve_path(cfg.data.train, base))
    test = None
    if cfg.data.test:
        test, _ = read_split(cfg, cfg.resolve_path(cfg.data.test, base), scheme=scheme)
    if cfg.data.dev:
        dev, _ = read_split(cfg, cfg.resolve_path(cfg.data.dev, base), scheme=scheme)
        return Splits(train, dev, test, False, scheme)
    train, dev = holdout(train, cfg.data.dev_fraction, cfg.training.seed, by_document=cfg.task == "token-classification")
    return Splits(train, dev, test, True, scheme)


def holdout(examples: list, fraction: float, seed: int, by_document: bool = False) -> tuple[list, list]:
    """Seeded hold-out. Classification: stratified by (first) label, so rare classes keep at least one
    training example. NER: whole documents are held out, so no document is split across train/dev."""
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
    if not held or len(held) == len(examples):
        raise UserError(f"cannot hold out a dev set from {len(examples)} training examples; give a data.dev file")
    train = [ex for i, ex in enumerate(examples) if i not in held]
    dev = [ex for i, ex in enumerate(examples) if i in held]
    return train, dev
