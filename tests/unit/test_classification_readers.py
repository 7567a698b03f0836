"""Tests for the classification readers (csv, tsv, jsonl) and the predict-input reader."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from lmforge.data.classification_readers import iter_texts, read_classification, read_texts
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
    with pytest.raises(DataError, match=r"train.csv:2: a quoted field starting here is never closed \(it runs to the end "
                                        r"of the file, line 4\); is a closing quote missing\?"):
        read_classification(path)
    path = write(tmp_path, "train.csv", 'text,label\n"oops,a\nb",c,d\ne,f\n')
    with pytest.raises(DataError, match=r"train.csv:2: expected 2 columns, found 3 \(a quoted field starting here runs to line 3"):
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
    assert problems[6].startswith(f"{path}:8: not valid JSON: Expecting ',' delimiter")
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
    with pytest.raises(DataError, match=r"train.json:1: not valid JSON: .*one JSON array.*one object per line"):
        read_classification(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert problems_of(excinfo) == [
        f"{path}:3: is not UTF-8 (byte 0xe9 at byte offset 19, 'é' if the file is Latin-1); lmforge reads UTF-8: "
        "convert the file, e.g. from Latin-1: iconv -f latin1 -t utf-8 FILE > NEW_FILE (or re-save it as UTF-8)"
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


# ---------------------------------------------------------------------------------------------
# Input that used to end in a traceback or in silently changed text (issue 11)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"text": "caf\\ud800", "label": "a"}', r"field 'text' holds an unpaired surrogate escape \\ud800 \(character 4\)"),
        ('{"text": "x", "label": "\\udfff"}', r"the label \(field 'label'\) holds an unpaired surrogate escape \\udfff"),
        ('{"text": "x", "label": ' + "7" * 5000 + "}", r"a number has more than 4,300 digits, too many to read; write it as a string"),
        ('{"text": "x", "label": ' + "[" * 100_000 + "]" * 100_000 + "}", r"the JSON is nested too deeply to read"),
        ('{"text": "x", "label": "a", "text": "y"}', r"key 'text' appears twice in one object"),
    ],
)
def test_jsonl_values_python_cannot_hold_are_line_problems(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, "train.jsonl", '{"text": "ok", "label": "a"}\n' + line + "\n")
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    (problem,) = problems_of(excinfo)
    assert problem.startswith(f"{path}:2: ")
    assert re.search(expected, problem), problem
    if "label" not in expected:  # predict input reads no labels
        with pytest.raises(DataError, match=re.escape(f"{path}:2: ")):
            read_texts(path)


def test_surrogates_in_multi_label_lists_and_pairs(tmp_path: Path) -> None:
    path = write(tmp_path, "train.jsonl", '{"text": "a", "pair": "b\\ud83d", "label": ["x", "y\\ud800"]}\n')
    with pytest.raises(DataError) as excinfo:
        read_classification(path, text_pair_field="pair", multi_label=True)
    assert [p.split(": ", 1)[1].split(" holds")[0] for p in problems_of(excinfo)] == ["field 'pair'", "a label"]
    # A proper surrogate pair is one character, and fine.
    ok = write(tmp_path, "ok.jsonl", '{"text": "smile \\ud83d\\ude00", "label": "a"}\n')
    assert read_classification(ok)[0].text == "smile \U0001F600"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("text,label\nhi,a\n".encode("utf-16"), r"train.csv:1: is UTF-16 LE text \(it starts with a UTF-16 LE byte-order mark\).*iconv -f UTF-16LE -t UTF-8"),
        ("text,label\nhi,a\n".encode("utf-16-be"), r"train.csv:1: looks like UTF-16 BE without a byte-order mark.*iconv -f UTF-16BE"),
        ("text,label\nhi,a\n".encode("utf-32"), r"train.csv:1: is UTF-32 LE text"),
        (b"PK\x03\x04\x14\x00\x06\x00", r"train.csv: is a ZIP archive \(an .xlsx/.ods spreadsheet or a .zip\?\): export it as CSV"),
        (b"text,label\nhi\x00there,a\n", r"train.csv:2: contains a NUL byte \(byte offset 13\): not a text file"),
        (b"text,label\nok,a\n\xed\xa0\x80x,b\n", r"train.csv:3: is not UTF-8 \(byte 0xed at byte offset 16, a UTF-16 surrogate written as UTF-8"),
    ],
    ids=["utf16-bom", "utf16-no-bom", "utf32-bom", "xlsx", "nul", "encoded-surrogate"],
)
def test_files_that_are_not_utf8_text(tmp_path: Path, content: bytes, expected: str) -> None:
    path = write(tmp_path, "train.csv", content)
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    assert re.search(expected, str(excinfo.value)), str(excinfo.value)


def test_long_fields_are_read(tmp_path: Path) -> None:
    long = "word " * 60_000  # 300,000 characters: over csv's default field limit
    path = write(tmp_path, "train.csv", f'text,label\n"{long}",a\n')
    assert read_classification(path)[0].text == long.strip()


def test_csv_quote_in_the_wrong_place_is_an_error_not_a_joined_field(tmp_path: Path) -> None:
    # Non-strict csv reads '"a" b' as 'a b': the quotes silently vanish.
    path = write(tmp_path, "train.csv", 'text,label\n"hello" world,a\n')
    with pytest.raises(DataError, match=r"train.csv:2: cannot parse the row: ',' expected after '\"'"):
        read_classification(path)


@pytest.mark.parametrize("header", ["text,label,text", "text,label,label"])
def test_duplicate_column_that_is_read_is_an_error(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, "train.csv", f"{header}\nfirst,a,second\n")
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    name = header.split(",")[2]
    where = "1, 3" if name == "text" else "2, 3"
    assert problems_of(excinfo) == [
        f"{path}:1: column '{name}' appears 2 times in the header (columns {where}); rename or remove all but one"
    ]


def test_duplicate_column_that_is_not_read_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "train.tsv", "id\ttext\tid\tlabel\n1\thi\t2\ta\n")
    assert read_classification(path)[0].text == "hi"
    predict = write(tmp_path, "in.csv", "text,label,label\nhi,a,b\n")
    assert read_texts(predict)[0].text == "hi"  # predict input reads no labels


def test_tsv_written_by_python_csv_and_pandas(tmp_path: Path) -> None:
    rows = [["He said \"hi\"", "a"], ["tab\there", "b"], ["two\nlines", "c"], ["plain", "d"], ["cr\r\nlf", "e"]]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows([["text", "label"], *rows])
    path = write(tmp_path, "train.tsv", buffer.getvalue())
    assert '"He said ""hi"""' in buffer.getvalue()
    examples = read_classification(path)
    assert [e.text for e in examples] == [r[0] for r in rows]
    assert [e.labels for e in examples] == [[r[1]] for r in rows]
    assert [e.source.rsplit(":", 1)[1] for e in examples] == ["2", "3", "4", "6", "7"]


