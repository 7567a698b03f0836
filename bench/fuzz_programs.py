"""Every hostile program of bench/sandbox_hostile.py against the sandbox, in a seeded order, for the fuzz runs.

    python bench/fuzz_programs.py [--seed 0] [--timeout 5]

`run(seed)` runs each case of `sandbox_hostile.CASES` twice, with the Python guards and with the operating-
system mechanisms alone, in an order shuffled by `seed` (so one case's leftovers would meet a different next
case on each seed), judges containment from the host side exactly as that bench does, and returns
{"tried": N, "contained": M, "escapes": ["case[guards]" | "case[os-only]", ...]}. It installs a SIGCONT
handler (the tripwire for signalled evaluators), so call it from the main thread. Exit code 1 on any escape.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox_hostile import CASES, prepare_host, run_case


def run(seed: int, timeout: float = 5.0) -> dict:
    """Run all hostile programs in both modes; `timeout` is each program's wall-clock limit in seconds (the memory
    bombs must reach MemoryError within it: they take 1 s on an idle 2-core machine, 2.5 s on one loaded 3.5x)."""
    prepare_host()
    trials = [(case, guards) for case in CASES for guards in (True, False)]
    random.Random(seed).shuffle(trials)
    escapes = []
    for case, guards in trials:
        if not run_case(case, guards, timeout)["contained"]:
            escapes.append(f"{case.name}[{'guards' if guards else 'os-only'}]")
    return {"tried": len(trials), "contained": len(trials) - len(escapes), "escapes": escapes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    result = run(args.seed, args.timeout)
    print(json.dumps(result))
    return 1 if result["escapes"] else 0


if __name__ == "__main__":
    sys.exit(main())
