"""Run one untrusted Python program (candidate code + tests) in a separate, contained process.

`run_program(source, limits)` starts a fresh interpreter (`-I -S -B`, minimal environment: PATH, HOME,
TMPDIR, LANG only) in its own session and process group; `_child.py` isolates it before the program runs.
Nothing of the program ever runs in the caller's process.

What contains the program (`sandbox_info()` says which mechanisms are in effect on this machine):
- Always: a wall-clock timeout after which the whole process group is killed; RLIMIT_CPU, RLIMIT_AS
  (memory), RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC, no core dumps; output read with a cap (the rest is
  drained and discarded); the child dies with the evaluator (PR_SET_PDEATHSIG).
- `net` (root, or an unprivileged user namespace): a private network namespace, so no Internet socket can
  reach anything, loopback included.
- `ipc` (same condition): a private IPC namespace: SysV shared memory, semaphores and message queues, and
  POSIX message queues, die with the program instead of staying behind on the host.
- `fs` (same condition): every mount read-only and nosuid; a private, size-limited tmpfs on /tmp is the
  program's cwd, HOME, TMPDIR and only writable place, and disappears with it; `hidden_paths` (home
  folders and /proc, which holds other processes' environments and command lines) are covered by empty
  mounts.
- `uid` (root only): the program runs under a fresh unprivileged uid that owns no file and no other
  process: it cannot read root-only files, signal the evaluator, or fork past RLIMIT_NPROC (which the
  kernel does not enforce for root). The interpreter must be runnable by that uid, so when
  `sys.executable` lives in a private folder (e.g. under /root) a system interpreter of the same
  major.minor version is used instead, after a probe run shows it works.
- `caps`: no capabilities (also none inside the user namespace a non-root evaluator creates, where they
  would let the program make mounts writable again or uncover hidden paths); no-new-privileges.
- `seccomp` (Linux x86_64 and aarch64): a system-call filter (`_seccomp.py`) that fails with EPERM what
  the namespaces do not cover: sockets other than AF_INET/AF_INET6 (AF_UNIX reaches the host's filesystem
  sockets from any network namespace; AF_VSOCK the hypervisor; AF_NETLINK, AF_PACKET, AF_ALG ...) and
  Unix socketpairs other than stream ones, io_uring, new namespaces, mounts, ptrace and process_vm_*,
  pidfds, signals and prlimit aimed at another process, keyrings, bpf, perf_event_open, userfaultfd.
- Python guards (best effort: code that uses ctypes can get around them): process creation and signals
  are always refused; sockets when `net` or `seccomp` is missing; writes outside the work dir when `fs` is
  missing.

Status of a result:
- `passed`: the whole program ran to its end (all tests executed without raising);
- `failed`: it compiled, then raised (AssertionError, any exception, MemoryError, SystemExit...) or died
  before finishing (killed by a signal, os._exit);
- `timeout`: it exceeded the wall-clock timeout or the CPU-time limit;
- `error`: it does not compile (SyntaxError, IndentationError, NUL bytes): it never ran.
The status guards against accidents, not against code written to game the harness (in-process code can
always find ways to fake a pass); containment of the host does not depend on it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

CHILD = Path(__file__).with_name("_child.py")
SANDBOX_UIDS = range(1_000_000_000, 1_100_000_000)  # unprivileged uids that own nothing on the host
REPORT_CAP = 1 << 16

Status = Literal["passed", "failed", "timeout", "error"]


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program run."""

    timeout: float = 10.0            # wall-clock seconds, interpreter start-up included
    cpu_seconds: int | None = None   # RLIMIT_CPU; default: ceil(timeout) + 1 (the wall clock normally wins)
    memory_bytes: int = 1 << 30      # RLIMIT_AS (address space)
    file_bytes: int = 16 << 20       # RLIMIT_FSIZE: largest file the program may write
    disk_bytes: int = 64 << 20       # size of the private tmpfs (when `fs` is in effect)
    open_files: int = 64             # RLIMIT_NOFILE
    processes: int = 1               # RLIMIT_NPROC: 1 = no fork, no threads (under a switched uid)
    output_bytes: int = 64 << 10     # stdout + stderr kept in the result; the rest is discarded
    guards: bool = True              # install the Python-level guards (on top of the OS mechanisms)
    hidden_paths: tuple[str, ...] = ("/root", "/home", "/proc")  # covered by empty mounts (when `fs` is in effect)

    def __post_init__(self) -> None:
        if self.timeout <= 0 or min(self.memory_bytes, self.file_bytes, self.disk_bytes, self.open_files,
                                    self.processes, self.output_bytes) <= 0:
            raise ValueError(f"sandbox limits must be positive: {self}")


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one program run; `message` is one line (the exception and the failing line)."""

    status: Status
    message: str
    duration: float
    output: str = ""
    output_truncated: bool = False
    mechanisms: dict[str, Any] = field(default_factory=dict)


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (not the program's fault)."""


