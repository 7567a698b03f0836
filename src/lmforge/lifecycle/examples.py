"""Labelled classification examples as the registry keeps them: JSON Lines of
{"text", "text_pair"?, "label"} (label: a string, or a list for multi-label models), plus the
seeded, label-balanced sampling that picks replay examples, and the word statistics monitoring
compares (length in words, out-of-vocabulary rate)."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from ..data.classification_readers import read_classification
from ..data.types import TextExample
from ..files import sha256_file, write_text_atomic

_WORD = re.compile(r"\w+", re.UNICODE)


def write_examples(path: Path, examples: Iterable[TextExample], multi_label: bool = False) -> int:
    """Write examples atomically; returns how many."""
    lines = []
    for ex in examples:
        row: dict = {"text": ex.text}
        if ex.text_pair is not None:
            row["text_pair"] = ex.text_pair
        row["label"] = list(ex.labels) if multi_label else ex.labels[0]
        lines.append(json.dumps(row, ensure_ascii=False))
    write_text_atomic(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def read_examples(path: Path, *, multi_label: bool = False, pairs: bool | None = None) -> list[TextExample]:
    """Read a file written by `write_examples` (errors name file:line)."""
    path = Path(path)
    if pairs is None:
        first = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()), "{}")
        pairs = "text_pair" in json.loads(first)
    return read_classification(path, format="jsonl", text_field="text", text_pair_field="text_pair" if pairs else None,
                               label_field="label", multi_label=multi_label)


def balanced_sample(examples: list[TextExample], size: int, seed: int) -> list[TextExample]:
    """Up to `size` examples, as evenly spread over the (first) labels as the data allows: labels take
    turns, each giving one example of its own in a seeded random order, so every label is represented
    before any label gets a second example."""
    if size >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    groups: dict[str, list[TextExample]] = defaultdict(list)
    for ex in examples:
        groups[ex.labels[0] if ex.labels else ""].append(ex)
    queues = []
    for label in sorted(groups):
        items = groups[label][:]
        rng.shuffle(items)
        queues.append(items)
    chosen: list[TextExample] = []
    depth = 0
    while len(chosen) < size:
        round_items = [q[depth] for q in queues if depth < len(q)]
        rng.shuffle(round_items)
        chosen.extend(round_items[: size - len(chosen)])
        depth += 1
    return chosen


def words(text: str) -> list[str]:
    """Lower-cased word tokens (runs of letters/digits) used for length and vocabulary statistics."""
    return _WORD.findall(text.lower())


def oov_rate(tokens: list[str], vocabulary: set[str] | frozenset[str]) -> float:
    """Fraction of `tokens` not in `vocabulary` (0 for an empty text)."""
    if not tokens:
        return 0.0
    return sum(1 for w in tokens if w not in vocabulary) / len(tokens)


def vocabulary(examples: Iterable[TextExample]) -> set[str]:
    vocab: set[str] = set()
    for ex in examples:
        vocab.update(words(ex.text))
        if ex.text_pair:
            vocab.update(words(ex.text_pair))
    return vocab


def file_fingerprint(path: Path) -> dict:
    """sha256 and size of a data file (what the registry records about the data a version saw)."""
    digest, size = sha256_file(path)
    return {"path": str(path), "sha256": digest, "bytes": size}
