"""Malformed data files, and a harness that feeds them to `lmforge init`, `validate` and `train` in
process. Shared by the fuzz tests (tests/unit/test_data_fuzz.py) and the longer soak
(bench/fuzz_files.py), so both exercise the same damage.

A case is a valid file of one kind (classification CSV/TSV/JSONL, NER CoNLL/JSONL, generation JSONL)
with one to three kinds of damage applied, chosen by a seeded `random.Random`: the same seed gives
the same bytes. Every command must exit 0 (the damage was harmless) or 2 (one clear message), never
1 or with a traceback, and a failed `train` must leave no run folder behind.

Provenance: all content is synthetic, generated here from the fixture vocabulary.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

KINDS = ("csv", "tsv", "jsonl", "conll", "ner-jsonl", "sft-jsonl")
TASK = {"csv": "text-classification", "tsv": "text-classification", "jsonl": "text-classification",
        "conll": "token-classification", "ner-jsonl": "token-classification", "sft-jsonl": "generation"}
SUFFIX = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl", "conll": ".txt", "ner-jsonl": ".jsonl", "sft-jsonl": ".jsonl"}
WORDS = "the movie was very good bad great awful plot acting film alice bob paris acme visited works for in".split()
LABELS = ("positive", "negative", "neutral")
SFT_WORDS = "say hi hello there how are you fine thanks what is two plus three four five".split()


# ---------------------------------------------------------------------------------------------
# Valid files


@dataclass
class Doc:
    """A file being built: structured rows first (so damage can target a field), then lines, then bytes."""

    kind: str
    rows: list = field(default_factory=list)  # dicts (JSON kinds), lists of cells (tables), [(word, tag)] (CoNLL)
    raw: dict[int, str] = field(default_factory=dict)  # row index -> its line, written verbatim
    lines: list[str] | None = None
    data: bytes | None = None
    newline: str = "\n"


def valid_doc(rng: random.Random, kind: str, n: int = 24) -> Doc:
    doc = Doc(kind)
    for i in range(n):
        words = rng.sample(WORDS, 4)
        if kind in ("csv", "tsv", "jsonl"):
            label = LABELS[i % 3]
            doc.rows.append({"text": " ".join(words), "label": label} if kind == "jsonl" else [" ".join(words), label])
        elif kind == "conll":
            doc.rows.append([(w, rng.choice(["O", "B-PER", "O"]) if j == 0 else "O") for j, w in enumerate(words)])
        elif kind == "ner-jsonl":
            doc.rows.append({"tokens": words, "tags": ["B-PER" if j == 0 and i % 2 else "O" for j in range(len(words))]})
        else:
            doc.rows.append({"prompt": " ".join(rng.sample(SFT_WORDS, 3)), "completion": " ".join(rng.sample(SFT_WORDS, 3))})
    return doc


def render_lines(doc: Doc) -> list[str]:
    if doc.lines is not None:
        return doc.lines
    lines: list[str] = []
    if doc.kind in ("csv", "tsv"):
        sep = "," if doc.kind == "csv" else "\t"
        lines.append(sep.join(["text", "label"]))
        lines += [doc.raw.get(i, sep.join(_cell(c, sep) for c in row)) for i, row in enumerate(doc.rows)]
    elif doc.kind == "conll":
        lines.append("-DOCSTART- O")
        lines.append("")
        for i, sentence in enumerate(doc.rows):
            lines += doc.raw[i].split("\n") if i in doc.raw else [f"{w} {t}" for w, t in sentence]
            lines.append("")
    else:
        lines += [doc.raw.get(i, json.dumps(row)) for i, row in enumerate(doc.rows)]
    return lines


def _cell(value: str, sep: str) -> str:
    if sep == "," and any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def to_bytes(doc: Doc) -> bytes:
    if doc.data is None:
        doc.data = (doc.newline.join(render_lines(doc)) + doc.newline).encode("utf-8", "surrogatepass")
    return doc.data


# ---------------------------------------------------------------------------------------------
# Damage: each takes (rng, doc) and changes it in place. Row damage first, then line, then byte.

JSON_KINDS = ("jsonl", "ner-jsonl", "sft-jsonl")
TABLE_KINDS = ("csv", "tsv")


def _row(rng: random.Random, doc: Doc) -> int:
    return rng.randrange(len(doc.rows))


def _text_key(doc: Doc) -> str:
    return {"jsonl": "text", "ner-jsonl": "tokens", "sft-jsonl": "prompt"}[doc.kind]


def _set_text(rng: random.Random, doc: Doc, value: str) -> None:
    """Put `value` where a text goes: a text cell, a JSON text, a token."""
    i = _row(rng, doc)
    if doc.kind in TABLE_KINDS:
        doc.rows[i][0] = value
    elif doc.kind == "conll":
        j = rng.randrange(len(doc.rows[i]))
        doc.rows[i][j] = (value, doc.rows[i][j][1])
    elif doc.kind == "ner-jsonl":
        doc.rows[i]["tokens"][rng.randrange(len(doc.rows[i]["tokens"]))] = value
    else:
        doc.rows[i][_text_key(doc)] = value


def _set_label(rng: random.Random, doc: Doc, value) -> None:
    i = _row(rng, doc)
    if doc.kind in TABLE_KINDS:
        doc.rows[i][1] = str(value)
    elif doc.kind == "conll":
        j = rng.randrange(len(doc.rows[i]))
        doc.rows[i][j] = (doc.rows[i][j][0], str(value))
    elif doc.kind == "jsonl":
        doc.rows[i]["label"] = value
    elif doc.kind == "ner-jsonl":
        doc.rows[i]["tags"][rng.randrange(len(doc.rows[i]["tags"]))] = value
    else:
        doc.rows[i]["completion"] = value


def _raw_json(rng: random.Random, doc: Doc, make: Callable[[dict], str]) -> None:
    if doc.kind in JSON_KINDS:
        i = _row(rng, doc)
        doc.raw[i] = make(doc.rows[i])


def _with_value(row: dict, key: str, literal: str) -> str:
    """The row's JSON with `key` set to a raw JSON literal (values json.dumps cannot write)."""
    return json.dumps({**row, key: "@@"}).replace('"@@"', literal, 1)


