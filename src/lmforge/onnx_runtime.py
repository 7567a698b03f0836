"""ONNX Runtime inference: the forward function of an exported graph, beside the PyTorch one
(`lmforge.inference.torch_forward`); both go through `inference.run_batches`. Written by
`lmforge.export.onnx`, which sits above the Predictor; this module knows nothing of either.

    <run>/onnx/model.onnx    the graph           <run>/onnx/export.json   how it was exported (model_version, quantize)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .files import read_json
from .inference import Forward
from .runs import RunFolder

MODEL_FILE = "model.onnx"
INFO_FILE = "export.json"
# What one session.run costs beyond its padded tokens, for inference.plan_sub_batches: ONNX Runtime's calls are cheap,
# so cutting a micro-batch finely pays (bench/onnx_speed.py --sweep: int8 batch 32 fastest at 0-16, PyTorch at 64).
ONNX_CALL_OVERHEAD_TOKENS = 16

log = logging.getLogger("lmforge.export")


def has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX512-VNNI / AVX-VNNI). Without them ONNX
    Runtime's u8 x s8 kernels add pairs of products in 16 bits, which saturates with full-range 8-bit
    weights: on an AVX2-only CPU a tiny test classifier agreed with PyTorch on 67% of its dev labels
    (max probability difference 0.07); with 7-bit weights (`reduce_range`) on 100% (0.0007)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def load_onnx_forward(run_dir: str | Path, path: Path | None = None, *, model_version: str | None = None) -> tuple[Forward, str]:
    """The forward function of a run's exported graph (`run_dir/onnx/model.onnx`, or `path`: a
    model.onnx or its folder) and a backend name ("onnx-int8" / "onnx-fp32"). Refuses an export
    whose weights differ from the run's current model/ (stale)."""
    run = RunFolder.open(run_dir)
    run_dir = run.path
    graph = Path(path) if path is not None else run.onnx_dir / MODEL_FILE
    if graph.is_dir():
        graph = graph / MODEL_FILE
    export = f"lmforge export {run_dir} --format onnx --quantize int8" + (f" --output {graph.parent}" if path is not None else "")
    if not graph.is_file():
        raise UserError(f"{graph} not found; run `{export}` first")
    try:
        info = read_json(graph.parent / INFO_FILE)
    except (OSError, ValueError):
        raise UserError(f"{graph.parent / INFO_FILE} is missing or unreadable, so {graph} cannot be checked against the run; "
                        f"re-export with `{export}`") from None
    current = model_version or run.version  # callers that loaded the run pass it: no second hash
    if info.get("model_version") != current:
        raise UserError(f"{graph} is stale: it was exported from {info.get('model_version')} but {run.model_dir} now holds "
                        f"{current}; re-export with `{export}`")
    if info.get("quantize") and not info.get("reduce_range") and not has_vnni():
        log.warning("%s was quantized with full-range 8-bit weights on a CPU with VNNI; this CPU has none, so its "
                    "int8 kernels may saturate and predictions may differ from the parity report. Re-export here "
                    "(`%s`) for 7-bit weights that are exact on both.", graph, export)
    return onnx_forward(session(graph)), f"onnx-{info.get('quantize') or 'fp32'}"


def onnx_forward(session) -> Forward:
    """A Forward over an onnxruntime session: feeds the inputs the graph has (int64; token_type_ids
    zeros when the batch has none). `session.run` is thread-safe, so one forward may serve threads."""
    names = [i.name for i in session.get_inputs()]

    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        feed = {}
        for name in names:
            value = batch.get(name)
            if value is None and name == "token_type_ids":
                value = torch.zeros_like(torch.as_tensor(batch["input_ids"]))
            if value is None:
                raise ValueError(f"the ONNX graph needs the input {name!r}, which the batch does not have")
            array = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feed[name] = np.ascontiguousarray(array, dtype=np.int64)
        return np.asarray(session.run(None, feed)[0], dtype=np.float32)

    forward.overhead_tokens = ONNX_CALL_OVERHEAD_TOKENS  # read by inference.run_batches
    return forward


def session(path: Path):
    """A CPU session: intra-op threads = the cores this process may use, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
        raise UserError(f"{path}: ONNX Runtime cannot load it ({err}); re-export it with `lmforge export`") from None
