"""The sandbox runs programs in a separate process and contains hostile ones; each claim is checked from the
host side (files that must not exist, a listener that must hear nothing, processes that must be gone)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from lmforge.codeeval import SandboxLimits, load_humaneval, load_mbpp, run_program, sandbox_info, shared_data_dir
from lmforge.codeeval import _seccomp
from lmforge.codeeval.sandbox import CHILD

FAST = SandboxLimits(timeout=5)
# where the sandbox must install its system-call filter (so a missing one fails a test instead of skipping it)
SECCOMP_EXPECTED = sys.platform == "linux" and os.uname().machine in _seccomp.SYSCALLS
needs_data = pytest.mark.skipif(not (shared_data_dir() / "humaneval").is_dir(), reason="shared data not present")


def run(source: str, limits: SandboxLimits = FAST):
    return run_program(textwrap.dedent(source), limits)


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def sandbox_processes() -> list[int]:
    """Processes still running the sandbox launcher (none may outlive a run)."""
    return processes_mentioning(str(CHILD))


# --- ordinary programs -------------------------------------------------------------------------------

@needs_data
def test_reference_solutions_pass_and_wrong_ones_fail():
    problems = load_humaneval()[:4] + load_mbpp("test")[:4]
    for problem in problems:
        result = run_program(problem.program(problem.reference), FAST)
        assert result.status == "passed", (problem.task_id, result.message)
    humaneval, mbpp = problems[0], problems[-1]
    wrong = run_program(humaneval.program(humaneval.code_prefix + "    return False\n"), FAST)
    assert wrong.status == "failed" and wrong.message.startswith("AssertionError")
    wrong = run_program(mbpp.program("def " + mbpp.reference.split("def ", 1)[1].split("(")[0] + "(*a): return None"), FAST)
    assert wrong.status == "failed" and "AssertionError" in wrong.message and "line" in wrong.message


@pytest.mark.parametrize(("source", "status", "message"), [
    ("assert 1 + 1 == 2\nprint('ok')", "passed", ""),
    ("x = 1\nassert x == 2, 'x is wrong'", "failed", "AssertionError: x is wrong (line 2: assert x == 2, 'x is wrong')"),
    ("def f(:\n    pass", "error", "SyntaxError"),
    ("def f():\nreturn 1", "error", "IndentationError"),
    ("import sys\nsys.exit(0)\nassert False", "failed", "SystemExit: 0"),      # exiting early is not passing
    ("import os\nos._exit(0)\nassert False", "failed", "the program ended before its tests finished"),
    ("raise KeyboardInterrupt", "failed", "KeyboardInterrupt"),
])
def test_status_classification(source, status, message):
    result = run(source)
    assert (result.status, result.message[:len(message)]) == (status, message)
    assert result.duration < 5


def test_output_is_captured():
    result = run("print('hello from the sandbox')")
    assert result.output == "hello from the sandbox\n" and not result.output_truncated


def test_mechanisms_are_reported():
    info = sandbox_info()
    assert Path(info["interpreter"]).is_file()
    assert "processes" in info["mechanisms"]["guards"]
    if os.geteuid() == 0 and info["uid_switch"]:
        assert info["mechanisms"]["uid"] is True
    if SECCOMP_EXPECTED:
        assert info["mechanisms"]["seccomp"] is True and info["mechanisms"]["caps"] is True


# --- hostile programs --------------------------------------------------------------------------------

def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run("while True:\n    pass", SandboxLimits(timeout=1.5))
    assert result.status == "timeout" and time.monotonic() - start < 4
    assert sandbox_processes() == []


def test_sleeping_program_times_out():
    assert run("import time\ntime.sleep(60)", SandboxLimits(timeout=1)).status == "timeout"


@pytest.mark.parametrize("bomb", ["x = bytearray(10 ** 11)", "chunks = []\nwhile True:\n    chunks.append(' ' * 10 ** 7)"])
def test_memory_bomb_raises_memory_error(bomb):
    result = run(bomb, SandboxLimits(timeout=10, memory_bytes=512 << 20))
    assert result.status == "failed" and result.message.startswith("MemoryError")


@pytest.mark.parametrize("bomb", [
    "import os\nwhile True:\n    os.fork()",
    "import subprocess, sys\nfor _ in range(100):\n    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({marker})'])",
    "import os\nassert os.system('sleep {marker} &') == 0",
    "import multiprocessing, time\nmultiprocessing.Process(target=time.sleep, args=({marker},)).start()",
])
@pytest.mark.parametrize("guards", [True, False])
def test_fork_bombs_are_contained(bomb, guards):
    if not guards and sandbox_info()["mechanisms"].get("uid") is not True and os.geteuid() == 0:
        pytest.skip("without a uid switch, root processes are only stopped by the Python guards")
    marker = f"30.{secrets.randbelow(10 ** 6)}"
    result = run(bomb.format(marker=marker), SandboxLimits(timeout=5, guards=guards))
    assert result.status == "failed"
    assert any(word in result.message for word in ("PermissionError", "BlockingIOError", "can't start", "AssertionError"))
    assert sandbox_processes() == [] and processes_mentioning(marker) == []


@pytest.mark.parametrize("guards", [True, False])
def test_writes_outside_the_work_dir_do_not_reach_the_host(tmp_path, guards):
    if not guards and sandbox_info()["mechanisms"].get("fs") is not True:
        pytest.skip("no private filesystem here: only the Python guards stop writes")
    # /tmp is replaced inside the sandbox, so the canary sits in world-writable /var/tmp, itself world-writable
    outside = Path(tempfile.mkdtemp(prefix="lmforge-canary-", dir="/var/tmp"))
    try:
        escapes = [Path(f"/tmp/lmforge_escape_{secrets.token_hex(6)}"), tmp_path / "escape.txt", outside / "escape.txt"]
        canary = outside / "canary"
        canary.mkdir()
        (canary / "keep.txt").write_text("keep")
        for path in (outside, canary, canary / "keep.txt"):
            path.chmod(0o777)
        source = "import os, shutil\n"
        for path in escapes:
            source += f"try:\n    open({str(path)!r}, 'w').write('escaped')\nexcept OSError:\n    pass\n"
        source += f"shutil.rmtree({str(canary)!r}, ignore_errors=True)\nopen('inside.txt', 'w').write('fine')\n"
        source += "assert open('inside.txt').read() == 'fine'\n"
        result = run(source, SandboxLimits(timeout=5, guards=guards))
        assert result.status == "passed", result.message  # its own work dir is writable
        assert [path for path in escapes if path.exists()] == []
        assert (canary / "keep.txt").read_text() == "keep"
    finally:
        shutil.rmtree(outside)


@pytest.mark.parametrize("guards", [True, False])
def test_network_connections_fail(guards):
    if not guards and sandbox_info()["mechanisms"].get("net") is not True:
        pytest.skip("no network namespace here: only the Python guards block sockets")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'stolen')",
                     SandboxLimits(timeout=5, guards=guards))
        assert result.status == "failed" and ("OSError" in result.message or "PermissionError" in result.message)
        with pytest.raises(socket.timeout):
            listener.accept()


def test_environment_secrets_are_not_visible(monkeypatch):
    mechanisms = sandbox_info()["mechanisms"]
    if os.geteuid() == 0 and mechanisms.get("uid") is not True and mechanisms.get("fs") is not True:
        pytest.skip("a root program without uid switch or private filesystem can read /proc/<evaluator>/environ")
    secret = secrets.token_hex(16)
    monkeypatch.setenv("LMFORGE_SECRET", secret)
    result = run(f"""
        import os
        assert "LMFORGE_SECRET" not in os.environ
        assert {secret!r} not in repr(dict(os.environ))
        try:
            parent = open(f"/proc/{{os.getppid()}}/environ", "rb").read()
        except OSError:
            parent = b""
        assert {secret!r}.encode() not in parent
        """)
    assert result.status == "passed", result.message


def test_huge_output_is_capped():
    result = run("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 1_000_000)",
                 SandboxLimits(timeout=20, output_bytes=1000))
    assert result.status == "passed" and result.output_truncated and len(result.output) == 1000


@pytest.mark.parametrize("guards", [True, False])
def test_signalling_the_evaluator_fails(guards):
    if not guards and sandbox_info()["mechanisms"].get("uid") is not True and os.geteuid() == 0:
        pytest.skip("without a uid switch, only the Python guards stop signals")
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        result = run("import os, signal\nos.kill(os.getppid(), signal.SIGUSR1)", SandboxLimits(timeout=5, guards=guards))
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert result.status == "failed" and "PermissionError" in result.message and received == []


@pytest.mark.parametrize("source", ["open('/etc/shadow').read()", "open('/root/.lmforge_probe', 'a')"])
def test_privileged_files_are_out_of_reach(source):
    if os.geteuid() == 0 and not sandbox_info()["uid_switch"]:
        pytest.skip("programs run as root here")
    result = run(f"import os\n{source}")
    assert result.status == "failed" and ("PermissionError" in result.message or "OSError" in result.message)


def test_python_guards_themselves():
    """The fallback guards (used where namespaces are unavailable), exercised in a throwaway interpreter."""
    outside = f"/tmp/lmforge_escape_{secrets.token_hex(6)}"
    script = textwrap.dedent(f"""
        import os, sys, tempfile
        sys.path.insert(0, {str(CHILD.parent)!r})
        import _child
        work = tempfile.mkdtemp()
        os.chdir(work)
        _child.guard_processes(); _child.guard_network(); _child.guard_writes(os.path.realpath(work))
        blocked = []
        for attempt in ("open({outside!r}, 'w')", "os.open({outside!r}, os.O_CREAT | os.O_WRONLY)",
                        "os.mkdir({outside!r})", "os.rename('a', {outside!r})", "__import__('socket').socket()",
                        "__import__('socket').create_connection(('127.0.0.1', 9))", "os.fork()", "os.system('true')",
                        "__import__('subprocess').run(['true'])", "os.kill(os.getppid(), 0)"):
            try:
                exec(attempt)
            except PermissionError:
                blocked.append(attempt)
        open('a', 'w').write('inside is fine'); os.mkdir('sub'); os.rename('a', 'sub/b')
        print(len(blocked))
        """)
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "10", done.stderr
    assert not Path(outside).exists()


# --- the system-call filter --------------------------------------------------------------------------

def unix_listener(folder: Path, kind: int = socket.SOCK_STREAM, abstract: bool = False) -> tuple[socket.socket, str | bytes]:
    """A host socket anyone may use: in a world-writable folder (not /tmp, which the sandbox replaces), mode 777."""
    listener = socket.socket(socket.AF_UNIX, kind)
    address: str | bytes = b"\0lmforge-test-" + secrets.token_hex(8).encode() if abstract else str(folder / "host.sock")
    listener.bind(address)
    if not abstract:
        os.chmod(address, 0o777)
    if kind == socket.SOCK_STREAM:
        listener.listen()
    listener.settimeout(0.3)
    return listener, address


@pytest.fixture
def open_folder():
    folder = Path(tempfile.mkdtemp(prefix="lmforge-socket-", dir="/var/tmp"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("abstract", [False, True], ids=["filesystem", "abstract"])
@pytest.mark.parametrize("guards", [True, False])
def test_host_unix_sockets_are_unreachable(open_folder, abstract, guards):
    if not guards and not SECCOMP_EXPECTED:
        pytest.skip("no system-call filter on this platform: only the Python guards block sockets")
    listener, address = unix_listener(open_folder, abstract=abstract)
    with listener:
        result = run(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({address!r})\n"
                     "s.sendall(b'stolen')\nprint(s.recv(100))", SandboxLimits(timeout=5, guards=guards))
        assert result.status == "failed" and "PermissionError" in result.message, result.message
        with pytest.raises(socket.timeout):
            listener.accept()


def test_a_datagram_socketpair_cannot_send_to_host_sockets(open_folder):
    """A connected datagram socket still delivers to any path given to sendto: socketpair must not yield one."""
    listener, address = unix_listener(open_folder, socket.SOCK_DGRAM)
    with listener:
        result = run(f"import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                     f"a.sendto(b'stolen', {address!r})", SandboxLimits(timeout=5, guards=False))
        assert result.status == "failed" and "PermissionError" in result.message, result.message
        with pytest.raises(socket.timeout):
            listener.recv(100)


def test_only_internet_socket_families_can_be_created():
    if not SECCOMP_EXPECTED:
        pytest.skip("no system-call filter on this platform")
    result = run("""
        import socket
        created = []
        for family, kind in [(socket.AF_UNIX, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_DGRAM),
                             (socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_RAW),
                             (socket.AF_VSOCK, socket.SOCK_STREAM), (socket.AF_ALG, socket.SOCK_SEQPACKET)]:
            try:
                socket.socket(family, kind).close()
                created.append(family.name)
            except PermissionError:
                pass
        print(created)
        """, SandboxLimits(timeout=5, guards=False))
    assert (result.status, result.output) == ("passed", "[]\n"), result.message


def test_asyncio_still_runs():
    """asyncio's event loop needs a stream socketpair (its self-pipe): the one kind of Unix socket allowed."""
    result = run("import asyncio\nasync def f():\n    await asyncio.sleep(0)\n    return 3\nassert asyncio.run(f()) == 3")
    assert result.status == "passed", result.message


