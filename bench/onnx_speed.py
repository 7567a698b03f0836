"""Inference speed and SST-2 dev accuracy: PyTorch eager fp32, PyTorch bf16 autocast (the predictor's
default), ONNX Runtime fp32 (fused) and ONNX Runtime int8 (fused + dynamic quantization).

    python bench/onnx_speed.py [--run RUN_DIR] [--train-limit N] [--epochs 1]

Without --run, a MiniLM-L6 run is fully fine-tuned on SST-2 train (or a seeded sample of --train-limit) and kept in
--workdir (default /tmp/lmforge-bench, outside git) for the next time. Latency is the model forward
alone on pre-tokenized, padded batches: batch 1 (one median-length dev sentence, many repetitions)
and batch 32 (the dev set in its own order, chunks of 32 sentences), each chunk both as one batch padded to its
longest sentence (the plain forward) and through lmforge's inference path (`inference.run_batches`: the chunk cut
into passes of similar lengths, `plan_sub_batches`), which is what `lmforge serve` does with a micro-batch of 32
requests. Backends are measured in interleaved rounds so that load drift hits all of them alike. `--sweep` also
times the sub-batched path at several per-call overheads (the planner's one constant). Accuracy: the full dev set through
`Predictor.evaluate` with each forward function.

Goal (product): ONNX int8 >= 3x faster than PyTorch eager fp32, <= 0.5 point accuracy loss.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data

BACKENDS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")


def train_run(workdir: Path, limit: int, epochs: float) -> Path:
    """A MiniLM-L6 SST-2 run on `limit` seeded training sentences (reused when already complete)."""
    from lmforge.config import config_from_dict
    from lmforge.training.loop import train

    name = f"sst2-minilm-{limit or 'all'}-{epochs:g}ep"
    run = workdir / name
    if (run / "run.json").is_file() and (run / "model" / "config.json").is_file():
        print(f"reusing {run}", flush=True)
        return run
    data = shared_data() / "sst2" / "glue"
    header, *rows = (data / "train.tsv").read_text(encoding="utf-8").splitlines()
    rows = random.Random(0).sample(rows, min(limit, len(rows))) if limit else rows
    workdir.mkdir(parents=True, exist_ok=True)
    subset = workdir / f"sst2-train-{limit or 'all'}.tsv"
    subset.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    raw = {"name": name, "task": "text-classification", "model": "minilm-l6", "method": "full",
           "data": {"train": str(subset), "dev": str(data / "dev.tsv"), "text_field": "sentence"},
           "training": {"epochs": epochs, "tensorboard": False, "batch_size": 32}}
    print(f"training {name} on {len(rows)} sentences", flush=True)
    return train(config_from_dict(raw), workdir, output=run, overwrite=True)


def timed(forward, batches: list[dict], reps: int) -> list[float]:
    """Seconds per call of `forward` over `batches`, cycled `reps` times."""
    out = []
    for _ in range(reps):
        for batch in batches:
            start = time.perf_counter()
            forward(batch)
            out.append(time.perf_counter() - start)
    return out


def timed_features(forward, chunks: list[list], pad: int, overhead: int | None = None) -> list[float]:
    """Seconds per 32-sentence chunk through lmforge's inference path (length-sorted sub-batches)."""
    from lmforge.inference import INFERENCE_CALL_OVERHEAD_TOKENS, run_batches

    def call(batch):
        return forward(batch)

    # the overhead the forward states (what run_batches would read), unless the sweep sets one
    call.overhead_tokens = overhead if overhead is not None else getattr(forward, "overhead_tokens", INFERENCE_CALL_OVERHEAD_TOKENS)
    out = []
    for chunk in chunks:
        start = time.perf_counter()
        run_batches(chunk, pad, call)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained SST-2 run folder (default: train one into --workdir)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmforge-bench"))
    parser.add_argument("--train-limit", type=int, default=0, help="training sentences (0: all of SST-2 train)")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds per backend")
    parser.add_argument("--reps", type=int, default=100, help="batch-1 calls per round")
    parser.add_argument("--sweep", type=int, nargs="*", default=[], metavar="TOKENS",
                        help="also time the sub-batched path with these per-call overheads (e.g. 0 16 32 64 128 100000)")
    parser.add_argument("--name", default="onnx_speed", help="results file name under bench/results/")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from lmforge.data.load import read_split
    from lmforge.export.onnx import export_onnx
    from lmforge.onnx_runtime import load_onnx_forward
    from lmforge.inference import torch_forward
    from lmforge.predictor import Predictor
    from lmforge.tasks.base import collate

    run = args.run or train_run(args.workdir, args.train_limit, args.epochs)
    exports = {}
    for quantize, output in (("int8", run / "onnx"), (None, run / "onnx-fp32")):
        start = time.perf_counter()
        report = export_onnx(run, quantize=quantize, output=output, force=True)  # measured either way; the gate is recorded
        backend = f"onnx-{quantize or 'fp32'}"
        exports[backend] = {"seconds": round(time.perf_counter() - start, 1), "fused_nodes": report["fused_nodes"],
                            "quantized_nodes": report["quantized_nodes"], "parity": report["parity"], "parity_gate_passed": not report["forced"],
                            "model_onnx_bytes": report["sizes"]["model_onnx_bytes"]}
        print(f"exported {backend}: {exports[backend]}", flush=True)

    predictor = Predictor.from_run(run, bf16=False)
    forwards = {"torch-fp32": torch_forward(predictor.model, False), "torch-bf16": torch_forward(predictor.model, True),
                "onnx-fp32": load_onnx_forward(run, run / "onnx-fp32")[0], "onnx-int8": load_onnx_forward(run)[0]}
    dev_path = Path(predictor.config.data.dev)
    dev, _ = read_split(predictor.config, dev_path)
    features, _ = predictor.task.encode_for_inference(dev)
    pad = predictor.tokenizer.pad_token_id
    median_len = sorted(len(f["input_ids"]) for f in features)[len(features) // 2]
    single = [collate([next(f for f in features if len(f["input_ids"]) == median_len)], pad)]
    feature_chunks = [[{k: v for k, v in f.items() if k != "labels"} for f in features[i:i + 32]] for i in range(0, len(features), 32)]
    chunks = [collate(c, pad) for c in feature_chunks]

    lat1: dict[str, list[float]] = {b: [] for b in BACKENDS}
    lat32: dict[str, list[float]] = {b: [] for b in BACKENDS}
    sub32: dict[str, list[float]] = {b: [] for b in BACKENDS}
    sweep: dict[str, dict[int, list[float]]] = {b: {o: [] for o in args.sweep} for b in ("torch-fp32", "onnx-int8")}
    for forward in forwards.values():  # warm-up: allocators, oneDNN/ORT kernel selection
        timed(forward, single, 20)
        timed(forward, chunks[:3], 1)
    for r in range(args.rounds):
        for backend, forward in forwards.items():
            lat1[backend] += timed(forward, single, args.reps)
            lat32[backend] += timed(forward, chunks, 1)
            sub32[backend] += timed_features(forward, feature_chunks, pad)
            for overhead in sweep.get(backend, {}):
                sweep[backend][overhead] += timed_features(forward, feature_chunks, pad, overhead)
        print(f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})", flush=True)

    results = {}
    reference = None
    for backend, forward in forwards.items():
        predictor.forward = forward
        start = time.perf_counter()
        report, predictions = predictor.evaluate(dev)
        labels = [p["label"] for p in predictions]
        reference = reference or labels
        results[backend] = {
            "batch1_ms": round(statistics.median(lat1[backend]) * 1000, 3),
            "batch32_ms": round(statistics.median(lat32[backend]) * 1000, 2),
            "batch32_subbatched_ms": round(statistics.median(sub32[backend]) * 1000, 2),
            "accuracy": round(report["accuracy"], 4),
            "agreement_with_torch_fp32": round(sum(a == b for a, b in zip(labels, reference)) / len(labels), 4),
            "dev_eval_seconds": round(time.perf_counter() - start, 2),
        }
    base = results["torch-fp32"]
    for r in results.values():
        r["batch1_speedup"] = round(base["batch1_ms"] / r["batch1_ms"], 2)
        r["batch32_speedup"] = round(base["batch32_ms"] / r["batch32_ms"], 2)
        r["batch32_subbatched_speedup"] = round(base["batch32_ms"] / r["batch32_subbatched_ms"], 2)  # vs plain eager
        r["subbatching_gain"] = round(r["batch32_ms"] / r["batch32_subbatched_ms"], 2)  # same backend, padded / sub-batched
        r["accuracy_delta_points"] = round((r["accuracy"] - base["accuracy"]) * 100, 2)

    print(f"\nSST-2 dev ({len(dev)} sentences), {run.name}; speed-up = torch eager fp32 time / backend time")
    print(f"{'backend':<12}{'b1 ms':>9}{'x':>7}{'b32 ms':>9}{'x':>7}{'b32 sub':>9}{'x':>7}{'accuracy':>10}{'Δ pts':>8}{'agree':>8}")
    for backend, r in results.items():
        print(f"{backend:<12}{r['batch1_ms']:>9.2f}{r['batch1_speedup']:>7.2f}{r['batch32_ms']:>9.1f}{r['batch32_speedup']:>7.2f}"
              f"{r['batch32_subbatched_ms']:>9.1f}{r['batch32_subbatched_speedup']:>7.2f}"
              f"{r['accuracy'] * 100:>10.2f}{r['accuracy_delta_points']:>8.2f}{r['agreement_with_torch_fp32'] * 100:>8.2f}")
    sweep_ms = {b: {o: round(statistics.median(v) * 1000, 2) for o, v in d.items()} for b, d in sweep.items() if d}
    for backend, row in sweep_ms.items():
        print(f"sub-batched batch-32 ms by per-call overhead, {backend}: {row}")
    int8 = results["onnx-int8"]
    goal = {"speedup_batch1_ge_3": int8["batch1_speedup"] >= 3, "speedup_batch32_ge_3": int8["batch32_subbatched_speedup"] >= 3,
            "accuracy_loss_le_0.5": int8["accuracy_delta_points"] >= -0.5}
    print(f"goal (int8 >= 3x, <= 0.5 pt loss): {goal}")
    save(args.name, {"run": run.name, "dev_sentences": len(dev), "batch1_tokens": median_len, "rounds": args.rounds,
                     "batch1_reps_per_round": args.reps, "batch32_calls_per_round": len(chunks),
                     "load_average_end": round(os.getloadavg()[0], 2), "exports": exports, "results": results, "subbatch_overhead_sweep_ms": sweep_ms,
                     "goal": goal})


if __name__ == "__main__":
    main()
