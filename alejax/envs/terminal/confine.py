"""The part of the sandbox that runs inside it: build the private root, drop privileges, seccomp, exec.

The host's Python runs this file as a script (`python -I -S confine.py init` or `... exec SPEC ARGV...`, stdlib only,
so nothing of the checkout is imported inside). Two modes:

`init`       reads SPEC from stdin, creates the episode's namespaces (mount, pid, net, ipc, uts; a user namespace too when not
             root) and forks their pid 1, which builds the root the sandbox sees and then holds it:
               /            a small read-only tmpfs
               /usr /bin /sbin /lib* (symlinks kept), allow-listed /etc files: host, read-only, nosuid
               /etc/passwd, group, hosts, hostname, resolv.conf: written for the sandbox
               /dev         null zero full random urandom tty, a private devpts, /dev/shm
               /proc        a fresh proc of the sandbox's pid namespace
               WORKDIR /tmp /dev/shm and any writable dirs: one quota'd tmpfs (bytes and inodes)
             It prints `pid N` (the host pid of pid 1), then `ready {features}` or `error ...`, and lives
             until its stdin closes (the owner closed it or died); its death ends every process inside.
`exec SPEC ARGV...`  enters that holder's namespaces through inherited fds (or none, in plain mode), forks
             into its pid namespace, sets rlimits, drops to the sandbox uid, sets no_new_privs, installs the seccomp filter and
             execs ARGV.

`seccomp_program()` is importable on its own (the tests check the BPF it builds).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import signal
import struct
import sys

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEW_ANY = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC = 1024, 2048, 4096, 8192, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 4, 24, 28
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_SET_SECCOMP = 38, 47, 4, 22
SECCOMP_MODE_FILTER = 2
SECBIT_NOROOT_AND_LOCKED = 0x3  # SECBIT_NOROOT | SECBIT_NOROOT_LOCKED: exec as uid 0 grants no capabilities
TIOCSCTTY, TIOCSTI, TIOCLINUX = 0x540E, 0x5412, 0x541C

# Syscalls the sandbox never needs and that widen the kernel surface or reach outside: namespaces, mounts,
# tracing other processes, kernel keyrings, BPF, perf, modules, kexec, clocks, swap, io_uring (it bypasses
# per-syscall filtering), file handles (a classic container escape). Numbers: x86_64, then asm-generic (aarch64).
_DENIED = {
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "move_mount": (429, 429),
    "open_tree": (428, 428),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438),
    "process_madvise": (440, 440),
    "kcmp": (312, 272),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "syslog": (103, 116),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "lookup_dcookie": (212, 18),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "vhangup": (153, 58),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "nfsservctl": (180, 42),
    "fanotify_init": (300, 262),
    "iopl": (172, None),
    "ioperm": (173, None),
    "uselib": (134, None),
    "_sysctl": (156, None),
}
_ARCH = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}  # AUDIT_ARCH_*, column in _DENIED
_CLONE, _CLONE3, _IOCTL, _PIVOT_ROOT = {0: 56, 1: 220}, 435, {0: 16, 1: 29}, {0: 155, 1: 41}

# /etc entries the tools need (dynamic linker, alternatives symlinks, locale/time, service names, OS
# identification for system-inspection tasks); nothing with credentials, keys or user configuration.
ETC_ALLOW = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "protocols",
    "services",
    "mime.types",
    "shells",
    "inputrc",
    "magic",
    "magic.mime",
    "os-release",
    "debian_version",
    "lsb-release",
    "alpine-release",
    "redhat-release",
    "system-release",
    "issue",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
    "perl",
    "bash.bashrc",
    "profile",
    "terminfo",
    "gai.conf",
    "host.conf",
    "papersize",
    "locale.alias",
    "locale.gen",
    "default",
)
RO_ALLOW = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


# ---- seccomp -------------------------------------------------------------------------------------------


def seccomp_program(machine: str | None = None) -> bytes | None:
    """The classic-BPF seccomp filter as raw `struct sock_filter` records (None: architecture unknown).

    Denied syscalls fail with EPERM; `clone` only when it asks for a new namespace; `clone3` (whose flags
    a filter cannot read) with ENOSYS, so libc falls back to `clone`; `ioctl` TIOCSTI/TIOCLINUX (typing
    into a terminal); any other architecture or the x32 ABI kills the process.
    """
    machine = machine or os.uname().machine
    if machine not in _ARCH:
        return None
    audit_arch, column = _ARCH[machine]
    allow, kill = 0x7FFF0000, 0x80000000
    deny, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    program: list = []  # (code, jump-if-true label, jump-if-false label, k)

    program += [(ld, None, None, 4), (jeq, None, "kill", audit_arch), (ld, None, None, 0)]
    if machine == "x86_64":
        program.append((jge, "deny", None, 0x40000000))  # x32 syscall numbers
    for numbers in _DENIED.values():
        if numbers[column] is not None:
            program.append((jeq, "deny", None, numbers[column]))
    program += [
        (jeq, "clone", None, _CLONE[column]),
        (jeq, "enosys", None, _CLONE3),
        (jeq, "ioctl", None, _IOCTL[column]),
        (ret, None, None, allow),
    ]
    labels = {"clone": len(program)}
    program += [(ld, None, None, 16), (jset, "deny", None, CLONE_NEW_ANY), (ret, None, None, allow)]
    labels["ioctl"] = len(program)  # the request is args[1]; only its low 32 bits matter
    program += [
        (ld, None, None, 24),
        (jeq, "deny", None, TIOCSTI),
        (jeq, "deny", None, TIOCLINUX),
        (ret, None, None, allow),
    ]
    for name, value in (("deny", deny), ("enosys", enosys), ("kill", kill)):
        labels[name] = len(program)
        program.append((ret, None, None, value))
    out = b""
    for index, (code, true, false, k) in enumerate(program):
        jt = 0 if true is None else labels[true] - index - 1
        jf = 0 if false is None else labels[false] - index - 1
        assert 0 <= jt < 256 and 0 <= jf < 256, "BPF jump out of range"
        out += struct.pack("=HBBI", code, jt, jf, k)
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp() -> None:
    program = seccomp_program()
    if program is None:
        raise OSError(errno.ENOSYS, f"no seccomp filter for {os.uname().machine}")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


# ---- privileges ----------------------------------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def _drop_capabilities() -> None:
    last = (
        int(open("/proc/sys/kernel/cap_last_cap").read())
        if os.path.exists("/proc/sys/kernel/cap_last_cap")
        else 40
    )
    for cap in range(last + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            pass  # EINVAL past the kernel's last capability; EPERM when already unprivileged
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    header = _CapHeader(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for two 32-bit words: all zero
    _check(libc.capset(ctypes.byref(header), data), "capset")


def confine(spec: dict) -> None:
    """Limits, uid, capabilities, no_new_privs, seccomp: the last steps before exec."""
    limits = spec["limits"]
    for name, value in limits.items():
        value = int(value)
        resource.setrlimit(getattr(resource, name), (value, value))
    uid = spec.get("uid")
    if uid is not None:  # real root on the host: a uid of the sandbox's own, no groups
        os.setgroups([])
        _drop_capabilities_before_setuid()
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif os.geteuid() == 0 or spec.get("drop_caps"):
        try:
            prctl(PR_SET_SECUREBITS, SECBIT_NOROOT_AND_LOCKED)
        except OSError:
            pass
        _drop_capabilities()
    if spec.get("pdeathsig"):
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it: set it again
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if spec.get("seccomp"):
        install_seccomp()


def _drop_capabilities_before_setuid() -> None:
    for cap in range(64):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break


# ---- building the root (init) --------------------------------------------------------------------------


def _flags_of(path: str) -> int:
    """The mount flags a read-only remount must keep (the kernel locks them on mounts it copied)."""
    st = os.statvfs(path).f_flag
    flags = 0
    for st_bit, ms_bit in (
        (2, MS_NOSUID),
        (4, MS_NODEV),
        (8, MS_NOEXEC),
        (1024, MS_NOATIME),
        (2048, MS_NODIRATIME),
        (4096, MS_RELATIME),
    ):
        if st & st_bit:
            flags |= ms_bit
    return flags


def _bind(source: str, target: str, readonly: bool, recursive: bool = True) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | _flags_of(target))


def _submounts(prefix: str) -> list[str]:
    points = []
    for line in open("/proc/self/mountinfo"):
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix + "/"):
            points.append(point)
    return points


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _loopback_up() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, request))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))  # SIOCSIFFLAGS |= IFF_UP


def build_root(spec: dict) -> dict:
    """Assemble the sandbox's filesystem at spec['root_dir'] and pivot into it. Returns what worked."""
    features = {}
    new = spec["root_dir"]
    agent_uid = spec["agent_uid"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("alejax-root", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755")
    scratch = os.path.join(new, ".scratch")
    os.mkdir(scratch)
    writable = [("work", spec["workdir"], 0o700), ("tmp", "/tmp", 0o1777), ("shm", "/dev/shm", 0o1777)]
    writable += [(f"dir{i}", path, 0o755) for i, path in enumerate(spec.get("writable_dirs", ()))]
    inodes = spec["inodes"] + 1 + len(writable)  # the agent's inodes, past the tmpfs root and our dirs
    mount(
        "alejax-scratch",
        scratch,
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={spec['disk_bytes']},nr_inodes={inodes},mode=0755",
    )
    for name, _, mode in writable:
        os.mkdir(os.path.join(scratch, name))
        os.chmod(os.path.join(scratch, name), mode)
        if name not in ("tmp", "shm"):
            os.chown(os.path.join(scratch, name), agent_uid, agent_uid)

    for path in RO_ALLOW:
        if os.path.islink(path):
            os.symlink(os.readlink(path), new + path)
        elif os.path.isdir(path):
            os.mkdir(new + path)
            _bind(path, new + path, readonly=True)
            for sub in _submounts(new + path):
                try:
                    mount(
                        None,
                        sub,
                        None,
                        MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | _flags_of(sub),
                    )
                except OSError:
                    pass

    etc = new + "/etc"
    os.mkdir(etc)
    for name in ETC_ALLOW:
        source = "/etc/" + name
        if os.path.islink(source):
            os.symlink(os.readlink(source), f"{etc}/{name}")
        elif os.path.isdir(source):
            os.mkdir(f"{etc}/{name}")
            _bind(source, f"{etc}/{name}", readonly=True)
        elif os.path.isfile(source):
            try:
                with open(source, "rb") as src, open(f"{etc}/{name}", "wb") as dst:
                    dst.write(src.read(1 << 20))
            except OSError:
                pass
    user = "root" if agent_uid == 0 else "agent"
    home, hostname = spec["workdir"], spec.get("hostname", "sandbox")
    passwd = "root:x:0:0:root:/root:/bin/sh\n" if agent_uid != 0 else ""
    passwd += f"{user}:x:{agent_uid}:{agent_uid}:{user}:{home}:/bin/bash\n"
    _write(f"{etc}/passwd", passwd + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    group = "root:x:0:\n" if agent_uid != 0 else ""
    _write(f"{etc}/group", group + f"{user}:x:{agent_uid}:\nnogroup:x:65534:\n")
    _write(f"{etc}/hosts", f"127.0.0.1 localhost {hostname}\n::1 localhost ip6-localhost\n")
    _write(f"{etc}/hostname", hostname + "\n")
    _write(f"{etc}/resolv.conf", "# no network in the sandbox\n")
    os.symlink("/proc/self/mounts", f"{etc}/mtab")
    os.makedirs(new + "/var")
    os.symlink("/tmp", new + "/var/tmp")
    os.mkdir(new + "/run")

    dev = new + "/dev"
    os.mkdir(dev)
    mount("alejax-dev", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
    for name in _DEVICES:
        if os.path.exists("/dev/" + name):
            _touch(f"{dev}/{name}")
            _bind("/dev/" + name, f"{dev}/{name}", readonly=False, recursive=False)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(dev + "/pts")
    os.mkdir(dev + "/shm")
    try:
        mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
        features["devpts"] = True
    except OSError as error:
        features["devpts"] = False
        features["devpts_error"] = str(error)

    for name, path, _ in writable:
        target = new + path
        os.makedirs(target, exist_ok=True)
        _bind(os.path.join(scratch, name), target, readonly=False, recursive=False)
    os.mkdir(new + "/proc")
    try:
        mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        features["proc"] = True
    except OSError as error:  # e.g. a container that masks parts of /proc refuses a fresh proc mount
        features["proc"] = False
        features["proc_error"] = str(error)
    _check(libc.umount2(scratch.encode(), MNT_DETACH), "umount scratch")  # the binds keep its tmpfs alive
    os.rmdir(scratch)
    try:
        libc.sethostname(hostname.encode(), len(hostname))
    except OSError:
        pass
    try:
        _loopback_up()
        features["loopback"] = True
    except OSError as error:
        features["loopback"] = False
        features["loopback_error"] = str(error)

    old = new + "/.old-root"
    os.mkdir(old)
    try:
        _check(
            libc.syscall(_PIVOT_ROOT[_ARCH.get(os.uname().machine, (0, 0))[1]], new.encode(), old.encode()),
            "pivot_root",
        )
        os.chdir("/")
        _check(libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
        os.rmdir("/.old-root")
        features["pivot_root"] = True
    except OSError:  # rootfs (initramfs) cannot be pivoted: move the new root over / and chroot instead
        os.rmdir(old)
        os.chdir(new)
        mount(new, "/", None, MS_MOVE)
        os.chroot(".")
        os.chdir("/")
        features["pivot_root"] = False
    mount(None, "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return features


def _userns_maps(uid: int, gid: int) -> None:
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


def run_init() -> None:
    data = b""  # the spec comes on stdin (not argv: /proc/1/cmdline is visible inside)
    while not data.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            os._exit(1)
        data += chunk
    spec = json.loads(data)
    out = sys.stdout
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    try:
        if spec["userns"]:
            _check(libc.unshare(CLONE_NEWUSER | flags), "unshare")
            _userns_maps(uid, gid)
        else:
            _check(libc.unshare(flags), "unshare")
    except OSError as error:
        out.write(f"error namespaces: {error}\n")
        out.flush()
        os._exit(2)
    child = os.fork()
    if child:  # stays outside as the holder's parent: reaps it, so no zombie is left for the host's init
        out.write(f"pid {child}\n")
        out.flush()
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except ChildProcessError:
                status = 0
                break
            except InterruptedError:
                continue
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 1)
    try:  # pid 1 of the sandbox from here on
        prctl(15, ctypes.addressof(ctypes.create_string_buffer(b"sandbox-init")))  # PR_SET_NAME, for `ps`
        features = build_root(spec)
    except OSError as error:
        out.write(f"error build: {error}\n")
        out.flush()
        os._exit(3)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # orphans re-parented here are reaped by the kernel
    out.write("ready " + json.dumps(features) + "\n")
    out.flush()
    os.closerange(3, 1024)
    while True:  # the host writes "s" once it holds the namespace fds (then /proc/1 becomes root-only)
        try:
            data = os.read(0, 64)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
        if b"s" in data:
            prctl(PR_SET_DUMPABLE, 0)
    os._exit(0)


# ---- running a command (exec) --------------------------------------------------------------------------


def _wait_and_mirror(child: int) -> None:
    """Wait for `child` and end this process the same way (exit code or signal)."""
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset (EINVAL)
            signal.signal(sig, signal.SIG_DFL)
        if os.getpid() != 1:
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def _fail(message: str) -> None:
    os.write(2, f"alejax-sandbox: {message}\n".encode(errors="replace"))
    os._exit(126)


def run_exec(spec: dict, argv: list[str]) -> None:
    try:
        ns = spec.get("ns_fds")
        if ns:
            if "user" in ns:
                _check(libc.setns(ns["user"], CLONE_NEWUSER), "setns user")
            for kind, flag in (
                ("mnt", CLONE_NEWNS),
                ("net", CLONE_NEWNET),
                ("ipc", CLONE_NEWIPC),
                ("uts", CLONE_NEWUTS),
                ("pid", CLONE_NEWPID),
            ):
                _check(libc.setns(ns[kind], flag), f"setns {kind}")
            os.fchdir(spec["root_fd"])
            os.chroot(".")
        os.chdir(spec["cwd"])
    except OSError as error:
        _fail(f"cannot enter the sandbox: {error}")
    if ns:  # setns(pid) applies to children only: fork into the sandbox's pid namespace
        try:
            child = os.fork()
        except OSError as error:  # ENOMEM: the sandbox's pid 1 is gone
            _fail(f"the sandbox has ended: {error}")
        if child:
            if spec.get("report_fd") is not None:
                os.write(spec["report_fd"], f"{child}\n".encode())
            os.closerange(3, 1024)
            _wait_and_mirror(child)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    elif spec.get("report_fd") is not None:
        os.write(spec["report_fd"], f"{os.getpid()}\n".encode())
    try:
        if spec.get("ctty"):
            if os.getsid(0) != os.getpid():  # (in plain mode the host already made it a session leader)
                os.setsid()
            fcntl.ioctl(1, TIOCSCTTY, 0)
        confine(spec)
    except OSError as error:
        _fail(f"cannot confine the command: {error}")
    os.closerange(3, 1 << 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; an exec'd program must not
        signal.signal(sig, signal.SIG_DFL)
    env = spec["env"]
    program = argv[0]
    if "/" not in program:  # os.execvpe would import modules, which are not there after the chroot
        for directory in env.get("PATH", "/usr/bin:/bin").split(":"):
            if os.access(os.path.join(directory, program), os.X_OK):
                program = os.path.join(directory, program)
                break
    try:
        os.execve(program, argv, env)
    except OSError as error:
        _fail(f"cannot run {argv[0]}: {error}")


def main(args: list[str]) -> None:
    if args[0] == "init":
        run_init()
    elif args[0] == "exec":
        run_exec(json.loads(args[1]), args[2:])
    else:
        _fail(f"unknown mode {args[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
