"""Hostile programs against the code-evaluation sandbox: how many are contained, checked from the host side.

    python bench/sandbox_hostile.py [--timeout 3] [--skip-references]

Every case runs twice: with the Python guards (the default) and with the operating-system mechanisms alone
(`guards=False`), so the numbers show what the kernel enforces by itself. "Contained" is decided by looking
at the host afterwards (canary files intact, nothing written outside, no stray processes, no listener -- TCP,
filesystem or abstract Unix socket, Unix datagram socket -- heard anything, no IPC object left behind, the
evaluator's limits unchanged, no secret in the output), not by trusting the sandbox's own report. Where the
host cannot see an attempt (a socket family that could be created, a namespace that could be entered, an
io_uring instance) the program prints what it obtained and the case checks that nothing was. Then every
reference solution of HumanEval and the MBPP test split is run through the sandbox (all must pass) to time
the throughput. `bench/fuzz_programs.py` reuses `CASES`, `prepare_host` and `run_case`.
"""

from __future__ import annotations

import argparse
import ctypes
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
from lmforge.codeeval._seccomp import SYSCALLS
from lmforge.codeeval.sandbox import CHILD

NR = SYSCALLS.get(os.uname().machine, (0, {}))[1]  # system call numbers for the ctypes cases
LIBC_HOST = ctypes.CDLL(None, use_errno=True)


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
    unix_listener: socket.socket        # a world-writable filesystem socket, mode 777
    abstract_listener: socket.socket    # an abstract-namespace socket
    unix_dgram: socket.socket           # a world-writable datagram socket (like /dev/log)
    shm_escape: Path                    # a file in /dev/shm
    ipc_key: int                        # a SysV shared-memory key
    mq_name: str                        # a POSIX message queue
    msgqueue_limit: tuple[int, int]     # the evaluator's RLIMIT_MSGQUEUE

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def fields(self) -> dict:
        """What a case's source may name (str.format)."""
        return {"canary_dir": self.canary_dir, "marker": self.marker, "escape": self.escape,
                "repo_escape": self.repo_escape, "port": self.port, "unix_path": self.unix_listener.getsockname(),
                "abstract": self.abstract_listener.getsockname(), "dgram_path": self.unix_dgram.getsockname(),
                "shm_escape": self.shm_escape, "ipc_key": self.ipc_key, "mq_name": self.mq_name, "nr": NR}


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


def unix_sockets_heard_nothing(result: ExecutionResult, host: Host) -> bool:
    """The program has exited, so anything it sent is queued already: non-blocking reads suffice."""
    heard = False
    for listener in (host.unix_listener, host.abstract_listener):
        try:
            listener.accept()[0].close()
            heard = True
        except BlockingIOError:
            pass
    try:
        host.unix_dgram.recv(100, socket.MSG_DONTWAIT)
        heard = True
    except BlockingIOError:
        pass
    return not heard


def sysv_segment_gone(result: ExecutionResult, host: Host) -> bool:
    leaked = f" {host.ipc_key} " in Path("/proc/sysvipc/shm").read_text()
    if leaked:
        LIBC_HOST.shmctl(LIBC_HOST.shmget(host.ipc_key, 0, 0), 0, None)  # IPC_RMID
    return not leaked


def message_queue_gone(result: ExecutionResult, host: Host) -> bool:
    queue = LIBC_HOST.mq_open(f"/{host.mq_name}".encode(), os.O_RDONLY)
    if queue >= 0:
        LIBC_HOST.mq_close(queue)
        LIBC_HOST.mq_unlink(f"/{host.mq_name}".encode())
    return queue < 0


def evaluator_limits_intact(result: ExecutionResult, host: Host) -> bool:
    now = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
    if now != host.msgqueue_limit:
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, host.msgqueue_limit)
    return now == host.msgqueue_limit


