"""The dense continuous batch (generation/refill.py): a finished row takes the next prompt at once, and
every greedy completion equals the prompt generated alone, through refills, longer prompts arriving
later (columns added on the left), dropped rows and trimmed columns."""

from __future__ import annotations

import random
import time

import pytest

from lmforge.generation import refill
from lmforge.generation.generator import Generator
from test_generation import build_tiny_llama

WORDS = "the cat sat on a mat and then dog ran park one two three what is hello".split()


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Generator:
    return Generator.from_pretrained(build_tiny_llama(tmp_path_factory.mktemp("refill-llama")), bf16=False)


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def test_refilled_rows_equal_each_prompt_alone(gen, monkeypatch):
    monkeypatch.setattr(refill, "TRIM_AT", 8)  # trim often
    seen = {"pad": 0, "drop": 0, "trimmed": 0, "refill": 0}
    original = {name: getattr(refill._Batch, name) for name in ("_pad_left", "drop", "trim", "add")}

    def spy(name):
        def call(self, *args):
            before = self.columns
            out = original[name](self, *args)
            if name == "_pad_left":
                seen["pad"] += 1
            elif name == "drop":
                seen["drop"] += 1
            elif name == "trim":
                seen["trimmed"] += self.columns < before
            elif args[2] is not None:
                seen["refill"] += 1
            return out
        return call

    for name in original:
        monkeypatch.setattr(refill._Batch, name, spy(name))
    texts = prompts(23)
    assert refill.supported(gen.model)
    for kwargs in ({"max_new_tokens": 60}, {"max_new_tokens": 90, "stop": ["e", " the"]}, {"max_new_tokens": 1}):
        alone = gen.generate(texts, batch_size=1, **kwargs)
        for rows in (2, 5, 30):
            assert gen.generate(texts, batch_size=rows, continuous=True, **kwargs) == alone, (kwargs, rows)
        if "stop" in kwargs:
            assert len({r["tokens"] for r in alone}) > 3  # rows finish at different steps
    assert all(seen[k] > 0 for k in seen), seen


def test_progress_reports_every_prompt_once(gen):
    import torch

    encoded = [gen.encode(p) for p in prompts(9, seed=1)]
    done: list[int] = []
    with torch.inference_mode():
        out = refill.generate_refill(gen.model, encoded, max_new_tokens=20, eos_ids=gen.eos_ids, stops=[], decode=gen._decode,
                                     max_rows=4, on_done=done.append)
    assert sorted(done) == list(range(9)) and len(out) == 9
    assert all(1 <= len(f.tokens) <= 20 and f.stopped_at is None for f in out)


def test_models_with_other_cache_layers_keep_the_paged_manager(gen, monkeypatch):
    """A model whose cache is not all full-attention layers (sliding windows) is not edited here: it goes to
    transformers' continuous-batching manager, with the same greedy texts."""
    from transformers import MistralConfig, MistralForCausalLM

    sliding = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=1, sliding_window=4))
    assert not refill.supported(sliding)
    texts = prompts(5, seed=2)
    want = gen.generate(texts, max_new_tokens=12)
    monkeypatch.setattr(refill, "supported", lambda model: False)
    monkeypatch.setattr(refill, "generate_refill", lambda *a, **k: pytest.fail("refill used for an unsupported model"))
    assert gen.generate(texts, max_new_tokens=12, batch_size=2, continuous=True) == want


