"""The dense continuous batch (generation/refill.py): a finished row takes the next prompt at once, and
every greedy completion equals the prompt generated alone, through refills, longer prompts arriving
later (columns added on the left), dropped rows and trimmed columns."""

from __future__ import annotations

import random

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

    broken = RefillEngine(_Failing(gen.model), eos_ids=gen.eos_ids, max_rows=2)
    with pytest.raises(RuntimeError, match="engine stopped: step failed"):
        list(broken.tokens(gen.encode(texts[0]), max_new_tokens=50))
    with pytest.raises(RuntimeError, match="closed"):
        broken.tokens(gen.encode(texts[1]), max_new_tokens=5)
    broken.close()


class _Failing:
    """The model, failing on its third call (a prefill, then two decode steps)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def parameters(self):
        return self.model.parameters()

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("step failed")
        return self.model(**kwargs)
