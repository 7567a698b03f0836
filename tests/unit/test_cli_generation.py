"""The generation workflow through the CLI, as a user runs it: init -> train -> evaluate (loss on a
file; pass@k on a code benchmark, sandboxed) -> generate -> serve over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import yaml

from conftest import free_port, jsonl, run_cli

PAIRS = [("say hi", "hello there"), ("how are you", "fine thanks")]


def test_init_train_evaluate_generate(tmp_path, tiny_decoder):
    train = jsonl(tmp_path / "train.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS] * 4)
    r = run_cli("init", "--task", "generation", "--model", str(tiny_decoder), "--train", str(train), "-o", str(tmp_path / "sft.yaml"))
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((tmp_path / "sft.yaml").read_text())
    assert cfg["task"] == "generation" and cfg["method"] == "lora" and cfg["data"]["max_length"] == 512
    assert cfg["training"]["learning_rate"] == 2e-4
    r = run_cli("train", str(tmp_path / "sft.yaml"), "method=full", "training.epochs=40", "training.learning_rate=0.01",
                "training.batch_size=4", "training.tensorboard=false", "training.precision=fp32")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "sft"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["loss"] < 0.5, metrics

    r = run_cli("evaluate", str(run), "--data", str(train))
    assert r.returncode == 0, r.stderr
    report = json.loads((run / "eval" / "train.jsonl" / "report.json").read_text())
    assert report["examples"] == 8 and report["perplexity"] < 2

    r = run_cli("generate", str(run), "--prompt", "say hi", "--prompt", "how are you", "--max-new-tokens", "4", "--json")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["text"] for line in r.stdout.splitlines()] == ["hello there", "fine thanks"]

    r = run_cli("evaluate", str(run), "--benchmark", "mbpp", "--limit", "2", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "eval" / "mbpp-n1-greedy" / "summary.json").read_text())
    assert summary["problems"] == 2 and summary["pass_at_k"]["pass@1"] == 0.0  # a 40k-parameter model writes no code
    assert sum(summary["status_counts"].values()) == 2
    assert len((run / "eval" / "mbpp-n1-greedy" / "results.jsonl").read_text().splitlines()) == 2
    assert summary["batching"] == "continuous" and summary["rows"] == 16
    r = run_cli("evaluate", str(run), "--benchmark", "mbpp", "--limit", "2", "--max-new-tokens", "4", "--no-continuous-batching",
                "--rows", "1", "--output", str(tmp_path / "static"))
    assert r.returncode == 0, r.stderr
    static = json.loads((tmp_path / "static" / "summary.json").read_text())
    assert static["batching"] == "static" and static["rows"] == 1
    completions = [[json.loads(line)[key] for line in (folder / "results.jsonl").read_text().splitlines()]
                   for folder in (run / "eval" / "mbpp-n1-greedy", tmp_path / "static") for key in ("completion",)]
    assert completions[0] == completions[1]

    bad = run_cli("evaluate", str(run), "--benchmark", "apps")
    assert bad.returncode == 2 and "unknown code benchmark" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("evaluate", str(run))
    assert bad.returncode == 2 and "--benchmark" in bad.stderr
    bad = run_cli("evaluate", str(run), "--data", str(train), "--rows", "4", "--temperature", "0")
    assert bad.returncode == 2 and "--temperature, --rows apply only to --benchmark" in bad.stderr
    bad = run_cli("evaluate", str(run), "--data", str(train), "--limit", "3")
    assert bad.returncode == 2 and "--limit applies only to --benchmark" in bad.stderr
    bad = run_cli("evaluate", str(run), "--benchmark", "mbpp", "--rows", "0")
    assert bad.returncode == 2 and "--rows" in bad.stderr and "Traceback" not in bad.stderr



def test_serve_a_decoder_folder_over_http(tiny_decoder):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "serve", str(tiny_decoder), "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.time() < deadline, "server never became ready"
                time.sleep(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/generate", data=json.dumps({"prompt": "say hi", "max_new_tokens": 3}).encode())
        with urllib.request.urlopen(request, timeout=30) as r:
            body = json.loads(r.read())
        assert body["tokens"] <= 3 and isinstance(body["text"], str) and body["model_version"]
    finally:
        proc.terminate()
        proc.wait(30)
