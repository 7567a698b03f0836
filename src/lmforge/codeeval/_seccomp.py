"""The sandbox's system-call filter: a classic-BPF seccomp program built with `struct`, standard library only.

A private network namespace does not isolate filesystem Unix sockets, vsock (it reaches the hypervisor
host) or io_uring (it creates and connects sockets without the socket system calls), and namespaces and
mounts are attack surface the program has no business with. `install(allow_inet, own_pid)` makes these
fail with EPERM (a clean `PermissionError` in Python), so an ordinary program only sees an exception:

- `socket`: only AF_INET / AF_INET6, and only when `allow_inet` (the caller has a private network
  namespace, where they reach nothing); every other family (AF_UNIX, AF_NETLINK, AF_PACKET, AF_VSOCK,
  AF_ALG, ...) is refused;
- `socketpair`: only AF_UNIX SOCK_STREAM (asyncio's self-pipe); a datagram pair could `sendto` any
  socket path on the host;
- io_uring, namespaces (`unshare`, `setns`, `clone` with CLONE_NEW* flags; `clone3` gets ENOSYS so libc
  falls back to `clone`), mounts of any kind, `chroot`, `pivot_root`;
- other processes: `ptrace`, `process_vm_readv/writev`, `pidfd_open/getfd/send_signal`, and `kill`,
  `tkill`, `tgkill`, `rt_(tg)sigqueueinfo`, `prlimit64` aimed at any process but the program itself;
- kernel interfaces with a record of privilege escalations: keyrings, `bpf`, `perf_event_open`,
  `userfaultfd`.
Everything else is allowed. Another architecture's system calls (x86 32-bit or x32 on x86_64) kill the
process: no Python program makes them, only hand-made machine code does.
"""

import ctypes
import os
import struct

# classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
LD_ABS, JEQ, JGE, JSET, AND, RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
NR, ARCH, ARGS = 0, 4, 16  # offsets in struct seccomp_data; an argument's low 32 bits (little-endian)
X32_SYSCALL_BIT = 0x40000000
EPERM, ENOSYS = 1, 38
AF_UNIX, AF_INET, AF_INET6, SOCK_STREAM, SOCK_TYPE_MASK = 1, 2, 10, 1, 0xF
CLONE_NEW_ANY = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
PR_SET_NO_NEW_PRIVS, SECCOMP_SET_MODE_FILTER = 38, 1

_COMMON = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
           "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434,
           "clone3": 435, "pidfd_getfd": 438, "pidfd_send_signal": 424, "mount_setattr": 442}
SYSCALLS = {  # per architecture: (AUDIT_ARCH_*, system call numbers)
    "x86_64": (0xC000003E, {**_COMMON, "socket": 41, "socketpair": 53, "clone": 56, "kill": 62, "ptrace": 101,
                            "rt_sigqueueinfo": 129, "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166,
                            "tkill": 200, "tgkill": 234, "add_key": 248, "request_key": 249, "keyctl": 250,
                            "unshare": 272, "rt_tgsigqueueinfo": 297, "perf_event_open": 298, "prlimit64": 302,
                            "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321,
                            "userfaultfd": 323, "seccomp": 317}),
    "aarch64": (0xC00000B7, {**_COMMON, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "unshare": 97,
                             "ptrace": 117, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
                             "socket": 198, "socketpair": 199, "add_key": 217, "request_key": 218, "keyctl": 219,
                             "clone": 220, "rt_tgsigqueueinfo": 240, "perf_event_open": 241, "prlimit64": 261,
                             "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271, "seccomp": 277,
                             "bpf": 280, "userfaultfd": 282}),
}
DENIED = ("io_uring_setup", "io_uring_enter", "io_uring_register", "unshare", "setns", "mount", "umount2",
          "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
          "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
          "pidfd_send_signal", "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd")
OWN_PROCESS_ONLY = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # first argument: a pid


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _ins(code, k, jt=0, jf=0):
    return (code, jt, jf, k & 0xFFFFFFFF)


def _errno(number):
    return _ins(RET, RET_ERRNO | number)


def _allow_if_arg_in(arg, values, denied=EPERM):
    """Allow when argument `arg` (low 32 bits) is one of `values`, else fail with `denied`."""
    n = len(values)
    if n == 0:
        return [_errno(denied)]
    return [_ins(LD_ABS, ARGS + 8 * arg),
            *(_ins(JEQ, value, jt=n - i) for i, value in enumerate(values)),  # jt lands on the final RET_ALLOW
            _errno(denied), _ins(RET, RET_ALLOW)]


def _socketpair_stream_only():
    return [_ins(LD_ABS, ARGS), _ins(JEQ, AF_UNIX, jf=3),
            _ins(LD_ABS, ARGS + 8), _ins(AND, SOCK_TYPE_MASK), _ins(JEQ, SOCK_STREAM, jt=1),
            _errno(EPERM), _ins(RET, RET_ALLOW)]


def _clone_without_namespaces():
    return [_ins(LD_ABS, ARGS), _ins(JSET, CLONE_NEW_ANY, jf=1), _errno(EPERM), _ins(RET, RET_ALLOW)]


def build(machine, allow_inet, own_pid):
    """The filter for `machine` (os.uname().machine) as a list of (code, jt, jf, k) instructions."""
    if machine not in SYSCALLS:
        raise OSError(EPERM, f"no seccomp filter for architecture {machine}")
    audit_arch, numbers = SYSCALLS[machine]
    rules = {"socket": _allow_if_arg_in(0, (AF_INET, AF_INET6) if allow_inet else ()),
             "socketpair": _socketpair_stream_only(),
             "clone": _clone_without_namespaces(),
             "clone3": [_errno(ENOSYS)],
             "prlimit64": _allow_if_arg_in(0, (0, own_pid)),
             **{name: _allow_if_arg_in(0, (own_pid,)) for name in OWN_PROCESS_ONLY},
             **{name: [_errno(EPERM)] for name in DENIED}}
    program = [_ins(LD_ABS, ARCH), _ins(JEQ, audit_arch, jt=1), _ins(RET, RET_KILL_PROCESS), _ins(LD_ABS, NR)]
    if machine == "x86_64":
        program += [_ins(JGE, X32_SYSCALL_BIT, jf=1), _ins(RET, RET_KILL_PROCESS)]
    for name, body in rules.items():  # every body ends in a RET, so the accumulator may be reused freely
        program += [_ins(JEQ, numbers[name], jf=len(body)), *body]
    program.append(_ins(RET, RET_ALLOW))
    return program


def install(allow_inet, own_pid):
    """Set no-new-privileges and load the filter into this (single-threaded) process; OSError if refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    machine = os.uname().machine
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        raise OSError(EPERM, f"no seccomp filter for a 32-bit interpreter on {machine}")
    program = build(machine, allow_inet, own_pid)
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    fprog = _SockFprog(len(program), code)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    seccomp = SYSCALLS[machine][1]["seccomp"]
    if libc.syscall(ctypes.c_long(seccomp), ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(0),
                    ctypes.byref(fprog)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(errno)}")
