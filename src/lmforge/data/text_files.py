"""Reading data files as text, safely, for every reader.

A data file is UTF-8 (a UTF-8 byte-order mark is dropped). It is read line by line in bounded
memory (the longest line, not the file), and anything that is not UTF-8 text — UTF-16/32, Latin-1,
a spreadsheet or archive, NUL bytes — stops with one problem naming ``file:line``, the byte, and how
to convert the file. JSON lines are parsed with every way the standard parser can fail turned into
a ``file:line`` problem (bad syntax, numbers over the interpreter's digit limit, deep nesting,
duplicate keys), and strings are checked for unpaired surrogates (``"\\ud800"`` escapes), which are
not text and would crash the tokenizer or a UTF-8 write later.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import DataError, UserError

CHUNK_BYTES = 1 << 20
# csv's default field limit (131,072 characters) rejects long but legitimate documents; 16 Mi
# characters still stops a runaway quoted field before it eats the whole file.
FIELD_LIMIT = 1 << 24
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "UTF-32 LE", "UTF-32LE"),
    (codecs.BOM_UTF32_BE, "UTF-32 BE", "UTF-32BE"),
    (codecs.BOM_UTF16_LE, "UTF-16 LE", "UTF-16LE"),
    (codecs.BOM_UTF16_BE, "UTF-16 BE", "UTF-16BE"),
)
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx/.ods spreadsheet or a .zip?): export it as CSV (UTF-8) or unzip it"),
    (b"\x1f\x8b", "gzip-compressed: decompress it first (gunzip)"),
    (b"\xfd7zXZ\x00", "xz-compressed: decompress it first (unxz)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office file: export it as CSV (UTF-8)"),
)


def raise_csv_field_limit() -> None:
    """Let csv read fields up to FIELD_LIMIT characters (only ever raises the process-wide limit)."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)


def shown(value: str, limit: int = 60) -> str:
    """A user's value made safe to print inside a message: clipped, control characters and
    unpaired surrogates written as escapes."""
    clipped = value if len(value) <= limit else value[:limit] + "..."
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), clipped)


# ---------------------------------------------------------------------------------------------
# Lines of a file


def check_file(path: str | Path) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"data file not found: {path}" if not file.exists() else f"{path}: not a file")
    return file


def raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of a file, split at \\n, \\r\\n and \\r with the endings kept, read
    in chunks. A UTF-8 BOM is dropped; anything that is clearly not UTF-8 text raises."""
    file = check_file(path)
    with file.open("rb") as fh:
        first = True
        offset = 0
        pieces: list[bytes] = []
        while True:
            chunk = fh.read(CHUNK_BYTES)
            if first:
                first = False
                _check_start(path, chunk)
                if chunk.startswith(codecs.BOM_UTF8):
                    chunk, offset = chunk[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
            if not chunk:
                break
            if b"\n" not in chunk and b"\r" not in chunk:
                pieces.append(chunk)  # a long line: join once its end arrives
                continue
            lines = (b"".join(pieces) + chunk).splitlines(keepends=True)
            pieces = []
            # The last piece may be incomplete, or a \r whose \n is in the next chunk.
            if not lines[-1].endswith(b"\n"):
                pieces.append(lines.pop())
            for line in lines:
                yield offset, line
                offset += len(line)
        if pieces:
            yield offset, b"".join(pieces)


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line with its ending) of a UTF-8 file, as csv's ``newline=""`` reading sees
    them; a line that is not UTF-8 or holds a NUL byte raises DataError naming it."""
    for number, (offset, raw) in enumerate(raw_lines(path), start=1):
        if b"\x00" in raw:
            at = raw.index(b"\x00")
            raise DataError([f"{path}:{number}: contains a NUL byte (byte offset {offset + at}): not a text file; "
                             "if it is UTF-16 or UTF-32, convert it: iconv -f UTF-16 -t UTF-8 FILE > NEW_FILE"])
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError([_not_utf8(path, number, offset + error.start, raw[error.start:error.start + 4])]) from None