ROW_DAMAGE: dict[str, Callable[[random.Random, Doc], None]] = {
    "lone-surrogate-text": lambda r, d: _set_text(r, d, "caf\ud800" if d.kind in JSON_KINDS else "caf\u00e9"),
    "lone-surrogate-label": lambda r, d: _set_label(r, d, rng_pick(r, ["x\udfff", "B-\udc00"]) if d.kind in JSON_KINDS else "x"),
    "surrogate-pair": lambda r, d: _set_text(r, d, "smile \U0001F600"),
    "huge-number": lambda r, d: _raw_json(r, d, lambda row: _with_value(row, rng_pick(r, list(row) + ["doc_id"]), "9" * 5000)),
    "deep-nesting": lambda r, d: _raw_json(r, d, lambda row: _with_value(row, rng_pick(r, list(row)), "[" * 100_000 + "]" * 100_000)),
    "duplicate-key": lambda r, d: _raw_json(r, d, lambda row: "{" + f'"{next(iter(row))}": "x", ' + json.dumps(row)[1:]),
    "not-an-object": lambda r, d: _raw_json(r, d, lambda row: rng_pick(r, ["[1, 2]", '"text"', "null", "3", "[{}]"])),
    "json-array-file": lambda r, d: _json_array(d),
    "truncated-line": lambda r, d: _raw_json(r, d, lambda row: json.dumps(row)[: r.randrange(1, len(json.dumps(row)))]),
    "wrong-type": lambda r, d: (_set_label(r, d, rng_pick(r, [1.5, True, None, {}, [1], "", 7])) if d.kind in JSON_KINDS
                                else _set_label(r, d, "")),
    "text-wrong-type": lambda r, d: _raw_json(r, d, lambda row: json.dumps({**row, next(iter(row)): rng_pick(r, [3, None, [], {}, ""])})),
    "missing-field": lambda r, d: _raw_json(r, d, lambda row: json.dumps(dict(list(row.items())[1:]))),
    "nan": lambda r, d: _raw_json(r, d, lambda row: _with_value(row, rng_pick(r, list(row)), rng_pick(r, ["NaN", "Infinity", "-1e999"]))),
    "bad-tag": lambda r, d: _set_label(r, d, rng_pick(r, ["O-PER", "X-FOO", "B-", "b-per", "I-LOC", "E-PER", "M-X", "PER"])),
    "empty-text": lambda r, d: _set_text(r, d, rng_pick(r, ["", " ", "\t"]) if d.kind != "conll" else "x"),
    "control-chars": lambda r, d: _set_text(r, d, rng_pick(r, ["a\x01b", "\x1b[31mred", "a\x7fb", "\u200b", "\u2028x", "\x85", "\ufeffbom"])),
    "unicode-text": lambda r, d: _set_text(r, d, rng_pick(r, ["日本語のテキスト", "مرحبا بالعالم", "Zürich", "🙂🙃", "e\u0301"])),
    "long-text": lambda r, d: _set_text(r, d, "word " * r.choice([30_000, 50_000])),
    "quote-mess": lambda r, d: _set_text(r, d, rng_pick(r, ['"odd start', 'ends "', 'say "hi" now', '"whole"', '""', 'a""b'])),
    "tab-and-newline-in-text": lambda r, d: _set_text(r, d, rng_pick(r, ["a\tb", "two\nlines", "cr\rhere", "a,b"])),
}