@dataclass(frozen=True)
class _Plan:
    interpreter: str
    switch_uid: bool
    mechanisms: dict[str, Any]


_plan_lock = threading.Lock()
_plan: _Plan | None = None


def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> ExecutionResult:
    """Run `source` in a fresh contained process and classify the outcome (see the module docstring)."""
    plan = _launch_plan()
    return _execute(source, limits, plan.interpreter, _fresh_uid() if plan.switch_uid else None)


def sandbox_info() -> dict[str, Any]:
    """The interpreter used, whether programs run under a switched uid, and the mechanisms in effect."""
    plan = _launch_plan()
    return {"interpreter": plan.interpreter, "uid_switch": plan.switch_uid, "mechanisms": plan.mechanisms}


def _launch_plan() -> _Plan:
    """Decided once per process by probe runs: as root, the first interpreter that a fresh uid can run
    (sys.executable, else python<major.minor> in the usual system folders); otherwise sys.executable."""
    global _plan
    with _plan_lock:
        if _plan is None:
            _plan = _choose_plan()
        return _plan


def _choose_plan() -> _Plan:
    if os.geteuid() == 0:
        for candidate in _candidate_interpreters():
            if _others_can_run(candidate):
                mechanisms = _probe(candidate, switch_uid=True)
                if mechanisms is not None and mechanisms.get("uid") is True:
                    return _Plan(candidate, True, mechanisms)
    mechanisms = _probe(sys.executable, switch_uid=False)
    if mechanisms is None:
        raise SandboxError(f"cannot run a sandboxed program with {sys.executable}")
    return _Plan(sys.executable, False, mechanisms)


def _candidate_interpreters() -> list[str]:
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    paths = [sys.executable, getattr(sys, "_base_executable", sys.executable),
             *(os.path.join(folder, name) for folder in ("/usr/local/bin", "/usr/bin", "/bin"))]
    unique = {os.path.realpath(p): p for p in reversed(paths) if os.path.isfile(p)}
    return list(reversed(unique.values()))


def _others_can_run(path: str) -> bool:
    """Whether a uid that is neither owner nor group member can execute `path` (and reach it)."""
    real = Path(os.path.realpath(path))
    if real.stat().st_mode & 0o005 != 0o005:
        return False
    return all(folder.stat().st_mode & 0o001 for folder in real.parents)


def _probe(interpreter: str, *, switch_uid: bool) -> dict[str, Any] | None:
    version = f"({sys.version_info.major}, {sys.version_info.minor})"
    source = f"import sys, json, re, collections, math, itertools\nassert sys.version_info[:2] == {version}\n"
    try:
        result = _execute(source, SandboxLimits(timeout=30), interpreter, _fresh_uid() if switch_uid else None)
    except SandboxError:
        return None
    return result.mechanisms if result.status == "passed" else None


def _fresh_uid() -> int:
    return SANDBOX_UIDS.start + secrets.randbelow(len(SANDBOX_UIDS))


def _execute(source: str, limits: SandboxLimits, interpreter: str, uid: int | None) -> ExecutionResult:
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="lmforge-sandbox-", ignore_cleanup_errors=True) as tmp:
        report_read, report_write = os.pipe()
        try:
            proc = _spawn(source, limits, interpreter, uid, Path(tmp), nonce, report_write)
        except BaseException:
            os.close(report_read)
            raise
        finally:
            os.close(report_write)
        try:
            output, report, timed_out = _collect(proc, report_read, limits, start)
        finally:
            os.close(report_read)
            proc.stdout.close()
    return _classify(output, report, timed_out, proc.returncode, nonce, limits, time.monotonic() - start)


