"""What the header and first rows of a training file say: text, pair and label columns, whether
labels are lists, the NER tag scheme (`lmforge init` writes it into a starter config).

Only the first rows are read (up to `SAMPLE_ROWS`), through the same checked readers as training,
so a file that is not UTF-8, not JSON Lines or not a table fails here with the same ``file:line``
message `lmforge validate` would give.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tables import column_indexes, dialect_of, table_rows
from .text_files import check_file, has_surrogate, parse_json_line, shown, stripped_lines
from ..errors import DataError, UserError

TEXT_FIELDS = ("text", "sentence", "utterance", "query", "question", "content", "review", "document", "text_a")
# Two-text columns, in order of preference: (first text, second text).
PAIR_FIELDS = (("question1", "question2"), ("sentence1", "sentence2"), ("premise", "hypothesis"), ("text", "text_pair"),
               ("text_a", "text_b"), ("query", "passage"), ("question", "passage"), ("question", "sentence"),
               ("query", "document"), ("text1", "text2"), ("first_text", "second_text"))
LABEL_FIELDS = ("label", "labels", "intent", "category", "class", "target", "sentiment", "tag", "tags", "topic",
                "is_duplicate", "gold_label")
LABEL_DELIMITERS = ("|", ";", ",")
SAMPLE_ROWS = 1000  # rows of the training file read to infer columns and label kind

@dataclass
class _Sample:
    """The columns (or JSON keys) of a training file and its first rows, as column -> value."""

    columns: list[str]
    header_line: int
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, row)
    kind: str = "column"  # "column" (csv/tsv) or "field" (jsonl)


def sample_of(path: Path, limit: int = SAMPLE_ROWS) -> _Sample:
    """Header and first rows of a csv/tsv/jsonl file. Raises DataError naming ``file:line`` for a
    file that cannot be read as one."""
    check_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _jsonl_sample(path, limit)
    if suffix not in (".csv", ".tsv", ".tab"):
        raise UserError(f"--train {path}: cannot tell the format from the suffix '{suffix}'; "
                        "text-classification reads .csv, .tsv (.tab) and .jsonl (.json)")
    rows = table_rows(path, dialect_of(path, "\t" if suffix in (".tsv", ".tab") else ","))
    try:
        (header_line, _), header = next(rows)
    except StopIteration:
        raise DataError([f"{path}: contains no header (the file is empty)"]) from None
    columns = [c.strip() for c in header]
    sample = _Sample(columns, header_line)
    for (line, _), row in rows:
        if len(row) == len(columns):  # rows of the wrong width: validate reports them
            sample.rows.append((line, dict(zip(columns, row))))
        if len(sample.rows) >= limit:
            break
    return sample


def _jsonl_sample(path: Path, limit: int) -> _Sample:
    sample = _Sample([], 0, kind="field")
    for number, line in stripped_lines(path):
        if not line.strip():
            continue
        value, problem = parse_json_line(f"{path}:{number}", line)
        if problem is None and not isinstance(value, dict):
            problem = f"{path}:{number}: expected a JSON object (JSON Lines: one object per line)"
        if problem is not None:
            raise DataError([problem])
        sample.header_line = sample.header_line or number
        sample.rows.append((number, value))
        sample.columns.extend(k for k in value if k not in sample.columns)
        if len(sample.rows) >= limit:
            break
    if not sample.rows:
        raise DataError([f"{path}: contains no examples"])
    return sample


def infer_classification_fields(path: Path, text_field: str | None = None, label_field: str | None = None,
                                text_pair_field: str | None = None,
                                multi_label: bool | None = None) -> tuple[dict, list[str]]:
    """Fields for a classification file, from flags or from its first rows. Returns (data keys, notes)."""
    sample = sample_of(path)
    notes: list[str] = []
    text, pair, how = _text_columns(path, sample, text_field, text_pair_field)
    label = label_field or _find(sample.columns, LABEL_FIELDS, exclude=(text, pair))
    if label is None:
        raise UserError(f"{path}: cannot tell which {sample.kind} is the label ({sample.kind}s: "
                        f"{_listing(sample.columns)}); give it with --label-field NAME")
    given = [(text, "--text-field"), (label, "--label-field")] + ([(pair, "--text-pair-field")] if pair else [])
    if sample.kind == "column":
        column_indexes(path, sample.header_line, sample.columns, given)  # missing or repeated: one error
    else:
        _check_keys(path, sample, given)
    out: dict[str, Any] = {"text_field": text, "label_field": label}
    if how:
        notes.append(f"{how} (from the {sample.kind}s of {path.name})")
    if label_field is None:
        notes.append(f"label {sample.kind}: '{label}'")
    if pair:
        out["text_pair_field"] = pair
    labels, label_notes = infer_label_kind(path, sample, label, multi_label)
    out.update(labels)
    return out, notes + label_notes


def _text_columns(path: Path, sample: _Sample, text: str | None, pair: str | None) -> tuple[str, str | None, str]:
    """(text column, pair column or None, a note on what was inferred or '')."""
    present = set(sample.columns)
    if text is not None:
        if pair is None:
            pair = next((second for first, second in PAIR_FIELDS if first == text and second in present), None)
            if pair is not None:
                return text, pair, f"sentence pairs: '{pair}' is the second text of '{text}'"
        return text, pair, ""
    if pair is None:
        found = next(((a, b) for a, b in PAIR_FIELDS if a in present and b in present), None)
        if found is not None:
            return found[0], found[1], f"sentence pairs: text {sample.kind} '{found[0]}', second text '{found[1]}'"
    text = _find(sample.columns, TEXT_FIELDS, exclude=(pair,))
    if text is None:
        raise UserError(f"{path}: cannot tell which {sample.kind} is the text ({sample.kind}s: {_listing(sample.columns)}); "
                        "give it with --text-field NAME")
    return text, pair, f"text {sample.kind}: '{text}'"


def _find(columns: list[str], candidates: tuple[str, ...], exclude: tuple[str | None, ...] = ()) -> str | None:
    lower = {c.lower(): c for c in reversed(columns) if c not in exclude}
    return next((lower[c] for c in candidates if c in lower), None)


def _listing(columns: list[str]) -> str:
    return ", ".join(shown(c) for c in columns) or "none"


def _check_keys(path: Path, sample: _Sample, given: list[tuple[str, str]]) -> None:
    problems = [f"{path}: no field '{shown(name)}' in the first {len(sample.rows)} objects; fields are: "
                f"{_listing(sample.columns)}. Set {flag}" for name, flag in given if name not in sample.columns]
    problems += [f"{flag} '{shown(name)}': not valid Unicode (an unpaired surrogate)" for name, flag in given
                 if has_surrogate(name)]
    if problems:
        raise DataError(problems)


def infer_label_kind(path: Path, sample: _Sample, label: str, multi_label: bool | None) -> tuple[dict, list[str]]:
    """multi_label / label_delimiter from the label values of the first rows, unless `multi_label`
    is given (--multi-label / --single-label). Returns (data keys, notes)."""
    values = [(line, row[label]) for line, row in sample.rows if row.get(label) not in (None, "")]
    lists = [line for line, v in values if isinstance(v, list) or (isinstance(v, str) and _looks_like_list(v))]
    strings = [v.strip() for _, v in values if isinstance(v, str) and not _looks_like_list(v)]
    n = len(values)
    shares = {d: sum(d in v for v in strings) for d in LABEL_DELIMITERS}
    delimiter = max(LABEL_DELIMITERS, key=lambda d: shares[d]) if strings else None
    delimiter = delimiter if delimiter is not None and shares[delimiter] else None
    where = f"the first {n} labels of {path.name}"
    if multi_label is False:
        if lists:
            raise UserError(f"{path}:{lists[0]}: --single-label, but the label {sample.kind} '{label}' holds lists "
                            f"({len(lists)} of {where}); drop --single-label")
        return {}, []
    if multi_label is None:
        if lists:
            return {"multi_label": True}, [f"multi-label: {len(lists)} of {where} are lists"]
        if delimiter is None or not _separates_labels(strings, delimiter):
            distinct = len(set(strings))
            return {}, [f"single-label: one label per row ({distinct} distinct in {where}; "
                        "--multi-label if rows can carry several)"]
        return ({"multi_label": True, "label_delimiter": delimiter},
                [f"multi-label: '{delimiter}' separates labels in {shares[delimiter]} of {where} "
                 "(--single-label if it is part of the label names)"])
    if delimiter is None:
        what = "JSON lists" if lists else "one label per cell"
        return {"multi_label": True}, [f"multi-label (--multi-label): {what}; no delimiter found in {where}"]
    return ({"multi_label": True, "label_delimiter": delimiter},
            [f"multi-label (--multi-label): '{delimiter}' separates labels in {shares[delimiter]} of {where}"])


def _separates_labels(values: list[str], delimiter: str) -> bool:
    """Whether `delimiter` joins several labels: it is in most values, or the parts it splits
    mostly occur as labels on their own too ("pos|strong" next to "pos")."""
    joined = [v for v in values if delimiter in v]
    if len(joined) * 2 > len(values):
        return True
    parts = {p.strip() for v in joined for p in v.split(delimiter) if p.strip()}
    alone = {v for v in values if delimiter not in v}
    return bool(parts) and len(parts & alone) * 2 >= len(parts)


def _looks_like_list(value: str) -> bool:
    value = value.strip()
    if not (value.startswith("[") and value.endswith("]")):
        return False
    parsed, problem = parse_json_line("", value)
    return problem is None and isinstance(parsed, list)


def infer_ner_scheme(path: Path) -> tuple[dict, list[str]]:
    from ..errors import DataError
    from .ner_readers import read_ner

    extra: dict = {}
    notes = []
    try:
        examples, scheme = read_ner(path, scheme="auto")
    except DataError as strict_error:
        try:  # invalid tag sequences only (Weibo NER has I-X after O): read leniently, and say so
            examples, scheme = read_ner(path, scheme="auto", lenient=True)
        except DataError:
            raise strict_error from None
        extra["lenient_tags"] = True
        where = strict_error.problems[0].split(": token")[0]
        notes.append(f"lenient_tags: true: {path.name} has invalid tag sequences (first at {where}); they are repaired "
                     "as conlleval reads them and counted at every read (set it to false to see each one)")
    docs = len({ex.doc_id for ex in examples})
    notes.insert(0, f"NER tag scheme: {scheme} ({len(examples)} sentences, {docs} documents in {path.name})")
    return {"scheme": scheme, **extra}, notes
