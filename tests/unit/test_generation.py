"""Generator: greedy and sampled generation, left-padded batches, stop strings, streaming, loading
from folders and run folders, argument checks, the `generate` command, and exact 4-bit packing.

Fixture provenance: a 2-layer, 32-wide random Llama and a byte-level BPE tokenizer trained here
offline, on the sentences below (synthetic); nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import run_cli
from lmforge.errors import UserError
from lmforge.generation import Generator
from lmforge.generation.stops import first_stop, held_back
from lmforge.generation.lowbit import MAX_INT4_ROWS, PackedLinear, pack_exact_lowbit

SENTENCES = ["the cat sat on the mat.", "a dog ran in the park!", "what is two plus three? five.",
             "write a function that adds x and y", "hello there, how are you today?", "1 2 3 4 5 6 7 8 9 10"] * 4
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
PROMPTS = ["the cat", "what is two plus three and then some more words?", "hello"]


def build_tiny_llama(folder: Path, *, chat: bool = True) -> Path:
    """A ~30k-parameter random Llama and a byte-level BPE (vocab 200) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # only the characters of the sentences (no raw bytes): random weights then write readable text
    backend.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=200, special_tokens=specials))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  additional_special_tokens=["<|user|>", "<|assistant|>"])
    if chat:
        tok.chat_template = TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.5,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a random model would often repeat a special token (empty text): never predict those,
        model.lm_head.weight[[0, 1, 3, 4]] = 0  # and the end token only now and then
        model.lm_head.weight[2] *= 0.3
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("gen-llama"))


@pytest.fixture(scope="module")
def gen(llama) -> Generator:
    return Generator.from_pretrained(llama, bf16=False)


