"""How many of the tokens a training step computes are padding, under lmforge's own batch plans:
the most that packing several examples into one row could save.

    python bench/padding_share.py [--batch-sizes 8 16 32]

For SST-2 (GLUE train, MiniLM-L6's tokenizer) and MBPP train (task ids 601-974, SmolLM2's tokenizer;
prompt + completion as the generation task encodes them), every example's token count goes through
`lmforge.data.batching.plan_batches` (length-grouped, shuffled: what training runs), and each batch is
padded to its longest example rounded up to `pad_to_multiple_of` (1 or 8). Printed: padded tokens /
real tokens. No model runs; a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, shared_data  # noqa: E402


def lengths_sst2() -> list[int]:
    from transformers import AutoTokenizer

    from lmforge.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6"))
    lines = (shared_data() / "sst2" / "glue" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [len(ids) for ids in tokenizer([line.split("\t")[0] for line in lines])["input_ids"]]


def lengths_mbpp() -> list[int]:
    from transformers import AutoTokenizer

    from lmforge.data.generation_readers import read_generation
    from lmforge.models.resolve import resolve_model
    from lmforge.tasks.generation import GenerationSpec, GenerationTask

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    examples = read_generation("mbpp:train")
    task = GenerationTask(tokenizer, GenerationSpec.default_max_length)
    return [len(f["input_ids"]) for f in task.encode_for_training(examples)]


def padded_share(lengths: list[int], batch_size: int, multiple: int) -> float:
    from lmforge.data.batching import plan_batches

    plan = plan_batches(lengths, batch_size=batch_size, seed=42)
    padded = sum(len(batch) * -(-max(lengths[i] for i in batch) // multiple) * multiple for batch in plan)
    return padded / sum(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16, 32])
    args = parser.parse_args()
    results = {}
    for name, lengths in (("sst2", lengths_sst2()), ("mbpp_train", lengths_mbpp())):
        rows = {f"batch{b}_multiple{m}": round(padded_share(lengths, b, m), 4) for b in args.batch_sizes for m in (1, 8)}
        results[name] = {"examples": len(lengths), "mean_tokens": round(sum(lengths) / len(lengths), 1), "padded_over_real": rows}
        print(name, json.dumps(results[name]), flush=True)
    save("padding_share", results)


if __name__ == "__main__":
    main()
