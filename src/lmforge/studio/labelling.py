"""Labelling queues for the studio's Label page: a suggestion file written by `lmforge suggest`.

Every label goes to a LabelStore beside the file (`<stem>.labels.db`: append-only, leases so that two
people get different items) and, after each one, the labelled records are written atomically to
`<stem>.labelled.jsonl` in the format the readers take, ready for
`lmforge train CONFIG data.train=+<stem>.labelled.jsonl` or `lmforge update NAME --data ...`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..active.labelstore import LabelStore
from ..errors import UserError
from ..files import read_json, write_text_atomic

SUGGEST_KEY = "suggest"
MAX_LABEL_CHARS = 200


@dataclass
class Item:
    key: str  # the record's line number in the queue file
    record: dict
    text: str = ""
    pair: str | None = None
    tokens: list[str] = field(default_factory=list)
    suggested: object = None  # the pre-filled label / labels / tags
    why: str = ""


class FileQueue:
    """A JSONL file of records to label (classification: text + label field; NER: tokens + tags)."""

    @property
    def saved_to(self) -> str:
        return str(self.output)

    @property
    def next_steps(self) -> list[str]:
        return [f"lmforge train CONFIG data.train=+{self.output}", f"lmforge update NAME --data {self.output}"]

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self.id = hashlib.sha256(str(self.path).encode()).hexdigest()[:12]
        self.name = self.path.name
        self.items = self._read()
        if not self.items:
            raise UserError(f"{self.path}: no records to label")
        first = self.items[0].record
        self.ner = "tokens" in first and "tags" in first
        self.text_field, self.pair_field, self.label_field, self.multi_label, run_labels = self._fields(first)
        self.choices = self._choices(run_labels)
        for item in self.items:
            self._fill(item)
        self.order = [item.key for item in self.items]
        self.by_key = {item.key: item for item in self.items}
        self.store = LabelStore(self.path.with_name(self.path.stem + ".labels.db"))
        self.output = self.path.with_name(self.path.stem + ".labelled.jsonl")

    # -- reading -------------------------------------------------------------------------------------
    def _read(self) -> list[Item]:
        if not self.path.is_file():
            raise UserError(f"--label {self.path}: file not found (give a file written by `lmforge suggest`)")
        items = []
        with self.path.open(encoding="utf-8", errors="strict") as fh:
            try:
                for number, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError as err:
                        raise UserError(f"{self.path}:{number}: not a JSON object ({err.msg}); "
                                        "give the file `lmforge suggest` wrote") from None
                    if not isinstance(record, dict):
                        raise UserError(f"{self.path}:{number}: not a JSON object")
                    items.append(Item(str(number), record))
            except UnicodeDecodeError as err:
                raise UserError(f"{self.path}: not UTF-8 ({err.reason} at byte {err.start})") from None
        return items

    def _fields(self, first: dict):
        """(text field, pair field, label field, multi-label, the run's labels) from the run that made the
        suggestions (labels.json and config) when the records name it, else from the records."""
        run = (first.get(SUGGEST_KEY) or {}).get("run") if isinstance(first.get(SUGGEST_KEY), dict) else None
        run_labels: list[str] = []
        text_field, pair_field, label_field, multi = "text", None, "label", False
        if run and (Path(run) / "labels.json").is_file():
            from ..runs import load_run_config

            try:
                labels = read_json(Path(run) / "labels.json")
                cfg = load_run_config(Path(run))
                run_labels = [str(x) for x in labels.get("labels", [])]
                multi = bool(labels.get("multi_label"))
                text_field, pair_field, label_field = cfg.data.text_field, cfg.data.text_pair_field, cfg.data.label_field
            except (UserError, OSError, ValueError):
                run_labels = []
        if self.ner:
            return "tokens", None, "tags", False, run_labels
        if text_field not in first:
            text_field = next((k for k, v in first.items() if isinstance(v, str) and k not in (label_field, SUGGEST_KEY)), text_field)
        if text_field not in first:
            raise UserError(f"{self.path}:{self.items[0].key}: no text field to label (expected {text_field!r})")
        if isinstance(first.get(label_field), list):
            multi = True
        return text_field, pair_field, label_field, multi, run_labels

    def _choices(self, run_labels: list[str]) -> list[str]:
        if self.ner:
            types = {tag[2:] for tag in run_labels if tag[:2] in ("B-", "I-", "S-", "E-")}
            for item in self.items:
                types |= {str(t)[2:] for t in item.record.get("tags") or [] if str(t)[:2] in ("B-", "I-")}
            return sorted(types)
        seen = list(run_labels)
        for item in self.items:
            value = item.record.get(self.label_field)
            for label in (value if isinstance(value, list) else [value]):
                if isinstance(label, str) and label and label not in seen:
                    seen.append(label)
        return seen

    def _fill(self, item: Item) -> None:
        record = item.record
        meta = record.get(SUGGEST_KEY) if isinstance(record.get(SUGGEST_KEY), dict) else {}
        item.why = str(meta.get("why", ""))
        if self.ner:
            item.tokens = [str(t) for t in record.get("tokens") or []]
            tags = [str(t) for t in record.get("tags") or []]
            item.suggested = tags if len(tags) == len(item.tokens) else ["O"] * len(item.tokens)
            item.text = " ".join(item.tokens)
        else:
            item.text = str(record.get(self.text_field, ""))
            item.pair = record.get(self.pair_field) if self.pair_field else None
            item.suggested = record.get(self.label_field)

    # -- labelling -----------------------------------------------------------------------------------
    def next(self, labeller: str) -> Item | None:
        key = self.store.next_item(self.order, labeller)
        return None if key is None else self.by_key[key]

    def item(self, key: str) -> Item | None:
        return self.by_key.get(key)

    def check(self, value) -> object:
        """A submitted label, validated (UserError naming what is wrong)."""
        if self.ner:
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise UserError("tags: give one tag per token")
            return value
        if self.multi_label:
            labels = value if isinstance(value, list) else [value]
            labels = [str(x).strip() for x in labels if str(x).strip()]
            bad = [x for x in labels if len(x) > MAX_LABEL_CHARS]
            if bad:
                raise UserError(f"label: at most {MAX_LABEL_CHARS} characters")
            return labels
        label = str(value or "").strip()
        if not label:
            raise UserError("label: choose a label, or type a new one")
        if len(label) > MAX_LABEL_CHARS or any(ord(c) < 32 for c in label):
            raise UserError(f"label: at most {MAX_LABEL_CHARS} printable characters")
        return label

    def check_tags(self, item: Item, tags: list[str]) -> list[str]:
        """One IOB2 tag a token, of the queue's entity types, valid as a sequence (the readers' rules)."""
        from ..data.schemes import split_tag, validate_and_convert

        if len(tags) != len(item.tokens):
            raise UserError(f"tags: {len(tags)} tags for {len(item.tokens)} tokens")
        unknown = next((t for t in tags if t != "O" and split_tag(t)[1] not in self.choices), None)
        if unknown is not None:
            raise UserError(f"tags: {unknown!r} is not O, B-TYPE or I-TYPE of {', '.join(self.choices) or 'a known type'}")
        checked = validate_and_convert(tags, "iob2")
        if checked.error_index is not None:
            raise UserError(f"tags: token {checked.error_index + 1}: {checked.error}")
        return tags

    def submit(self, key: str, value, labeller: str) -> dict:
        item = self.by_key.get(key)
        if item is None:
            raise UserError("no such item in this queue")
        value = self.check(value)
        if self.ner:
            value = self.check_tags(item, value)
        result = self.store.submit(key, value, labeller)
        self.write_output()
        return result

    def skip(self, key: str, labeller: str) -> None:
        if key in self.by_key:
            self.store.skip(key, labeller)

    def write_output(self) -> Path:
        """The labelled records (latest label each, queue order) as JSONL the readers take, atomically."""
        latest = self.store.latest()
        lines = []
        for key in self.order:
            if key not in latest:
                continue
            record = dict(self.by_key[key].record)
            record[self.label_field] = latest[key]
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        write_text_atomic(self.output, "".join(lines))
        return self.output

    def progress(self) -> tuple[int, int]:
        latest = self.store.latest()
        return sum(1 for key in self.order if key in latest), len(self.order)

    def label_of(self, key: str):
        return self.store.latest().get(key)

    def mine(self, labeller: str) -> list[str]:
        return self.store.mine(labeller)


class FeedbackQueue:
    """The served model's least confident logged predictions (served with --log-texts) that have no
    feedback yet; a label is stored as feedback on the prediction, where `lmforge update NAME
    --from-feedback` picks it up (and in a LabelStore beside the registry, for leases and history)."""

    ner = False
    multi_label = False

    def __init__(self, registry, name: str, below: float = 0.7, limit: int = 500):
        from ..lifecycle.versions import check_name

        self.registry, self.model, self.below, self.limit = registry, check_name(name), below, limit
        self.id = hashlib.sha256(f"registry:{name}".encode()).hexdigest()[:12]
        self.name = f"registry:{name} (confidence < {below:g})"
        version = registry.get(name)  # the production version: UserError when there is none
        self.choices = [str(x) for x in read_json(Path(version.run_dir) / "labels.json").get("labels", [])]
        self.store = LabelStore(Path(registry.root) / "studio-labels.db")
        self.prefix = f"{name}:"
        self._items: dict[str, Item] = {}

    @property
    def saved_to(self) -> str:
        return f"feedback of {self.model} in {self.registry.db_path}"

    @property
    def next_steps(self) -> list[str]:
        return [f"lmforge update {self.model} --from-feedback"]

    def _refresh(self) -> list[str]:
        from ..lifecycle.predlog import unconfident

        rows = unconfident(self.registry.db_path, self.model, self.below, limit=self.limit)
        for row in rows:
            key = str(row["id"])
            self._items[key] = Item(key, row, text=str(row["text"]), suggested=row["label"],
                                    why=f"the served model said {row['label']!r} with confidence {row['confidence']:.2f}")
        return [str(r["id"]) for r in rows]

    def next(self, labeller: str) -> Item | None:
        order = self._refresh()
        key = self.store.next_item([self.prefix + k for k in order], labeller)
        return None if key is None else self._items[key[len(self.prefix):]]

    def item(self, key: str) -> Item | None:
        if key not in self._items:
            self._refresh()
        return self._items.get(key)

    check = FileQueue.check

    def submit(self, key: str, value, labeller: str) -> dict:
        from ..lifecycle.predlog import add_feedback

        if self.item(key) is None:
            raise UserError("no such prediction to label")
        label = self.check(value)
        add_feedback(self.registry.db_path, self.model, key, label)
        return self.store.submit(self.prefix + key, label, labeller)

    def skip(self, key: str, labeller: str) -> None:
        self.store.skip(self.prefix + key, labeller)

    def progress(self) -> tuple[int, int]:
        done = sum(1 for k in self.store.latest() if k.startswith(self.prefix))
        return done, done + len(self._refresh())

    def label_of(self, key: str):
        return self.store.latest().get(self.prefix + key)

    def mine(self, labeller: str) -> list[str]:
        return [k[len(self.prefix):] for k in self.store.mine(labeller) if k.startswith(self.prefix)]
