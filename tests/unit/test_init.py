"""`lmforge init` as a user meets it, in process: what it infers from the training file, the config it
writes, and one clear message (exit 2, no traceback) for files it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.config import DataConfig, config_from_dict, load_config
from lmforge.tasks import task_names
from lmforge.starter import hidden_data_keys, render

from conftest import jsonl, make_config, sentiment_rows, write, write_csv


def init(capsys, tmp_path: Path, *args: str, task: str = "text-classification") -> tuple[int, str, Path]:
    """Run `lmforge init`; returns (exit code, stderr with its line wrapping undone, config path)."""
    out = tmp_path / "c.yaml"
    code = main(["init", "--task", task, "-o", str(out), "--force", *map(str, args)])
    err = " ".join(capsys.readouterr().err.split())
    return code, err, out


# ---------------------------------------------------------------------------------------------
# Files init cannot read: one message naming the file (and line), exit 2, nothing written


MALFORMED = {
    "latin1": ("x.csv", b"text,intent\ncaf\xe9,a\n", r"x.csv:2: is not UTF-8 (byte 0xe9 at byte offset 15, 'é' if the file is Latin-1); "
               "lmforge reads UTF-8: convert the file, e.g. from Latin-1: iconv -f latin1 -t utf-8 FILE > NEW_FILE"),
    "utf16-bom": ("x.csv", "text,label\nhi,a\n".encode("utf-16"), "x.csv:1: is UTF-16 LE text (it starts with a UTF-16 LE "
                  "byte-order mark); lmforge reads UTF-8: convert it with iconv -f UTF-16LE -t UTF-8 FILE > NEW_FILE"),
    "utf16-no-bom": ("x.tsv", "text\tlabel\nhi\ta\n".encode("utf-16-le"), "x.tsv:1: looks like UTF-16 LE without a byte-order mark"),
    "utf16-jsonl": ("x.jsonl", '{"text": "a", "label": "b"}\n'.encode("utf-16"), "x.jsonl:1: is UTF-16 LE text"),
    "binary": ("x.csv", bytes(range(256)) * 4, "x.csv:1: contains a NUL byte (byte offset 0): not a text file"),
    "gzip": ("x.csv", b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "x.csv: is gzip-compressed: decompress it first (gunzip)"),
    "encoded-surrogate": ("x.csv", b"te\xed\xa0\x80xt,label\n", "x.csv:1: is not UTF-8 (byte 0xed at byte offset 2, a UTF-16 surrogate"),
    "not-json": ("x.jsonl", b"text,label\nhi,a\n", "x.jsonl:1: not valid JSON: Expecting value (column 1)"),
    "json-array": ("x.jsonl", b"[1, 2]\n", "x.jsonl:1: expected a JSON object (JSON Lines: one object per line)"),
    "huge-number": ("x.jsonl", b'{"text": "a", "label": ' + b"9" * 5000 + b"}\n", "x.jsonl:1: a number has more than 4,300 digits"),
    "deep-nesting": ("x.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "x.jsonl:1: the JSON is nested too deeply to read"),
    "duplicate-key": ("x.jsonl", b'{"text": "a", "text": "b", "label": "c"}\n', "x.jsonl:1: key 'text' appears twice in one object"),
    "empty": ("x.csv", b"", "x.csv: contains no header (the file is empty)"),
    "blank-jsonl": ("x.jsonl", b"\n\n", "x.jsonl: contains no examples"),
    "duplicate-column": ("x.csv", b"text,label,text\na,b,c\n", "x.csv:1: column 'text' appears 2 times in the header (columns 1, 3)"),
    "unclosed-quote": ("x.csv", b'text,label\n"open,a\n', "x.csv:2: a quoted field starting here is never closed"),
    "nul": ("x.csv", b"text,label\nhi\x00,a\n", "x.csv:2: contains a NUL byte"),
    "surrogate-key": ("x.jsonl", b'{"te\\ud800xt": "a", "label": "b"}\n',
                      "x.jsonl: cannot tell which field is the text (fields: te\\ud800xt, label)"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_unreadable_training_file_is_one_clear_error(capsys, tmp_path: Path, case: str) -> None:
    name, content, expected = MALFORMED[case]
    path = write(tmp_path, name, content)
    code, err, out = init(capsys, tmp_path, "--train", path)
    assert (code, "Traceback" in err, out.exists()) == (2, False, False), err
    assert err.startswith("error: ") and f"{tmp_path}/{expected}" in err, err


def test_first_line_over_the_csv_field_limit(capsys, tmp_path: Path) -> None:
    header = "text" + "x" * 200_000 + ",label\n"  # csv's default limit is 131,072 characters per field
    code, err, out = init(capsys, tmp_path, "--train", write(tmp_path, "x.csv", header + "a,b\n"), "--text-field", "nope")
    assert code == 2 and "Traceback" not in err and not out.exists()
    assert "no column 'nope'; columns are: textxxxx" in err and "Set --text-field" in err
    code, err, out = init(capsys, tmp_path, "--train", write(tmp_path, "y.csv", "text,label\n" + "word " * 40_000 + ",a\n"))
    assert code == 0 and out.exists(), err


def test_ner_file_that_is_not_text(capsys, tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "M\xfcller B-PER\n".encode("latin-1"))
    code, err, out = init(capsys, tmp_path, "--train", path, task="token-classification")
    assert code == 2 and "train.txt:1: is not UTF-8" in err and not out.exists()


def test_classification_flags_for_other_tasks_are_refused(capsys, tmp_path: Path) -> None:
    code, err, _ = init(capsys, tmp_path, "--multi-label", "--text-field", "t", task="generation")
    assert code == 2 and "--text-field, --multi-label/--single-label: only for --task text-classification" in err


# ---------------------------------------------------------------------------------------------
# What init infers


def data_of(out: Path) -> dict:
    return yaml.safe_load(out.read_text())["data"]


@pytest.mark.parametrize(
    ("rows", "expected", "note"),
    [
        ([("a", "x|y"), ("b", "x"), ("c", "y|z")], {"multi_label": True, "label_delimiter": "|"},
         "multi-label: '|' separates labels in 2 of the first 3 labels of train.csv"),
        ([("a", "x;y"), ("b", "y;z")], {"multi_label": True, "label_delimiter": ";"}, "multi-label: ';' separates"),
        ([("a", '["x", "y"]'), ("b", "[]"), ("c", '["z"]')], {"multi_label": True, "label_delimiter": None},
         "multi-label: 3 of the first 3 labels of train.csv are lists"),
        ([("a", "x"), ("b", "y|z"), ("c", "x")], {"multi_label": False, "label_delimiter": None},
         "single-label: one label per row (2 distinct in the first 3 labels of train.csv"),
    ],
)
def test_infers_multi_label_columns(capsys, tmp_path: Path, rows, expected: dict, note: str) -> None:
    code, err, out = init(capsys, tmp_path, "--train", write_csv(tmp_path / "train.csv", rows))
    assert code == 0, err
    data = data_of(out)
    assert {k: data.get(k) for k in expected} == expected
    assert f"inferred {note}" in err
    assert note in " ".join(out.read_text().split())  # the config's header says it too


def test_multi_label_jsonl_lists(capsys, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": ["z"]}])
    code, err, out = init(capsys, tmp_path, "--train", path)
    assert code == 0 and data_of(out)["multi_label"] is True and data_of(out)["label_field"] == "labels"


def test_multi_label_flags_win_over_inference(capsys, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", [("a", "x|y"), ("b", "y|z")])
    code, err, out = init(capsys, tmp_path, "--train", path, "--single-label")
    assert code == 0 and data_of(out)["multi_label"] is False and "multi-label" not in err
    single = write_csv(tmp_path / "single.csv", [("a", "x"), ("b", "y")])
    code, err, out = init(capsys, tmp_path, "--train", single, "--multi-label")
    assert code == 0 and data_of(out)["multi_label"] is True and data_of(out)["label_delimiter"] is None
    assert "multi-label (--multi-label): one label per cell; no delimiter found" in err
    lists = jsonl(tmp_path / "lists.jsonl", [{"text": "a", "label": ["x"]}])
    code, err, out = init(capsys, tmp_path, "--train", lists, "--single-label")
    assert code == 2 and "lists.jsonl:1: --single-label, but the label field 'label' holds lists" in err


@pytest.mark.parametrize(
    ("header", "args", "text", "pair"),
    [
        (("question1", "question2", "is_duplicate"), (), "question1", "question2"),
        (("premise", "hypothesis", "label"), (), "premise", "hypothesis"),
        (("label", "sentence2", "sentence1"), (), "sentence1", "sentence2"),
        (("question", "sentence", "label"), (), "question", "sentence"),
        (("query", "passage", "label"), ("--text-field", "query"), "query", "passage"),
        (("a", "b", "label"), ("--text-field", "a", "--text-pair-field", "b"), "a", "b"),
        (("text", "other", "label"), (), "text", None),
    ],
)
def test_infers_text_pairs(capsys, tmp_path: Path, header, args, text: str, pair: str | None) -> None:
    rows = [("one", "two", "x")] if header[0] != "label" else [("x", "two", "one")]
    path = write_csv(tmp_path / "pairs.csv", rows, header=header)
    code, err, out = init(capsys, tmp_path, "--train", path, *args)
    assert code == 0, err
    data = data_of(out)
    assert (data["text_field"], data["text_pair_field"]) == (text, pair)
    if pair is not None and "--text-pair-field" not in args:
        assert "inferred sentence pairs" in err


def test_given_columns_must_exist(capsys, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", [("a", "b")])
    code, err, out = init(capsys, tmp_path, "--train", path, "--text-pair-field", "second")
    assert code == 2 and "train.csv: no column 'second'; columns are: text, label. Set --text-pair-field" in err


# ---------------------------------------------------------------------------------------------
# The config it writes: the keys of its task only, valid, and loading back to the same values

OTHER_TASK_KEYS = {
    "text-classification": ("prompt_field", "completion_field", "messages_field", "scheme", "document_context"),
    "token-classification": ("text_field", "label_field", "multi_label", "text_pair_field", "label_delimiter",
                             "labels", "prompt_field", "completion_field", "messages_field"),
    "generation": ("text_field", "label_field", "scheme", "document_context", "multi_label", "text_pair_field",
                   "label_delimiter", "labels", "label_map"),
}


@pytest.mark.parametrize("task", task_names())
def test_starter_shows_only_its_tasks_keys_and_round_trips(capsys, tmp_path: Path, task: str) -> None:
    code, err, out = init(capsys, tmp_path, task=task)
    assert code == 0, err
    data = data_of(out)
    assert set(data) == set(DataConfig.model_fields) - hidden_data_keys(task)
    assert not set(OTHER_TASK_KEYS[task]) & set(data)
    cfg = load_config(out)
    assert cfg.task == task
    again = tmp_path / "again.yaml"
    again.write_text(render(cfg, "x"))
    assert load_config(again) == cfg


def test_render_keeps_a_changed_key_of_another_task(tmp_path: Path) -> None:
    cfg = config_from_dict({"task": "token-classification", "data": {"text_field": "sentence"}})
    path = tmp_path / "c.yaml"
    path.write_text(render(cfg, "x"))
    assert load_config(path) == cfg and "text_field: sentence" in path.read_text()


def test_inferred_multi_label_pair_config_validates(capsys, tmp_path: Path, tiny_model: Path) -> None:
    rows = [(f"the {w} movie", f"was {w}", "|".join(labels)) for w, labels in
            [("good", ["pos"]), ("bad", ["neg"]), ("great", ["pos", "strong"]), ("awful", ["neg", "strong"])] * 6]
    path = write_csv(tmp_path / "train.csv", rows, header=("sentence1", "sentence2", "tags"))
    code, err, out = init(capsys, tmp_path, "--train", path, "--model", tiny_model, "--label-field", "tags")
    assert code == 0, err
    data = data_of(out)
    assert (data["multi_label"], data["label_delimiter"], data["text_pair_field"]) == (True, "|", "sentence2")
    assert main(["validate", str(out)]) == 0, capsys.readouterr().err
    assert "3: neg, pos, strong" in capsys.readouterr().out


def test_make_config_fixture_still_loads(tmp_path: Path, tiny_model: Path) -> None:
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(12, 1)), "dev": write_csv(tmp_path / "dev.csv", sentiment_rows(6, 2))}
    assert load_config(make_config(tmp_path, tiny_model, data)).data.text_field == "text"


def test_max_length_is_sized_to_the_training_texts(capsys, tmp_path: Path, tiny_model: Path) -> None:
    """Classification cuts texts at data.max_length: init measures the first training texts under the
    model's tokenizer and writes the smallest of 128/256/512 that cuts at most 2% of them, and says so."""
    long_text = " ".join(["good movie"] * 90)  # ~180 words: over 128 tokens, under 256
    rows = [(long_text if i % 10 == 0 else "a good movie", "pos" if i % 2 else "neg") for i in range(100)]
    path = write_csv(tmp_path / "train.csv", rows)
    code, err, out = init(capsys, tmp_path, "--train", path, "--model", tiny_model)
    assert code == 0, err
    assert data_of(out)["max_length"] == 256
    assert "data.max_length: 256 — 10% of the first 100 training texts are longer than 128 tokens (0.0% longer than 256)" in err
    short = write_csv(tmp_path / "short.csv", [("a good movie", "pos"), ("a bad movie", "neg")] * 20)
    code, err, out = init(capsys, tmp_path, "--train", short, "--model", tiny_model)
    assert code == 0 and data_of(out)["max_length"] == 128 and "data.max_length" not in err


