"""The Predictor and the run folder it reads: raw texts to examples, empty input, and what a damaged
or unusual run folder gives."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from lmforge.errors import UserError
from lmforge.runs import RunFolder


def test_predict_empty_list(cls_predictor):
    assert cls_predictor.predict([]) == []


def test_words_of_with_byte_level_tokenizer():
    """Byte-level BPE pre-tokenizers rewrite pieces ('Ġworld'); offsets must still index the text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lmforge.data.words import words_of

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["hello world, hello Paris"], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    text = "hello  world, Paris"
    ex = words_of(fast, text)
    assert ex.words == ["hello", "world", ",", "Paris"]
    assert [text[s:e] for s, e in ex.offsets] == ex.words


def test_examples_from_texts_builds_pairs_and_ner_words(cls_predictor, ner_predictor):
    single, pair = cls_predictor.examples_from_texts(["one", ("a", "b")])
    assert (single.text, single.text_pair) == ("one", None) and (pair.text, pair.text_pair) == ("a", "b")
    words = ner_predictor.examples_from_texts(["Alice visited Paris."])[0]
    assert words.words == ["Alice", "visited", "Paris", "."] and words.offsets[2] == (14, 19)


def test_run_folder_reads_a_complete_run(cls_run):
    run = RunFolder.open(cls_run)
    assert run.complete and run.labels.task == "text-classification" and len(run.labels.labels) == 3
    assert not run.is_decoder and run.merged and not run.uses_adapter
    digest = hashlib.sha256((cls_run / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert run.version == f"{run.config.name}-{digest[:12]}"
    assert set(run.metrics) >= {"dev", "training"}


def test_run_folder_errors_name_the_folder_and_what_to_do(tmp_path, cls_run):
    with pytest.raises(UserError, match="is not an lmforge run folder"):
        RunFolder.open(tmp_path)
    copy = tmp_path / "run"
    shutil.copytree(cls_run, copy)
    shutil.rmtree(copy / "model")
    with pytest.raises(UserError, match=r"no trained model yet .* `lmforge train --resume"):
        RunFolder.open(copy)
    (copy / "labels.json").write_text("{not json")
    with pytest.raises(UserError, match=r"labels.json: not a valid labels.json .* damaged"):
        _ = RunFolder.open(copy, complete=False).labels


def test_run_without_merged_key_applies_an_existing_adapter(tmp_path, cls_run):
    """Runs written before run.json recorded `merged` count as unmerged: an adapter is applied."""
    copy = tmp_path / "run"
    shutil.copytree(cls_run, copy)
    info = json.loads((copy / "run.json").read_text())
    info.pop("merged")
    (copy / "run.json").write_text(json.dumps(info))
    assert not RunFolder(copy).uses_adapter  # full fine-tuning: no adapter folder
    (copy / "adapter").mkdir()
    assert RunFolder(copy).uses_adapter


def test_sub_batches_cover_every_sequence_once_and_pad_less():
    import random

    from lmforge.inference import plan_sub_batches

    rng = random.Random(0)
    lengths = [rng.randint(5, 60) for _ in range(32)]
    passes = plan_sub_batches(lengths, overhead_tokens=64)
    assert sorted(i for p in passes for i in p) == list(range(32))
    padded = sum(len(p) * max(lengths[i] for i in p) for p in passes)
    assert len(passes) > 1 and padded + 64 * len(passes) < 32 * max(lengths) + 64  # cheaper than one padded pass
    assert plan_sub_batches(lengths, overhead_tokens=10**9) == [sorted(range(32), key=lambda i: -lengths[i])]
    assert plan_sub_batches(lengths, overhead_tokens=0) == plan_sub_batches(lengths, overhead_tokens=0)
    assert all(len({lengths[i] for i in p}) == 1 for p in plan_sub_batches(lengths, overhead_tokens=0))  # no padding at all
    # budgets: no pass over the row or token limit, except a single sequence longer than the budget
    long = [3000, 10, 10, 9000] + [100] * 300
    for p in plan_sub_batches(long, token_budget=8192, max_batch=128):
        assert len(p) <= 128 and (len(p) == 1 or len(p) * max(long[i] for i in p) <= 8192)
    assert plan_sub_batches([]) == []


def test_sub_batched_predictions_equal_one_at_a_time(cls_predictor, ner_predictor):
    """Cutting a batch into passes of similar lengths changes nothing a user sees: every prediction
    equals the one the sentence gets alone."""
    import numpy as np

    from lmforge.inference import run_batches

    texts = ["good", "the film was really very good and the actors were great fun to watch tonight", "bad movie",
             "terrible plot , awful acting and a long boring ending", "ok", "fine fine fine"] * 3
    for predictor in (cls_predictor, ner_predictor):
        examples = predictor.examples_from_texts(texts)
        features, _ = predictor.task.encode_for_inference(examples)
        pad = predictor.tokenizer.pad_token_id
        calls = []

        def counting(batch, forward=predictor.forward):
            calls.append(tuple(batch["input_ids"].shape))
            return forward(batch)

        together = run_batches(features, pad, counting)
        assert len(calls) > 1 and len(calls) < len(texts)  # several passes, not one per sentence
        for feature, out in zip(features, together):
            alone = run_batches([feature], pad, predictor.forward)[0]
            np.testing.assert_allclose(out, alone, atol=1e-5)


def test_ner_progress_counts_sentences_not_windows(ner_predictor):
    # NER packs sentences into documents and long ones into several windows: the bar's total is the
    # sentence count, so the advances must add up to exactly that (once "291/270" on Weibo's test set)
    texts = ["alice visited london today"] * 5 + [" ".join(["word"] * 400)]
    steps: list[int] = []
    ner_predictor.predict(texts, progress=steps.append)
    assert sum(steps) == len(texts) and all(n > 0 for n in steps)


def test_bf16_predictions_run_a_bf16_copy_made_once_and_keep_the_fp32_model(cls_run):
    """bf16 inference runs a copy whose weights are the fp32 weights rounded, without autocast; the
    fp32 model (what explain uses) is left as it was, and an ONNX predictor never makes the copy."""
    import copy

    import numpy as np
    import torch

    from lmforge.inference import TorchForward, inference_model, run_batches
    from lmforge.predictor import Predictor

    predictor = Predictor.from_run(cls_run, bf16=True)
    assert predictor.torch._runner is None  # not made until the first prediction
    texts = ["a short one", "and a somewhat longer text than that", "x"]
    predictor.predict(texts)
    runner = predictor.torch.runner()
    assert runner is not predictor.model and predictor.torch.runner() is runner
    assert all(p.dtype == torch.bfloat16 for p in runner.parameters())
    assert all(p.dtype == torch.float32 for p in predictor.model.parameters())
    for a, b in zip(predictor.model.parameters(), runner.parameters()):
        assert torch.equal(a.detach().to(torch.bfloat16), b.detach())
    features, _ = predictor.task.encode_for_inference(predictor.examples_from_texts(texts))
    pad = predictor.tokenizer.pad_token_id
    by_hand = copy.deepcopy(predictor.model).to(torch.bfloat16).eval()
    got = np.stack(run_batches(features, pad, predictor.forward))
    with torch.inference_mode():
        want = [by_hand(**{k: torch.tensor([v]) for k, v in f.items() if k != "labels"}).logits.float()[0].numpy() for f in features]
    assert np.allclose(got, np.stack(want), atol=2e-2)  # one batch vs one at a time: bf16 sums may differ a little
    fp32 = np.stack(run_batches(features, pad, TorchForward(predictor.model)))
    assert not np.array_equal(got, fp32) and np.allclose(got, fp32, atol=0.1)  # bf16 really ran
    assert inference_model(runner, True) is runner and inference_model(predictor.model, False) is predictor.model