def test_tsv_quoted_header_means_quoted_file(tmp_path: Path) -> None:
    buffer = io.StringIO()  # QUOTE_NONNUMERIC: every string quoted
    csv.writer(buffer, delimiter="\t", quoting=csv.QUOTE_NONNUMERIC).writerows([["text", "label"], ["hi", "a"]])
    examples = read_classification(write(tmp_path, "train.tsv", buffer.getvalue()))
    assert (examples[0].text, examples[0].labels) == ("hi", ["a"])


def test_quote_free_tsv_keeps_every_quote(tmp_path: Path) -> None:
    content = ('label\ttext\n1\t"odd start\n0\tends with quote "\n1\t"whole"\n'
               '0\tsays "a" and "b" \n1\tmore"\n')
    examples = read_classification(write(tmp_path, "train.tsv", content), text_field="text")
    assert [e.text for e in examples] == ['"odd start', 'ends with quote "', '"whole"', 'says "a" and "b"', 'more"']
    # A quote-free file whose first quoted-looking field would swallow lines stays line by line.
    content = 'label\ttext\n1\t"starts here\n0\tand ends here"\n'
    assert len(read_classification(write(tmp_path, "t2.tsv", content), text_field="text")) == 2


def test_tsv_dialect_conflict_is_an_error_not_a_guess(tmp_path: Path) -> None:
    # Line 2 can only be quoted TSV (a tab inside quotes); line 3 is then a broken quoted field.
    path = write(tmp_path, "train.tsv", 'text\tlabel\n"a\tb"\tx\n"odd start\ty\n')
    with pytest.raises(DataError) as excinfo:
        read_classification(path)
    message = str(excinfo.value)
    assert f"{path}:3: a quoted field starting here is never closed" in message
    assert "read as quoted TSV (csv/pandas style): line 2 holds a quoted field the way csv/pandas write TSV" in message