def test_a_large_classification_set_gets_batches_of_32(capsys, tmp_path: Path, tiny_model: Path) -> None:
    """From 10,000 training examples init writes training.batch_size 32 and says why; below, 16; not for
    the few-shot method (its own batches) nor NER (packed documents)."""
    from lmforge.tasks.registry import LARGE_TRAINING_SET

    rows = sentiment_rows(LARGE_TRAINING_SET, 1)
    large, small = write_csv(tmp_path / "large.csv", rows), write_csv(tmp_path / "small.csv", rows[:-1])
    code, err, out = init(capsys, tmp_path, "--train", large, "--model", tiny_model)
    assert code == 0, err
    assert yaml.safe_load(out.read_text())["training"]["batch_size"] == 32
    assert "training.batch_size: 32 for 10,000 training examples (16 below 10,000)" in err
    assert load_config(out).training.batch_size == 32
    code, err, out = init(capsys, tmp_path, "--train", small, "--model", tiny_model)
    assert code == 0 and yaml.safe_load(out.read_text())["training"]["batch_size"] == 16 and "batch_size" not in err
    # epochs are left empty: train fills them (3, or about 400 steps on a small set) from the encoded features
    assert yaml.safe_load(out.read_text())["training"]["epochs"] is None and load_config(out).training.epochs is None
    code, err, out = init(capsys, tmp_path, "--train", large, "--model", tiny_model, "--method", "fewshot")
    assert code == 0 and yaml.safe_load(out.read_text())["training"]["batch_size"] == 16 and "batch_size" not in err


