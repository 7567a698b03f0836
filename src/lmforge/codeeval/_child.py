"""The first code a sandbox process runs, before the untrusted program (started by `sandbox.py`).

Run as `python -I -S -B _child.py CONFIG`, standard library only. In order it:
1. reads CONFIG (JSON from the parent) and the program file, and deletes both;
2. isolates itself with the operating system, each step best effort and reported back:
   - `net`: a new network namespace (a down loopback, nothing else): no network at all;
   - `fs`: a new mount namespace in which every mount is read-only and nosuid, with a private tmpfs on
     /tmp as the only writable place (it vanishes with the process) and `hidden_paths` covered by empty
     tmpfs mounts;
   - `ipc`: a new IPC namespace, so SysV shared memory, semaphores, message queues and POSIX message
     queues the program creates are private and vanish with it instead of outliving it on the host;
   - `uid`: (root parent) an unprivileged uid that owns nothing, so file permissions, RLIMIT_NPROC and
     kill() permission checks apply to the program;
   - `caps`: no capabilities left (a process that made a user namespace holds all of them inside it, enough
     to undo the read-only mounts and unmount the hidden paths), no-new-privileges set;
   - `seccomp`: the system-call filter of `_seccomp.py` (non-Internet sockets, io_uring, namespaces,
     mounts, other processes), which fails such calls with EPERM;
   a non-root parent gets `net`, `fs` and `ipc` from an unprivileged user namespace where the kernel allows it;
3. sets resource limits (CPU seconds, address space, file size, open files, processes, no core dumps);
4. installs Python-level guards, best effort since code using ctypes can bypass them: process creation
   and signals always; sockets when `net` or `seccomp` is missing; writes outside the work dir when `fs`
   is missing;
5. compiles and runs the program as module `__sandbox__`, reporting on the report descriptor one line
   per stage, `nonce<TAB>stage<TAB>payload`: "started" (the mechanisms as JSON) just before the program
   runs, then "result" with `passed`, `failed` (it raised, including SystemExit) or `error` (it does not
   compile) and a one-line message.
"""

import builtins
import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x08000000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x1, 0x2, 0x4, 0x8, 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = -100, 0x8000, 0x1, 0x2
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (unified syscall table since Linux 5.1)
PR_SET_PDEATHSIG, PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 23, 24, 38
LINUX_CAPABILITY_VERSION_3 = 0x20080522
PRIVATE_TMP = "/tmp"
PROCESS_FUNCTIONS = ("fork", "forkpty", "system", "popen", "execv", "execve", "execl", "execle", "execlp",
                     "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                     "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "kill", "killpg")
PATH_FUNCTIONS = ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "mkdir",
                  "makedirs", "chmod", "chown", "lchown", "truncate", "link", "symlink", "utime", "mkfifo", "mknod")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _sibling(name):
    """Load a module next to this file (`-I` leaves this folder off sys.path; importlib.util costs 2 ms)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    module = type(sys)(name)
    module.__file__ = path
    with open(path, encoding="utf-8") as fh:
        exec(compile(fh.read(), path, "exec"), module.__dict__)
    return module


_seccomp = _sibling("_seccomp")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def _mount(source, target, fstype, flags, options=None):
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), options.encode() if options else None), f"mount {target}")


# --- 2. operating-system isolation -------------------------------------------------------------------

def isolate(cfg):
    """Apply every mechanism that works here; returns (workdir, {mechanism: True | reason it is missing})."""
    mechanisms = {}
    root = os.geteuid() == 0
    try:  # under memory pressure the kernel kills the sandbox first, not the evaluator
        _write_file("/proc/self/oom_score_adj", "1000")
    except OSError:
        pass
    if not root:
        _attempt(mechanisms, "userns", _enter_user_namespace)
    if root or mechanisms["userns"] is True:
        _attempt(mechanisms, "net", lambda: _unshare(CLONE_NEWNET))
        _attempt(mechanisms, "ipc", lambda: _unshare(CLONE_NEWIPC))
        owner = cfg["uid"] if root and cfg["uid"] is not None else os.getuid()
        _attempt(mechanisms, "fs", lambda: _private_filesystem(cfg, owner))
    if root and cfg["uid"] is not None:
        _attempt(mechanisms, "uid", lambda: _switch_user(cfg["uid"]))
    _attempt(mechanisms, "caps", _drop_capabilities)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the uid switch, which clears it
    if os.getppid() != cfg["parent_pid"]:
        os._exit(70)  # the evaluator died before the death signal was armed
    _attempt(mechanisms, "seccomp", lambda: _seccomp.install(mechanisms.get("net") is True, os.getpid()))
    return (PRIVATE_TMP if mechanisms.get("fs") is True else cfg["workdir"]), mechanisms


def _attempt(mechanisms, name, action):
    try:
        action()
        mechanisms[name] = True
    except (OSError, AttributeError) as exc:  # AttributeError: a libc without unshare/mount (not Linux)
        mechanisms[name] = str(exc)


def _write_file(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _enter_user_namespace():
    uid, gid = os.getuid(), os.getgid()
    _unshare(CLONE_NEWUSER)
    _write_file("/proc/self/setgroups", "deny")
    _write_file("/proc/self/uid_map", f"{uid} {uid} 1")
    _write_file("/proc/self/gid_map", f"{gid} {gid} 1")


def _private_filesystem(cfg, owner):
    _unshare(CLONE_NEWNS)
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates to the host
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/", ctypes.c_uint(AT_RECURSIVE),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr read-only")
    _mount("tmpfs", PRIVATE_TMP, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           f"size={cfg['disk_bytes']},mode=0700,uid={owner},gid={owner}")
    needed = [os.path.realpath(p) for p in (sys.executable, sys.base_prefix, sys.prefix)]
    for path in cfg["hidden_paths"]:
        inside = [n for n in needed if n == path or n.startswith(path.rstrip("/") + "/")]
        if os.path.isdir(path) and not inside:
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0755")


def _switch_user(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(1, "uid switch did not take effect")


def _drop_capabilities():
    """Set no-new-privileges, empty the bounding set where allowed (it caps what an exec could regain), then
    every capability set."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    cap = 0
    while _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0:
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP (after a uid switch): harmless
        cap += 1
    header, data = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    if any(getattr(d, field) for d in data for field in ("effective", "permitted", "inheritable")):
        raise OSError(1, "capabilities are still held after capset")