def test_the_server_engine_runs_jobs_on_its_thread_and_fails_cleanly(gen):
    """RefillEngine is also the model executor: a job runs on the engine thread (between steps), its error
    goes to its caller, and a job there cannot wait for the batch it blocks. When a step fails, every
    waiting request gets the error and new ones are refused."""
    import threading

    from lmforge.generation.refill_engine import RefillEngine

    texts = prompts(4, seed=3)
    want = gen.generate(texts, max_new_tokens=10)
    gen.start_continuous(max_rows=2)
    engine = gen.engine
    try:
        assert isinstance(engine, RefillEngine)
        assert engine.submit(lambda: threading.current_thread().name).result(timeout=30) == "lmforge-continuous"
        with pytest.raises(ZeroDivisionError):
            engine.submit(lambda: 1 / 0).result(timeout=30)
        # on the engine thread, generate() takes the static path instead of waiting for itself
        assert engine.submit(lambda: gen.generate(texts, max_new_tokens=10, continuous=True)).result(timeout=60) == want
        assert gen.generate(texts, max_new_tokens=10, continuous=True) == want
        with pytest.raises(RuntimeError, match="cannot wait"):
            engine.submit(lambda: list(engine.tokens(gen.encode(texts[0]), max_new_tokens=3))).result(timeout=30)
    finally:
        gen.stop_continuous()

    # a failing step fails the rows decoding then; the engine goes on serving
    broken = RefillEngine(_Failing(gen.model, fail_call=3), eos_ids=gen.eos_ids, max_rows=2)
    with pytest.raises(RuntimeError, match="generation failed: step failed"):
        list(broken.tokens(gen.encode(texts[0]), max_new_tokens=50))
    again = broken.run_many([gen.encode(t) for t in texts], max_new_tokens=10, stops=[], decode=gen._decode)
    assert [gen._result(f.tokens, [], f.stopped_at, 10, False) for f in again] == want
    broken.close()
    # a prompt whose prefill fails gets its error alone; the prompts decoding beside it finish
    picky = RefillEngine(_Failing(gen.model, fail_length=len(gen.encode(texts[2]))), eos_ids=gen.eos_ids, max_rows=4)
    streams = [picky.tokens(gen.encode(t), max_new_tokens=10) for t in texts]
    outcomes: list = []
    for stream in streams:
        try:
            outcomes.append(gen._result(list(stream)[-1], [], None, 10, False))
        except RuntimeError as err:
            outcomes.append(str(err))
    picky.close()
    assert outcomes[2] == "generation failed: prefill failed"
    assert outcomes[:2] + outcomes[3:] == want[:2] + want[3:]


def test_a_receiver_that_fails_frees_its_row(gen, monkeypatch):
    """A stream whose client went away (its `emit` raises) is cancelled: its row is freed within a step or two."""
    from lmforge.generation.refill_engine import RefillEngine

    steps = {"n": 0}
    real = refill._Batch.step

    def counting(self):
        steps["n"] += 1
        return real(self)
    monkeypatch.setattr(refill._Batch, "step", counting)
    gen.start_continuous(max_rows=1)
    try:
        assert isinstance(gen.engine, RefillEngine)
        pieces: list[str] = []

        def emit(piece: str) -> None:
            pieces.append(piece)
            if len(pieces) == 2:
                raise ConnectionError("gone")
        with pytest.raises(ConnectionError):
            gen.stream_into(emit, prompts(1, seed=4)[0], max_new_tokens=200)
        deadline = time.time() + 10
        while gen.engine.rows_in_use and time.time() < deadline:
            time.sleep(0.01)
        assert gen.engine.rows_in_use == 0 and steps["n"] < 50, steps
    finally:
        gen.stop_continuous()


class _Failing:
    """The model, failing on call number `fail_call` (counting prefills and steps), or on the prefill
    of a prompt of `fail_length` tokens."""

    def __init__(self, model, fail_call: int | None = None, fail_length: int | None = None):
        self.model, self.calls, self.fail_call, self.fail_length = model, 0, fail_call, fail_length

    def parameters(self):
        return self.model.parameters()

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls == self.fail_call:
            raise RuntimeError("step failed")
        if "logits_to_keep" in kwargs and kwargs["input_ids"].shape[1] == self.fail_length:
            raise RuntimeError("prefill failed")
        return self.model(**kwargs)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_prefix_tuned_and_eager_attention_models_keep_other_paths(gen):
    """A prefix-tuned model brings its own past keys/values and mask: continuous requests take static
    batches and the server starts no continuous batch. Eager attention would add the boolean mask as 0/1,
    so such a model is not run here either."""
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prefixed = get_peft_model(AutoModelForCausalLM.from_pretrained(gen.source),
                              PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    g = Generator(prefixed, gen.tokenizer, source=gen.source, name="prefix", bf16=False)
    assert refill.prompt_learning(g.model) and not refill.supported(g.model)
    texts = prompts(4, seed=5)
    assert g.generate(texts, max_new_tokens=6, continuous=True) == g.generate(texts, max_new_tokens=6)
    g.start_continuous(max_rows=2)
    assert g.engine is None
    assert not refill.supported(AutoModelForCausalLM.from_pretrained(gen.source, attn_implementation="eager"))
    assert refill.supported(gen.model) and not refill.prompt_learning(gen.model)