def test_ner_max_length_is_sized_so_that_sentences_are_not_split(capsys, tmp_path: Path, tiny_model: Path) -> None:
    """NER splits a sentence longer than data.max_length across windows: init sizes it to the sentences
    (each alone, as the task encodes them), not to the documents they are packed into."""
    long = [("John", "B-PER")] + [("movie", "O")] * 150  # 151 words of one piece each: over 128 pieces
    short = [("Paris", "B-LOC"), ("is", "O"), ("far", "O")]
    sentences = [long if i % 10 == 0 else short for i in range(60)]
    path = tmp_path / "train.conll"
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n")
    code, err, out = init(capsys, tmp_path, "--train", path, "--model", tiny_model, task="token-classification")
    assert code == 0, err
    assert data_of(out)["max_length"] == 256
    assert "10% of the first 60 training sentences are longer than 128 tokens" in " ".join(err.split())
    assert "split across windows" in err
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in short) for _ in range(60)) + "\n")  # many short sentences
    code, err, out = init(capsys, tmp_path, "--train", path, "--model", tiny_model, task="token-classification")
    assert code == 0 and data_of(out)["max_length"] == 128 and "data.max_length" not in err


def test_fitting_max_length_choices() -> None:
    from lmforge.data.lengths import fitting_max_length

    assert fitting_max_length([], 128) == (128, None)
    assert fitting_max_length([100] * 98 + [300] * 2, 128) == (128, None)  # 2% cut is tolerated
    assert fitting_max_length([100] * 90 + [300] * 10, 128)[0] == 512  # 256 would still cut 10%
    assert fitting_max_length([100] * 90 + [300] * 10, 128, model_limit=256)[0] == 256  # no further than the model reads
    assert fitting_max_length([1000] * 10, 128)[0] == 512
    assert fitting_max_length([300] * 10, 512) == (512, None)  # never below the configured value


