"""CSV and TSV rows, in the dialect the file was written in.

CSV follows RFC 4180 (fields quoted with ``"`` may hold commas, quotes doubled as ``""`` and line
breaks), read strictly: a quote in the wrong place is an error, not a silently joined field.

TSV comes in two dialects that disagree only about ``"``:

- quote-free TSV (GLUE's SST-2, ChnSentiCorp, ``cut``/``paste`` output): a ``"`` is an ordinary
  character anywhere, fields never hold tabs or line breaks;
- quoted TSV, as Python's ``csv`` module and pandas ``to_csv(sep="\\t")`` write it: a field holding
  a tab, a line break or a ``"`` is wrapped in quotes, inner quotes doubled (``"He said ""hi"", twice"``).

Which one a file is follows from its first field that starts with ``"`` and reads differently in
the two: a field only quoted TSV explains (a tab or line break inside the quotes, doubled quotes,
a quoted header) makes the file quoted; a quote that quoted TSV rejects (``"odd start``, ``"a" b``)
makes it quote-free. Until then both readings give the same rows, so the choice never changes text.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.text_files import FIELD_LIMIT, raise_csv_field_limit, shown, text_lines
from lmforge.errors import DataError


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    quoted: bool
    why: str = ""  # for TSV: the line that decided, for error messages

    @property
    def name(self) -> str:
        if self.delimiter == ",":
            return "CSV"
        return "quoted TSV (csv/pandas style)" if self.quoted else "quote-free TSV"


def dialect_of(path: str | Path, delimiter: str) -> Dialect:
    """How to read `path`: CSV is always quoted; TSV as its first telling quote says (see module)."""
    if delimiter != "\t":
        return Dialect(delimiter, True)
    quoted, line = _tsv_evidence(path)
    if line is None:
        return Dialect("\t", False)
    why = (f"line {line} holds a quoted field the way csv/pandas write TSV" if quoted
           else f"line {line} holds a '\"' that quoted TSV does not allow")
    return Dialect("\t", quoted, why)


def table_rows(path: str | Path, dialect: Dialect) -> Iterator[tuple[tuple[int, int], list[str]]]:
    """Non-blank rows (the header first) with their first and last line numbers; a quoted field
    may span lines. Raises DataError at a row csv cannot parse."""
    raise_csv_field_limit()
    quoting = csv.QUOTE_MINIMAL if dialect.quoted else csv.QUOTE_NONE
    lines = (line for _, line in text_lines(path))
    reader = csv.reader(lines, delimiter=dialect.delimiter, quoting=quoting, strict=True)
    last_line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError([_parse_problem(path, last_line + 1, reader.line_num, error, dialect)]) from None
        start, last_line = last_line + 1, reader.line_num
        if any(cell.strip() for cell in row):
            yield (start, last_line), row


def _parse_problem(path: str | Path, start: int, end: int, error: csv.Error, dialect: Dialect) -> str:
    message = str(error)
    if "field larger than field limit" in message:
        if not dialect.quoted:
            return f"{path}:{start}: a field is longer than {FIELD_LIMIT:,} characters; is this a data row?"
        return (f"{path}:{start}: a field runs over {FIELD_LIMIT:,} characters (to line {end}); "
                "is a closing quote missing?")
    why = f" (read as {dialect.name}: {dialect.why})" if dialect.why else ""
    if "unexpected end of data" in message:
        return (f"{path}:{start}: a quoted field starting here is never closed (it runs to the end of the file, "
                f"line {end}){why}; is a closing quote missing?")
    return f"{path}:{end}: cannot parse the row: {message}{why}; quote the field and double the quotes inside it"


def column_indexes(path: str | Path, line: int, columns: list[str], required: list[tuple[str, str]],
                   optional: list[tuple[str, str]] = ()) -> dict[str, int]:
    """Map each (column, config key) to its position, or raise one DataError listing every
    required column that is missing and every column read that appears more than once (which of
    two same-named columns is meant cannot be known, so neither is guessed). Columns that are not
    read may repeat."""
    problems = []
    found = ", ".join(shown(c) for c in columns)
    wanted = [*required, *(pair for pair in optional if pair[0] in columns)]
    for name, key in wanted:
        count = columns.count(name)
        if count == 0:
            problems.append(f"{path}: no column '{shown(name)}'; columns are: {found}. Set {key}")
        elif count > 1:
            where = ", ".join(str(i + 1) for i, c in enumerate(columns) if c == name)
            problems.append(f"{path}:{line}: column '{shown(name)}' appears {count} times in the header "
                            f"(columns {where}); rename or remove all but one")
    if problems:
        raise DataError(list(dict.fromkeys(problems)))
    return {name: columns.index(name) for name, _ in wanted}


def _tsv_evidence(path: str | Path) -> tuple[bool, int | None]:
    """(quoted, line) of the first row that tells the TSV dialect apart; (False, None) if none does."""
    raise_csv_field_limit()
    lines = text_lines(path)
    expected: int | None = None  # columns of the header, counted without quoting
    for number, line in lines:
        if not line.strip():
            continue
        header = expected is None
        if header:
            expected = line.count("\t") + 1
        if '"' not in line:
            continue  # no quote: both dialects read the same row
        fits: list[bool] = []  # per physical line of the row: right column count without quoting?

        def row_lines(first: str = line) -> Iterator[str]:
            fits.append(first.count("\t") + 1 == expected)
            yield first
            for _, more in lines:  # a quoted line break continues the row on the next lines
                fits.append(more.count("\t") + 1 == expected)
                yield more

        try:
            row = next(csv.reader(row_lines(), delimiter="\t", strict=True))
        except csv.Error:
            return False, number
        literal = line.rstrip("\r\n").split("\t")
        if len(fits) == 1 and row == literal:
            continue
        if len(row) != expected:
            continue  # neither reading fits this row; the reader reports it
        doubled = len(fits) == 1 and len(row) == len(literal) and any(
            raw.startswith('"') and '"' in cell for raw, cell in zip(literal, row))
        if header or not all(fits) or doubled:
            return True, number
    return False, None
