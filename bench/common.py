"""Shared helpers for the benchmarks: where the shared datasets are, and writing results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def shared_data() -> Path:
    """../shared/data, or $LMFORGE_BENCH_DATA (a copy of the files a bench reads, e.g. on another machine)."""
    if os.environ.get("LMFORGE_BENCH_DATA"):
        return Path(os.environ["LMFORGE_BENCH_DATA"])
    for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    raise SystemExit("benchmarks read ../shared/data (CoNLL-2003, SST-2, ...); it is not here")


def cpu() -> dict:
    """The CPU model and the instruction sets that change the figures (bf16 autocast, int8 kernels)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"model": model, "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni"})}


def machine() -> dict:
    out = {"cpu_count": os.cpu_count(), "cpu": cpu(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    print(f"results written to {path.relative_to(ROOT)}")
    return path


def save_run(name: str, label: str, result: dict) -> Path:
    """Add `result` under `label` to the "runs" of bench/results/NAME.json (the other labels kept),
    for benches that measure one kept run folder at a time."""
    path = RESULTS / f"{name}.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else {}
    runs[label] = result
    return save(name, {"runs": runs})
