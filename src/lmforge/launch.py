"""`--nproc N`: run the same training loop in N processes through torchrun (DDP; gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(nproc: int, argv: list[str]) -> int:
    """Re-run this command under torchrun with N processes and one intra-op thread share each."""
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "lmforge.cli", *argv]
    return subprocess.call(cmd, env=env)