def rng_pick(rng: random.Random, options: list):
    return options[rng.randrange(len(options))]


def _json_array(doc: Doc) -> None:
    if doc.kind in JSON_KINDS:
        doc.lines = ["[", ",\n".join(json.dumps(r) for r in doc.rows), "]"]


def _lines(doc: Doc) -> list[str]:
    doc.lines = render_lines(doc)
    return doc.lines


def _insert_line(rng: random.Random, doc: Doc, line: str) -> None:
    lines = _lines(doc)
    lines.insert(rng.randrange(min(1, len(lines)), len(lines) + 1), line)


def _table_line(rng: random.Random, doc: Doc, change: Callable[[list[str], str], list[str]]) -> None:
    if doc.kind in TABLE_KINDS:
        sep = "," if doc.kind == "csv" else "\t"
        lines = _lines(doc)
        if len(lines) > 1:
            i = rng.randrange(1, len(lines))
            lines[i] = sep.join(change(lines[i].split(sep), sep))


LINE_DAMAGE: dict[str, Callable[[random.Random, Doc], None]] = {
    "extra-column": lambda r, d: _table_line(r, d, lambda cells, s: cells + ["extra"]),
    "missing-column": lambda r, d: _table_line(r, d, lambda cells, s: cells[:1]),
    "duplicate-header": lambda r, d: _header(d, rng_pick(r, ["text|label|text", "text|label|label", "text|text"])),
    "no-header-columns": lambda r, d: _header(d, rng_pick(r, ["sentence|category", "", "a", "|"])),
    "header-only": lambda r, d: setattr(d, "lines", _lines(d)[:1]),
    "empty-file": lambda r, d: setattr(d, "lines", []),
    "blank-lines": lambda r, d: [_insert_line(r, d, rng_pick(r, ["", "   ", "\t"])) for _ in range(3)],
    "garbage-line": lambda r, d: _insert_line(r, d, rng_pick(r, ["x", "a b c d e f", '"', "{", "-DOCSTART-", ",,,", "\t\t"])),
    "inconsistent-columns": lambda r, d: _insert_line(r, d, "word NN B-PER") if d.kind == "conll" else None,
    "huge-line": lambda r, d: _insert_line(r, d, "x" * r.choice([140_000, 300_000])),
    "cr-only": lambda r, d: setattr(d, "newline", "\r"),
    "crlf": lambda r, d: setattr(d, "newline", "\r\n"),
    "mixed-line-ends": lambda r, d: setattr(d, "lines", [line + rng_pick(r, ["", "\r"]) for line in _lines(d)]),
    "quoted-newline": lambda r, d: _insert_line(r, d, rng_pick(r, ['"two\nlines",positive', '"tab\there"\tpositive', '"open,negative'])),
    "pandas-tsv": lambda r, d: _insert_line(r, d, '"He said ""hi"""\tpositive') if d.kind == "tsv" else None,
}


