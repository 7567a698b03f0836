"""`lmforge init`: a complete, commented starter config, with fields inferred from the data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from pydantic import BaseModel

from .config import ProjectConfig
from .errors import UserError

TEXT_FIELDS = ("text", "sentence", "utterance", "query", "question", "content", "review", "document", "sentence1", "text_a")
PAIR_FIELDS = ("text_pair", "sentence2", "text_b", "hypothesis", "second_text")
LABEL_FIELDS = ("label", "labels", "intent", "category", "class", "target", "sentiment", "tag", "topic")


def header_of(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8-sig", newline="") as fh:
        if suffix in (".jsonl", ".json"):
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    return list(obj) if isinstance(obj, dict) else []
            return []
        delimiter = "\t" if suffix in (".tsv", ".tab") else ","
        row = next(csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL), [])
        return [c.strip() for c in row]


def infer_classification_fields(path: Path, text_field: str | None, label_field: str | None) -> tuple[dict, list[str]]:
    """Fields for a classification file, from flags or from the header. Returns (data keys, notes)."""
    if not path.is_file():
        raise UserError(f"--train: file not found: {path}")
    columns = header_of(path)
    lower = {c.lower(): c for c in columns}
    notes, out = [], {}
    for key, flag, given, candidates in (("text_field", "--text-field", text_field, TEXT_FIELDS),
                                         ("label_field", "--label-field", label_field, LABEL_FIELDS)):
        if given:
            out[key] = given
            continue
        found = next((lower[c] for c in candidates if c in lower), None)
        if found is None:
            raise UserError(f"{path}: cannot tell which column is the {key.split('_')[0]} (columns: {', '.join(columns) or 'none'}); "
                            f"give it with {flag} NAME")
        out[key] = found
        notes.append(f"{key.split('_')[0]} column: '{found}' (from the header of {path.name})")
    pair = next((lower[c] for c in PAIR_FIELDS if c in lower), None)
    if pair:
        out["text_pair_field"] = pair
        notes.append(f"text-pair column: '{pair}'")
    return out, notes


def infer_ner_scheme(path: Path) -> tuple[dict, list[str]]:
    from .data.ner_readers import read_ner

    examples, scheme = read_ner(path, scheme="auto")
    docs = len({ex.doc_id for ex in examples})
    note = f"NER tag scheme: {scheme} ({len(examples)} sentences, {docs} documents in {path.name})"
    return {"scheme": scheme}, [note]


def render(cfg: ProjectConfig, command: str) -> str:
    """YAML with every key, each preceded by its one-line description."""
    lines = [f"# {command}", "# Every key is shown with its default; delete what you do not need. Paths are relative to this file.", ""]
    _render_model(cfg, lines, indent="")
    return "\n".join(lines) + "\n"


def _render_model(model: BaseModel, lines: list[str], indent: str) -> None:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append("")
            lines.append(f"{indent}{name}:")
            _render_model(value, lines, indent + "  ")
            continue
        if field.description:
            lines.append(f"{indent}# {field.description}")
        dumped = yaml.safe_dump({name: value}, default_flow_style=True, width=1000, allow_unicode=True).strip()
        lines.append(f"{indent}{dumped[1:-1] if dumped.startswith('{') else dumped}")