def printed(text: str) -> Callable[[ExecutionResult, Host], bool]:
    """For attempts the host cannot observe: the program prints what it obtained, and it must be nothing."""
    return lambda result, host: text in result.output


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
    # Unix sockets: a network namespace does not isolate filesystem sockets
    Case("unix_socket_to_host_listener", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({unix_path!r})\n"
         "s.sendall(b'stolen')\nprint(s.recv(100))", unix_sockets_heard_nothing),
    Case("abstract_unix_socket_to_host", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({abstract!r})\n"
         "s.sendall(b'stolen')", unix_sockets_heard_nothing),
    Case("socketpair_dgram_sendto_host", "import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
         "a.sendto(b'stolen', {dgram_path!r})", unix_sockets_heard_nothing),
    Case("socketpair_stream_reaching_out", "import socket\na, b = socket.socketpair()\n"
         "for attempt in (lambda: a.connect({unix_path!r}), lambda: a.sendto(b'stolen', {dgram_path!r}),\n"
         "                lambda: a.bind('bound.sock'), lambda: a.listen()):\n"
         "    try:\n        attempt()\n    except OSError:\n        pass", unix_sockets_heard_nothing),
    Case("other_socket_families", "import socket\ncreated = []\n"
         "for family, kind in [(socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_RAW),\n"
         "                     (socket.AF_VSOCK, socket.SOCK_STREAM), (socket.AF_ALG, socket.SOCK_SEQPACKET)]:\n"
         "    try:\n        socket.socket(family, kind).close()\n        created.append(family.name)\n"
         "    except OSError:\n        pass\nprint('created', created)", printed("created []")),
    Case("io_uring_setup", LIBC + "libc.syscall.restype = ctypes.c_long\n"
         "print('io_uring', libc.syscall({nr[io_uring_setup]}, 8, ctypes.create_string_buffer(120)))",
         printed("io_uring -1")),
    # other processes: the evaluator, init, everyone
    Case("ptrace_evaluator", LIBC + "import os\nprint('ptrace', libc.ptrace(0x4206, os.getppid(), 0, 0))",  # SEIZE
         printed("ptrace -1")),
    Case("steal_evaluator_fds", LIBC + "import os\nlibc.syscall.restype = ctypes.c_long\n"
         "pidfd = libc.syscall({nr[pidfd_open]}, os.getppid(), 0)\n"
         "print('stolen', [n for n in range(64) if pidfd >= 0 and libc.syscall({nr[pidfd_getfd]}, pidfd, n, 0) >= 0])",
         printed("stolen []")),
    Case("prlimit_evaluator", "import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_MSGQUEUE, (12345, 12345))",
         evaluator_limits_intact),
    Case("raise_own_limits", "import resource\nresource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)\n"
         "x = bytearray(3 << 30)", raised),
    Case("write_via_proc_1_root", "import os\nfor base in ('/proc/1/root', f'/proc/{{os.getppid()}}/root'):\n"
         "    try:\n        open(base + '{repo_escape}', 'w').write('escaped')\n    except OSError:\n        pass",
         lambda r, h: not h.repo_escape.exists()),
    # shared memory and IPC objects outlive a process unless they are private to it
    Case("write_dev_shm", "open('{shm_escape}', 'w').write('escaped')", lambda r, h: not h.shm_escape.exists()),
    Case("sysv_shared_memory_left_behind", LIBC + "assert libc.shmget({ipc_key}, 1 << 20, 0o1000 | 0o666) >= 0",
         sysv_segment_gone),
    Case("posix_message_queue_left_behind", LIBC + "assert libc.mq_open(b'/{mq_name}', 0o100 | 2, 0o666, None) >= 0",
         message_queue_gone),
    # namespaces and mounts
    Case("unshare_namespaces", LIBC + "print('unshared', [libc.unshare(flag) for flag in\n"
         "    (0x10000000, 0x20000, 0x40000000, 0x08000000, 0x04000000, 0x20000000, 0x02000000)])",
         printed("unshared [-1, -1, -1, -1, -1, -1, -1]")),
    Case("setns_into_init", LIBC + "libc.syscall.restype = ctypes.c_long\n"
         "pidfd = libc.syscall({nr[pidfd_open]}, 1, 0)\nprint('setns', libc.setns(pidfd, 0) if pidfd >= 0 else -1)\n"
         "open('{repo_escape}', 'w').write('escaped')", lambda r, h: "setns -1" in r.output and not h.repo_escape.exists()),
    Case("mount_setattr_read_write", LIBC + "libc.syscall.restype = ctypes.c_long\n"
         "attr = (ctypes.c_uint64 * 4)(0, 1, 0, 0)\nlibc.syscall(442, -100, b'/', 0x8000, attr, 32)\n"
         "libc.syscall(442, -100, b'/', 0, attr, 32)\nopen('{repo_escape}', 'w').write('escaped')",
         lambda r, h: not h.repo_escape.exists()),
    Case("unmount_hidden_proc", LIBC + "import os\nlibc.umount2(b'/proc', 2)\n"
         "print(open(f'/proc/{{os.getppid()}}/environ', 'rb').read())", lambda r, h: h.secret not in r.output),
]


