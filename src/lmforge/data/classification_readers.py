"""Readers for text-classification data: CSV, TSV, JSON Lines, and plain text for predict input.

Every reader returns `TextExample`s whose `source` is ``file:line`` (line numbers as an editor
shows them, header = line 1), and reports every bad row at once through a `ProblemCollector`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.types import TextExample
from lmforge.errors import DataError, ProblemCollector, UserError

CLASSIFICATION_FORMATS = ("csv", "tsv", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def read_utf8(path: str | Path) -> str:
    """The text of a data file; a UTF-8 BOM is dropped.

    Raises UserError for a missing file and DataError naming the line and byte for non-UTF-8
    content, since a wrong encoding is the most common reason a data file "looks fine" but fails.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"data file not found: {path}")
    data = file.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            [
                f"{path}:{line}: is not UTF-8 (byte 0x{data[offset]:02x} at line {line}, "
                f"byte offset {offset}); re-save the file as UTF-8"
            ]
        ) from None


def iter_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its ending); \\n, \\r\\n and \\r all end a line, as in editors."""
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        yield number, line.rstrip("\n")


def resolve_format(path: str | Path, format: str, formats: tuple[str, ...], suffixes: dict[str, str]) -> str:
    """`format` itself when given, else the one `suffixes` maps the file's suffix to."""
    if format != "auto":
        if format not in formats:
            expected = ", ".join(formats)
            raise UserError(f"unknown data.format '{format}' for {path}; expected one of: auto, {expected}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix in suffixes:
        return suffixes[suffix]
    known = ", ".join(
        f"{name} ({', '.join(s for s, f in suffixes.items() if f == name)})" for name in formats
    )
    raise UserError(
        f"cannot tell the format of {path} from its suffix '{suffix}'; formats are: {known}. Set data.format"
    )


def read_classification(
    path: str | Path,
    *,
    format: str = "auto",
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str | None = "label",
    multi_label: bool = False,
    label_delimiter: str | None = None,
    require_labels: bool = True,
    problem_limit: int = 10,
) -> list[TextExample]:
    """Read a classification file (csv, tsv or jsonl) into `TextExample`s.

    Labels: multi-class rows have exactly one label; multi-label rows take a JSON list (jsonl) or a
    string split on `label_delimiter`. With `require_labels=False` (predict input) the label
    column may be absent or empty, and such rows get ``labels=[]``.
    """
    fmt = resolve_format(path, format, CLASSIFICATION_FORMATS, _SUFFIX_FORMATS)
    if require_labels and label_field is None:
        raise UserError(f"{path}: no label field is configured; set data.label_field")
    text = read_utf8(path)
    spec = _FieldSpec(text_field, text_pair_field, label_field, multi_label, label_delimiter, require_labels)
    problems = ProblemCollector(limit=problem_limit)
    if fmt == "jsonl":
        examples = _read_jsonl(path, text, spec, problems)
    else:
        examples = _read_table(path, text, "\t" if fmt == "tsv" else ",", spec, problems)
    problems.raise_if_any()
    if not examples:
        raise DataError([f"{path}: contains no examples"])
    return examples


def read_texts(
    path: str | Path,
    *,
    format: str = "auto",
    text_field: str = "text",
    text_pair_field: str | None = None,
) -> list[TextExample]:
    """Read unlabelled predict input: ``.txt`` is one text per non-empty line; csv, tsv and jsonl
    go through `read_classification` without labels."""
    fmt = resolve_format(
        path, format, ("txt", *CLASSIFICATION_FORMATS), {".txt": "txt", **_SUFFIX_FORMATS}
    )
    if fmt != "txt":
        return read_classification(
            path,
            format=fmt,
            text_field=text_field,
            text_pair_field=text_pair_field,
            label_field=None,
            require_labels=False,
        )
    examples = [
        TextExample(text=line.strip(), source=f"{path}:{number}")
        for number, line in iter_lines(read_utf8(path))
        if line.strip()
    ]
    if not examples:
        raise DataError([f"{path}: contains no examples"])
    return examples


@dataclass(frozen=True)
class _FieldSpec:
    """Which fields to read and how to interpret labels (shared by the csv/tsv and jsonl paths)."""

    text_field: str
    text_pair_field: str | None
    label_field: str | None
    multi_label: bool
    label_delimiter: str | None
    require_labels: bool

    def required(self) -> list[tuple[str, str]]:
        """(field name, config key) pairs that must exist in the file."""
        fields = [(self.text_field, "data.text_field")]
        if self.text_pair_field is not None:
            fields.append((self.text_pair_field, "data.text_pair_field"))
        if self.require_labels and self.label_field is not None:
            fields.append((self.label_field, "data.label_field"))
        return fields

    def split_labels(self, value: str) -> list[str]:
        """A label cell as a list: one label, or several split on the delimiter (multi-label)."""
        value = value.strip()
        if not value:
            return []
        if not self.multi_label or self.label_delimiter is None:
            return [value]
        labels = [part.strip() for part in value.split(self.label_delimiter)]
        # Drop empty parts ("a||b") and repeats: a label either applies or it does not.
        return list(dict.fromkeys(label for label in labels if label))


# ---------------------------------------------------------------------------------------------
# CSV / TSV


def _read_table(
    path: str | Path, text: str, delimiter: str, spec: _FieldSpec, problems: ProblemCollector
) -> list[TextExample]:
    # SST-2 and similar TSVs contain bare quote characters inside sentences, so TSV is read
    # without any quoting; CSV follows RFC 4180 (quoted fields may hold commas and newlines).
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    rows = _numbered_rows(path, reader)
    try:
        header_line, header = next(rows)
    except StopIteration:
        return []
    columns = [name.strip() for name in header]
    index = _column_indexes(path, columns, spec)
    examples = []
    for (start, end), row in rows:
        where = f"{path}:{start}"
        if len(row) != len(columns):
            problems.add(f"{where}: expected {len(columns)} columns, found {len(row)}{_quote_hint(start, end)}")
            continue
        example = _table_example(where, row, index, spec, problems)
        if example is not None:
            examples.append(example)
    return examples


def _numbered_rows(path: str | Path, reader: Any) -> Iterator[tuple[tuple[int, int], list[str]]]:
    """Non-blank rows with their (first, last) physical line numbers.

    A quoted CSV field may span lines, so a row's first line is one past the previous row's last.
    """
    last_line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError([f"{path}:{last_line + 1}: cannot parse the row: {error}"]) from None
        start, last_line = last_line + 1, reader.line_num
        if any(cell.strip() for cell in row):
            yield (start, last_line), row


def _quote_hint(start: int, end: int) -> str:
    if end == start:
        return ""
    return f" (a quoted field starting here runs to line {end}; is a closing quote missing?)"


def _column_indexes(path: str | Path, columns: list[str], spec: _FieldSpec) -> dict[str, int]:
    """Map each configured field to its column, or fail once listing every missing column."""
    missing = [(name, key) for name, key in spec.required() if name not in columns]
    if missing:
        found = ", ".join(columns)
        raise DataError(
            [f"{path}: no column '{name}'; columns are: {found}. Set {key}" for name, key in missing]
        )
    names = [spec.text_field, spec.text_pair_field, spec.label_field]
    return {name: columns.index(name) for name in names if name is not None and name in columns}


def _table_example(
    where: str, row: list[str], index: dict[str, int], spec: _FieldSpec, problems: ProblemCollector
) -> TextExample | None:
    text = row[index[spec.text_field]].strip()
    ok = True
    if not text:
        problems.add(f"{where}: empty text in column '{spec.text_field}'")
        ok = False
    text_pair = None
    if spec.text_pair_field is not None:
        text_pair = row[index[spec.text_pair_field]].strip()
        if not text_pair:
            problems.add(f"{where}: empty text in column '{spec.text_pair_field}'")
            ok = False
    labels: list[str] = []
    if spec.label_field is not None and spec.label_field in index:
        labels = spec.split_labels(row[index[spec.label_field]])
        if not labels and spec.require_labels:
            problems.add(f"{where}: empty label in column '{spec.label_field}'")
            ok = False
    return TextExample(text=text, text_pair=text_pair, labels=labels, source=where) if ok else None


# ---------------------------------------------------------------------------------------------
# JSON Lines


def _read_jsonl(path: str | Path, text: str, spec: _FieldSpec, problems: ProblemCollector) -> list[TextExample]:
    # Parse everything first so that a field missing from every object is reported once; then
    # check rows in line order, parse errors included.
    rows: list[tuple[int, dict[str, Any] | str]] = []  # (line, object or problem)
    for number, line in iter_lines(text):
        if line.strip():
            rows.append((number, _parse_object(f"{path}:{number}", line, first=not rows)))
    objects = [(number, row) for number, row in rows if isinstance(row, dict)]
    if objects:
        _check_fields_exist(path, objects, spec)
    examples = []
    for number, row in rows:
        if isinstance(row, str):
            problems.add(row)
            continue
        example = _json_example(f"{path}:{number}", row, spec, problems)
        if example is not None:
            examples.append(example)
    return examples


def _parse_object(where: str, line: str, *, first: bool) -> dict[str, Any] | str:
    """One JSON Lines line as an object, or the problem with it."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        hint = ""
        if first and line.lstrip().startswith("["):
            hint = "; the file looks like one JSON array, but lmforge reads JSON Lines: one object per line"
        return f"{where}: invalid JSON: {error.msg} (column {error.colno}){hint}"
    if not isinstance(value, dict):
        return f"{where}: expected a JSON object, found {json_type_name(value)}"
    return value


def _check_fields_exist(path: str | Path, objects: list[tuple[int, dict[str, Any]]], spec: _FieldSpec) -> None:
    """A field absent from every object is a configuration mistake: say so once, not per row."""
    missing = [(name, key) for name, key in spec.required() if not any(name in obj for _, obj in objects)]
    if missing:
        found = ", ".join(dict.fromkeys(key for _, obj in objects for key in obj))
        raise DataError(
            [f"{path}: no field '{name}' in any object; fields are: {found}. Set {key}" for name, key in missing]
        )


def json_type_name(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _json_text(where: str, obj: dict[str, Any], field: str, problems: ProblemCollector) -> str | None:
    if field not in obj:
        problems.add(f"{where}: no field '{field}'")
        return None
    value = obj[field]
    if not isinstance(value, str):
        problems.add(f"{where}: field '{field}' must be a string, found {json_type_name(value)}")
        return None
    if not value.strip():
        problems.add(f"{where}: empty text in field '{field}'")
        return None
    return value


def _json_labels(
    where: str, obj: dict[str, Any], spec: _FieldSpec, problems: ProblemCollector
) -> list[str] | None:
    """Labels of one object; None (after reporting) when they are invalid."""
    field = spec.label_field
    if field is None or obj.get(field) is None:
        if spec.require_labels and field is not None:
            problems.add(f"{where}: missing label (field '{field}')")
            return None
        return []
    value = obj[field]
    if isinstance(value, list):
        if not spec.multi_label:
            problems.add(f"{where}: label is a list; set data.multi_label=true for multi-label data")
            return None
        labels = []
        for item in value:
            label = _scalar_label(item)
            if label is None:
                problems.add(f"{where}: labels must be strings or integers, found {json_type_name(item)}")
                return None
            if label:
                labels.append(label)
        # An explicit empty list is a valid multi-label row: no label applies.
        return list(dict.fromkeys(labels))
    label = _scalar_label(value)
    if label is None:
        problems.add(f"{where}: label must be a string or integer, found {json_type_name(value)}")
        return None
    labels = spec.split_labels(label)
    if not labels and spec.require_labels:
        problems.add(f"{where}: empty label (field '{field}')")
        return None
    return labels


def _scalar_label(value: Any) -> str | None:
    """Strings stay, integers become strings (class ids); anything else is not a label."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _json_example(
    where: str, obj: dict[str, Any], spec: _FieldSpec, problems: ProblemCollector
) -> TextExample | None:
    text = _json_text(where, obj, spec.text_field, problems)
    text_pair = None
    pair_ok = True
    if spec.text_pair_field is not None:
        text_pair = _json_text(where, obj, spec.text_pair_field, problems)
        pair_ok = text_pair is not None
    labels = _json_labels(where, obj, spec, problems)
    if text is None or not pair_ok or labels is None:
        return None
    return TextExample(text=text, text_pair=text_pair, labels=labels, source=where)
