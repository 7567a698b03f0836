"""Tests for the classification readers (csv, tsv, jsonl) and the predict-input reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.data.classification_readers import read_classification, read_texts
from lmforge.data.types import TextExample
from lmforge.errors import DataError, UserError

from conftest import SHARED, needs_shared, problems_of, write


# ---------------------------------------------------------------------------------------------
# Good input


def test_csv_quoted_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train.csv",
        'text,label\n"Hello, world",greet\n"two\nlines",other\nplain,greet\n',
    )
    examples = read_classification(path)
    assert examples == [
        TextExample("Hello, world", None, ["greet"], f"{path}:2"),
        TextExample("two\nlines", None, ["other"], f"{path}:3"),
        TextExample("plain", None, ["greet"], f"{path}:5"),  # the quoted newline used line 4
    ]


def test_tsv_keeps_quotes_and_strips_trailing_space(tmp_path: Path) -> None:
    # SST-2 style: bare quote characters inside sentences, a space before the tab.
    path = write(tmp_path, "dev.tsv", 'sentence\tlabel\nit \'s a "charming" film \t1\n"odd start \t0\n')
    examples = read_classification(path, text_field="sentence")
    assert [e.text for e in examples] == ['it \'s a "charming" film', '"odd start']
    assert [e.labels for e in examples] == [["1"], ["0"]]


def test_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train.jsonl",
        '{"text": "a", "label": 3}\n\n{"text": "b", "label": "neg", "extra": 1}\n',
    )
    examples = read_classification(path)
    assert examples == [
        TextExample("a", None, ["3"], f"{path}:1"),
        TextExample("b", None, ["neg"], f"{path}:3"),
    ]


def test_text_pairs(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.csv", "premise,hypothesis,label\nA man.,A person.,entail\n")
    (example,) = read_classification(path, text_field="premise", text_pair_field="hypothesis")
    assert (example.text, example.text_pair, example.labels) == ("A man.", "A person.", ["entail"])


def test_custom_label_field_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", "text,category\r\nfirst,a\r\n\r\nsecond,b\r\n")
    examples = read_classification(path, label_field="category")
    assert [(e.text, e.labels, e.source) for e in examples] == [
        ("first", ["a"], f"{path}:2"),
        ("second", ["b"], f"{path}:4"),
    ]


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", "\ufefftext,label\nhi,x\n".encode("utf-8"))
    assert read_classification(path)[0].text == "hi"


def test_multi_label(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "ml.csv", "text,label\none,a|b\ntwo,c\nthree,a||a|\n")
    examples = read_classification(csv_path, multi_label=True, label_delimiter="|")
    assert [e.labels for e in examples] == [["a", "b"], ["c"], ["a"]]
    jsonl_path = write(
        tmp_path,
        "ml.jsonl",
        '{"text": "x", "label": ["a", 2]}\n{"text": "y", "label": []}\n{"text": "z", "label": "a|b"}\n',
    )
    examples = read_classification(jsonl_path, multi_label=True, label_delimiter="|")
    assert [e.labels for e in examples] == [["a", "2"], [], ["a", "b"]]


def test_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", "text\tlabel\nhello\tx\n")
    assert read_classification(path, format="tsv")[0].labels == ["x"]


def test_unlabelled_rows_for_predict(tmp_path: Path) -> None:
    path = write(tmp_path, "in.csv", "id,text\n1,hello\n2,world\n")
    examples = read_classification(path, require_labels=False)
    assert [(e.text, e.labels) for e in examples] == [("hello", []), ("world", [])]
    with_empty = write(tmp_path, "in2.csv", "text,label\nhello,\nworld,x\n")
    assert [e.labels for e in read_classification(with_empty, require_labels=False)] == [[], ["x"]]


def test_read_texts(tmp_path: Path) -> None:
    txt = write(tmp_path, "in.txt", "first line\n\n  second  \n")
    assert read_texts(txt) == [
        TextExample("first line", source=f"{txt}:1"),
        TextExample("second", source=f"{txt}:3"),
    ]
    jsonl = write(tmp_path, "in.jsonl", '{"sentence": "hi", "label": [1]}\n')
    assert read_texts(jsonl, text_field="sentence") == [TextExample("hi", source=f"{jsonl}:1")]
    with pytest.raises(DataError, match="contains no examples"):
        read_texts(write(tmp_path, "empty.txt", "\n \n"))


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_column_is_one_error(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", "sentence,label\n" + "x,1\n" * 50)
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert problems_of(excinfo) == [f"{path}: no column 'text'; columns are: sentence, label. Set data.text_field"]


def test_missing_label_column(tmp_path: Path) -> None:
    path = write(tmp_path, "train.tsv", "text\tcategory\nx\ty\n")
    with pytest.raises(DataError, match=r"no column 'label'; columns are: text, category. Set data.label_field"):
        read_classification(path)


def test_wrong_column_count(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", "text,label\na,b\na,b,c\nonly\n")
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert problems_of(excinfo) == [
        f"{path}:3: expected 2 columns, found 3",
        f"{path}:4: expected 2 columns, found 1",
    ]


def test_unclosed_quote_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", 'text,label\n"oops,a\nb,c\nd,e\n')
    with pytest.raises(DataError, match=r"train.csv:2: expected 2 columns, found 1 \(a quoted field starting here runs to line 4"):
        read_classification(path)


def test_empty_text_and_label(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", "text,label\n  ,a\nfine,\nok,b\n")
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert problems_of(excinfo) == [
        f"{path}:2: empty text in column 'text'",
        f"{path}:3: empty label in column 'label'",
    ]


def test_many_problems_are_summarised(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", "text,label\n" + ",a\n" * 25)
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert excinfo.value.problems[0] == f"{path}:2: empty text in column 'text'"
    assert len(excinfo.value.problems) == 10
    assert "25 data problems" in str(excinfo.value) and "... and 15 more" in str(excinfo.value)


def test_jsonl_row_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "train.jsonl",
        "\n".join(
            [
                '{"text": "ok", "label": "a"}',
                '{"text": 5, "label": "a"}',
                '{"text": "x", "label": null}',
                '{"text": "x"}',
                '{"text": "x", "label": ["a"]}',
                '{"text": "x", "label": 1.5}',
                "[1, 2]",
                '{"text": "x", "label": "a"',
                '{"label": "a"}',
                '{"text": "", "label": "a"}',
            ]
        ),
    )
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    problems = problems_of(excinfo)
    assert problems[6].startswith(f"{path}:8: invalid JSON: Expecting ',' delimiter")
    assert problems[:6] + problems[7:] == [
        f"{path}:2: field 'text' must be a string, found integer",
        f"{path}:3: missing label (field 'label')",
        f"{path}:4: missing label (field 'label')",
        f"{path}:5: label is a list; set data.multi_label=true for multi-label data",
        f"{path}:6: label must be a string or integer, found number",
        f"{path}:7: expected a JSON object, found list",
        f"{path}:9: no field 'text'",
        f"{path}:10: empty text in field 'text'",
    ]


def test_jsonl_field_missing_everywhere(tmp_path: Path) -> None:
    path = write(tmp_path, "train.jsonl", '{"sentence": "a", "label": 1}\n' * 30)
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert problems_of(excinfo) == [
        f"{path}: no field 'text' in any object; fields are: sentence, label. Set data.text_field"
    ]


def test_json_array_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "train.json", '[\n  {"text": "a", "label": 1}\n]\n')
    with pytest.raises(DataError, match=r"train.json:1: invalid JSON: .*one JSON array.*one object per line"):
        read_classification(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert problems_of(excinfo) == [
        f"{path}:3: is not UTF-8 (byte 0xe9 at line 3, byte offset 19); re-save the file as UTF-8"
    ]


@pytest.mark.parametrize("content", ["", "text,label\n", "text,label\n\n\n"])
def test_no_examples(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "train.csv", content)
    with pytest.raises(DataError, match=f"{path}: contains no examples"):
        read_classification(path)


def test_empty_jsonl(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="contains no examples"):
        read_classification(write(tmp_path, "train.jsonl", "\n\n"))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(UserError, match=f"data file not found: {path}"):
        read_classification(path)
    with pytest.raises(UserError, match="data file not found"):
        read_texts(tmp_path / "nope.txt")


def test_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path, "train.xlsx", "x")
    with pytest.raises(UserError) as excinfo:
        read_classification(path)
    message = str(excinfo.value)
    assert "suffix '.xlsx'" in message and "csv (.csv)" in message and "tsv (.tsv, .tab)" in message
    assert "jsonl (.jsonl, .json)" in message and message.endswith("Set data.format")
    with pytest.raises(UserError, match="unknown data.format 'parquet'"):
        read_classification(path, format="parquet")


def test_label_field_required(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="set data.label_field"):
        read_classification(write(tmp_path, "a.csv", "text\nx\n"), label_field=None)


# ---------------------------------------------------------------------------------------------
# Real benchmark files


@needs_shared
def test_sst2_glue() -> None:
    train = read_classification(SHARED / "sst2" / "glue" / "train.tsv", text_field="sentence")
    assert len(train) == 67_349
    assert sum(e.labels == ["1"] for e in train) == 37_569
    assert train[0].text == "hide new secretions from the parental units"  # trailing space stripped
    dev = read_classification(SHARED / "sst2" / "glue" / "dev.tsv", text_field="sentence")
    assert len(dev) == 872 and dev[-1].source.endswith("dev.tsv:873")
    test = read_texts(SHARED / "sst2" / "glue" / "test.tsv", text_field="sentence")
    assert len(test) == 1_821 and all(e.labels == [] for e in test)


@needs_shared
def test_banking77_and_chnsenticorp() -> None:
    banking = read_classification(SHARED / "banking77" / "train.csv", label_field="category")
    assert len(banking) == 10_003 and len({e.labels[0] for e in banking}) == 77
    # Some texts are quoted and span several lines; all surrounding whitespace is stripped.
    assert all(e.text == e.text.strip() for e in banking)
    chn = read_classification(SHARED / "chnsenticorp" / "train.tsv", text_field="text_a")
    assert len(chn) == 9_600 and sum(e.labels == ["1"] for e in chn) == 4_799