def test_a_large_ner_set_gets_batches_cut_by_tokens(capsys, tmp_path: Path, tiny_model: Path) -> None:
    """From 10,000 training sentences init writes training.max_tokens_per_batch (14 sequences of
    data.max_length) for full fine-tuning and says why; below, and for LoRA, batches stay by count."""
    from conftest import ner_sentences, write_conll
    from lmforge.tasks.registry import LARGE_TRAINING_SET

    sentences = ner_sentences(LARGE_TRAINING_SET, 3)
    large, small = write_conll(tmp_path / "large.txt", sentences), write_conll(tmp_path / "small.txt", sentences[:-1])
    code, err, out = init(capsys, tmp_path, "--train", large, "--model", tiny_model, task="token-classification")
    assert code == 0, err
    written = yaml.safe_load(out.read_text())["training"]
    length = load_config(out).data.max_length
    assert written["max_tokens_per_batch"] == 14 * length and load_config(out).training.max_tokens_per_batch == 14 * length
    assert f"training.max_tokens_per_batch: {14 * length} for 10,000 training examples (below 10,000: batches of 16 sequences)" in " ".join(err.split())
    single = write_conll(tmp_path / "single.txt", sentences, docs_of=0)  # no documents: a sentence per sequence
    for args in (("--train", small), ("--train", large, "--method", "lora"), ("--train", single)):
        code, err, out = init(capsys, tmp_path, *args, "--model", tiny_model, task="token-classification")
        assert code == 0 and yaml.safe_load(out.read_text())["training"]["max_tokens_per_batch"] is None and "max_tokens" not in err