def _header(doc: Doc, header: str) -> None:
    if doc.kind in TABLE_KINDS and _lines(doc):
        _lines(doc)[0] = header.replace("|", "," if doc.kind == "csv" else "\t")


def _bytes_op(change: Callable[[random.Random, bytes], bytes]) -> Callable[[random.Random, Doc], None]:
    def apply(rng: random.Random, doc: Doc) -> None:
        doc.data = change(rng, to_bytes(doc))
    return apply


def _recode(data: bytes, encoding: str) -> bytes:
    return data.decode("utf-8", "replace").encode(encoding)


def _insert(rng: random.Random, data: bytes, piece: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + piece + data[at:]


BYTE_DAMAGE: dict[str, Callable[[random.Random, Doc], None]] = {
    "latin1": _bytes_op(lambda r, b: _insert(r, b, rng_pick(r, [b"caf\xe9", b"\xfc", b"\xa0", b"\x93quoted\x94"]))),
    "utf16-bom": _bytes_op(lambda r, b: rng_pick(r, [b"\xff\xfe" + _recode(b, "utf-16-le"), b"\xfe\xff" + _recode(b, "utf-16-be")])),
    "utf16-no-bom": _bytes_op(lambda r, b: _recode(b, rng_pick(r, ["utf-16-le", "utf-16-be"]))),
    "utf32": _bytes_op(lambda r, b: _recode(b, "utf-32")),
    "utf8-bom": _bytes_op(lambda r, b: b"\xef\xbb\xbf" + b),
    "bom-in-middle": _bytes_op(lambda r, b: _insert(r, b, b"\xef\xbb\xbf")),
    "nul-bytes": _bytes_op(lambda r, b: _insert(r, b, b"\x00" * r.randrange(1, 4))),
    "random-bytes": _bytes_op(lambda r, b: _insert(r, b, bytes(r.randrange(256) for _ in range(r.randrange(1, 40))))),
    "binary-file": _bytes_op(lambda r, b: rng_pick(r, [b"PK\x03\x04", b"\x1f\x8b\x08", b""]) + bytes(r.randrange(256) for _ in range(300))),
    "encoded-surrogate": _bytes_op(lambda r, b: _insert(r, b, b"\xed\xa0\x80")),
    "truncated-file": _bytes_op(lambda r, b: b[: r.randrange(len(b) + 1)]),
    "invalid-utf8-sequence": _bytes_op(lambda r, b: _insert(r, b, rng_pick(r, [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xff"]))),
}

DAMAGE = {**ROW_DAMAGE, **LINE_DAMAGE, **BYTE_DAMAGE}
_ONLY = {  # damage that means something for some kinds only (elsewhere it is a no-op)
    **dict.fromkeys(["huge-number", "deep-nesting", "duplicate-key", "not-an-object", "json-array-file", "truncated-line",
                     "text-wrong-type", "missing-field", "nan", "lone-surrogate-text", "lone-surrogate-label"], JSON_KINDS),
    **dict.fromkeys(["extra-column", "missing-column", "duplicate-header", "no-header-columns", "quoted-newline"], TABLE_KINDS),
    "bad-tag": ("conll", "ner-jsonl"),
    "inconsistent-columns": ("conll",),
    "pandas-tsv": ("tsv",),
}
KINDS_OF = {name: _ONLY.get(name, KINDS) for name in DAMAGE}  # damage name -> the kinds it applies to


def malformed_file(rng: random.Random, kind: str, damage: list[str] | None = None) -> tuple[bytes, list[str]]:
    """A damaged file of `kind` and the names of the damage applied (random 1-3 unless given)."""
    doc = valid_doc(rng, kind)
    if damage is None:
        count = rng.choices((1, 2, 3), weights=(5, 3, 2))[0]  # single damage often, so more files get past the reader
        damage = rng.sample(sorted(name for name in DAMAGE if kind in KINDS_OF[name]), count)
    for name in sorted(damage, key=lambda n: (n in LINE_DAMAGE) + 2 * (n in BYTE_DAMAGE)):  # rows, lines, bytes
        DAMAGE[name](rng, doc)
    return to_bytes(doc), damage


# ---------------------------------------------------------------------------------------------
# Running lmforge on a file, in process


@dataclass
class Outcome:
    command: str
    code: int | None  # None: an exception escaped lmforge.cli.main
    stderr: str
    run_folder_left: bool = False

    @property
    def bug(self) -> bool:
        return self.code not in (0, 2) or "Traceback" in self.stderr or self.run_folder_left


@contextlib.contextmanager
def _captured():
    """stdout and stderr as a terminal has them: UTF-8, strict (a lone surrogate cannot be printed)."""
    streams = [io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True) for _ in range(2)]
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = streams
    try:
        yield streams[1]
    finally:
        sys.stdout, sys.stderr = saved


def run_cli(command: str, args: list[str]) -> Outcome:
    from lmforge.cli import main

    with _captured() as err:
        try:
            code = main([command, *args])
        except BaseException as error:  # noqa: BLE001 - anything escaping main is the finding
            code, extra = None, f"Traceback (escaped main): {type(error).__name__}: {error!r}"[:2000]
        else:
            extra = ""
        err.flush()
        text = err.buffer.getvalue().decode("utf-8", "replace") + extra
    return Outcome(command, code, text)


def config_for(folder: Path, kind: str, train: Path, dev: Path, model: Path) -> Path:
    cfg = {"name": "fuzz", "task": TASK[kind], "model": str(model), "output_dir": str(folder / "runs"),
           "data": {"train": str(train), "dev": str(dev)},
           "training": {"batch_size": 4, "tensorboard": False, "precision": "fp32", "save_every_steps": 1000,
                        "log_every_steps": 1}}
    if kind == "sft-jsonl":
        cfg["data"]["max_length"] = 64
    path = folder / "fuzz.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def check_file(folder: Path, kind: str, content: bytes, model: Path, *, train: bool = False) -> list[Outcome]:
    """`init`, `validate` and (with `train`) `train --max-steps 1` on `content` as the training file
    (dev: a valid file of the same kind). `model`: an encoder, or a decoder for sft-jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"train{SUFFIX[kind]}"
    path.write_bytes(content)
    dev = folder / f"dev{SUFFIX[kind]}"
    dev.write_bytes(to_bytes(valid_doc(random.Random(0), kind, n=9)))
    outcomes = [run_cli("init", ["--task", TASK[kind], "--model", str(model), "--train", str(path),
                                 "-o", str(folder / "init.yaml"), "--force"])]
    config = config_for(folder, kind, path, dev, model)
    outcomes.append(run_cli("validate", [str(config)]))
    if train:
        outcome = run_cli("train", [str(config), "--max-steps", "1"])
        runs = folder / "runs"
        outcome.run_folder_left = outcome.code != 0 and runs.exists() and any(runs.iterdir())
        outcomes.append(outcome)
    return outcomes


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"exit 0": 0, "exit 2": 0, "exit 1 (bug)": 0, "other exit or escaped exception (bug)": 0,
              "traceback seen (bug)": 0, "run folder left (bug)": 0}
    for o in outcomes:
        key = {0: "exit 0", 2: "exit 2", 1: "exit 1 (bug)"}.get(o.code, "other exit or escaped exception (bug)")
        counts[key] += 1
        counts["traceback seen (bug)"] += "Traceback" in o.stderr
        counts["run folder left (bug)"] += o.run_folder_left
    return counts
