"""Language fit (data/language_fit.py): text the model cannot read is said before training, not
discovered as a chance-level accuracy afterwards; init picks the multilingual model for text that is
mostly not Latin script; hub ids load from the local Hugging Face cache and nowhere else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import make_config, sentiment_rows, write_csv
from lmforge.cli import main
from lmforge.data.language_fit import model_for_texts, non_latin_share, unknown_rate, unknown_warning
from lmforge.errors import UserError
from lmforge.models.resolve import resolve_model

CHINESE = ["这家酒店的服务非常周到", "房间太小了，不推荐", "电池续航很差", "物流很快，包装完好", "性价比很高，值得购买"]


def chinese_rows(n: int) -> list[tuple[str, str]]:
    return [(CHINESE[i % len(CHINESE)] + "！" * (i % 3), "pos" if i % 2 else "neg") for i in range(n)]


def test_unknown_rate_counts_unknown_tokens_and_leaves_special_tokens_out(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    features = [{"input_ids": tok("good 好 movie 电影")["input_ids"]}]  # [CLS] good [UNK] movie [UNK] [UNK] [SEP]
    assert unknown_rate(features, tok) == (3, 5)
    assert unknown_warning(1, 100, "minilm-l6") is None  # 1% is noise (names, rare symbols)
    warning = unknown_warning(2, 4, "minilm-l6")
    assert warning.startswith("50.0% of the training tokens (2 of 4) are unknown to the tokenizer of minilm-l6")
    assert "model: me5-small" in warning
    assert "me5-small (packaged" not in unknown_warning(2, 4, "me5-small")  # no advice to switch to itself


def test_non_latin_share_counts_letters_only() -> None:
    assert non_latin_share(["café 123 !!"]) == (0.0, 4)  # é is Latin; digits and punctuation are not letters
    share, letters = non_latin_share(["abc 你好吗"])
    assert (round(share, 2), letters) == (0.5, 6)
    assert model_for_texts(["مرحبا بالعالم", "hello"], "minilm-l6")[0] == "me5-small"
    assert model_for_texts(["Straße, naïve café"], "minilm-l6") == ("minilm-l6", None)


def test_validate_and_train_warn_when_the_model_cannot_read_the_text(capsys, tmp_path: Path, tiny_model: Path) -> None:
    data = {"train": write_csv(tmp_path / "train.csv", chinese_rows(24)), "dev": write_csv(tmp_path / "dev.csv", chinese_rows(8))}
    cfg = make_config(tmp_path, tiny_model, data, epochs=1)
    assert main(["validate", str(cfg)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "is valid, with warnings" in out and "of the training tokens" in out and "model: me5-small" in out
    assert main(["train", str(cfg), "--max-steps", "1"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning:" in err and "are unknown to the tokenizer" in err and "% unknown tokens" in err
    info = json.loads((tmp_path / "runs" / "tex-full" / "run.json").read_text())
    assert info["data"]["unknown_tokens"] > 0.5 * info["data"]["tokens"]


def test_english_text_validates_without_a_warning(capsys, tmp_path: Path, tiny_model: Path) -> None:
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(24, 1)), "dev": write_csv(tmp_path / "dev.csv", sentiment_rows(8, 2))}
    assert main(["validate", str(make_config(tmp_path, tiny_model, data))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "with warnings" not in out and "unknown tokens │ 0.0% of" in out


def test_init_picks_me5_small_for_chinese_and_says_so(capsys, tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", chinese_rows(30))
    out = tmp_path / "zh.yaml"
    assert main(["init", "--task", "text-classification", "--train", str(train), "-o", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert yaml.safe_load(out.read_text())["model"] == "me5-small"
    assert "model: me5-small: 100% of the letters in the first 30 training texts are not Latin script" in err
    # NER on characters too; an explicit --model is kept
    conll = tmp_path / "train.bmes"
    conll.write_text("".join(f"{c} O\n" for c in "北京欢迎你") + "\n" + "".join(f"{c} O\n" for c in "上海") + "\n", encoding="utf-8")
    conll.write_text(conll.read_text(encoding="utf-8").replace("北 O", "北 B-LOC").replace("京 O", "京 I-LOC"), encoding="utf-8")
    assert main(["init", "--task", "token-classification", "--train", str(conll), "-o", str(out), "--force"]) == 0
    assert yaml.safe_load(out.read_text())["model"] == "me5-small"
    assert main(["init", "--task", "text-classification", "--train", str(train), "--model", "minilm-l6", "-o", str(out), "--force"]) == 0
    assert yaml.safe_load(out.read_text())["model"] == "minilm-l6"
    english = write_csv(tmp_path / "en.csv", sentiment_rows(20, 3))
    assert main(["init", "--task", "text-classification", "--train", str(english), "-o", str(out), "--force"]) == 0
    assert yaml.safe_load(out.read_text())["model"] == "minilm-l6"


def test_hub_ids_load_from_the_local_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    with pytest.raises(UserError, match=r"model 'acme/tiny-bert' is not in the local Hugging Face cache .* never downloads"):
        resolve_model("acme/tiny-bert")
    repo = hub / "models--acme--tiny-bert"
    snapshot = repo / "snapshots" / "0123abc"
    shutil.copytree(tiny_model, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    assert resolve_model("acme/tiny-bert") == snapshot
    cfg = make_config(tmp_path, tiny_model, {"train": write_csv(tmp_path / "t.csv", sentiment_rows(20, 1)),
                                              "dev": write_csv(tmp_path / "d.csv", sentiment_rows(6, 2))})
    assert main(["validate", str(cfg), "model=acme/tiny-bert"]) == 0


def test_text_without_spaces_is_one_word_per_character_with_offsets(tmp_path: Path, tiny_model: Path) -> None:
    """Text without spaces is split into one word per character, with offsets into the text."""
    from transformers import AutoTokenizer

    from lmforge.data.words import words_of

    example = words_of(AutoTokenizer.from_pretrained(str(tiny_model)), "王芳在北京 works")
    assert example.words == ["王", "芳", "在", "北", "京", "works"]
    assert [example.text[s:e] for s, e in example.offsets] == example.words


def _sentencepiece_tokenizer(pieces: list[str]):
    """A tiny XLM-R-style tokenizer (unigram pieces, "▁" word starts) built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = [(p, -float(i)) for i, p in enumerate(pieces)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=pieces.index("<unk>")))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>")


