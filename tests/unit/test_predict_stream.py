"""`lmforge predict` streams: inputs are read, predicted and written a chunk at a time into
`<output>.partial` (renamed when complete), and `--resume` continues an interrupted file."""

from __future__ import annotations

import json

from conftest import sentiment_rows
from lmforge.cli import main
from lmforge.predict_files import predict_file


def _texts(n: int) -> list[str]:
    rows = sentiment_rows(n, 5)
    return [f"{text} {i}" for i, (text, _) in enumerate(rows)][:n]


def test_output_is_written_as_it_goes_and_renamed_when_complete(tmp_path, cls_run):
    texts = _texts(50)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert predict_file(cls_run, src, out, chunk=16) == 50
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts and all("label" in r for r in rows)
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_a_bad_line_stops_after_earlier_chunks_were_written(tmp_path, cls_run, capsys):
    """Streaming: the chunks before a bad line are already on disk (resumable), the output file is
    not (it appears only when every input is done), and the error names the line."""
    import pytest

    from lmforge.errors import DataError

    texts = _texts(40)
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": t}) for t in texts]
    lines[35] = '{"text": "broken'  # not JSON: found only when the reader gets there
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match="in.jsonl:36"):
        predict_file(cls_run, src, out, chunk=16)
    assert not out.exists()
    assert len((tmp_path / "out.jsonl.partial").read_text(encoding="utf-8").splitlines()) == 32
    code = main(["predict", str(cls_run), str(src), "-o", str(tmp_path / "cli.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "in.jsonl:36" in err and "Traceback" not in err, err


def test_resume_keeps_finished_lines_and_drops_a_cut_one(tmp_path, cls_run):
    texts = _texts(30)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    full = tmp_path / "full.jsonl"
    predict_file(cls_run, src, full, chunk=8)
    expected = full.read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    partial.write_text("".join(expected[:12]) + expected[12][:7], encoding="utf-8")  # killed mid-line
    assert predict_file(cls_run, src, out, resume=True, chunk=8) == 30
    assert out.read_text(encoding="utf-8").splitlines(keepends=True) == expected
    assert not partial.exists()


def test_resume_without_a_partial_file_is_a_clear_error(tmp_path, cls_run, capsys):
    src = tmp_path / "in.txt"
    src.write_text("hello\n", encoding="utf-8")
    code = main(["predict", str(cls_run), str(src), "-o", str(tmp_path / "out.jsonl"), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "out.jsonl.partial" in err, err


def test_reading_overrides_name_another_text_column(tmp_path, cls_run, capsys):
    src = tmp_path / "in.csv"
    src.write_text("id,body\n1,the movie great was\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(cls_run), str(src), "data.text_field=body", "-o", str(out)]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == "the movie great was"
    code = main(["predict", str(cls_run), str(src), "training.epochs=3", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "data.text_field" in err, err
