"""How long `lmforge suggest` takes over a 10,000-text pool (issue 14: "well under a minute on 2 cores").

    python bench/suggest_speed.py [--pool-size 10000] [--n 50] [--name suggest_speed]

A MiniLM-L6 classifier is trained for one epoch on 500 SST-2 sentences (the model's quality does not
matter here, its size does), then `lmforge suggest RUN --pool POOL -n 50` is timed through the CLI a
user runs, with the default margin + diversity, without diversity, and on the exported ONNX int8
graph (`--backend onnx`); and, for NER, MNLP over 10,000 CoNLL-2003 sentences with a one-epoch run.
Each command is timed whole (process start, model load, reading, scoring, clustering, writing).

The floor beside it, in the same run: the bare forward pass of the same classifier over the same pool
(transformers, length-sorted batches of 128, no lmforge code; fp32, and bf16 autocast where the CPU has
it, as lmforge then runs), its achieved GFLOP/s, and this machine's matmul peak in the same precisions
(torch.mm, 2048x1536x384): how much of the suggest time is the model itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data  # noqa: E402

LMFORGE = str(Path(sys.executable).with_name("lmforge"))


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([LMFORGE, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return round(time.perf_counter() - start, 1)


def forward_floor(run: Path, pool: Path) -> dict:
    """Seconds of the bare model forward over the pool, and the GFLOP/s it and a plain matmul reach:
    in fp32, and in bf16 autocast too where the CPU has native bf16 (what lmforge then runs)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lmforge.models.build import bf16_supported

    texts = [line.strip() for line in pool.read_text(encoding="utf-8").splitlines() if line.strip()]
    tok = AutoTokenizer.from_pretrained(str(run / "model"))
    model = AutoModelForSequenceClassification.from_pretrained(str(run / "model")).eval()
    enc = sorted(tok(texts, truncation=True, max_length=128)["input_ids"], key=len)
    tokens = sum(len(ids) for ids in enc)
    per_token = 2 * sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    out: dict = {"pool_tokens": tokens}
    for precision in ("fp32", "bf16") if bf16_supported(torch.device("cpu")) else ("fp32",):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for i in range(0, len(enc), 128):
                batch = tok.pad({"input_ids": enc[i:i + 128]}, return_tensors="pt")
                model(**batch)
        seconds = time.perf_counter() - start
        a, b = torch.randn(2048, 1536, dtype=dtype), torch.randn(1536, 384, dtype=dtype)
        torch.mm(a, b)
        mm_start = time.perf_counter()
        for _ in range(20):
            torch.mm(a, b)
        peak = 20 * 2 * 2048 * 1536 * 384 / (time.perf_counter() - mm_start) / 1e9
        suffix = "" if precision == "fp32" else "_bf16"
        out.update({f"forward_floor{suffix}_s": round(seconds, 1), f"forward{suffix}_gflops": round(per_token * tokens / seconds / 1e9, 1),
                    f"matmul_peak{suffix}_gflops": round(peak, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-size", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--name", default="suggest_speed", help="results file name under bench/results")
    args = parser.parse_args()
    data = shared_data()
    results: dict = {"pool_size": args.pool_size, "n": args.n}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with (data / "sst2" / "glue" / "train.tsv").open(encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        random.Random(0).shuffle(rows)
        train = tmp / "train.tsv"
        train.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows[:500]))
        pool = tmp / "pool.txt"
        pool.write_text("".join(s.strip() + "\n" for s, _ in rows[500:500 + args.pool_size]))
        subprocess.run([LMFORGE, "init", "--task", "text-classification", "--train", str(train), "-o", str(tmp / "c.yaml")], check=True,
                       stderr=subprocess.DEVNULL)
        subprocess.run([LMFORGE, "train", str(tmp / "c.yaml"), "training.epochs=1", "training.tensorboard=false",
                        f"output_dir={tmp / 'runs'}", "name=cls"], check=True, stderr=subprocess.DEVNULL)
        run = tmp / "runs" / "cls"
        results["classification_margin_diversity_s"] = timed(["suggest", str(run), "--pool", str(pool), "-n", str(args.n)])
        results["classification_margin_s"] = timed(["suggest", str(run), "--pool", str(pool), "-n", str(args.n), "--no-diversity"])
        results.update(forward_floor(run, pool))
        floor = results.get("forward_floor_bf16_s", results["forward_floor_s"])  # the precision lmforge runs in
        results["suggest_over_floor"] = round(results["classification_margin_diversity_s"] / floor, 2)
        subprocess.run([LMFORGE, "export", str(run)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results["classification_onnx_int8_s"] = timed(["suggest", str(run), "--pool", str(pool), "-n", str(args.n), "--backend", "onnx"])
        results["cold_start_s"] = timed(["suggest", "--pool", str(pool), "-n", str(args.n)])
        # NER: MNLP over CoNLL-2003 sentences (words as given: the pool is in the training format)
        lines = (data / "conll2003" / "train.iob2.txt").read_text(encoding="utf-8").split("\n\n")
        sentences = [block for block in lines if block.strip() and "-DOCSTART-" not in block]
        ner_train = tmp / "ner_train.txt"
        ner_train.write_text("\n\n".join(sentences[:500]) + "\n")
        ner_pool = tmp / "ner_pool.jsonl"
        with ner_pool.open("w", encoding="utf-8") as fh:
            for block in sentences[500:500 + args.pool_size]:
                pairs = [line.split() for line in block.strip().splitlines()]
                fh.write(json.dumps({"tokens": [p[0] for p in pairs], "tags": [p[-1] for p in pairs]}) + "\n")
        subprocess.run([LMFORGE, "init", "--task", "token-classification", "--train", str(ner_train), "-o", str(tmp / "n.yaml")],
                       check=True, stderr=subprocess.DEVNULL)
        subprocess.run([LMFORGE, "train", str(tmp / "n.yaml"), "training.epochs=1", "training.tensorboard=false",
                        f"output_dir={tmp / 'runs'}", "name=ner"], check=True, stderr=subprocess.DEVNULL)
        results["ner_mnlp_diversity_s"] = timed(["suggest", str(tmp / "runs" / "ner"), "--pool", str(ner_pool), "-n", str(args.n)])
    print(json.dumps(results, indent=2))
    save(args.name, results)


if __name__ == "__main__":
    main()