def _spawn(source: str, limits: SandboxLimits, interpreter: str, uid: int | None, tmp: Path, nonce: str,
           report_fd: int) -> subprocess.Popen:
    program, config = tmp / "program.py", tmp / "sandbox.json"
    program.write_text(source, encoding="utf-8", errors="replace")
    settings = {key: value for key, value in asdict(limits).items() if key not in ("timeout", "output_bytes")}
    settings.update(cpu_seconds=limits.cpu_seconds or math.ceil(limits.timeout) + 1, guards=limits.guards,
                    hidden_paths=list(limits.hidden_paths), nonce=nonce, report_fd=report_fd, uid=uid,
                    program=str(program), workdir=str(tmp), parent_pid=os.getpid())
    config.write_text(json.dumps(settings), encoding="utf-8")
    if uid is not None:
        os.chown(tmp, uid, uid)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
    try:
        return subprocess.Popen([interpreter, "-I", "-S", "-B", "-X", "utf8", str(CHILD), str(config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                pass_fds=(report_fd,), cwd=tmp, env=env, start_new_session=True)
    except OSError as exc:
        raise SandboxError(f"cannot start the sandbox interpreter {interpreter}: {exc}") from exc


def _collect(proc: subprocess.Popen, report_fd: int, limits: SandboxLimits,
             start: float) -> tuple[tuple[bytes, bool], bytes, bool]:
    """Read output (capped) and the report until both pipes close and the process exits, or the deadline;
    then kill the process group. Returns ((output, truncated), report, timed_out)."""
    deadline = start + limits.timeout
    caps = {proc.stdout.fileno(): limits.output_bytes, report_fd: REPORT_CAP}
    data = {fd: bytearray() for fd in caps}
    truncated = False
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for fd in caps:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and not timed_out:
            remaining = deadline - time.monotonic()
            timed_out = remaining <= 0
            for key, _ in selector.select(max(remaining, 0)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fd)
                room = caps[key.fd] - len(data[key.fd])
                data[key.fd] += chunk[:room]
                truncated |= key.fd != report_fd and len(chunk) > room
    timed_out = timed_out or not _wait_exited(proc.pid, deadline)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the unreaped leader keeps the group id ours until proc.wait()
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    return (bytes(data[proc.stdout.fileno()]), truncated), bytes(data[report_fd]), timed_out


def _wait_exited(pid: int, deadline: float) -> bool:
    """Whether the process exited before `deadline` (it is left unreaped)."""
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def _classify(output: tuple[bytes, bool], report: bytes, timed_out: bool, returncode: int, nonce: str,
              limits: SandboxLimits, duration: float) -> ExecutionResult:
    stages: dict[str, list[str]] = {}
    for line in report.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] == nonce:
            stages.setdefault(parts[1], parts[2:])
    text = output[0].decode("utf-8", "replace")
    if "started" not in stages:
        raise SandboxError(f"the sandbox failed before running the program (exit code {returncode}): {text[-2000:]}")
    mechanisms = json.loads(stages["started"][0])
    status, message = _outcome(stages.get("result"), timed_out, returncode, limits)
    return ExecutionResult(status, message, round(duration, 4), text, output[1], mechanisms)


def _outcome(result: list[str] | None, timed_out: bool, returncode: int, limits: SandboxLimits) -> tuple[Status, str]:
    if result is not None and result[0] in ("passed", "failed", "error"):
        return result[0], result[1] if len(result) > 1 else ""  # type: ignore[return-value]
    if timed_out:
        return "timeout", f"timed out after {limits.timeout:g} s (wall clock)"
    if returncode == -signal.SIGXCPU:
        return "timeout", "CPU time limit exceeded"
    how = f"killed by {_signal_name(-returncode)}" if returncode < 0 else f"exit code {returncode}"
    return "failed", f"the program ended before its tests finished ({how})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