def test_namespaces_io_uring_and_other_processes_are_refused():
    if not SECCOMP_EXPECTED:
        pytest.skip("no system-call filter on this platform")
    numbers = _seccomp.SYSCALLS[os.uname().machine][1]
    result = run(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        def attempt(name, *args):
            ok = libc.syscall({numbers!r}[name], *args) >= 0
            return name if ok else ctypes.get_errno()
        params = ctypes.create_string_buffer(120)
        print([attempt("unshare", 0x10000000), attempt("io_uring_setup", 8, params), attempt("clone3", None, 0),
               attempt("ptrace", 16, os.getppid(), 0, 0), attempt("pidfd_open", os.getppid(), 0),
               attempt("kill", os.getppid(), 0), attempt("kill", -1, 0), attempt("prlimit64", os.getppid(), 7, None, None),
               attempt("add_key", b"user", b"lmforge", b"x", 1, -3), attempt("kill", os.getpid(), 0)])
        """, SandboxLimits(timeout=5, guards=False))
    assert result.status == "passed", result.message
    assert result.output == "[1, 1, 38, 1, 1, 1, 1, 1, 1, 'kill']\n"  # EPERM, ENOSYS for clone3; its own pid is fine


def test_sysv_shared_memory_does_not_outlive_the_program():
    key = 0x1F000000 + secrets.randbelow(1 << 20)
    result = run(f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 f"assert libc.shmget({key}, 1 << 20, 0o1000 | 0o666) >= 0, ctypes.get_errno()",
                 SandboxLimits(timeout=5, guards=False))
    leaked = f" {key} " in Path("/proc/sysvipc/shm").read_text()
    if leaked:  # remove it from the host: shmctl(shmget(key), IPC_RMID)
        libc = __import__("ctypes").CDLL(None)
        libc.shmctl(libc.shmget(key, 0, 0), 0, None)
    assert result.status == "passed", result.message  # created, but in the program's own IPC namespace
    assert not leaked


def test_filter_decisions_on_every_architecture():
    """The BPF program run by a small interpreter, for each architecture (the kernel only runs the local one)."""
    def decide(program, arch, nr, *args):
        data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
        acc = pc = 0
        while True:
            code, jt, jf, k = program[pc]
            if code == _seccomp.RET:
                return k
            if code == _seccomp.LD_ABS:
                acc = struct.unpack_from("<I", data, k)[0]
            elif code == _seccomp.AND:
                acc &= k
            else:
                taken = {_seccomp.JEQ: acc == k, _seccomp.JGE: acc >= k, _seccomp.JSET: bool(acc & k)}[code]
                pc += jt if taken else jf
            pc += 1

    allow, kill = _seccomp.RET_ALLOW, _seccomp.RET_KILL_PROCESS
    eperm, enosys = _seccomp.RET_ERRNO | 1, _seccomp.RET_ERRNO | 38
    for machine, (arch, nr) in _seccomp.SYSCALLS.items():
        read = {"x86_64": 0, "aarch64": 63}[machine]
        program = _seccomp.build(machine, allow_inet=True, own_pid=4242)
        cases = [((read, 3), allow), ((nr["socket"], 1, 1), eperm), ((nr["socket"], 2, 1), allow),
                 ((nr["socket"], 10, 2), allow), ((nr["socket"], 16, 3), eperm), ((nr["socket"], 40, 1), eperm),
                 ((nr["socketpair"], 1, 1 | 0x80000), allow), ((nr["socketpair"], 1, 2), eperm),
                 ((nr["socketpair"], 2, 1), eperm), ((nr["clone"], 0x01200011), allow),
                 ((nr["clone"], 0x10000000 | 17), eperm), ((nr["clone3"], 0, 88), enosys),
                 ((nr["unshare"], 0x20000), eperm), ((nr["io_uring_setup"], 8, 0), eperm),
                 ((nr["kill"], 4242, 9), allow), ((nr["kill"], 1, 9), eperm), ((nr["kill"], -1 & 0xFFFFFFFF, 9), eperm),
                 ((nr["tgkill"], 4242, 4242, 6), allow), ((nr["prlimit64"], 0, 7), allow),
                 ((nr["prlimit64"], 1, 7), eperm), ((nr["mount"], 0), eperm), ((nr["ptrace"], 16, 1), eperm)]
        for (number, *args), expected in cases:
            assert decide(program, arch, number, *args) == expected, (machine, number, args)
        assert decide(program, 0x40000003, nr["socket"], 1) == kill  # x86 32-bit (or any foreign) system calls
        assert decide(_seccomp.build(machine, allow_inet=False, own_pid=1), arch, nr["socket"], 2) == eperm
    assert decide(_seccomp.build("x86_64", True, 1), 0xC000003E, 0x40000000 | 41, 2) == kill  # x32 ABI
    with pytest.raises(OSError, match="riscv64"):
        _seccomp.build("riscv64", True, 1)


def mount_point(path: Path) -> Path:
    while not os.path.ismount(path):
        path = path.parent
    return path


def test_an_unprivileged_evaluator_is_not_escaped(open_folder):
    """Run by a non-root user, the sandbox owns its user namespace: its capabilities there must not let the
    program make the host filesystem writable again, unmount a hidden folder, or signal the evaluator."""
    interpreter, setpriv = sandbox_info()["interpreter"], shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to start an evaluator under another uid")
    # a copy of the package the other uid can read (a checkout may sit in a 0700 folder)
    src = open_folder / "src"
    shutil.copytree(Path(__import__("lmforge").__file__).resolve().parent, src / "lmforge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [src, *src.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    target = open_folder / "escaped.txt"
    hostile = textwrap.dedent(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        attr = (ctypes.c_uint64 * 4)(0, 1, 0, 0)  # mount_setattr: clear MOUNT_ATTR_RDONLY
        libc.syscall(442, -100, {str(mount_point(open_folder)).encode()!r}, 0, attr, 32)
        libc.umount2(b"/home", 2)
        libc.kill(os.getppid(), 10)
        print(os.path.isdir("/home") and os.listdir("/home"))
        open({str(target)!r}, "w").write("escaped")
        """)
    driver = textwrap.dedent(f"""
        import json, signal, sys, time
        from lmforge.codeeval.sandbox import SandboxLimits, run_program, sandbox_info
        received = []
        signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
        result = run_program({hostile!r}, SandboxLimits(timeout=10, guards=False))
        time.sleep(0.05)
        print(json.dumps({{"mechanisms": sandbox_info()["mechanisms"], "received": received, "status": result.status,
                          "message": result.message, "output": result.output}}))
        """)
    done = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", interpreter, "-c", driver],
                          capture_output=True, text=True, timeout=60, cwd=open_folder,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(open_folder), "PYTHONPATH": str(src)})
    assert done.returncode == 0, done.stderr
    report = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    if report["mechanisms"].get("userns") is not True:
        pytest.skip("no unprivileged user namespaces here")
    assert not target.exists() and report["received"] == [], report
    assert report["status"] == "failed" and "Read-only file system" in report["message"], report