def test_lone_chinese_characters_get_the_piece_they_have_in_running_text():
    """A character given on its own (NER on characters) comes out of a SentencePiece tokenizer as
    "▁我" when the vocabulary has that word-start piece, else as "▁", "们": both become the inner
    piece ("我", "们") the model saw inside Chinese text; Latin words keep their word-start piece."""
    from lmforge.data.types import TokenExample
    from lmforge.tasks.token_classification import TokenClassificationTask

    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "\u2581我", "我", "们", "\u2581ab", "ab", "\u2581好"]
    tok = _sentencepiece_tokenizer(pieces)
    assert tok.convert_ids_to_tokens(tok(["我", "们"], is_split_into_words=True, add_special_tokens=False)["input_ids"]) \
        == ["\u2581我", "\u2581", "们"]  # what the tokenizer does on its own
    task = TokenClassificationTask(["O", "B-PER", "I-PER"], tok, 32)
    (words,) = task._pieces([TokenExample(words=["我", "们", "ab", "好"], tags=["O"] * 4)])
    assert [tok.convert_ids_to_tokens(w) for w in words] == [["我"], ["们"], ["\u2581ab"], ["\u2581好"]]  # 好: no inner piece
    # a run saved before this rule (labels.json without "cjk_pieces") keeps the pieces it was trained on
    from lmforge.tasks import get_task

    assert task.to_json()["cjk_pieces"] == "inner"
    old = get_task("token-classification").for_run(SimpleNamespace(data=SimpleNamespace(max_length=32)),
                                                   {"labels": task.labels, "document_context": True}, tok)
    (words,) = old._pieces([TokenExample(words=["我", "们"], tags=["O"] * 2)])
    assert [tok.convert_ids_to_tokens(w) for w in words] == [["\u2581我"], ["们"]]
    again = get_task("token-classification").for_run(SimpleNamespace(data=SimpleNamespace(max_length=32)), task.to_json(), tok)
    assert again._pieces([TokenExample(words=["我"], tags=["O"])]) == task._pieces([TokenExample(words=["我"], tags=["O"])])
