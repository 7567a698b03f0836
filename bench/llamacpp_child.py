"""Batch-1 greedy generation with llama-cpp-python, for bench/llamacpp_anchor.py. Runs on the
interpreter of bench/.llamacpp-env/venv (see bench/llamacpp_env.sh), never on lmforge's.

Reads one JSON object on stdin: {"gguf": path, "prompts": [[token ids], ...], "new_tokens": [64, 256],
"rounds": 3, "threads": 2}. Each prompt's ids go in as given (the same ids lmforge's Generator
makes from the chat template); exactly `new` tokens are taken from llama.cpp's greedy sampler
(end tokens do not stop it). tokens/s = new tokens / wall time of the whole call, prefill included.
Prints one JSON object: {"tokens_per_s": {"64": [...], ...}, "tokens": {"64": [[ids of prompt 0], ...]}}.
"""

from __future__ import annotations

import json
import sys
import time

import llama_cpp


def main() -> None:
    spec = json.load(sys.stdin)
    llm = llama_cpp.Llama(model_path=spec["gguf"], n_ctx=1024, n_batch=512, n_threads=spec["threads"],
                          n_threads_batch=spec["threads"], verbose=False)

    def run(ids: list[int], new: int) -> list[int]:
        llm.reset()  # no prompt cache between calls: every call pays its prefill, as lmforge's does
        out: list[int] = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if len(out) == new:
                break
        return out

    run(spec["prompts"][0], 8)  # warm-up
    speeds: dict[str, list[float]] = {}
    tokens: dict[str, list[list[int]]] = {}
    for _ in range(spec["rounds"]):
        for new in spec["new_tokens"]:
            for i, ids in enumerate(spec["prompts"]):
                start = time.perf_counter()
                out = run(ids, new)
                speeds.setdefault(str(new), []).append(new / (time.perf_counter() - start))
                if len(tokens.setdefault(str(new), [])) <= i:
                    tokens[str(new)].append(out)
    print(json.dumps({"tokens_per_s": speeds, "tokens": tokens, "system_info": llama_cpp.llama_print_system_info().decode()}))


if __name__ == "__main__":
    main()
