"""This machine's bf16 matrix-multiply peak, measured: the best GFLOP/s of torch.matmul over three
large shapes, 2 s each (on AMX machines far above the 929 GFLOP/s of the AVX512-BF16 reference).

    python bench/bf16_peak.py [--seconds 2]

`bench/train_speed.py` reports lmforge's training GFLOP/s against this as well as against the
reference machine's figure.
"""

from __future__ import annotations

import argparse
import time


def bf16_peak_gflops(seconds: float = 2.0) -> float:
    import torch

    best = 0.0
    for n, k in ((2048, 2048), (4096, 1024), (1024, 4096)):
        a, b = torch.randn(n, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        started, runs = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            a @ b
            runs += 1
        best = max(best, 2 * n * k * n * runs / (time.perf_counter() - started) / 1e9)
    return round(best, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"bf16 matmul peak: {bf16_peak_gflops(args.seconds):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
