"""Hold-out splits, sub-word alignment, sliding windows and raw-text word offsets."""

from __future__ import annotations

from collections import Counter

import pytest

from lmforge.data.load import holdout
from lmforge.data.types import TextExample, TokenExample
from lmforge.data.words import words_of
from lmforge.tasks.token_classification import IGNORE, TokenClassificationTask, join_words, repair_iob2


def test_holdout_is_seeded_stratified_and_keeps_every_class():
    examples = [TextExample(text=f"t{i}", labels=["a" if i < 80 else "b" if i < 98 else "c"]) for i in range(100)]
    train1, dev1 = holdout(examples, 0.1, seed=1)
    train2, dev2 = holdout(examples, 0.1, seed=1)
    _, dev3 = holdout(examples, 0.1, seed=2)
    assert [e.text for e in dev1] == [e.text for e in dev2] != [e.text for e in dev3]
    assert Counter(e.labels[0] for e in dev1) == {"a": 8, "b": 2}
    assert {e.labels[0] for e in train1} == {"a", "b", "c"}  # the 2-example class keeps a training example
    assert len(train1) + len(dev1) == 100


def test_ner_holdout_keeps_documents_whole():
    examples = [TokenExample(words=["w"], tags=["O"], doc_id=i // 5) for i in range(100)]
    train, dev = holdout(examples, 0.2, seed=0, by_document=True)
    assert not {e.doc_id for e in train} & {e.doc_id for e in dev}
    assert len(dev) == 20


def _task(tiny_model, max_length=16, document_context=True):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    return TokenClassificationTask(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"], tok, max_length, document_context)


def test_first_subword_carries_the_label(tiny_model):
    task = _task(tiny_model)
    ex = TokenExample(words=["alice", "zyx", "paris"], tags=["B-PER", "O", "B-LOC"])  # zyx -> z ##y ##x
    (feature,) = task.encode_for_training([ex])
    tokens = task.tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert tokens == ["[CLS]", "alice", "z", "##y", "##x", "paris", "[SEP]"]
    assert feature["labels"] == [IGNORE, 3, 0, IGNORE, IGNORE, 1, IGNORE]


def test_document_context_packs_neighbours_and_long_text_is_windowed(tiny_model):
    task = _task(tiny_model, max_length=12)  # 10 tokens per window
    doc = [TokenExample(words=["alice", "visited", "paris"], tags=["B-PER", "O", "B-LOC"], doc_id=0) for _ in range(3)]
    feats = task.encode_for_training(doc)
    assert [len(f["input_ids"]) for f in feats] == [2 + 9]  # three 3-token sentences in one sequence
    separate = _task(tiny_model, max_length=12, document_context=False).encode_for_training(doc)
    assert len(separate) == 3
    long = TokenExample(words=["alice"] * 35, tags=["B-PER"] + ["I-PER"] * 34)
    feats, plans = task.encode_for_inference([long])
    assert len(feats) > 3 and all(len(f["input_ids"]) <= 12 for f in feats)
    covered = {w for (s, e) in plans[0].spans for w in range(s, e)}
    assert covered == set(range(35))


def test_decode_maps_entities_to_character_offsets(tiny_model):
    import numpy as np

    task = _task(tiny_model)
    text = "Alice  visited Paris!"
    ex = TokenExample(words=["Alice", "visited", "Paris", "!"], text=text, offsets=[(0, 5), (7, 14), (15, 20), (20, 21)])
    feats, plans = task.encode_for_inference([ex])
    logits = np.full((len(feats[0]["input_ids"]), 5), -5.0, dtype=np.float32)
    for pos, label in ((1, 3), (2, 0), (3, 1), (4, 0)):  # one sub-word per word here
        logits[pos, label] = 5.0
    (pred,) = task.decode([ex], plans, [logits])
    assert pred["tags"] == ["B-PER", "O", "B-LOC", "O"]
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in pred["entities"]] == [("PER", "Alice", 0, 5), ("LOC", "Paris", 15, 20)]
    assert 0.99 < pred["entities"][0]["score"] <= 1.0


def test_new_runs_decode_the_best_valid_path_and_old_runs_keep_argmax(tiny_model):
    import numpy as np

    from lmforge.config import config_from_dict
    from lmforge.tasks.token_classification import TokenClassificationSpec

    ex = TokenExample(words=["Alice", "Smith", "left"], tags=["B-PER", "I-PER", "O"])
    logits = np.zeros((5, 5), dtype=np.float32)  # [CLS] Alice Smith left [SEP]; classes O B-LOC I-LOC B-PER I-PER
    logits[1] = np.log([0.6, 0.0001, 0.0001, 0.4, 0.0001])  # Alice: O 0.6 beats B-PER 0.4 on its own
    logits[2] = np.log([0.05, 0.0001, 0.0001, 0.05, 0.9])  # Smith: I-PER
    logits[3] = np.log([0.99, 0.0025, 0.0025, 0.0025, 0.0025])
    new = _task(tiny_model)
    assert new.to_json()["decoding"] == "iob2-viterbi"
    feats, plans = new.encode_for_inference([ex])
    (pred,) = new.decode([ex], plans, [logits])
    assert pred["tags"] == ["B-PER", "I-PER", "O"] and [e["text"] for e in pred["entities"]] == ["Alice Smith"]
    assert pred["word_scores"][0] == pytest.approx(0.4, abs=1e-3)  # the chosen tag's probability
    # a run saved before (labels.json without "decoding") reads each word's own best tag, repaired
    cfg = config_from_dict({"task": "token-classification", "data": {"max_length": 16}})
    saved = {k: v for k, v in new.to_json().items() if k != "decoding"}
    old = TokenClassificationSpec().for_run(cfg, saved, new.tokenizer)
    assert not old.viterbi and old.to_json() == saved
    (pred,) = old.decode([ex], plans, [logits])
    assert pred["tags"] == ["O", "B-PER", "O"]


def test_repair_iob2_and_join_words():
    assert repair_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-PER"]
    assert join_words(["a", "bc"]) == ("a bc", [(0, 1), (2, 4)])


def test_raw_text_words_split_punctuation_and_cjk(tiny_model):
    from transformers import AutoTokenizer

    from lmforge.predictor import Predictor

    ex = words_of(AutoTokenizer.from_pretrained(tiny_model), "Hi, Bob! 北京大学 ok")
    assert ex.words == ["Hi", ",", "Bob", "!", "北", "京", "大", "学", "ok"]
    assert all(ex.text[s:e] == w for w, (s, e) in zip(ex.words, ex.offsets))


def test_holdout_with_two_examples_per_class_holds_out_one_of_some_classes():
    # an active-learning start: 154 labels over 77 classes; every class's 10% rounds to 0
    examples = [TextExample(text=f"t{i}", labels=[f"c{i // 2}"]) for i in range(154)]
    train, dev = holdout(examples, 0.1, seed=0)
    assert len(dev) == 15 and len(train) == 139
    assert {e.labels[0] for e in train} == {f"c{k}" for k in range(77)}  # every class keeps a training example
    assert len({e.labels[0] for e in dev}) == 15  # one example from each of 15 classes
    assert [e.text for e in holdout(examples, 0.1, seed=0)[1]] == [e.text for e in dev]  # seeded


def test_holdout_with_one_example_per_class_says_what_to_do():
    from lmforge.errors import UserError

    examples = [TextExample(text=f"t{i}", labels=[f"c{i}"]) for i in range(20)]
    with pytest.raises(UserError, match="every class has one example.*data.dev.*fewshot"):
        holdout(examples, 0.1, seed=0)


def test_data_error_survives_pickling():
    # worker processes (DDP ranks, process pools) send exceptions back pickled
    import pickle

    from lmforge.errors import DataError

    err = DataError(["a.csv:2: empty text", "a.csv:9: empty text"], total=12)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, DataError) and back.problems == err.problems and back.total == 12
    assert str(back) == str(err) and str(back).startswith("12 data problems:\n  - a.csv:2: empty text")