def test_few_examples_per_label_suggest_method_fewshot(capsys, tmp_path: Path, tiny_model: Path) -> None:
    """With at most 64 examples per label and no --method, init writes full fine-tuning (as asked) but
    says that method fewshot measured ahead of it; not with more examples, an explicit method, or pairs."""
    few = write_csv(tmp_path / "few.csv", [("a good movie", "pos"), ("a bad movie", "neg")] * 64)
    code, err, out = init(capsys, tmp_path, "--train", few, "--model", tiny_model)
    assert code == 0, err
    assert "128 training examples, at most 64 per label: with this few, method fewshot" in err
    assert "run init again with --method fewshot" in err
    assert "90.9 vs 84.8% after 3 epochs, the default at that size" in err  # the one cell where 20 epochs of full fine-tuning lead
    assert load_config(out).method == "full"  # a note, not a change
    code, err, out = init(capsys, tmp_path, "--train", few, "--model", tiny_model, "--method", "fewshot")
    assert code == 0 and "per label: with this few" not in err and load_config(out).method == "fewshot"
    many = write_csv(tmp_path / "many.csv", [("a good movie", "pos"), ("a bad movie", "neg")] * 65)
    code, err, _ = init(capsys, tmp_path, "--train", many, "--model", tiny_model)
    assert code == 0 and "per label: with this few" not in err
    pairs = write_csv(tmp_path / "pairs.csv", [("a", "b", "yes"), ("c", "d", "no")] * 4, header=("text", "text_pair", "label"))
    code, err, _ = init(capsys, tmp_path, "--train", pairs, "--model", tiny_model)
    assert code == 0 and "per label: with this few" not in err
    # counted over the whole file, not the first 1,000 examples: 20 labels x 60 (as CLINC150 at 8 per class)
    wide = write_csv(tmp_path / "wide.csv", [(f"text {i} of intent {k}", f"intent{k}") for i in range(60) for k in range(20)])
    code, err, _ = init(capsys, tmp_path, "--train", wide, "--model", tiny_model)
    assert code == 0 and "1,200 training examples, at most 60 per label: with this few" in err
    wide_late = write_csv(tmp_path / "wide_late.csv", [(f"text {i} of intent {k}", f"intent{k}") for k in range(20) for i in range(60)]
                          + [(f"more {i}", "intent19") for i in range(5)])  # the 65th intent19 example comes after 1,000
    code, err, _ = init(capsys, tmp_path, "--train", wide_late, "--model", tiny_model)
    assert code == 0 and "per label: with this few" not in err
