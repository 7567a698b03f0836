"""Hostile programs against the code-evaluation sandbox: how many are contained, checked from the host side.

    python bench/sandbox_hostile.py [--timeout 3] [--skip-references]

Every case runs twice: with the Python guards (the default) and with the operating-system mechanisms alone
(`guards=False`), so the numbers show what the kernel enforces by itself. "Contained" is decided by looking
at the host afterwards (canary files intact, nothing written outside, no stray processes, the listener heard
nothing, no secret in the output), not by trusting the sandbox's own report. Then every reference solution
of HumanEval and the MBPP test split is run through the sandbox (all must pass) to time the throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import secrets
import signal
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, save

from lmforge.codeeval import (ExecutionResult, SandboxLimits, execute_completions, load_humaneval, load_mbpp,
                              run_program, sandbox_info)
from lmforge.codeeval.sandbox import CHILD


@dataclass
class Host:
    """What the cases attack, and how to look at it afterwards."""

    canary_dir: Path
    listener: socket.socket
    secret: str
    marker: str
    escape: Path
    repo_escape: Path
    readme_hash: str
    passwd_hash: str

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]


@dataclass(frozen=True)
class Case:
    name: str
    source: str                                      # str.format'ed with the Host's fields
    contained: Callable[[ExecutionResult, Host], bool]


def processes_mentioning(text: str) -> bool:
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def no_processes_left(result: ExecutionResult, host: Host) -> bool:
    time.sleep(0.05)
    return not processes_mentioning(host.marker) and not processes_mentioning(str(CHILD))


def canary_intact(result: ExecutionResult, host: Host) -> bool:
    return (host.canary_dir / "keep.txt").is_file() and (host.canary_dir / "keep.txt").read_text() == "keep"


def listener_heard_nothing(result: ExecutionResult, host: Host) -> bool:
    try:
        connection, _ = host.listener.accept()
    except (socket.timeout, BlockingIOError):
        return result.status != "passed"
    connection.close()
    return False


SIGNALLED: list[int] = []  # SIGCONT reaching this process means a sandboxed program signalled it


def evaluator_not_signalled(result: ExecutionResult, host: Host) -> bool:
    time.sleep(0.05)
    return not SIGNALLED


def raised(result: ExecutionResult, host: Host) -> bool:
    return result.status == "failed"


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
CASES = [
    Case("infinite_loop", "while True:\n    pass", lambda r, h: r.status == "timeout"),
    Case("sleep_forever", "import time\ntime.sleep(3600)", lambda r, h: r.status == "timeout"),
    Case("ignore_sigxcpu_busy_loop", "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
         lambda r, h: r.status == "timeout"),
    Case("memory_bomb_bytearray", "x = bytearray(10 ** 11)", lambda r, h: "MemoryError" in r.message),
    Case("memory_bomb_growth", "x = []\nwhile True:\n    x.append(' ' * 10 ** 7)", lambda r, h: "MemoryError" in r.message),
    Case("fork_bomb", "import os\nwhile True:\n    os.fork()", no_processes_left),
    Case("subprocess_spawn", "import subprocess, sys\nfor _ in range(50):\n"
         "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({marker})'])", no_processes_left),
    Case("os_system_background", "import os\nassert os.system('sleep {marker} &') == 0", no_processes_left),
    Case("multiprocessing", "import multiprocessing, time\n"
         "multiprocessing.Process(target=time.sleep, args=({marker},)).start()", no_processes_left),
    Case("ctypes_fork", LIBC + "import time\nif libc.fork() == 0:\n    time.sleep({marker})", no_processes_left),
    Case("write_tmp_outside", "open('{escape}', 'w').write('escaped')", lambda r, h: not h.escape.exists()),
    Case("write_into_repo", "open('{repo_escape}', 'w').write('escaped')", lambda r, h: not h.repo_escape.exists()),
    Case("append_to_repo_readme", f"open('{ROOT / 'README.md'}', 'a').write('pwned')",
         lambda r, h: file_hash(ROOT / "README.md") == h.readme_hash),
    Case("append_to_etc_passwd", "open('/etc/passwd', 'a').write('evil::0:0::/:/bin/sh')",
         lambda r, h: file_hash(Path("/etc/passwd")) == h.passwd_hash),
    Case("rm_rf_canary_os_system", "import os\nassert os.system('rm -rf {canary_dir}') == 0", canary_intact),
    Case("rm_rf_home_os_system", "import os\nos.system('rm -rf ~ /root/* {canary_dir}')", canary_intact),
    Case("shutil_rmtree_canary", "import shutil\nshutil.rmtree('{canary_dir}')", canary_intact),
    Case("os_remove_canary", "import os\nos.remove('{canary_dir}/keep.txt')", canary_intact),
    Case("remount_root_read_write", LIBC + "libc.unshare(0x10000000 | 0x20000)\n"
         "libc.mount(b'none', b'/', None, 32 | 4096, None)\nopen('{repo_escape}', 'w').write('escaped')",
         lambda r, h: not h.repo_escape.exists()),
    Case("connect_to_host_listener", "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
         "s.sendall(b'stolen')", listener_heard_nothing),
    Case("connect_to_internet", "import socket\nsocket.create_connection(('1.1.1.1', 443), timeout=2)", raised),
    Case("read_env_secret", "import os\nprint(dict(os.environ))\n"
         "print(open(f'/proc/{{os.getppid()}}/environ', 'rb').read())",
         lambda r, h: h.secret not in r.output),
    Case("read_etc_shadow", "print(open('/etc/shadow').read())", lambda r, h: "root:" not in r.output),
    Case("list_root_home", "import os\nprint(os.listdir('/root'))\nassert os.listdir('/root')", raised),
    Case("signal_evaluator", "import os, signal\nos.kill(os.getppid(), signal.SIGCONT)", evaluator_not_signalled),
    Case("signal_every_process", "import os, signal\nos.kill(-1, signal.SIGCONT)", evaluator_not_signalled),
    Case("setuid_root", "import os\nos.setuid(0)", raised),
    Case("huge_output", "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 1_000_000)",
         lambda r, h: r.output_truncated and len(r.output) <= 64 << 10),
    Case("huge_file", "open('big', 'wb').write(b'x' * (200 << 20))", lambda r, h: r.status == "failed"),
]


def run_case(case: Case, guards: bool, timeout: float) -> dict:
    # the canary sits in world-writable /var/tmp (not /tmp, which the sandbox replaces) and is itself
    # world-writable, so only the sandbox stands between it and the program
    with tempfile.TemporaryDirectory(prefix="lmforge-hostile-", dir="/var/tmp") as tmp, socket.socket() as listener:
        canary = Path(tmp) / "canary"
        canary.mkdir()
        (canary / "keep.txt").write_text("keep")
        for path in (Path(tmp), canary, canary / "keep.txt"):
            path.chmod(0o777)
        SIGNALLED.clear()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        host = Host(canary, listener, os.environ["LMFORGE_SECRET"], f"30.{secrets.randbelow(10 ** 6)}",
                    Path(f"/tmp/lmforge_escape_{secrets.token_hex(6)}"), ROOT / f"lmforge_escape_{secrets.token_hex(6)}",
                    file_hash(ROOT / "README.md"), file_hash(Path("/etc/passwd")))
        source = case.source.format(canary_dir=canary, marker=host.marker, escape=host.escape,
                                    repo_escape=host.repo_escape, port=host.port)
        result = run_program(textwrap.dedent(source), SandboxLimits(timeout=timeout, guards=guards))
        contained = case.contained(result, host)
        host.escape.unlink(missing_ok=True)
        host.repo_escape.unlink(missing_ok=True)
    return {"case": case.name, "guards": guards, "contained": contained, "status": result.status,
            "message": result.message[:160], "seconds": result.duration}


def run_references(workers: int) -> dict:
    problems = load_humaneval() + load_mbpp("test")
    start = time.monotonic()
    results = execute_completions(problems, [[p.reference] for p in problems], workers=workers,
                                  limits=SandboxLimits(timeout=10))
    seconds = time.monotonic() - start
    passed = sum(r.status == "passed" for r in results)
    failures = [f"{r.task_id}: {r.status} {r.message[:100]}" for r in results if r.status != "passed"]
    return {"programs": len(results), "passed": passed, "failures": failures, "seconds": round(seconds, 2),
            "programs_per_second": round(len(results) / seconds, 1), "workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--skip-references", action="store_true")
    args = parser.parse_args()
    os.environ["LMFORGE_SECRET"] = secrets.token_hex(16)
    signal.signal(signal.SIGCONT, lambda *_: SIGNALLED.append(1))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = sandbox_info()
    print(f"sandbox: interpreter {info['interpreter']}, uid switch {info['uid_switch']}, mechanisms {info['mechanisms']}")
    rows = []
    for guards in (True, False):
        for case in CASES:
            row = run_case(case, guards, args.timeout)
            rows.append(row)
            print(f"{'guards' if guards else 'os-only':8} {case.name:28} {'contained' if row['contained'] else 'ESCAPED':10}"
                  f" {row['status']:8} {row['seconds']:6.2f}s {row['message'][:80]}")
    summary = {mode: f"{sum(r['contained'] for r in rows if r['guards'] == g)}/{len(CASES)}"
               for mode, g in (("with_guards", True), ("os_mechanisms_only", False))}
    print("contained:", summary)
    references = None if args.skip_references else run_references(os.cpu_count() or 1)
    if references:
        print(f"reference solutions: {references['passed']}/{references['programs']} passed in {references['seconds']} s "
              f"({references['programs_per_second']} programs/s on {references['workers']} workers)")
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    save("sandbox_hostile", {"sandbox": info, "contained": summary, "timeout": args.timeout, "cases": rows,
                             "references": references, "bench_rss_growth_mb": round(rss_growth_mb, 1)})


if __name__ == "__main__":
    main()