def plain_greedy(folder: Path, ids: list[int], n: int) -> list[int]:
    """What transformers' own generate produces greedily for one prompt, up to its end token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=n,
                             do_sample=False, pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    return out[: out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out


# -- greedy, batching, limits ----------------------------------------------------------------------
def test_greedy_is_deterministic_and_equals_plain_generate(gen, llama):
    first = gen.generate(PROMPTS, max_new_tokens=12)
    assert gen.generate(PROMPTS, max_new_tokens=12) == first
    for prompt, result in zip(PROMPTS, first):
        want = plain_greedy(llama, gen.encode(prompt), 12)
        assert result["text"] == gen.tokenizer.decode(want, skip_special_tokens=True)
        assert result["tokens"] == len(want)


def test_left_padded_batches_equal_one_by_one(gen):
    prompts = PROMPTS + ["a dog ran in the park and then it sat down on the mat", "1 2 3"]
    together = gen.generate(prompts, max_new_tokens=10, batch_size=8)
    pairs = gen.generate(prompts, max_new_tokens=10, batch_size=2)
    alone = [gen.generate([p], max_new_tokens=10)[0] for p in prompts]
    assert together == alone == pairs


def test_max_new_tokens_and_finish_reason(gen):
    results = gen.generate(PROMPTS, max_new_tokens=5, ignore_eos=True)
    assert all(r["tokens"] == 5 and r["finish_reason"] == "length" for r in results)
    for r in gen.generate(PROMPTS, max_new_tokens=7):
        assert 1 <= r["tokens"] <= 7
        assert r["finish_reason"] == "stop" if r["tokens"] < 7 else r["finish_reason"] in ("stop", "length")


def test_stop_strings_truncate_and_end_early(gen):
    long = gen.generate([PROMPTS[0]], max_new_tokens=24, ignore_eos=True)[0]
    text = long["text"]
    stop = text[6:9]  # some string in the middle of the greedy completion
    assert len(stop) == 3
    result = gen.generate([PROMPTS[0]], max_new_tokens=24, stop=[stop, "never-appears"])[0]
    assert result["text"] == text[: text.find(stop)]
    assert result["finish_reason"] == "stop" and result["tokens"] < 24
    # in a batch, the row that stops early does not change the other rows
    both = gen.generate([PROMPTS[0], PROMPTS[1]], max_new_tokens=24, stop=[stop], ignore_eos=True)
    other = gen.generate([PROMPTS[1]], max_new_tokens=24, stop=[stop], ignore_eos=True)[0]
    assert both[0] == result and both[1] == other


def test_sampling_is_reproducible_with_a_seed(gen):
    a = gen.generate(PROMPTS, max_new_tokens=12, temperature=1.5, top_p=0.9, seed=7)
    b = gen.generate(PROMPTS, max_new_tokens=12, temperature=1.5, top_p=0.9, seed=7)
    others = [gen.generate(PROMPTS, max_new_tokens=12, temperature=1.5, seed=s) for s in (1, 2, 3)]
    assert a == b
    assert any(o != a for o in others)
    state = torch.random.get_rng_state()
    gen.generate(PROMPTS[:1], max_new_tokens=3, temperature=1.0, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # a seeded call leaves the global RNG alone


def test_chat_template_wraps_prompts_unless_disabled(gen):
    chat = gen.tokenizer.decode(gen.encode("hello", chat=True))
    plain = gen.tokenizer.decode(gen.encode("hello", chat=False))
    assert chat == "<|user|>hello</s><|assistant|>" and plain == "hello"


# -- streaming -----------------------------------------------------------------------------------
def test_stream_yields_the_same_text(gen):
    for prompt in PROMPTS:
        assert "".join(gen.stream(prompt, max_new_tokens=12)) == gen.generate([prompt], max_new_tokens=12)[0]["text"]
    text = gen.generate([PROMPTS[0]], max_new_tokens=24, ignore_eos=True)[0]["text"]
    stop = text[6:9]
    assert "".join(gen.stream(PROMPTS[0], max_new_tokens=24, stop=[stop])) == text[: text.find(stop)]


def test_closing_a_stream_early_releases_the_model(gen):
    pieces = gen.stream(PROMPTS[0], max_new_tokens=200)
    next(pieces, None)
    pieces.close()  # stops the worker; the next call must not wait for 200 tokens
    assert gen.generate([PROMPTS[1]], max_new_tokens=3)[0]["tokens"] <= 3


def test_stream_into_pushes_the_same_pieces_generating_on_the_calling_thread(gen):
    import threading

    forward_threads = set()
    hook = gen.model.register_forward_hook(lambda *_: forward_threads.add(threading.get_ident()))
    try:
        for prompt in PROMPTS:
            pieces: list[str] = []
            gen.stream_into(pieces.append, prompt, max_new_tokens=12)
            assert "".join(pieces) == "".join(gen.stream(prompt, max_new_tokens=12))
        forward_threads.clear()
        text = gen.generate([PROMPTS[0]], max_new_tokens=24, ignore_eos=True)[0]["text"]
        stop, pieces = text[6:9], []
        gen.stream_into(pieces.append, PROMPTS[0], max_new_tokens=24, stop=[stop])
        assert "".join(pieces) == text[: text.find(stop)]
    finally:
        hook.remove()
    assert forward_threads == {threading.get_ident()}  # the model ran on this thread only (lmforge/threads.py)
    sampled_a, sampled_b = [], []
    gen.stream_into(sampled_a.append, PROMPTS[1], max_new_tokens=10, temperature=1.0, seed=3)
    gen.stream_into(sampled_b.append, PROMPTS[1], max_new_tokens=10, temperature=1.0, seed=3)
    assert sampled_a == sampled_b


def test_stream_into_stops_when_the_receiver_fails(gen):
    seen = []
    forwards = []

    def emit(piece: str) -> None:
        seen.append(piece)
        raise ConnectionError("client went away")
    hook = gen.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        with pytest.raises(ConnectionError, match="client went away"):
            gen.stream_into(emit, PROMPTS[0], max_new_tokens=200, chat=False, stop=None)
    finally:
        hook.remove()
    assert len(seen) == 1
    assert len(forwards) < 20  # the generation stopped soon after, not after 200 tokens
    assert gen.generate([PROMPTS[1]], max_new_tokens=3)[0]["tokens"] <= 3  # the model is free again
    with pytest.raises(UserError, match="one prompt"):
        gen.stream_into(seen.append, ["a", "b"])


def test_stream_batch_into_streams_every_row_as_its_own_stream(gen):
    rows: list[list[str]] = [[] for _ in PROMPTS]
    gen.stream_batch_into([r.append for r in rows], PROMPTS, max_new_tokens=12)
    for prompt, pieces in zip(PROMPTS, rows):
        assert pieces and "".join(pieces) == "".join(gen.stream(prompt, max_new_tokens=12))
    text = gen.generate([PROMPTS[0]], max_new_tokens=24, ignore_eos=True)[0]["text"]
    stop = text[6:9]
    rows = [[] for _ in PROMPTS]
    gen.stream_batch_into([r.append for r in rows], PROMPTS, max_new_tokens=24, stop=[stop])
    for prompt, pieces in zip(PROMPTS, rows):
        assert "".join(pieces) == "".join(gen.stream(prompt, max_new_tokens=24, stop=[stop]))
    assert "".join(rows[0]) == text[: text.find(stop)]


def test_a_failing_row_receiver_leaves_the_other_rows_alone(gen):
    def gone(piece: str) -> None:
        raise ConnectionError("client went away")
    kept: list[str] = []
    gen.stream_batch_into([gone, kept.append], PROMPTS[:2], max_new_tokens=12)
    assert "".join(kept) == "".join(gen.stream(PROMPTS[1], max_new_tokens=12))


def test_stop_helpers():
    assert first_stop("abc\n\ndef", ["\n\n", "d"]) == 3 and first_stop("abc", ["x"]) is None
    assert held_back("hello wor", ["world"]) == 3 and held_back("hello", ["xyz"]) == 0


# -- loading ---------------------------------------------------------------------------------------
def test_plain_folder_and_run_folder_load_the_same_model(gen, llama, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(llama, run / "model")
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "tiny-sft", "task": "generation", "model": str(llama)}))
    (run / "labels.json").write_text(json.dumps({"task": "generation", "labels": []}))
    (run / "run.json").write_text(json.dumps({"status": "completed", "merged": True}))
    from_run = Generator.from_pretrained(run, bf16=False)
    assert from_run.version.startswith("tiny-sft-") and from_run.source == run / "model"
    assert from_run.generate(PROMPTS, max_new_tokens=8) == gen.generate(PROMPTS, max_new_tokens=8)
    assert gen.version.startswith(llama.name + "-") and len(gen.version.rsplit("-", 1)[1]) == 12

    (run / "config.yaml").write_text(yaml.safe_dump({"name": "cls", "task": "text-classification", "model": str(llama)}))
    with pytest.raises(UserError, match="not a generation run"):
        Generator.from_pretrained(run)
    with pytest.raises(UserError, match="unknown model"):
        Generator.from_pretrained(tmp_path / "nowhere")


def test_a_trained_run_answers_what_it_learned(tmp_path, tiny_decoder):
    """overfit (lmforge train, task generation) -> run folder -> Generator: the learned answers,
    in a left-padded batch, in bf16 too."""
    from lmforge.config import load_config
    from lmforge.training.loop import train
    from test_sft import PAIRS, sft_config

    run = train(load_config(sft_config(tmp_path, tiny_decoder, "full")), tmp_path)
    prompts, answers = [p for p, _ in PAIRS], [a for _, a in PAIRS]
    for bf16 in (False, True):
        results = Generator.from_pretrained(run, bf16=bf16).generate(prompts, max_new_tokens=10)
        assert [r["text"].strip() for r in results] == answers
        assert all(r["finish_reason"] == "stop" for r in results)


def test_bf16_generation_runs_and_is_deterministic(llama):
    g = Generator.from_pretrained(llama, bf16=True)
    assert g.bf16 and next(g.model.parameters()).dtype == torch.bfloat16
    assert g.packed == []  # random weights are on no 4-bit grid
    assert g.generate(PROMPTS, max_new_tokens=6) == g.generate(PROMPTS, max_new_tokens=6)


def test_tokenizer_without_chat_template(tmp_path):
    g = Generator.from_pretrained(build_tiny_llama(tmp_path / "nochat", chat=False), bf16=False)
    assert g.encode("hello", chat=True) == g.encode("hello", chat=False)
    assert g.generate(["hello"], max_new_tokens=3)[0]["tokens"] <= 3


# -- argument checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("prompts, kwargs, message", [
    ([], {}, "non-empty list"),
    ("hello", {}, "not a single string"),
    (["hello", "  "], {}, "prompt 1"),
    (["hello"], {"max_new_tokens": 0}, "max_new_tokens"),
    (["hello"], {"max_new_tokens": 100_000}, "max_new_tokens"),
    (["hello there, how are you today?" * 3], {"max_new_tokens": 240}, "exceeds the model.s 256 positions"),
    (["hello"], {"temperature": -0.1}, "temperature"),
    (["hello"], {"top_p": 0.0}, "top_p"),
    (["hello"], {"top_p": 1.5}, "top_p"),
    (["hello"], {"stop": [""]}, "stop"),
    (["hello"], {"seed": -1}, "seed"),
    (["hello"], {"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_user_errors(gen, prompts, kwargs, message):
    with pytest.raises(UserError, match=message):
        gen.generate(prompts, **kwargs)


def test_all_problems_are_reported_at_once(gen):
    with pytest.raises(UserError) as info:
        gen.generate(["hi"], temperature=-1, top_p=2, max_new_tokens=0)
    assert all(key in str(info.value) for key in ("temperature", "top_p", "max_new_tokens"))
    with pytest.raises(UserError, match="top_p"):
        gen.stream("hi", top_p=0)  # checked when called, before any iteration
    with pytest.raises(UserError, match="quantize"):
        Generator.from_pretrained("whatever", quantize="int3")


# -- exact 4-bit packing ---------------------------------------------------------------------------
def _on_q4_grid(out: int, inp: int) -> torch.Tensor:
    """A weight the way GGUF Q4_1 de-quantizes: per group of 32, fp16 scale * q + fp16 minimum."""
    torch.manual_seed(1)
    scale = (torch.rand(out, inp // 32, 1) * 0.02 + 0.001).half().float()
    low = (torch.randn(out, inp // 32, 1) * 0.05).half().float()
    q = torch.randint(0, 16, (out, inp // 32, 32)).float()
    q[..., 0], q[..., 1] = 0, 15  # the quantizer maps each group's min to 0 and max to 15
    return (scale * q + low).view(out, inp)


def _on_q8_grid(out: int, inp: int) -> torch.Tensor:
    torch.manual_seed(2)
    scale = (torch.rand(out, inp // 32, 1) * 0.01 + 0.001).half().float()
    q = torch.randint(-127, 128, (out, inp // 32, 32)).float()
    q[..., 0] = 127
    return (scale * q).view(out, inp)


@pytest.mark.parametrize("make, parts", [(_on_q4_grid, 1), (_on_q8_grid, 2)])
def test_packed_linear_matches_the_fp32_layer(make, parts):
    linear = torch.nn.Linear(96, 48, bias=False)
    linear.weight.data = make(48, 96)
    model = torch.nn.Sequential(linear)
    assert pack_exact_lowbit(model) == ["0"]
    packed = model[0]
    assert isinstance(packed, PackedLinear) and len(packed.parts) == parts
    model.to(torch.bfloat16)
    x = torch.randn(1, 3, 96)
    ref = x @ linear.weight.float().t()  # fp32 weights (the grid) and fp32 input
    for rows in (x[:, :1], x):  # 1 row: int4 kernel; 3 rows: still int4 (<= MAX_INT4_ROWS)
        got = packed(rows.bfloat16()).float()
        assert torch.allclose(got, ref[:, : rows.shape[1]], atol=0.02 * ref.abs().max().item())
    assert packed.max_int4_elements == MAX_INT4_ROWS[parts] * 96
    many = torch.randn(20, 96)  # more rows than MAX_INT4_ROWS: the bf16 weight
    assert torch.allclose(packed(many.bfloat16()).float(), many @ linear.weight.float().t(), atol=0.05)


def test_weights_off_the_grid_are_left_alone():
    linear = torch.nn.Linear(64, 32, bias=False)
    weight = _on_q4_grid(32, 64)
    weight[31, 63] += 1e-3  # one weight off the grid, in the last row (past the quick first-rows check)
    linear.weight.data = weight
    model = torch.nn.Sequential(linear, torch.nn.Linear(30, 16))  # and one of a shape the kernel cannot take
    assert pack_exact_lowbit(model) == []
    assert isinstance(model[0], torch.nn.Linear)


def test_a_grid_model_generates_on_4bit_kernels(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(llama))
    for module in model.model.layers.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data = _on_q4_grid(*module.weight.shape)
    folder = tmp_path / "grid"
    model.save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (llama / name).exists():
            shutil.copy(llama / name, folder / name)
    packed = Generator.from_pretrained(folder, bf16=True)
    plain = Generator.from_pretrained(folder, bf16=True, quantize="none")
    assert len(packed.packed) == 14 and plain.packed == []  # 7 Linear layers x 2 blocks; the head is random
    ids = torch.tensor([packed.encode("the cat")])
    with torch.inference_mode():
        a = packed.model(ids).logits[0, -1].float()
        b = plain.model(ids).logits[0, -1].float()
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    assert packed.generate(PROMPTS, max_new_tokens=5)[0]["tokens"] >= 1


# -- the command -----------------------------------------------------------------------------------
def test_cli_generate(llama, tmp_path, gen):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\n\nhello\n", encoding="utf-8")
    r = run_cli("generate", llama, "--prompt", PROMPTS[1], "--file", prompts, "--max-new-tokens", "6", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == [PROMPTS[1], "the cat", "hello"]
    bf16 = Generator.from_pretrained(llama)  # the CLI's bf16 default
    want = bf16.generate([PROMPTS[1], "the cat", "hello"], max_new_tokens=6, continuous=True)  # greedy: the continuous batch
    assert [{k: row[k] for k in ("text", "tokens", "finish_reason")} for row in rows] == want
    assert "tokens/s" in r.stderr
    r = run_cli("generate", llama, "--prompt", PROMPTS[1], "--file", prompts, "--max-new-tokens", "6", "--json", "--no-continuous-batching")
    assert r.returncode == 0, r.stderr
    static = bf16.generate([PROMPTS[1], "the cat", "hello"], max_new_tokens=6)
    assert [{k: json.loads(line)[k] for k in ("text", "tokens", "finish_reason")} for line in r.stdout.splitlines()] == static

    r = run_cli("generate", llama, "--prompt", "hello", "--max-new-tokens", "4", "--no-chat")
    assert r.returncode == 0, r.stderr
    assert r.stdout == Generator.from_pretrained(llama).generate(["hello"], max_new_tokens=4, chat=False)[0]["text"] + "\n"

    r = run_cli("generate", llama, "--prompt", "hello", "--temperature", "-1")
    assert r.returncode == 2 and "temperature" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("generate", llama)
    assert r.returncode == 2 and "--prompt" in r.stderr


# -- continuous batching ---------------------------------------------------------------------------
def test_continuous_batching_equals_static_batching(gen):
    """Greedy completions are the same whether rows wait for their batch or leave and are replaced at once:
    more prompts than rows, different lengths, end tokens, stop strings (ignore_eos keeps the static path)."""
    prompts = PROMPTS + ["a dog ran in the park and then it sat down on the mat", "1 2 3", "the cat", "x y z w"]
    for kwargs in ({"max_new_tokens": 12}, {"max_new_tokens": 9, "ignore_eos": True}, {"max_new_tokens": 16, "stop": [" the", "e"]}):
        static = gen.generate(prompts, batch_size=3, **kwargs)
        continuous = gen.generate(prompts, batch_size=3, continuous=True, **kwargs)
        assert continuous == static, kwargs
    stopped = gen.generate(prompts, max_new_tokens=16, stop=["e"], batch_size=2, continuous=True)
    assert all("e" not in r["text"] for r in stopped)
    assert any(r["finish_reason"] == "stop" and r["tokens"] < 16 for r in stopped)
    # sampling keeps the static path, where a seed reproduces the batch
    sampled = gen.generate(prompts, max_new_tokens=6, temperature=0.9, seed=3, continuous=True)
    assert sampled == gen.generate(prompts, max_new_tokens=6, temperature=0.9, seed=3)


def test_concurrent_streams_share_one_continuous_batch(llama):
    """The server's mode: streams from several threads and plain batches run on one continuous batch and
    give the static path's greedy texts; a stream closed early frees its row; sampling stays static."""
    import threading

    g = Generator.from_pretrained(llama, bf16=False)
    prompts = PROMPTS + ["a dog ran in the park and then it sat down on the mat", "1 2 3", "the cat"]
    want = g.generate(prompts, max_new_tokens=14)
    want_stop = g.generate(prompts, max_new_tokens=14, stop=["e "])
    g.start_continuous(max_rows=3)
    try:
        assert g.generate(prompts, max_new_tokens=14, continuous=True) == want
        assert g.generate(prompts, max_new_tokens=14, stop=["e "], continuous=True) == want_stop
        got: dict[int, str] = {}

        def consume(i: int) -> None:
            got[i] = "".join(g.stream(prompts[i], max_new_tokens=14))

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert [got.get(i) for i in range(len(prompts))] == [w["text"] for w in want]
        assert "".join(g.stream(prompts[0], max_new_tokens=14, stop=["e "])) == want_stop[0]["text"]
        early = g.stream(prompts[1], max_new_tokens=200)
        next(early)
        early.close()  # cancelled: the rows are free for the next requests
        assert g.generate(prompts[:2], max_new_tokens=14, continuous=True) == want[:2]
        sampled = g.generate(prompts[:2], max_new_tokens=6, temperature=0.9, seed=5)
        assert sampled == g.generate(prompts[:2], max_new_tokens=6, temperature=0.9, seed=5)
    finally:
        g.stop_continuous()
    assert g.engine is None and g.generate(prompts[:1], max_new_tokens=14) == want[:1]


def test_closing_the_continuous_batch_ends_waiting_streams(llama):
    g = Generator.from_pretrained(llama, bf16=False)
    g.start_continuous(max_rows=2)
    engine = g.engine
    ids = g.encode(PROMPTS[0])
    tokens = engine.tokens(ids, max_new_tokens=g.max_positions - len(ids) - 1, eos_ids=g.eos_ids, ignore_eos=True)
    next(tokens)
    g.stop_continuous()  # a server shutting down with a stream in flight
    with pytest.raises(RuntimeError, match="shutting down|stopped"):
        for _ in tokens:
            pass
    with pytest.raises(RuntimeError, match="closed"):
        next(engine.tokens(ids, max_new_tokens=4, eos_ids=g.eos_ids))
