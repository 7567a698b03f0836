"""Readers for NER data: CoNLL-style column files and JSON Lines.

Both return `TokenExample`s with tags converted to IOB2, plus the scheme the file was read in
(detected over the whole file unless given). Every problem names ``file:line`` of the token (or
JSON line) at fault, and all problems are reported at once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.text_files import resolve_format
from lmforge.data.schemes import (SCHEMES, detect_scheme, entity_continues, has_valid_prefixes, repair_to_iob2,
                                  validate_and_convert)
from lmforge.data.text_files import check_file, json_type_name, parse_json_line, shown, stripped_lines, surrogate_problem
from lmforge.data.types import TokenExample
from lmforge.errors import DataError, ProblemCollector, UserError

NER_FORMATS = ("conll", "jsonl")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl"}
_DOCSTART = "-DOCSTART-"
_TOKEN_KEYS = ("tokens", "words")
_TAG_KEYS = ("tags", "ner_tags")

logger = logging.getLogger(__name__)


@dataclass
class _Sentence:
    """A sentence as read, before scheme conversion; `lines` locates each token for messages."""

    words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    doc_key: Any = None  # any hashable; equal keys = same document
    starts_document: bool = False  # first sentence after a document marker


POSITION_CHOICES = ("auto", "strip", "keep")
# Weibo NER style: every token is one character followed by its position in its segmented word
# ("科0", "学1"; "\ufffd\ufffd0" for an unrecoverable character)
_CHAR_POSITION = re.compile(r"^.\ufffd?(\d{1,2})$", re.DOTALL)


def read_ner(
    path: str | Path, *, format: str = "auto", scheme: str = "auto", problem_limit: int = 10,
    lenient: bool = False, positions: str = "auto",
) -> tuple[list[TokenExample], str]:
    """Read an NER file and return ``(examples with IOB2 tags, scheme of the file)``.

    `format`: ``auto`` (``.jsonl``/``.json`` are JSON Lines, anything else CoNLL columns),
    ``conll`` or ``jsonl``. `scheme`: ``auto`` or one of `SCHEMES`. `lenient`: repair invalid tag
    sequences the way conlleval reads them (counted and reported) instead of refusing the file.
    `positions`: tokens written as a character plus its word position (Weibo NER: "科0"):
    ``auto`` strips the digits when every token of a CoNLL file looks like that, ``strip``
    always, ``keep`` never.
    """
    if format == "auto":
        # Column files carry all kinds of suffixes (.train, .bmes, .txt, none): default to CoNLL.
        fmt = _SUFFIX_FORMATS.get(Path(path).suffix.lower(), "conll")
    else:
        fmt = resolve_format(path, format, NER_FORMATS, _SUFFIX_FORMATS)
    if scheme != "auto" and scheme not in SCHEMES:
        raise UserError(f"unknown data.scheme '{scheme}'; expected one of: auto, {', '.join(SCHEMES)}")
    check_file(path)
    problems = ProblemCollector(limit=problem_limit)
    if positions not in POSITION_CHOICES:
        raise UserError(f"unknown data.segment_positions '{positions}'; expected one of: {', '.join(POSITION_CHOICES)}")
    if fmt == "jsonl":
        sentences = _read_jsonl(path, problems)
    else:
        sentences = _read_conll(path, problems)
    problems.raise_if_any()
    if not sentences:
        raise DataError([f"{path}: contains no sentences"])
    if fmt == "conll" and positions != "keep":
        _strip_positions(path, sentences, positions == "strip")
    used = detect_scheme([s.tags for s in sentences]) if scheme == "auto" else scheme
    examples = _convert(path, sentences, used, scheme == "auto", problems, lenient)
    problems.raise_if_any()
    return examples, used


def _strip_positions(path: str | Path, sentences: list[_Sentence], always: bool) -> None:
    """Weibo-style tokens -> their characters (said on stderr, with the switch to keep them)."""
    tokens = [w for s in sentences for w in s.words]
    matches = [_CHAR_POSITION.match(w) for w in tokens]
    if not always:
        if not all(matches) or sum(m.group(1) == "0" for m in matches) < 0.2 * len(tokens):
            return
        logger.warning("%s: every token is a character followed by its word position ('%s'); reading the characters "
                       "only (set data.segment_positions=keep to read the tokens as written)", path, shown(tokens[0]))
    for sentence in sentences:
        sentence.words = [w[0] if _CHAR_POSITION.match(w) else w for w in sentence.words]


def _convert(
    path: str | Path, sentences: list[_Sentence], scheme: str, detected: bool, problems: ProblemCollector,
    lenient: bool = False,
) -> list[TokenExample]:
    """Validate and convert every sentence; number documents 0, 1, ... in order of appearance."""
    # Saying how the scheme was chosen matters: a wrong guess looks like broken data.
    how = f" [scheme {scheme}, detected; set data.scheme to override]" if detected else ""
    doc_ids: dict[Any, int] = {}
    examples = []
    splits = _entity_splits(sentences, scheme)
    if splits:
        where = ", ".join(f"{path}:{sentences[i + 1].lines[0]}" for i in splits[:3])
        logger.warning(
            "%s: %d entities are cut in two by a sentence break (at %s%s); each part is read as an entity",
            path, len(splits), where, ", ..." if len(splits) > 3 else "",
        )
    split_set = set(splits)
    repairs, repaired_at = 0, []
    for index, sentence in enumerate(sentences):
        conversion = validate_and_convert(
            sentence.tags,
            scheme,
            continues_before=index - 1 in split_set,
            continues_after=index in split_set,
        )
        if conversion.error_index is not None and lenient and has_valid_prefixes(sentence.tags, scheme):
            tags, count = repair_to_iob2(sentence.tags, scheme)
            repairs += count
            repaired_at.append(f"{path}:{sentence.lines[conversion.error_index]}")
            conversion = conversion._replace(tags=tags, error_index=None, error=None)
        if conversion.error_index is not None:
            line = sentence.lines[conversion.error_index]
            word = sentence.words[conversion.error_index]
            fixable = not lenient and has_valid_prefixes(sentence.tags, scheme)
            hint = "" if not fixable else " (or set data.lenient_tags=true to repair such sequences as conlleval reads them)"
            problems.add(f"{path}:{line}: token '{shown(word)}': {shown(conversion.error, 300)}{how}{hint}")
            continue
        doc_id = doc_ids.setdefault(sentence.doc_key, len(doc_ids))
        examples.append(
            TokenExample(
                words=sentence.words,
                tags=conversion.tags,
                doc_id=doc_id,
                source=f"{path}:{sentence.lines[0]}",
            )
        )
    if repaired_at:
        logger.warning("%s: lenient tags: %d invalid tag sequence(s) repaired in %d sentence(s) as conlleval reads them "
                       "(first at %s)", path, repairs, len(repaired_at), ", ".join(repaired_at[:3]))
    return examples


def _entity_splits(sentences: list[_Sentence], scheme: str) -> list[int]:
    """Indexes i where the break between sentences i and i+1 (same document) cuts an entity."""
    return [
        index
        for index, (before, after) in enumerate(zip(sentences, sentences[1:]))
        if not after.starts_document and entity_continues(before.tags[-1], after.tags[0], scheme)
    ]


# ---------------------------------------------------------------------------------------------
# CoNLL columns


def _read_conll(path: str | Path, problems: ProblemCollector) -> list[_Sentence]:
    """Token per line (token first, tag last), blank line between sentences, ``-DOCSTART-``
    lines between documents. Without any ``-DOCSTART-`` each sentence is its own document."""
    sentences: list[_Sentence] = []
    current = _Sentence()
    document = 0
    document_used = False  # consecutive -DOCSTART- lines do not create empty documents
    has_docstart = False
    new_document = False  # the next sentence is the first of a document
    width: tuple[int, int] | None = None  # (column count, line that set it)

    def finish() -> None:
        nonlocal current, document_used, new_document
        if current.words:
            current.doc_key = document
            current.starts_document, new_document = new_document, False
            sentences.append(current)
            document_used = True
        current = _Sentence()

    for number, line in stripped_lines(path):
        columns = line.split()
        if not columns:
            finish()
            continue
        if columns[0] == _DOCSTART:
            finish()
            has_docstart, new_document = True, True
            if document_used:
                document, document_used = document + 1, False
            continue
        if len(columns) < 2:
            problems.add(
                f"{path}:{number}: expected a token and a tag separated by spaces or tabs, "
                f"found 1 column: '{shown(line.strip())}'"
            )
            continue
        if width is None:
            width = (len(columns), number)
        elif len(columns) != width[0]:
            expected, first = width
            problems.add(f"{path}:{number}: expected {expected} columns like line {first}, found {len(columns)}")
            continue
        current.words.append(columns[0])
        current.tags.append(columns[-1])
        current.lines.append(number)
    finish()
    if not has_docstart:
        for index, sentence in enumerate(sentences):
            sentence.doc_key = index
    return sentences


# ---------------------------------------------------------------------------------------------
# JSON Lines


def _read_jsonl(path: str | Path, problems: ProblemCollector) -> list[_Sentence]:
    """One object per line: ``tokens``/``words``, ``tags``/``ner_tags`` (strings), optional
    ``doc_id``. Lines without a doc_id are documents of their own."""
    sentences = []
    for number, line in stripped_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        obj, problem = parse_json_line(where, line)
        if problem is not None:
            problems.add(problem)
            continue
        if not isinstance(obj, dict):
            problems.add(f"{where}: expected a JSON object, found {json_type_name(obj)}")
            continue
        sentence = _json_sentence(where, number, obj, problems)
        if sentence is not None:
            explicit = sentence.doc_key[0] == "doc"
            sentence.starts_document = explicit and (not sentences or sentences[-1].doc_key != sentence.doc_key)
            sentences.append(sentence)
    return sentences


def _json_list(
    where: str, obj: dict[str, Any], keys: tuple[str, ...], what: str, problems: ProblemCollector
) -> list[str] | None:
    """The first of `keys` present in `obj`, checked to be a list of non-empty strings."""
    key = next((k for k in keys if k in obj), None)
    if key is None:
        found = ", ".join(shown(k) for k in obj) or "none"
        problems.add(f"{where}: no field {' or '.join(repr(k) for k in keys)} for the {what}; fields are: {found}")
        return None
    value = obj[key]
    if not isinstance(value, list):
        problems.add(f"{where}: field '{key}' must be a list of strings, found {json_type_name(value)}")
        return None
    for position, item in enumerate(value):
        if not isinstance(item, str):
            # HF datasets store ner_tags as class ids; the names live elsewhere, so ask for them.
            hint = ""
            if isinstance(item, int):
                hint = " (integer tag ids need their label names: write the tags as strings)"
            found = json_type_name(item)
            problems.add(f"{where}: field '{key}' item {position} must be a string, found {found}{hint}")
            return None
        if not item.strip():
            problems.add(f"{where}: field '{key}' item {position} is empty")
            return None
        problem = surrogate_problem(where, item, f"field '{key}' item {position}")
        if problem is not None:
            problems.add(problem)
            return None
    return value


def _json_sentence(where: str, number: int, obj: dict[str, Any], problems: ProblemCollector) -> _Sentence | None:
    words = _json_list(where, obj, _TOKEN_KEYS, "tokens", problems)
    tags = _json_list(where, obj, _TAG_KEYS, "tags", problems)
    if words is None or tags is None:
        return None
    if not words:
        problems.add(f"{where}: the sentence has no tokens")
        return None
    if len(words) != len(tags):
        problems.add(f"{where}: {len(words)} tokens but {len(tags)} tags")
        return None
    doc_id = obj.get("doc_id")
    if isinstance(doc_id, bool) or (doc_id is not None and not isinstance(doc_id, (str, int))):
        problems.add(f"{where}: doc_id must be a string or integer, found {json_type_name(doc_id)}")
        return None
    doc_key = ("doc", doc_id) if doc_id is not None else ("line", number)
    return _Sentence(words=words, tags=tags, lines=[number] * len(words), doc_key=doc_key)