def prepare_host() -> None:
    """Once per process, in its main thread: the secret the cases look for, and the SIGCONT tripwire."""
    os.environ.setdefault("LMFORGE_SECRET", secrets.token_hex(16))
    signal.signal(signal.SIGCONT, lambda *_: SIGNALLED.append(1))


def unix_socket(kind: int, address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.bind(address)
    if isinstance(address, str):
        os.chmod(address, 0o777)
    if kind == socket.SOCK_STREAM:
        sock.listen()
    sock.setblocking(False)
    return sock


def run_case(case: Case, guards: bool, timeout: float) -> dict:
    # the canary and the sockets sit in world-writable /var/tmp (not /tmp, which the sandbox replaces) and
    # are themselves world-writable, so only the sandbox stands between them and the program
    token = secrets.token_hex(6)
    with (tempfile.TemporaryDirectory(prefix="lmforge-hostile-", dir="/var/tmp") as tmp, socket.socket() as listener,
          unix_socket(socket.SOCK_STREAM, f"{tmp}/host.sock") as unix_listener,
          unix_socket(socket.SOCK_STREAM, f"\0lmforge-hostile-{token}".encode()) as abstract_listener,
          unix_socket(socket.SOCK_DGRAM, f"{tmp}/log.sock") as unix_dgram):
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
                    Path(f"/tmp/lmforge_escape_{token}"), ROOT / f"lmforge_escape_{token}",
                    file_hash(ROOT / "README.md"), file_hash(Path("/etc/passwd")), unix_listener, abstract_listener,
                    unix_dgram, Path(f"/dev/shm/lmforge_escape_{token}"), 0x1F000000 + secrets.randbelow(1 << 20),
                    f"lmforge_escape_{token}", resource.getrlimit(resource.RLIMIT_MSGQUEUE))
        result = run_program(textwrap.dedent(case.source.format(**host.fields())),
                             SandboxLimits(timeout=timeout, guards=guards))
        contained = case.contained(result, host)
        for path in (host.escape, host.repo_escape, host.shm_escape):
            path.unlink(missing_ok=True)
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
    prepare_host()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_before = os.getloadavg()[0]  # other work on the machine slows the reference programs (wall-clock limit)
    info = sandbox_info()
    print(f"sandbox: interpreter {info['interpreter']}, uid switch {info['uid_switch']}, mechanisms {info['mechanisms']}")
    rows = []
    for guards in (True, False):
        for case in CASES:
            row = run_case(case, guards, args.timeout)
            rows.append(row)
            print(f"{'guards' if guards else 'os-only':8} {case.name:32} {'contained' if row['contained'] else 'ESCAPED':10}"
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
                             "references": references, "bench_rss_growth_mb": round(rss_growth_mb, 1),
                             "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]}})


if __name__ == "__main__":
    main()
