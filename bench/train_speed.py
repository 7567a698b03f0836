"""lmforge's trainer vs the standard transformers.Trainer recipe on CoNLL-2003 NER, in one run.

    python bench/train_speed.py [--epochs 3] [--train-docs N --eval-docs M]

--train-docs / --eval-docs take the first N documents of train (and M of dev and test) for a quicker
comparison on slow machines. On a CPU without bf16 support both sides train in fp32 (the Trainer's
bf16 would be emulated there, many times slower: not the recipe's intent).

Baseline (the recipe most tutorials use, tuned as in the issue): MiniLM-L6, one sentence per
sequence, first sub-word labelled, bf16, dynamic padding, group_by_length, batch 32, lr 5e-5.
lmforge: its defaults for token-classification (document-context packing, bf16 autocast, eager
attention without attention dropout, lengths padded to a multiple of 8).
Both: same model, same train/dev/test files, same number of epochs, evaluated with seqeval strict
IOB2 on the same test file. Prints throughput in words/s (identical work for both) and real
(non-padding) tokens/s, the ratio, F1 of each, and lmforge's achieved training GFLOP/s.
Wall time: lmforge's `train()` does the whole job (reading and encoding the data, loading the model,
training, dev passes, the saved model's dev and test reports). It is compared with the Trainer's bare
`train()` (`speedup_wall`, the strict figure) and with the Trainer's whole job: tokenising, loading,
training, and its dev and test predictions (`speedup_wall_with_evaluation`, like for like).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from common import save, shared_data

BF16_PEAK_GFLOPS = 929.0  # measured bf16 matmul peak of the reference machine (PLATFORM.md)


def bf16_ok() -> bool:
    from lmforge.models.build import bf16_supported

    return bf16_supported(torch.device("cpu"))


def first_documents(path: Path, n: int | None, out: Path) -> Path:
    """A CoNLL file cut after its first `n` -DOCSTART- documents (the whole file for None)."""
    if n is None:
        return path
    kept, docs = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("-DOCSTART-"):
            docs += 1
            if docs > n:
                break
        kept.append(line)
    out.write_text("".join(kept), encoding="utf-8")
    return out


def trainer_baseline(model_path: Path, train, dev, test, epochs: float, out: Path) -> dict:
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from lmforge.evaluation.ner_metrics import entity_report
    from lmforge.tasks.token_classification import TokenClassificationTask

    begun = time.perf_counter()  # the Trainer's whole job: tokenising, loading, training, dev and test predictions
    labels = TokenClassificationTask.discover_labels(train)
    index = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(model_path)

    def encode(examples, with_labels=True):
        enc = tok([ex.words for ex in examples], is_split_into_words=True, truncation=True, max_length=512)
        rows = []
        for i, ex in enumerate(examples):
            word_ids, prev, lab = enc.word_ids(i), None, []
            for w in word_ids:
                lab.append(-100 if w is None or w == prev else index[ex.tags[w]])
                prev = w
            rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": lab})
        return rows, enc

    train_rows, _ = encode(train)
    model = AutoModelForTokenClassification.from_pretrained(model_path, num_labels=len(labels),
                                                            id2label=dict(enumerate(labels)), label2id=index)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=32, learning_rate=5e-5,
                             num_train_epochs=epochs, bf16=bf16_ok(), train_sampling_strategy="group_by_length",
                             save_strategy="no", eval_strategy="no", report_to=[], logging_steps=50,
                             use_cpu=True, seed=42, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_rows,
                      data_collator=DataCollatorForTokenClassification(tok))
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    # Evaluated with a plain sequential loop: in transformers 5.23, train_sampling_strategy="group_by_length"
    # also reorders Trainer.predict's sampler, so its rows do not line up with the inputs.
    report = entity_report([ex.tags for ex in test], predict_first_subword(trainer.model, tok, test, labels))
    dev_report = entity_report([ex.tags for ex in dev], predict_first_subword(trainer.model, tok, dev, labels))
    whole = time.perf_counter() - begun
    real_tokens = sum(len(r["input_ids"]) for r in train_rows) * epochs
    return {"train_seconds": round(result.metrics["train_runtime"], 1), "wall_seconds": round(wall, 1),
            "wall_with_evaluation_seconds": round(whole, 1),
            "real_tokens": int(real_tokens), "test_f1": round(report["f1"], 4), "dev_f1": round(dev_report["f1"], 4)}


@torch.inference_mode()
def predict_first_subword(model, tok, examples, labels, batch_size: int = 64) -> list[list[str]]:
    from lmforge.tasks.token_classification import repair_iob2

    model.eval()
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        enc = tok([ex.words for ex in chunk], is_split_into_words=True, truncation=True, max_length=512,
                  padding=True, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_ok()):
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float()
        for i, ex in enumerate(chunk):
            tags, seen = ["O"] * len(ex.words), set()
            for j, w in enumerate(enc.word_ids(i)):
                if w is not None and w not in seen:
                    seen.add(w)
                    tags[w] = labels[int(logits[i, j].argmax())]
            out.append(repair_iob2(tags))
    return out


def lmforge_run(train_path: Path, dev_path: Path, test_path: Path, epochs: float, out: Path, method: str = "full",
                overrides: list[str] = ()) -> dict:
    import json

    from lmforge.config import apply_overrides, config_from_dict
    from lmforge.training.loop import train

    def read_json(path: Path):
        return json.loads(path.read_text(encoding="utf-8"))

    cfg = config_from_dict(apply_overrides(
        {"name": f"conll-{method}", "task": "token-classification", "model": "minilm-l6", "method": method,
         "data": {"train": str(train_path), "dev": str(dev_path), "test": str(test_path)},
         "training": {"epochs": epochs, "tensorboard": False}}, list(overrides)))
    start = time.perf_counter()
    run = train(cfg, out, output=out / f"conll-{method}")
    wall = time.perf_counter() - start
    info, metrics = read_json(run / "run.json"), read_json(run / "metrics.json")
    return {"train_seconds": info["train_seconds"], "wall_seconds": round(wall, 1), "real_tokens": info["real_tokens"],
            "test_f1": round(metrics["test"]["f1"], 4), "dev_f1": round(metrics["dev"]["f1"], 4),
            "steps": info["steps"], "sequences": info["data"]["train_sequences"], "run": str(run),
            "dev_seconds": info.get("dev_seconds"), "dev_passes": info.get("dev_passes")}


def training_flops_per_token(model_path: Path, avg_len: float) -> float:
    """6 x non-embedding parameters (forward + backward matmuls) plus attention scores and mixing."""
    import json

    cfg = json.loads((model_path / "config.json").read_text())
    d, layers, ff = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    dense = layers * (4 * d * d + 2 * d * ff)
    attention = layers * 2 * avg_len * d  # QK^T and AV, multiply-adds per token
    return 6 * dense + 6 * attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--train-docs", type=int, default=None, help="only the first N training documents")
    parser.add_argument("--eval-docs", type=int, default=None, help="only the first N dev and test documents")
    parser.add_argument("--skip-trainer", action="store_true", help="lmforge alone (its dev-pass share; no ratios)")
    parser.add_argument("--name", default="train_speed", help="results file name under bench/results/")
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides for the lmforge side (e.g. training.batch_size=8)")
    args = parser.parse_args()
    from lmforge.data.ner_readers import read_ner
    from lmforge.models.resolve import resolve_model

    data = shared_data() / "conll2003"
    cut = Path(tempfile.mkdtemp(prefix="train-speed-"))
    files = {"train": first_documents(data / "eng.train", args.train_docs, cut / "eng.train"),
             "dev": first_documents(data / "eng.testa", args.eval_docs, cut / "eng.testa"),
             "test": first_documents(data / "eng.testb", args.eval_docs, cut / "eng.testb")}
    train, _ = read_ner(files["train"])
    dev, _ = read_ner(files["dev"])
    test, _ = read_ner(files["test"])
    words = sum(len(ex.words) for ex in train) * args.epochs
    model_path = resolve_model("minilm-l6")
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        if not args.skip_trainer:
            print("== transformers.Trainer baseline", flush=True)
            base = trainer_baseline(model_path, train, dev, test, args.epochs, Path(tmp) / "trainer")
            print(base, flush=True)
        print("== lmforge defaults", flush=True)
        ours = lmforge_run(files["train"], files["dev"], files["test"], args.epochs, Path(tmp), overrides=args.set)
        print(ours, flush=True)
    for r in (base, ours):
        if r is None:
            continue
        r["words_per_second"] = round(words / r["train_seconds"], 1)
        r["real_tokens_per_second"] = round(r["real_tokens"] / r["train_seconds"], 1)
    avg_len = ours["real_tokens"] / (ours["sequences"] * args.epochs)
    gflops = training_flops_per_token(model_path, avg_len) * ours["real_tokens_per_second"] / 1e9
    dev_share = (ours["dev_seconds"] / max(1, ours["dev_passes"])) / (ours["train_seconds"] / args.epochs) if ours.get("dev_passes") else None
    result = {
        "epochs": args.epochs, "lmforge_overrides": args.set, "train_docs": args.train_docs, "eval_docs": args.eval_docs,
        "train_sentences": len(train), "precision": "bf16" if bf16_ok() else "fp32", "trainer": base, "lmforge": ours,
        "lmforge_dev_pass_share_of_epoch": round(dev_share, 3) if dev_share is not None else None,
        "lmforge_training_gflops": round(gflops, 1), "fraction_of_bf16_peak": round(gflops / BF16_PEAK_GFLOPS, 3),
    }
    if bf16_ok():  # this machine's own peak, measured after training (an AMX machine's is far above the reference's)
        from bf16_peak import bf16_peak_gflops

        result["bf16_peak_gflops_measured"] = bf16_peak_gflops()
        result["fraction_of_measured_bf16_peak"] = round(gflops / result["bf16_peak_gflops_measured"], 3)
    if base is not None:
        result["speedup_words_per_second"] = round(ours["words_per_second"] / base["words_per_second"], 2)
        result["speedup_wall"] = round(base["wall_seconds"] / ours["wall_seconds"], 2)  # against the bare train()
        # like for like: each side's whole job, from the data files to dev and test predictions
        result["speedup_wall_with_evaluation"] = round(base["wall_with_evaluation_seconds"] / ours["wall_seconds"], 2)
        print(f"\nTrainer : {base['words_per_second']:8.0f} words/s {base['real_tokens_per_second']:8.0f} tokens/s  test F1 {base['test_f1']:.4f}  train {base['train_seconds']:.0f}s")
    print(f"lmforge : {ours['words_per_second']:8.0f} words/s {ours['real_tokens_per_second']:8.0f} tokens/s  test F1 {ours['test_f1']:.4f}  train {ours['train_seconds']:.0f}s (wall incl. dev evals {ours['wall_seconds']:.0f}s)")
    if dev_share is not None:
        print(f"lmforge dev pass: {ours['dev_seconds'] / ours['dev_passes']:.1f} s each = {dev_share:.0%} of an epoch's training time")
    if base is not None:
        print(f"wall: lmforge {ours['wall_seconds']:.0f} s (data, model, training, dev and test) = {result['speedup_wall']}x the Trainer's "
              f"bare train() ({base['wall_seconds']:.0f} s), {result['speedup_wall_with_evaluation']}x its whole job with dev and test "
              f"predictions ({base['wall_with_evaluation_seconds']:.0f} s)")
    print(f"speed-up (words/s): {result.get('speedup_words_per_second', '-')}x   lmforge training {gflops:.0f} GFLOP/s = {gflops / BF16_PEAK_GFLOPS:.0%} of the reference machine's bf16 matmul peak"
          + (f", {result['fraction_of_measured_bf16_peak']:.0%} of this machine's ({result['bf16_peak_gflops_measured']:.0f} GFLOP/s)"
             if "bf16_peak_gflops_measured" in result else ""))
    save(args.name, result)


if __name__ == "__main__":
    main()