def stripped_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its ending); \\n, \\r\\n and \\r all end a line, as in editors."""
    for number, line in text_lines(path):
        yield number, line.rstrip("\r\n")


def read_utf8(path: str | Path) -> str:
    """The whole text of a data file (see `text_lines` for the checks)."""
    return "".join(line for _, line in text_lines(path))


def _not_utf8(path: str | Path, line: int, offset: int, bad: bytes) -> str:
    byte = bad[0]  # never ASCII: every ASCII byte is valid UTF-8
    source = "latin1"
    if byte == 0xED and len(bad) > 1 and 0xA0 <= bad[1] <= 0xBF:
        what = ", a UTF-16 surrogate written as UTF-8 by some Java/JavaScript tools"
    elif byte >= 0xA0:
        what = f", '{bytes([byte]).decode('latin-1')}' if the file is Latin-1"
    elif byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D):  # the bytes Windows-1252 leaves undefined
        what, source = f", '{bytes([byte]).decode('cp1252')}' if the file is Windows-1252", "cp1252"
    else:
        what = ""
    name = {"latin1": "Latin-1", "cp1252": "Windows-1252"}[source]
    return (f"{path}:{line}: is not UTF-8 (byte 0x{byte:02x} at byte offset {offset}{what}); lmforge reads UTF-8: "
            f"convert the file, e.g. from {name}: iconv -f {source} -t utf-8 FILE > NEW_FILE (or re-save it as UTF-8)")


def _check_start(path: str | Path, head: bytes) -> None:
    """Recognise files that are not UTF-8 text by their first bytes."""
    for bom, name, iconv in _BOMS:
        if head.startswith(bom):
            raise DataError([f"{path}:1: is {name} text (it starts with a {name} byte-order mark); lmforge reads "
                             f"UTF-8: convert it with iconv -f {iconv} -t UTF-8 FILE > NEW_FILE"])
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise DataError([f"{path}: is {what}"])
    sample = head[:4096]
    if len(sample) >= 4 and sample.count(0) * 4 >= len(sample):
        odd = sample[1::2].count(0)
        even = sample[0::2].count(0)
        order = "LE" if odd > even else "BE"
        raise DataError([f"{path}:1: looks like UTF-16 {order} without a byte-order mark (every second byte is 0); "
                         f"lmforge reads UTF-8: convert it with iconv -f UTF-16{order} -t UTF-8 FILE > NEW_FILE"])


# ---------------------------------------------------------------------------------------------
# JSON


class _DuplicateKey(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(duplicate)
    return obj


def parse_json_line(where: str, line: str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, problem)`` naming `where` for anything the line cannot be
    read as: invalid JSON, a key given twice, a number over the digit limit, deep nesting."""
    try:
        return json.loads(line, object_pairs_hook=_pairs), None
    except json.JSONDecodeError as error:
        return None, f"{where}: not valid JSON: {error.msg} (column {error.colno})"
    except _DuplicateKey as error:
        return None, f"{where}: key '{shown(str(error))}' appears twice in one object (which one is meant?); keep one"
    except RecursionError:
        return None, (f"{where}: the JSON is nested too deeply to read (more than about {sys.getrecursionlimit():,} "
                      "levels of [ or {); is the line corrupt?")
    except ValueError as error:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        if "digits" in str(error):
            return None, (f"{where}: a number has more than {sys.get_int_max_str_digits():,} digits, too many to read; "
                          "write it as a string (in quotes) if it is an id")
        return None, f"{where}: cannot read the JSON: {error}"


def surrogate_problem(where: str, value: str, what: str) -> str | None:
    """A problem when `value` holds an unpaired surrogate (a ``"\\ud800"`` escape without its
    other half): such a string is not text and cannot be tokenized or written as UTF-8."""
    match = _SURROGATE.search(value)
    if match is None:
        return None
    code = ord(match.group())
    return (f"{where}: {what} holds an unpaired surrogate escape \\u{code:04x} (character {match.start() + 1}), "
            "which is not valid Unicode; write the character itself, or both halves of a surrogate pair")


def has_surrogate(value: str) -> bool:
    return _SURROGATE.search(value) is not None


def json_type_name(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


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
