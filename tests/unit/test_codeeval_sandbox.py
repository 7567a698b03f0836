"""The sandbox runs programs in a separate process and contains hostile ones; each claim is checked from the
host side (files that must not exist, a listener that must hear nothing, processes that must be gone)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from lmforge.codeeval import SandboxLimits, load_humaneval, load_mbpp, run_program, sandbox_info, shared_data_dir
from lmforge.codeeval.sandbox import CHILD

FAST = SandboxLimits(timeout=5)
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
