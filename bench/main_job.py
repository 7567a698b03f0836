"""Time of the README's main job (scripts/demo.sh) after install, from a fresh clone (the clone's
own install runs first and is not timed).

    python bench/main_job.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, save


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "lmforge"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, check=True)  # the clone's own venv; not timed
        start = time.perf_counter()
        subprocess.run(["bash", "scripts/demo.sh"], cwd=clone, check=True, env={**os.environ, "DEMO_SERVE": "0", "DEMO_PORT": str(free_port())})
        seconds = time.perf_counter() - start
        metrics = (clone / "runs" / "intents" / "metrics.json").read_text()
    print(f"main job: {seconds:.0f} s")
    import json

    save("main_job", {"seconds": round(seconds, 1), "metrics": json.loads(metrics)})


if __name__ == "__main__":
    main()