# --- 3. resource limits ------------------------------------------------------------------------------

def set_limits(cfg):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing
    cpu = cfg["cpu_seconds"]
    limits = {resource.RLIMIT_CPU: (cpu, cpu + 1), resource.RLIMIT_AS: cfg["memory_bytes"],
              resource.RLIMIT_FSIZE: cfg["file_bytes"], resource.RLIMIT_NOFILE: cfg["open_files"],
              resource.RLIMIT_NPROC: cfg["processes"], resource.RLIMIT_CORE: 0}
    for kind, value in limits.items():
        resource.setrlimit(kind, value if isinstance(value, tuple) else (value, value))


# --- 4. Python-level guards --------------------------------------------------------------------------

def _blocked(name):
    def blocked(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in the lmforge sandbox")
    return blocked


def guard_processes():
    import _posixsubprocess
    import posix
    for name in PROCESS_FUNCTIONS:
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, _blocked(f"os.{name}"))
    _posixsubprocess.fork_exec = _blocked("subprocess")


def guard_network():
    import _socket
    import socket
    for module in (socket, _socket):
        for name in ("socket", "SocketType", "socketpair", "fromfd", "create_connection", "create_server"):
            if hasattr(module, name):
                setattr(module, name, _blocked(f"socket.{name}"))


def guard_writes(workdir):
    import io
    import posix
    open_, os_open = builtins.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def resolve(path, dir_fd=None):
        base = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else os.getcwd()
        return os.path.realpath(os.path.join(base, os.fsdecode(path)))

    def check(path, dir_fd=None):
        if isinstance(path, int):
            return
        real = resolve(path, dir_fd)
        if real != workdir and not real.startswith(workdir + os.sep):
            raise PermissionError(f"writing outside the sandbox directory is disabled: {real}")

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            check(file)
        return open_(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & write_flags:
            check(path, dir_fd)
        return os_open(path, flags, mode, dir_fd=dir_fd)

    def wrap(name, function):
        def guarded(*args, **kwargs):
            for path in args[:2] if name in ("rename", "renames", "replace", "link", "symlink") else args[:1]:
                check(path, kwargs.get("dir_fd") or kwargs.get("src_dir_fd"))
            return function(*args, **kwargs)
        return guarded

    builtins.open = io.open = guarded_open
    os.open = posix.open = guarded_os_open
    for name in PATH_FUNCTIONS:
        if hasattr(os, name):
            setattr(os, name, wrap(name, getattr(os, name)))


# --- 5. run and report -------------------------------------------------------------------------------

def describe(exc, source):
    """`Type: message (line N: source line)`, one line, at most 500 characters."""
    try:
        text = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    except Exception:
        text = "<unprintable>"
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = exc.lineno if isinstance(exc, SyntaxError) else None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<candidate>":
            line = tb.tb_lineno
        tb = tb.tb_next
    lines = source.splitlines()
    if line and 0 < line <= len(lines):
        message += f" (line {line}: {lines[line - 1].strip()})"
    return " ".join(message.split())[:500]


def main():
    config_path = sys.argv[1]
    with open(config_path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    with open(cfg["program"], encoding="utf-8") as fh:
        source = fh.read()
    os.unlink(config_path)
    os.unlink(cfg["program"])
    write, exit_, fd, nonce = os.write, os._exit, cfg["report_fd"], cfg["nonce"]

    def report(stage, payload):  # builtins only: the program may have replaced module functions
        write(fd, (nonce + "\t" + stage + "\t" + payload + "\n").encode("utf-8", "backslashreplace"))

    workdir, mechanisms = isolate(cfg)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    os.chdir(workdir)
    set_limits(cfg)
    if cfg["guards"]:
        guard_processes()
        mechanisms["guards"] = ["processes"]
        if mechanisms.get("net") is not True or mechanisms.get("seccomp") is not True:
            guard_network()
            mechanisms["guards"].append("network")
        if mechanisms.get("fs") is not True:
            guard_writes(os.path.realpath(workdir))
            mechanisms["guards"].append("writes")
    sys.argv = ["<candidate>"]
    report("started", json.dumps(mechanisms))
    try:
        code = compile(source, "<candidate>", "exec", dont_inherit=True)
    except Exception as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError
        report("result", "error\t" + describe(exc, source))
        exit_(0)
    try:
        exec(code, {"__name__": "__sandbox__", "__builtins__": builtins})
        outcome = "passed\t"
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are failures too
        outcome = "failed\t" + describe(exc, source)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    report("result", outcome)
    exit_(0)


if __name__ == "__main__":
    main()