def test_multi_label_json_list_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", 'text,labels\none,"[""a"", ""b""]"\ntwo,[]\nthree,c\n')
    examples = read_classification(path, label_field="labels", multi_label=True)
    assert [e.labels for e in examples] == [["a", "b"], [], ["c"]]
    bad = write(tmp_path, "bad.csv", "text,labels\none,['a' 'b']\n")
    with pytest.raises(DataError, match=r"bad.csv:2: the label cell starts with \[ but is not a JSON list"):
        read_classification(bad, label_field="labels", multi_label=True)


def test_iter_texts_streams_rows_and_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": 3}\n{"text": "d"}\n')
    rows = iter_texts(path)
    assert next(rows) == TextExample("a", source=f"{path}:1")  # yielded before the bad line is read
    assert next(rows).text == "b"
    with pytest.raises(DataError, match=re.escape(f"{path}:3: field 'text' must be a string, found integer")):
        next(rows)
    with pytest.raises(DataError) as excinfo:  # read_texts: every problem, at once
        read_texts(write(tmp_path, "two.jsonl", '{"text": 1}\n{"text": 2}\n'))
    assert len(problems_of(excinfo)) == 2


@pytest.mark.parametrize(
    ("name", "content", "kwargs"),
    [
        ("in.txt", "first\n\n second \r\nthird\rfourth", {}),
        ("in.csv", 'id,text\n1,"a, b"\n2,"two\nlines"\n', {}),
        ("in.tsv", "sentence\tlabel\nit 's \"fine\" \t1\n", {"text_field": "sentence"}),
        ("in.jsonl", '{"q": "a", "p": "b"}\n\n{"q": "c", "p": "d", "label": [1]}\n', {"text_field": "q", "text_pair_field": "p"}),
    ],
)
def test_iter_texts_gives_the_rows_read_texts_gives(tmp_path: Path, name: str, content: str, kwargs: dict) -> None:
    path = write(tmp_path, name, content)
    assert list(iter_texts(path, **kwargs)) == read_texts(path, **kwargs)


def test_iter_texts_missing_field_names_the_first_object(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", '{"sentence": "a"}\n' * 3)
    with pytest.raises(DataError) as excinfo:
        list(iter_texts(path))
    assert problems_of(excinfo) == [f"{path}:1: no field 'text'; fields are: sentence. Set data.text_field"]


def test_iter_texts_reads_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.data import text_files

    monkeypatch.setattr(text_files, "CHUNK_BYTES", 7)  # lines and \r\n pairs cut across chunks
    content = "é first line\r\nsecond\r\rthird " + "x" * 30 + "\n\nlast"
    path = write(tmp_path, "in.txt", content)
    assert [(e.text, e.source.rsplit(":", 1)[1]) for e in iter_texts(path)] == [
        ("é first line", "1"), ("second", "2"), ("third " + "x" * 30, "4"), ("last", "6")]


def test_a_field_over_the_limit_is_one_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.data import tables, text_files

    monkeypatch.setattr(text_files, "FIELD_LIMIT", 1000)
    monkeypatch.setattr(tables, "FIELD_LIMIT", 1000)
    path = write(tmp_path, "train.csv", 'text,label\nok,a\n"never closed,b\n' + "more text,c\n" * 200)
    tsv = write(tmp_path, "train.tsv", "text\tlabel\n" + "x" * 2000 + "\ta\n")
    saved = csv.field_size_limit(1000)  # the C reader's own limit, process-wide
    try:
        with pytest.raises(DataError, match=r"train.csv:3: a field runs over 1,000 characters \(to line \d+\); is a closing quote missing\?"):
            read_classification(path)
        with pytest.raises(DataError, match=r"train.tsv:2: a field is longer than 1,000 characters; is this a data row\?"):
            read_classification(tsv)
    finally:
        csv.field_size_limit(saved)


def test_windows_1252_quotes_get_the_right_conversion_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "train.csv", b"text,label\n\x93quoted\x94,a\n")
    with pytest.raises(DataError, match=r"train.csv:2: is not UTF-8 \(byte 0x93 at byte offset 11, '\u201c' if the file is "
                                        r"Windows-1252\); .*iconv -f cp1252 -t utf-8"):
        read_classification(path)
