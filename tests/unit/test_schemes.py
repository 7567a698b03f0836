"""Tests for NER scheme detection, validation, conversion to IOB2 and span decoding."""

from __future__ import annotations

import random

import pytest

from lmforge.data.schemes import (
    SCHEMES,
    detect_scheme,
    entity_continues,
    tags_to_spans,
    validate_and_convert,
)
from lmforge.errors import UserError

# One sentence with a single-token entity, a multi-token entity, two adjacent same-type entities
# and an entity at the very end, written in every scheme. All must convert to IOB2_SENTENCE.
IOB2_SENTENCE = ["B-PER", "O", "B-ORG", "I-ORG", "I-ORG", "B-ORG", "I-ORG", "O", "B-LOC", "I-LOC"]
WRITTEN = {
    "iob1": ["I-PER", "O", "I-ORG", "I-ORG", "I-ORG", "B-ORG", "I-ORG", "O", "I-LOC", "I-LOC"],
    "iob2": IOB2_SENTENCE,
    "bioes": ["S-PER", "O", "B-ORG", "I-ORG", "E-ORG", "B-ORG", "E-ORG", "O", "B-LOC", "E-LOC"],
    "bmes": ["S-PER", "O", "B-ORG", "M-ORG", "E-ORG", "B-ORG", "E-ORG", "O", "B-LOC", "E-LOC"],
}
SPANS = [("PER", 0, 1), ("ORG", 2, 5), ("ORG", 5, 7), ("LOC", 8, 10)]


def test_schemes_constant() -> None:
    assert SCHEMES == ("iob1", "iob2", "bioes", "bmes")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_converts_to_iob2(scheme: str) -> None:
    result = validate_and_convert(WRITTEN[scheme], scheme)
    assert result.error_index is None and result.error is None
    assert result.tags == IOB2_SENTENCE
    assert tags_to_spans(result.tags) == SPANS


@pytest.mark.parametrize("scheme", SCHEMES)
def test_detects_each_scheme(scheme: str) -> None:
    assert detect_scheme([WRITTEN[scheme], ["O", "O"]]) == scheme


def test_result_unpacks_as_a_tuple() -> None:
    tags, index, reason = validate_and_convert(["B-X", "I-X"], "iob2")
    assert (tags, index, reason) == (["B-X", "I-X"], None, None)


@pytest.mark.parametrize(
    ("sentences", "expected"),
    [
        ([["O", "O"], []], "iob2"),  # nothing to go on: IOB2
        ([["B-PER", "M-PER", "E-PER"]], "bmes"),
        ([["S-PER", "O"]], "bioes"),
        ([["B-PER", "E-PER"]], "bioes"),  # BMES without M- reads the same as BIOES
        ([["E-PER", "M-PER"]], "bmes"),  # M- wins even over an invalid sequence
        ([["I-PER", "I-PER", "B-PER"]], "iob1"),
        ([["B-PER", "I-PER"], ["O", "B-LOC"]], "iob2"),
        # I- starting entities but also B- after O (Weibo NER): not IOB1, so IOB2 (and invalid).
        ([["O", "I-PER"], ["O", "B-LOC", "I-LOC"]], "iob2"),
        ([["B-PER.NAM", "I-PER.NAM"]], "iob2"),
    ],
)
def test_detect_scheme(sentences: list[list[str]], expected: str) -> None:
    assert detect_scheme(sentences) == expected


