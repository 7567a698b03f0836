"""Readers for text-classification data: CSV, TSV, JSON Lines, and plain text for predict input.

Every reader returns `TextExample`s whose `source` is ``file:line`` (line numbers as an editor
shows them, header = line 1), and reports every bad row at once through a `ProblemCollector`;
`iter_texts` streams predict input and stops at the first bad row. Files are read as checked UTF-8
(`text_files`), CSV/TSV in the dialect they were written in (`tables`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.tables import column_indexes, dialect_of, table_rows
from lmforge.data.text_files import (
    has_surrogate,
    json_type_name,
    parse_json_line,
    resolve_format,
    shown,
    stripped_lines,
    surrogate_problem,
)
from lmforge.data.types import TextExample
from lmforge.errors import DataError, ProblemCollector, UserError

__all__ = ["read_classification", "read_texts", "iter_texts"]

CLASSIFICATION_FORMATS = ("csv", "tsv", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_TEXT_SUFFIXES = {".txt": "txt", **_SUFFIX_FORMATS}


class _FirstProblem(ProblemCollector):
    """A collector that raises at the first problem: streaming readers fail where the bad line is."""

    def add(self, message: str) -> None:
        raise DataError([message])


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

    Labels: multi-class rows have exactly one label; multi-label rows take a JSON list (a list in
    jsonl; in csv/tsv a cell holding JSON text such as ``["a", "b"]``) or a string split on
    `label_delimiter`. With `require_labels=False` (predict input) the label
    column may be absent or empty, and such rows get ``labels=[]``.
    """
    fmt = resolve_format(path, format, CLASSIFICATION_FORMATS, _SUFFIX_FORMATS)
    if require_labels and label_field is None:
        raise UserError(f"{path}: no label field is configured; set data.label_field")
    spec = _FieldSpec(text_field, text_pair_field, label_field, multi_label, label_delimiter, require_labels)
    problems = ProblemCollector(limit=problem_limit)
    examples = list(_examples(path, fmt, spec, problems, streaming=False))
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
    go through `read_classification` without labels (every bad row reported at once). The same
    rows as `iter_texts`, in memory."""
    fmt = resolve_format(path, format, ("txt", *CLASSIFICATION_FORMATS), _TEXT_SUFFIXES)
    if fmt != "txt":
        return read_classification(
            path,
            format=fmt,
            text_field=text_field,
            text_pair_field=text_pair_field,
            label_field=None,
            require_labels=False,
        )
    return list(iter_texts(path, format="txt"))


def iter_texts(
    path: str | Path,
    *,
    format: str = "auto",
    text_field: str = "text",
    text_pair_field: str | None = None,
) -> Iterator[TextExample]:
    """The rows `read_texts` returns, one at a time, in bounded memory (the longest line, not the
    file), with the same checks and ``file:line`` messages.

    Streaming changes when problems surface: the first bad line raises DataError when it is
    reached, after the rows before it have been yielded (`read_texts` reports every bad row at
    once, before any). A TSV file is read twice: once to tell its quoting dialect, once for rows.
    """
    fmt = resolve_format(path, format, ("txt", *CLASSIFICATION_FORMATS), _TEXT_SUFFIXES)
    if fmt == "txt":
        rows = (
            TextExample(text=line.strip(), source=f"{path}:{number}")
            for number, line in stripped_lines(path)
            if line.strip()
        )
    else:
        spec = _FieldSpec(text_field, text_pair_field, None, False, None, False)
        rows = _examples(path, fmt, spec, _FirstProblem(), streaming=True)
    empty = True
    for example in rows:
        empty = False
        yield example
    if empty:
        raise DataError([f"{path}: contains no examples"])


def _examples(
    path: str | Path, fmt: str, spec: _FieldSpec, problems: ProblemCollector, *, streaming: bool
) -> Iterator[TextExample]:
    if fmt == "jsonl":
        return _jsonl_examples(path, spec, problems, streaming=streaming)
    return _table_examples(path, "\t" if fmt == "tsv" else ",", spec, problems)


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
        """A label string as a list: one label, or several split on the delimiter (multi-label)."""
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


def _table_examples(
    path: str | Path, delimiter: str, spec: _FieldSpec, problems: ProblemCollector
) -> Iterator[TextExample]:
    dialect = dialect_of(path, delimiter)
    rows = table_rows(path, dialect)
    try:
        (header_line, _), header = next(rows)
    except StopIteration:
        return
    columns = [name.strip() for name in header]
    optional = [spec.label_field] if spec.label_field is not None and not spec.require_labels else []
    index = column_indexes(path, header_line, columns, spec.required(),
                           optional=[(name, "data.label_field") for name in optional])
    for (start, end), row in rows:
        where = f"{path}:{start}"
        if len(row) != len(columns):
            problems.add(f"{where}: expected {len(columns)} columns, found {len(row)}{_quote_hint(start, end)}")
            continue
        example = _table_example(where, row, index, spec, problems)
        if example is not None:
            yield example


def _quote_hint(start: int, end: int) -> str:
    if end == start:
        return ""
    return f" (a quoted field starting here runs to line {end}; is a closing quote missing?)"


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
    labels: list[str] | None = []
    if spec.label_field is not None and spec.label_field in index:
        cell = row[index[spec.label_field]].strip()
        labels = _cell_labels(where, cell, spec, problems)
        # An explicit empty JSON list is a valid multi-label row (no label applies); an empty cell is not.
        if labels == [] and spec.require_labels and not _json_list_cell(cell, spec):
            problems.add(f"{where}: empty label in column '{spec.label_field}'")
            ok = False
    if not ok or labels is None:
        return None
    return TextExample(text=text, text_pair=text_pair, labels=labels, source=where)


def _json_list_cell(cell: str, spec: _FieldSpec) -> bool:
    return spec.multi_label and cell.startswith("[") and cell.endswith("]")


def _cell_labels(where: str, cell: str, spec: _FieldSpec, problems: ProblemCollector) -> list[str] | None:
    """The labels of a (stripped) csv/tsv cell; multi-label cells may hold a JSON list (``["a", "b"]``)."""
    if not _json_list_cell(cell, spec):
        return spec.split_labels(cell)
    items, problem = parse_json_line(where, cell)
    if problem is not None:
        problems.add(f"{problem.replace('not valid JSON', 'the label cell starts with [ but is not a JSON list')}"
                     " (write lists as JSON, e.g. [\"a\", \"b\"])")
        return None
    return _list_labels(where, items, problems)


# ---------------------------------------------------------------------------------------------
# JSON Lines


def _jsonl_examples(
    path: str | Path, spec: _FieldSpec, problems: ProblemCollector, *, streaming: bool
) -> Iterator[TextExample]:
    rows: Iterator[tuple[int, dict[str, Any] | str]] = _jsonl_rows(path)  # (line, object or problem)
    if not streaming:
        # Parse everything first so that a field missing from every object is reported once; then
        # check rows in line order, parse errors included.
        parsed = list(rows)
        objects = [(number, row) for number, row in parsed if isinstance(row, dict)]
        if objects:
            _check_fields_exist(path, objects, spec)
        rows = iter(parsed)
    first = True
    for number, row in rows:
        if isinstance(row, str):
            problems.add(row)
            continue
        if first and streaming:  # the first object stands for the rest: a missing field is a config mistake
            _check_fields_exist(path, [(number, row)], spec)
        first = False
        example = _json_example(f"{path}:{number}", row, spec, problems)
        if example is not None:
            yield example


def _jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    seen = False
    for number, line in stripped_lines(path):
        if line.strip():
            yield number, _parse_object(f"{path}:{number}", line, first=not seen)
            seen = True


def _parse_object(where: str, line: str, *, first: bool) -> dict[str, Any] | str:
    """One JSON Lines line as an object, or the problem with it."""
    value, problem = parse_json_line(where, line)
    if problem is not None:
        if first and line.lstrip().startswith("[") and "not valid JSON" in problem:
            problem += "; the file looks like one JSON array, but lmforge reads JSON Lines: one object per line"
        return problem
    if not isinstance(value, dict):
        return f"{where}: expected a JSON object, found {json_type_name(value)}"
    return value


def _check_fields_exist(path: str | Path, objects: list[tuple[int, dict[str, Any]]], spec: _FieldSpec) -> None:
    """A field absent from every object is a configuration mistake: say so once, not per row."""
    missing = [(name, key) for name, key in spec.required() if not any(name in obj for _, obj in objects)]
    if missing:
        found = ", ".join(shown(key) for key in dict.fromkeys(key for _, obj in objects for key in obj)) or "none"
        where = f"{path}: no field '{{}}' in any object" if len(objects) > 1 else f"{path}:{objects[0][0]}: no field '{{}}'"
        raise DataError(
            [f"{where.format(name)}; fields are: {found}. Set {key}" for name, key in missing]
        )


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
    problem = surrogate_problem(where, value, f"field '{field}'")
    if problem is not None:
        problems.add(problem)
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
        return _list_labels(where, value, problems)
    label = _scalar_label(value)
    if label is None:
        problems.add(f"{where}: label must be a string or integer, found {json_type_name(value)}")
        return None
    if has_surrogate(label):
        problems.add(surrogate_problem(where, label, f"the label (field '{field}')"))
        return None
    labels = spec.split_labels(label)
    if not labels and spec.require_labels:
        problems.add(f"{where}: empty label (field '{field}')")
        return None
    return labels


def _list_labels(where: str, items: list[Any], problems: ProblemCollector) -> list[str] | None:
    """A JSON list of labels (strings or integer ids); None (after reporting) when one is not."""
    labels = []
    for item in items:
        label = _scalar_label(item)
        if label is None:
            problems.add(f"{where}: labels must be strings or integers, found {json_type_name(item)}")
            return None
        if has_surrogate(label):
            problems.add(surrogate_problem(where, label, "a label"))
            return None
        if label:
            labels.append(label)
    # An explicit empty list is a valid multi-label row: no label applies.
    return list(dict.fromkeys(labels))


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
