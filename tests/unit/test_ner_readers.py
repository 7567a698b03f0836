"""Tests for the NER readers (CoNLL columns and JSON Lines), including the real benchmark files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lmforge.data.ner_readers import read_ner
from lmforge.data.schemes import tags_to_spans
from lmforge.data.types import TokenExample
from lmforge.errors import DataError, UserError

from conftest import SHARED, needs_shared, write




CONLL_IOB1 = """\
-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

Paris NNP I-NP I-LOC
Berlin NNP I-NP B-LOC
"""


# ---------------------------------------------------------------------------------------------
# CoNLL columns


def test_conll_documents_and_iob1_conversion(tmp_path: Path) -> None:
    path = write(tmp_path, "eng.train", CONLL_IOB1)
    examples, scheme = read_ner(path)
    assert scheme == "iob1"
    assert examples == [
        TokenExample(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 0, f"{path}:3"),
        TokenExample(["Peter", "Blackburn"], ["B-PER", "I-PER"], 0, f"{path}:7"),
        TokenExample(["Paris", "Berlin"], ["B-LOC", "B-LOC"], 1, f"{path}:12"),
    ]


def test_conll_without_docstart_gives_each_sentence_a_document(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "a B-X\nb I-X\n\n\n\nc O\n\nd O\n")
    examples, scheme = read_ner(path)
    assert scheme == "iob2"
    assert [e.doc_id for e in examples] == [0, 1, 2]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:6", f"{path}:8"]


def test_conll_tabs_spaces_crlf_and_bom(tmp_path: Path) -> None:
    content = "\ufeff科0\tB-PER.NAM\r\n学1  \t I-PER.NAM\r\n\r\n好 O\r\n"
    examples, _ = read_ner(write(tmp_path, "weibo.train", content.encode("utf-8")))
    assert [e.words for e in examples] == [["科0", "学1"], ["好"]]
    assert examples[0].tags == ["B-PER.NAM", "I-PER.NAM"]


def test_bmes_and_bioes_conversion(tmp_path: Path) -> None:
    bmes = write(tmp_path, "train.char.bmes", "高 B-NAME\n勇 E-NAME\n， O\n中 B-ORG\n国 M-ORG\n行 E-ORG\n汉 S-RACE\n")
    (example,), scheme = read_ner(bmes)
    assert scheme == "bmes"
    assert example.tags == ["B-NAME", "I-NAME", "O", "B-ORG", "I-ORG", "I-ORG", "B-RACE"]
    bioes = write(tmp_path, "train.bioes", "a S-X\nb B-Y\nc I-Y\nd E-Y\n")
    (example,), scheme = read_ner(bioes)
    assert (scheme, example.tags) == ("bioes", ["B-X", "B-Y", "I-Y", "I-Y"])


def test_explicit_scheme(tmp_path: Path) -> None:
    # The file is valid IOB2; forcing IOB1 makes its leading B- invalid.
    path = write(tmp_path, "a.txt", "a B-X\nb O\n")
    examples, scheme = read_ner(path, scheme="iob2")
    assert scheme == "iob2" and examples[0].tags == ["B-X", "O"]
    with pytest.raises(DataError) as excinfo:
        read_ner(path, scheme="iob1")
    assert excinfo.value.problems == [
        f"{path}:1: token 'a': B-X cannot follow the start of a sentence in IOB1 (B- only starts an entity "
        "right after another X entity); is the file IOB2? (or set data.lenient_tags=true to repair such sequences "
        "as conlleval reads them)"
    ]


def test_invalid_tag_names_file_line_tag_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "a B-PER\nb O\nc I-PER\n\nd B-LOC\ne I-LOC\n")
    with pytest.raises(DataError) as excinfo:
        read_ner(path)
    assert excinfo.value.problems == [
        f"{path}:3: token 'c': I-PER cannot follow O in IOB2; did you mean B-PER, or is the file IOB1? "
        "[scheme iob2, detected; set data.scheme to override] (or set data.lenient_tags=true to repair such "
        "sequences as conlleval reads them)"
    ]


def test_unknown_prefix(tmp_path: Path) -> None:
    path = write(tmp_path, "train.bmes", "a B-PER\nb M-PER\nc X-PER\n")
    with pytest.raises(DataError, match=r"train.bmes:3: token 'c': tag 'X-PER' is not valid in BMES: expected B-, M-, E-, S- or O"):
        read_ner(path)


def test_unclosed_bmes_entity(tmp_path: Path) -> None:
    path = write(tmp_path, "train.bmes", "a B-PER\nb M-PER\n\nc O\n")
    with pytest.raises(DataError, match=r"train.bmes:2: token 'b': M-PER ends the sentence in BMES"):
        read_ner(path)


def test_entity_cut_by_sentence_break_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Resume NER splits sentences at "。" even inside organisation names.
    path = write(tmp_path, "train.char.bmes", "俄 B-ORG\n斯 M-ORG\n。 M-ORG\n\n彼 M-ORG\n院 E-ORG\n任 O\n")
    with caplog.at_level(logging.WARNING):
        examples, scheme = read_ner(path)
    assert scheme == "bmes"
    assert [e.tags for e in examples] == [["B-ORG", "I-ORG", "I-ORG"], ["B-ORG", "I-ORG", "O"]]
    assert f"1 entities are cut in two by a sentence break (at {path}:5)" in caplog.text


def test_no_repair_across_documents(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", "-DOCSTART- O\n\na B-X\nb I-X\n\n-DOCSTART- O\n\nc I-X\nd B-Y\n")
    with pytest.raises(DataError, match=r"a.txt:8: token 'c': I-X cannot follow the start of a sentence in IOB2"):
        read_ner(path)


def test_column_count_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "-DOCSTART- -X- O O\n\nEU NNP I-NP B-ORG\nrejects VBZ O\n\nx\n")
    with pytest.raises(DataError) as excinfo:
        read_ner(path)
    assert excinfo.value.problems == [
        f"{path}:4: expected 4 columns like line 3, found 3",
        f"{path}:6: expected a token and a tag separated by spaces or tabs, found 1 column: 'x'",
    ]


@pytest.mark.parametrize("content", ["", "\n\n", "-DOCSTART- -X- O O\n\n"])
def test_no_sentences(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "train.txt", content)
    with pytest.raises(DataError, match=f"{path}: contains no sentences"):
        read_ner(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", b"a O\n\nb\xff O\n")
    with pytest.raises(DataError, match=r"train.txt:3: is not UTF-8 \(byte 0xff at byte offset 6, 'ÿ' if the file is Latin-1\)"):
        read_ner(path)


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data file not found"):
        read_ner(tmp_path / "missing.txt")
    path = write(tmp_path, "a.txt", "a O\n")
    with pytest.raises(UserError, match="unknown data.scheme 'bilou'; expected one of: auto, iob1, iob2, bioes, bmes"):
        read_ner(path, scheme="bilou")
    with pytest.raises(UserError, match="unknown data.format 'csv'"):
        read_ner(path, format="csv")


# ---------------------------------------------------------------------------------------------
# JSON Lines


def test_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train.jsonl",
        '{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"], "doc_id": "d1"}\n'
        "\n"
        '{"words": ["German"], "ner_tags": ["B-MISC"], "doc_id": "d1"}\n'
        '{"tokens": ["x"], "tags": ["O"]}\n'
        '{"tokens": ["y"], "tags": ["O"], "doc_id": 7}\n',
    )
    examples, scheme = read_ner(path)
    assert scheme == "iob2"
    assert [(e.words, e.tags, e.doc_id, e.source) for e in examples] == [
        (["EU", "rejects"], ["B-ORG", "O"], 0, f"{path}:1"),
        (["German"], ["B-MISC"], 0, f"{path}:3"),
        (["x"], ["O"], 1, f"{path}:4"),
        (["y"], ["O"], 2, f"{path}:5"),
    ]


def test_jsonl_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train.jsonl",
        "\n".join(
            [
                '{"tokens": ["a"], "tags": ["O"]}',
                '{"tokens": ["a", "b"], "tags": ["O"]}',
                '{"tokens": ["a"], "ner_tags": [3]}',
                '{"text": "a b"}',
                '{"tokens": "a b", "tags": ["O"]}',
                '{"tokens": ["a"], "tags": ["O"]',
                '["a"]',
                '{"tokens": [], "tags": []}',
                '{"tokens": [""], "tags": ["O"]}',
                '{"tokens": ["a"], "tags": ["O"], "doc_id": [1]}',
            ]
        ),
    )
    with pytest.raises(DataError) as excinfo:
        read_ner(path)
    problems = excinfo.value.problems
    assert problems[0] == f"{path}:2: 2 tokens but 1 tags"
    assert problems[1] == (
        f"{path}:3: field 'ner_tags' item 0 must be a string, found integer "
        "(integer tag ids need their label names: write the tags as strings)"
    )
    assert problems[2].startswith(f"{path}:4: no field 'tokens' or 'words' for the tokens; fields are: text")
    assert problems[4] == f"{path}:5: field 'tokens' must be a list of strings, found string"
    assert problems[5].startswith(f"{path}:6: not valid JSON: Expecting ',' delimiter")
    assert problems[6:] == [
        f"{path}:7: expected a JSON object, found list",
        f"{path}:8: the sentence has no tokens",
        f"{path}:9: field 'tokens' item 0 is empty",
        f"{path}:10: doc_id must be a string or integer, found list",
    ]


def test_jsonl_tag_error_names_line_and_token(tmp_path: Path) -> None:
    path = write(tmp_path, "train.json", '{"tokens": ["a", "b"], "tags": ["O", "E-X"]}\n')
    with pytest.raises(DataError, match=r"train.json:1: token 'b': E-X cannot follow O in BIOES"):
        read_ner(path)


def test_format_override(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", '{"tokens": ["a"], "tags": ["O"]}\n')
    assert read_ner(path, format="jsonl")[0][0].words == ["a"]
    conll = write(tmp_path, "data.jsonl", "a O\n")
    assert read_ner(conll, format="conll")[0][0].words == ["a"]


# ---------------------------------------------------------------------------------------------
# Real benchmark files (verified counts from the SOURCE.md files)


@pytest.fixture(scope="module")
def conll_train() -> tuple[list[TokenExample], str, list[TokenExample], str]:
    iob1, scheme1 = read_ner(SHARED / "conll2003" / "eng.train")
    iob2, scheme2 = read_ner(SHARED / "conll2003" / "train.iob2.txt")
    return iob1, scheme1, iob2, scheme2


@needs_shared
def test_conll2003_train(conll_train: tuple[list[TokenExample], str, list[TokenExample], str]) -> None:
    iob1, scheme1, iob2, scheme2 = conll_train
    assert (scheme1, scheme2) == ("iob1", "iob2")
    for examples in (iob1, iob2):
        assert len(examples) == 14_041
        assert len({e.doc_id for e in examples}) == 946
        assert sum(len(e.words) for e in examples) == 203_621
        assert sum(len(tags_to_spans(e.tags)) for e in examples) == 23_499
    # IOB1 read through the converter gives exactly the IOB2 copy: same tags, same spans.
    assert [e.tags for e in iob1] == [e.tags for e in iob2]
    assert [e.words for e in iob1] == [e.words for e in iob2]
    assert iob1[0].source.endswith("eng.train:3")
    assert iob1[0].words == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert iob1[0].tags == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]


@needs_shared
def test_conll2003_dev_and_test() -> None:
    verified = [("eng.testa", 3_250, 216, 51_362, 5_942), ("eng.testb", 3_453, 231, 46_435, 5_648)]
    for name, sentences, docs, tokens, entities in verified:
        examples, scheme = read_ner(SHARED / "conll2003" / name)
        assert scheme == "iob1"
        assert len(examples) == sentences and len({e.doc_id for e in examples}) == docs
        assert sum(len(e.words) for e in examples) == tokens
        assert sum(len(tags_to_spans(e.tags)) for e in examples) == entities


@needs_shared
def test_resume_ner() -> None:
    train, scheme = read_ner(SHARED / "resume_ner" / "train.char.bmes")
    assert scheme == "bmes"
    assert len(train) == 3_821 and len({e.doc_id for e in train}) == 3_821
    assert sum(len(e.words) for e in train) == 124_099
    # SOURCE.md counts 13,436 complete entities; the two ORG entities cut by a sentence break
    # are read as two parts each (+4, -2 whole ones).
    assert sum(len(tags_to_spans(e.tags)) for e in train) == 13_440
    dev, _ = read_ner(SHARED / "resume_ner" / "dev.char.bmes")
    assert len(dev) == 463 and sum(len(tags_to_spans(e.tags)) for e in dev) == 1_497


@needs_shared
def test_weibo_ner() -> None:
    dev, scheme = read_ner(SHARED / "weibo_ner" / "weiboNER_2nd_conll.dev")
    assert scheme == "iob2" and len(dev) == 270 and sum(len(e.words) for e in dev) == 14_509
    # Train has a few I- tags that start an entity (annotation errors): strict IOB2 rejects them.
    with pytest.raises(DataError) as excinfo:
        read_ner(SHARED / "weibo_ner" / "weiboNER_2nd_conll.train")
    assert len(excinfo.value.problems) == 8
    assert "weiboNER_2nd_conll.train:22000: token '粉': I-PER.NOM cannot follow O in IOB2" in excinfo.value.problems[1]
    # lenient: the 8 sentences are repaired (10 tags) and said; tokens are the characters, positions stripped
    train, scheme = read_ner(SHARED / "weibo_ner" / "weiboNER_2nd_conll.train", lenient=True)
    assert scheme == "iob2" and len(train) == 1350 and sum(len(e.words) for e in train) == 73_778
    assert train[0].words[:4] == ["科", "技", "全", "方"]
    kept, _ = read_ner(SHARED / "weibo_ner" / "weiboNER_2nd_conll.train", lenient=True, positions="keep")
    assert kept[0].words[:2] == ["科0", "技1"]


# ---------------------------------------------------------------------------------------------
# Input that used to end in a traceback or in silently changed tags (issue 11)


def test_lenient_tags_repair_as_conlleval_reads_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "train.txt", "a B-PER\nb O\nc I-PER\nd I-LOC\n\ne B-LOC\nf I-LOC\n")
    with caplog.at_level(logging.WARNING):
        examples, scheme = read_ner(path, lenient=True)
    assert scheme == "iob2"
    assert examples[0].tags == ["B-PER", "O", "B-PER", "B-LOC"] and examples[1].tags == ["B-LOC", "I-LOC"]
    assert f"lenient tags: 2 invalid tag sequence(s) repaired in 1 sentence(s) as conlleval reads them (first at {path}:3)" in caplog.text
    # BMES: a continuation without a start, and an entity never closed
    bmes = write(tmp_path, "train.bmes", "a M-ORG\nb E-ORG\nc O\nd B-PER\ne O\nf S-LOC\n")
    (example,), scheme = read_ner(bmes, lenient=True)
    assert scheme == "bmes" and example.tags == ["B-ORG", "I-ORG", "O", "B-PER", "O", "B-LOC"]
    # lenient never hides a tag that no scheme allows
    bad = write(tmp_path, "bad.txt", "a B-PER\nb X-PER\n")
    with pytest.raises(DataError, match="tag 'X-PER' is not valid"):
        read_ner(bad, lenient=True)


def test_char_position_tokens_are_detected_only_when_every_token_is_one(tmp_path: Path) -> None:
    weibo = write(tmp_path, "w.conll", "科0\tO\n学1\tO\n\ufffd\ufffd0\tO\n10\tB-X\n")
    (example,), _ = read_ner(weibo)
    assert example.words == ["科", "学", "\ufffd", "1"]
    plain = write(tmp_path, "p.conll", "R2D2 B-X\nis O\nA1 O\n")
    (example,), _ = read_ner(plain)
    assert example.words == ["R2D2", "is", "A1"]


def test_o_with_a_type_is_an_error_not_o(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "alice B-PER\nvisited O\nparis O-LOC\n")
    with pytest.raises(DataError) as excinfo:
        read_ner(path)
    assert excinfo.value.problems == [
        f"{path}:3: token 'paris': tag 'O-LOC' is not valid in IOB2: expected B-, I- or O (O takes no type) "
        "[scheme iob2, detected; set data.scheme to override]"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"tokens": ["a\\ud800"], "tags": ["O"]}', "field 'tokens' item 0 holds an unpaired surrogate escape \\ud800"),
        ('{"tokens": ["a", "b"], "tags": ["O", "B-\\udc00"]}', "field 'tags' item 1 holds an unpaired surrogate escape \\udc00"),
        ('{"tokens": ["a"], "tags": ["O"], "doc_id": ' + "9" * 5000 + "}", "a number has more than 4,300 digits"),
        ('{"tokens": ["a"], "tags": ["O"], "x": ' + "{\"a\": " * 50_000 + "1" + "}" * 50_000 + "}", "nested too deeply"),
        ('{"tokens": ["a"], "tags": ["O"], "tags": ["B-X"]}', "key 'tags' appears twice in one object"),
    ],
)
def test_jsonl_values_python_cannot_hold_are_line_problems(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, "train.jsonl", '{"tokens": ["ok"], "tags": ["O"]}\n' + line + "\n")
    with pytest.raises(DataError) as excinfo:
        read_ner(path)
    (problem,) = excinfo.value.problems
    assert problem.startswith(f"{path}:2: ") and expected in problem, problem


def test_conll_that_is_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "M\xfcller B-PER\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train.txt:1: is not UTF-8 \(byte 0xfc at byte offset 1, 'ü' if the file is Latin-1\)"):
        read_ner(path)
    utf16 = write(tmp_path, "train16.txt", "a O\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"train16.txt:1: is UTF-16 LE text"):
        read_ner(utf16)