@pytest.mark.parametrize(
    ("scheme", "tags", "index", "reason"),
    [
        ("iob2", ["O", "I-PER"], 1, "I-PER cannot follow O in IOB2; did you mean B-PER, or is the file IOB1?"),
        ("iob2", ["I-PER"], 0, "I-PER cannot follow the start of a sentence in IOB2"),
        ("iob2", ["B-LOC", "I-PER"], 1, "I-PER cannot follow B-LOC in IOB2"),
        ("iob2", ["B-PER", "E-PER"], 1, "tag 'E-PER' is not valid in IOB2: expected B-, I- or O"),
        ("iob1", ["O", "B-PER"], 1, "B-PER cannot follow O in IOB1"),
        ("iob1", ["B-PER"], 0, "B-PER cannot follow the start of a sentence in IOB1"),
        ("iob1", ["I-LOC", "B-PER"], 1, "is the file IOB2?"),
        ("bioes", ["B-PER", "O"], 1, "O cannot follow B-PER in BIOES: B-PER must be followed by I-PER or E-PER"),
        ("bioes", ["B-PER", "I-LOC"], 1, "I-LOC cannot follow B-PER in BIOES"),
        ("bioes", ["O", "I-PER"], 1, "I-PER must follow B-PER or I-PER"),
        ("bioes", ["O", "E-PER"], 1, "E-PER cannot follow O in BIOES"),
        ("bioes", ["S-PER", "E-PER"], 1, "E-PER cannot follow S-PER"),
        ("bioes", ["B-PER", "S-PER"], 1, "S-PER cannot follow B-PER"),
        ("bioes", ["B-PER", "B-PER"], 1, "B-PER cannot follow B-PER"),
        ("bioes", ["O", "B-PER"], 1, "B-PER ends the sentence in BIOES: the entity must be closed by E-PER"),
        ("bioes", ["B-PER", "I-PER"], 1, "I-PER ends the sentence"),
        ("bioes", ["B-PER", "M-PER", "E-PER"], 1, "tag 'M-PER' is not valid in BIOES: expected B-, I-, E-, S- or O"),
        ("bmes", ["B-PER", "I-PER", "E-PER"], 1, "tag 'I-PER' is not valid in BMES: expected B-, M-, E-, S- or O"),
        ("bmes", ["X-PER"], 0, "tag 'X-PER' is not valid in BMES: expected B-, M-, E-, S- or O"),
        ("bmes", ["O", "M-PER"], 1, "M-PER cannot follow O in BMES: M-PER must follow B-PER or M-PER"),
        ("bmes", ["B-PER", "M-LOC", "E-LOC"], 1, "M-LOC cannot follow B-PER"),
        ("bmes", ["B-ORG", "M-ORG"], 1, "M-ORG ends the sentence in BMES"),
        ("iob2", ["PER"], 0, "tag 'PER' is not valid in IOB2"),
        ("iob2", ["B-"], 0, "tag 'B-' is not valid in IOB2"),
        ("iob2", ["o"], 0, "tag 'o' is not valid"),
    ],
)
def test_invalid_sequences(scheme: str, tags: list[str], index: int, reason: str) -> None:
    result = validate_and_convert(tags, scheme)
    assert result.error_index == index
    assert result.error is not None and reason in result.error


def test_first_error_only() -> None:
    result = validate_and_convert(["O", "I-A", "O", "I-B"], "iob2")
    assert result.error_index == 1


def test_types_with_dots_and_dashes() -> None:
    tags = ["B-PER.NAM", "I-PER.NAM", "S-GPE-X"]
    assert validate_and_convert(["B-PER.NAM", "I-PER.NAM", "B-GPE-X"], "iob2").error is None
    assert validate_and_convert(tags, "bioes").error is not None  # I- then S-: entity not closed
    assert validate_and_convert(["B-PER.NAM", "E-PER.NAM", "S-GPE-X"], "bioes").tags == [
        "B-PER.NAM",
        "I-PER.NAM",
        "B-GPE-X",
    ]


def test_unknown_scheme() -> None:
    with pytest.raises(UserError, match="unknown NER tag scheme 'bilou'"):
        validate_and_convert(["O"], "bilou")


def test_entity_cut_by_sentence_break() -> None:
    # Resume NER: "... B-ORG M-ORG" <blank line> "M-ORG E-ORG ...".
    assert entity_continues("M-ORG", "M-ORG", "bmes")
    assert entity_continues("B-ORG", "E-ORG", "bmes")
    assert not entity_continues("M-ORG", "M-LOC", "bmes")
    assert not entity_continues("E-ORG", "M-ORG", "bmes")
    assert entity_continues("I-ORG", "I-ORG", "iob2")
    assert not entity_continues("I-ORG", "I-ORG", "iob1")  # nothing to repair in IOB1
    before = validate_and_convert(["O", "B-ORG", "M-ORG"], "bmes", continues_after=True)
    after = validate_and_convert(["M-ORG", "E-ORG", "O"], "bmes", continues_before=True)
    assert before == (["O", "B-ORG", "I-ORG"], None, None)
    assert after == (["B-ORG", "I-ORG", "O"], None, None)
    assert validate_and_convert(["E-ORG", "O"], "bioes", continues_before=True).tags == ["B-ORG", "O"]
    assert validate_and_convert(["I-ORG", "O"], "iob2", continues_before=True).tags == ["B-ORG", "O"]
    # Only the first tag may continue; later errors still count.
    assert validate_and_convert(["E-ORG", "O", "M-ORG", "E-ORG"], "bmes", continues_before=True).error_index == 2
    assert validate_and_convert(["M-ORG", "O"], "bmes", continues_before=True).error_index == 1


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        ([], []),
        (["O", "O"], []),
        (["B-PER"], [("PER", 0, 1)]),
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
        # Tolerant like conlleval: a stray I- starts an entity, a type change ends one.
        (["O", "I-PER", "I-PER"], [("PER", 1, 3)]),
        (["I-PER"], [("PER", 0, 1)]),
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
        (["I-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        (["B-PER", "X", "I-PER"], [("PER", 0, 1), ("PER", 2, 3)]),
        (["B-ORG.NAM", "I-ORG.NAM"], [("ORG.NAM", 0, 2)]),
    ],
)
def test_tags_to_spans(tags: list[str], spans: list[tuple[str, int, int]]) -> None:
    assert tags_to_spans(tags) == spans


def _write(spans: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Encode spans in `scheme` (the reference encoder for the round-trip test)."""
    tags = ["O"] * length
    inside = {"bioes": "I", "bmes": "M"}.get(scheme, "I")
    for entity_type, start, end in spans:
        for position in range(start, end):
            tags[position] = f"{inside}-{entity_type}"
        if scheme == "iob2":
            tags[start] = f"B-{entity_type}"
        elif scheme == "iob1":
            adjacent = start > 0 and tags[start - 1] != "O" and tags[start - 1][2:] == entity_type
            tags[start] = f"B-{entity_type}" if adjacent else f"I-{entity_type}"
        elif end - start == 1:
            tags[start] = f"S-{entity_type}"
        else:
            tags[start], tags[end - 1] = f"B-{entity_type}", f"E-{entity_type}"
    return tags


@pytest.mark.parametrize("scheme", SCHEMES)
def test_random_round_trip(scheme: str) -> None:
    generator = random.Random(13)
    for _ in range(300):
        length = generator.randint(1, 12)
        spans, position = [], 0
        while position < length:
            if generator.random() < 0.5:
                position += 1
                continue
            end = min(length, position + generator.randint(1, 3))
            spans.append((generator.choice("AB"), position, end))
            position = end
        result = validate_and_convert(_write(spans, length, scheme), scheme)
        assert result.error is None
        assert tags_to_spans(result.tags) == spans
        assert result.tags == _write(spans, length, "iob2")


@pytest.mark.parametrize("scheme", ["iob1", "iob2", "bioes", "bmes"])
def test_o_with_a_type_is_invalid(scheme: str) -> None:
    # split_tag("O-PER") gives prefix "O": it used to pass as a plain O, dropping the entity silently.
    result = validate_and_convert(["O", "O-PER"], scheme)
    assert result.error_index == 1
    assert result.error is not None and "tag 'O-PER' is not valid" in result.error and "O takes no type" in result.error
