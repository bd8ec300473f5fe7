"""A shell sandbox per episode: its own filesystem view, quotas, no network, nothing left running.

One `Sandbox` is one episode. Where the kernel allows it ("namespaces" mode) a holder process is pid 1 of
fresh mount, pid, network, ipc and uts namespaces (and a user namespace when we are not root) and holds
the root the commands see (built by `confine.py`):

    /usr /bin /sbin /lib*   the host's, read-only, nosuid          (an allow-list: no /home, /root, /work,
    /etc                    a minimal one: linker, alternatives,    /mnt, /srv, /opt, data or checkouts,
                            os-release, ...; passwd/hosts written)  nor other episodes)
    /proc /dev              the sandbox's own (its pid namespace; null, zero, urandom, tty, a private devpts)
    WORKDIR /tmp /dev/shm   one tmpfs of `Limits.disk_bytes` bytes and `Limits.inodes` inodes
    network                 a loopback of its own, nothing else (no route, no DNS)

Every command (`run`, and the persistent shell of `shell.py`) enters those namespaces, gets rlimits
(CPU s, address space, file size, processes, open files), an unprivileged uid (a per-sandbox uid when we
are root; no capabilities in the user namespace otherwise), `no_new_privs` and a seccomp filter that
refuses namespaces, mounts, ptrace, keyctl, bpf, perf, modules, io_uring and similar. Processes started
by commands (daemons included) live until the episode ends: `close()` ends the holder, and the kernel
ends everything in its pid namespace and frees its tmpfs, whatever the commands did.

Where the kernel refuses namespaces ("plain" mode) commands run on the host's filesystem with the same
rlimits, seccomp and no_new_privs, as a per-sandbox uid when root, in a 0700 work directory, with the
disk quota monitored (a command that pushes the episode past it is stopped and told so); `capabilities()`
says what works here and each refused feature is warned about once, with the kernel's reason.

The harness reads and writes sandbox files with `read_file` / `write_file` / `copy_in`, which never
follow a symlink or open a FIFO or device the agent planted, and refuse files larger than asked.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from typing import NamedTuple

CONFINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "confine.py")
_PYTHON = [sys.executable, "-I", "-S", CONFINE]
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_NS_KINDS = ("mnt", "net", "ipc", "uts", "pid")
# Paths a work dir or writable dir may not cover: the read-only system and the sandbox's own mounts.
_RESERVED = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/dev",
    "/proc",
    "/tmp",
    "/var",
    "/run",
)


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock per command
    cpu_s: int = 10  # per process
    memory_bytes: int = 1 << 30  # address space per process
    file_size_bytes: int = 16 << 20  # largest file a command may write
    nproc: int = 64  # processes of the sandbox at once
    nofile: int = 256
    output_bytes: int = 8192  # what the agent sees of a command's output (head and tail kept)
    disk_bytes: int = 256 << 20  # the episode's work dir, /tmp and /dev/shm together (tmpfs: RAM)
    inodes: int = 16384  # files and directories in them


class RunResult(NamedTuple):
    exit_code: int  # negative: killed by that signal
    output: str  # stdout and stderr together, truncated to Limits.output_bytes
    timed_out: bool
    limit: str = ""  # the harness limit that stopped the command: "timeout", "disk quota", "refused", ""
    note: str = ""  # what the harness has to tell the agent (quota reached, shell restarted, ...)


class SandboxError(RuntimeError):
    """The sandbox could not be set up as asked (with the reason)."""


class SandboxFileError(OSError):
    """A file the harness asked for is missing, not a regular file, behind a symlink or too large."""


# ---- output ----------------------------------------------------------------------------------------------


def printable(data: bytes) -> str:
    """Text an LLM can be shown: UTF-8 (invalid bytes replaced), control bytes other than \\n \\t as \\xNN."""
    text = data.replace(b"\r\n", b"\n").decode("utf-8", errors="replace")
    if any(ord(c) < 32 and c not in "\n\t" or c == "\x7f" for c in text):
        text = "".join(
            f"\\x{ord(c):02x}" if (ord(c) < 32 and c not in "\n\t") or c == "\x7f" else c for c in text
        )
    return text


def format_output(head: bytes, tail: bytes, total: int, limit: int) -> str:
    """`head` and `tail` of an output `total` bytes long, with a marker where bytes were left out."""
    if total <= limit:
        return printable((head + tail)[:total])
    half = limit // 2
    return (
        printable(head[:half]) + f"\n[... {total - 2 * half} bytes omitted ...]\n" + printable(tail[-half:])
    )


def _read_output(file, limit: int) -> str:
    total = os.fstat(file.fileno()).st_size
    file.seek(0)
    head = file.read(limit // 2 if total > limit else total)
    tail = b""
    if total > limit:
        file.seek(total - limit // 2)
        tail = file.read(limit // 2)
    return format_output(head, tail, total, limit)


# ---- cleanup ---------------------------------------------------------------------------------------------


def remove_tree(path: str) -> bool:
    """Delete a directory tree; never raises. True iff `path` is gone afterwards.

    Iterative (any depth: one open directory at a time, going up through a verified ".."), never follows a
    symlink, never leaves the file system `path` is on (mount points are left), and makes directories
    writable and searchable before emptying them (an agent may have chmod'ed them 000).
    """
    try:
        return _remove_tree(os.path.abspath(path))
    except Exception:  # noqa: BLE001 - cleanup must never raise
        return not os.path.lexists(path)


def _remove_tree(path: str) -> bool:
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(path)
        return not os.path.lexists(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    parent_fd = os.open(os.path.dirname(path) or "/", flags)
    parent = os.fstat(parent_fd)
    device, given_up = top.st_dev, set()

    def enter(dir_fd: int, name: str) -> int | None:
        try:
            os.chmod(name, 0o700, dir_fd=dir_fd, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            return None
        st = os.fstat(fd)
        if st.st_dev != device:
            os.close(fd)
            return None
        return fd

    fd = enter(parent_fd, os.path.basename(path))
    if fd is None:
        os.close(parent_fd)
        return False
    stack = [[os.path.basename(path), os.fstat(fd), None]]  # name, identity, subdirectories left to do
    try:
        while stack:
            frame = stack[-1]
            if frame[2] is None:
                frame[2] = []
                with os.scandir(fd) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                st = entry.stat(follow_symlinks=False)
                                if st.st_dev == device and (st.st_dev, st.st_ino) not in given_up:
                                    frame[2].append(entry.name)
                            else:
                                os.unlink(entry.name, dir_fd=fd)
                        except OSError:
                            pass
            if frame[2]:
                name = frame[2].pop()
                child = enter(fd, name)
                if child is not None:
                    os.close(fd)
                    fd = child
                    stack.append([name, os.fstat(fd), None])
                continue
            stack.pop()
            expected = stack[-1][1] if stack else parent
            up = os.open("..", flags, dir_fd=fd)
            st = os.fstat(up)
            os.close(fd)
            fd = up
            if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
                return False  # the tree moved under us: stop rather than delete elsewhere
            try:
                os.rmdir(frame[0], dir_fd=fd)
            except OSError:
                given_up.add((frame[1].st_dev, frame[1].st_ino))
    finally:
        os.close(fd)
        if fd != parent_fd:
            os.close(parent_fd)
    return not os.path.lexists(path)


# ---- what this machine allows ----------------------------------------------------------------------------


def _warn_once(message: str) -> None:
    warnings.warn(f"alejax sandbox: {message}", RuntimeWarning, stacklevel=3)


@functools.cache
def capabilities() -> dict:
    """Which isolation works here, probed once per process; each refused feature is warned about once.

    `ALEJAX_SANDBOX_ISOLATION=plain` skips the namespaces. Keys: mode ("namespaces" / "plain"), root, user_namespace, network_isolated, filesystem_isolated,
    pid_isolated, private_tmp, quota ("tmpfs" / "monitored"), uid_drop, seccomp, no_new_privs, proc,
    refused ({feature: the kernel's reason}).
    """
    root = os.geteuid() == 0
    caps = {
        "mode": "plain",
        "root": root,
        "user_namespace": False,
        "network_isolated": False,
        "filesystem_isolated": False,
        "pid_isolated": False,
        "private_tmp": False,
        "quota": "monitored",
        "uid_drop": root,
        "seccomp": False,
        "no_new_privs": False,
        "proc": False,
        "refused": {},
    }
    refused = caps["refused"]
    probe = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; id -u"
    try:
        if os.environ.get("ALEJAX_SANDBOX_ISOLATION") == "plain":  # an opt-out, e.g. to debug a task
            raise SandboxError("disabled by ALEJAX_SANDBOX_ISOLATION=plain")
        box = Sandbox(
            Limits(disk_bytes=1 << 20, inodes=64, timeout_s=20), _isolation=("namespaces", not root, True)
        )
    except SandboxError as error:
        refused["namespaces"] = str(error)
    else:
        with box:
            status = box.run(probe)
            features = box.features
        caps.update(
            mode="namespaces",
            user_namespace=not root,
            network_isolated=True,
            filesystem_isolated=True,
            pid_isolated=True,
            private_tmp=True,
            quota="tmpfs",
            proc=features.get("proc", False),
        )
        if not features.get("proc"):
            refused["proc"] = features.get("proc_error", "fresh proc mount refused")
        if not features.get("loopback"):
            refused["loopback"] = features.get("loopback_error", "")
        caps.update(_seccomp_status(status.output))
    if caps["mode"] == "plain":
        try:
            with Sandbox(Limits(timeout_s=20), _isolation=("plain", False, True)) as box:
                caps.update(_seccomp_status(box.run(probe).output))
        except SandboxError as error:
            refused["plain"] = str(error)
        for feature in ("network", "filesystem", "pid", "private /tmp", "tmpfs quota"):
            refused.setdefault(feature, "needs the namespaces the kernel refused")
    if not caps["seccomp"]:
        refused["seccomp"] = caps.pop("seccomp_error", "the kernel refused the filter")
    caps.pop("seccomp_error", None)
    for feature, reason in refused.items():
        _warn_once(f"{feature} refused here ({reason}); the sandbox runs without it")
    return caps


def _seccomp_status(output: str) -> dict:
    fields = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    seccomp = fields.get("Seccomp", "").strip() == "2"
    return {
        "seccomp": seccomp,
        "no_new_privs": fields.get("NoNewPrivs", "").strip() == "1",
        "seccomp_error": None if seccomp else output.strip()[-300:],
    }


def _default_base() -> str:
    base = os.path.join(tempfile.gettempdir(), f"alejax-sandboxes-{os.getuid()}")
    try:
        os.mkdir(base, 0o711)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():  # someone else's, or a symlink: not ours
        base = tempfile.mkdtemp(prefix="alejax-sandboxes-")
    os.chmod(base, 0o711)  # traversable, not listable: episodes cannot find each other
    return base


def _count_user_processes(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _read_line(fd: int, deadline: float) -> str:
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise SandboxError(f"no answer from the sandbox (got {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise SandboxError(f"the sandbox ended early (got {line!r})")
        line += chunk
    return line.decode(errors="replace").strip()


class Sandbox:
    """One episode's sandbox: a private filesystem view and the means to run commands inside it.

    `workdir` is where commands start (default `/app` with namespaces, a private host directory in plain
    mode); `writable_dirs` are more absolute paths that commands may write (e.g. `/logs`), in the quota.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        base_dir: str | None = None,
        workdir: str | None = None,
        writable_dirs: tuple[str, ...] = (),
        _isolation: tuple[str, bool, bool] | None = None,
    ):
        self.limits = limits or Limits()
        if _isolation is None:  # (mode, user namespace, seccomp): what capabilities() found, or a probe's
            caps = capabilities()
            _isolation = (caps["mode"], caps["user_namespace"], caps["seccomp"])
        self.mode, self._userns, self._seccomp = _isolation
        self._closed = False
        self._holder: subprocess.Popen | None = None
        self._ns_fds: dict[str, int] = {}
        self._root_fd: int | None = None
        self._pid_ns: int | None = None
        self._holder_pid: int | None = None
        self.features: dict = {}
        base_dir = base_dir or os.environ.get("ALEJAX_SCRATCH_DIR") or _default_base()
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="alejax-term-", dir=base_dir))
        self._out_dir = os.path.join(self.root, "out")  # command output files: never visible inside
        os.mkdir(self._out_dir, 0o700)
        root = os.geteuid() == 0
        self.uid: int | None = random.SystemRandom().randrange(200_000, 1_000_000) if root else None
        try:
            if self.mode == "namespaces":
                self.workdir = self._check_path(workdir or "/app")
                self.writable_dirs = tuple(self._check_path(p) for p in writable_dirs)
                self._start_holder()
            else:
                if workdir is not None or writable_dirs:
                    raise SandboxError(
                        "a fixed workdir or writable_dirs need mount namespaces, which this "
                        f"machine refuses ({capabilities()['refused'].get('namespaces', '')})"
                    )
                self._start_plain()
        except BaseException:
            self.close()
            raise
        user = "root" if self._userns else "agent"  # in a user namespace the agent is its uid 0
        self.env = {
            "PATH": _SAFE_PATH,
            "HOME": self.workdir,
            "TMPDIR": self._tmpdir,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/bash",
        }

    # ---- setup -----------------------------------------------------------------------------------------

    @staticmethod
    def _check_path(path: str) -> str:
        normal = os.path.normpath(path)
        if (
            not os.path.isabs(path)
            or normal == "/"
            or any(normal == r or normal.startswith(r + "/") for r in _RESERVED)
        ):
            raise SandboxError(
                f"{path!r} cannot be a sandbox directory (absolute, not / nor under {_RESERVED})"
            )
        return normal

    def _start_holder(self) -> None:
        if self.uid is not None:
            os.chmod(self.root, 0o711)
        spec = {
            "userns": self._userns,
            "root_dir": self.root,
            "agent_uid": 0 if self._userns else self.uid,
            "workdir": self.workdir,
            "writable_dirs": list(self.writable_dirs),
            "disk_bytes": self.limits.disk_bytes,
            "inodes": self.limits.inodes,
        }
        self._holder = subprocess.Popen(
            [*_PYTHON, "init"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={},
            cwd="/",
        )
        self._holder.stdin.write(json.dumps(spec).encode() + b"\n")
        self._holder.stdin.flush()
        deadline, pid, ready = time.monotonic() + 30, None, False
        # Two processes answer on one pipe: the holder's parent says "pid", pid 1 says "ready", in either
        # order (on a loaded machine "ready" can come first).
        while pid is None or not ready:
            line = _read_line(self._holder.stdout.fileno(), deadline)
            if line.startswith("pid "):
                pid = int(line.split()[1])
            elif line.startswith("ready "):
                self.features, ready = json.loads(line[6:]), True
            else:  # "error ..." from the holder (or a traceback): the rest of what it said, then give up
                rest = ""
                while select.select([self._holder.stdout], [], [], 1.0)[0]:
                    chunk = self._holder.stdout.read1(4096)
                    if not chunk:
                        break
                    rest += chunk.decode(errors="replace")
                message = line.removeprefix("error ") + (" " + rest.strip()[-400:] if rest.strip() else "")
                raise SandboxError(f"the kernel refused the sandbox's namespaces: {message}")
        self._holder_pid = pid
        for kind in _NS_KINDS + (("user",) if self._userns else ()):
            self._ns_fds[kind] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        self._root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY)
        self._pid_ns = os.fstat(self._ns_fds["pid"]).st_ino
        if self._pid_ns == os.stat("/proc/self/ns/pid").st_ino:
            raise SandboxError("the holder is not in a pid namespace of its own")
        self._holder.stdin.write(b"s")  # we hold the fds: the holder may now make itself non-dumpable
        self._holder.stdin.flush()
        self._tmpdir = "/tmp"
        self._inodes_at_start = self.disk_usage()[1]

    def _start_plain(self) -> None:
        self.workdir = os.path.join(self.root, "work")
        self._tmpdir = os.path.join(self.root, "tmp")  # TMPDIR only: /tmp itself is the host's here
        for path in (self.workdir, self._tmpdir):
            os.mkdir(path, 0o700)
        if self.uid is not None:  # traversable by the sandbox uid, listable by nobody
            base = os.path.dirname(self.root)
            if os.stat(base).st_uid == os.geteuid():
                os.chmod(base, os.stat(base).st_mode & 0o7777 | 0o711)
            os.chmod(self.root, 0o711)
            for path in (self.workdir, self._tmpdir):
                os.chown(path, self.uid, self.uid)
        self.writable_dirs = ()
        self._inodes_at_start = 2

    # ---- running commands --------------------------------------------------------------------------------

    def _exec_uid(self) -> int | None:
        return None if self._userns else self.uid

    def spawn(
        self,
        argv: list[str],
        *,
        stdin=None,
        stdout=None,
        stderr=None,
        controlling_tty: bool = False,
        env: dict | None = None,
        cwd: str | None = None,
    ) -> tuple[subprocess.Popen, int]:
        """Start `argv` confined in this sandbox. Returns the Popen (its own session) and the host pid of
        the sandboxed process itself (with namespaces, the Popen is a helper that waits for it)."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        limits = self.limits
        nproc = limits.nproc
        if self.uid is None:  # RLIMIT_NPROC counts every process of our uid, not only this sandbox's
            nproc += _count_user_processes(os.getuid())
        spec = {
            "cwd": cwd or self.workdir,
            "uid": self._exec_uid(),
            "seccomp": self._seccomp,
            "pdeathsig": True,
            "ctty": controlling_tty,
            "env": env or self.env,
            "limits": {
                "RLIMIT_CPU": limits.cpu_s,
                "RLIMIT_AS": limits.memory_bytes,
                "RLIMIT_FSIZE": limits.file_size_bytes,
                "RLIMIT_NPROC": nproc,
                "RLIMIT_NOFILE": limits.nofile,
                "RLIMIT_CORE": 0,
            },
        }
        report_r, report_w = os.pipe()
        pass_fds = [report_w]
        spec["report_fd"] = report_w
        if self.mode == "namespaces":
            spec["ns_fds"], spec["root_fd"] = self._ns_fds, self._root_fd
            pass_fds += [*self._ns_fds.values(), self._root_fd]
        try:
            process = subprocess.Popen(
                [*_PYTHON, "exec", json.dumps(spec), *argv],
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=pass_fds,
                start_new_session=True,
                env={},
                cwd="/",
            )
            os.close(report_w)
            report_w = None
            try:
                pid = int(_read_line(report_r, time.monotonic() + 30))
            except (SandboxError, ValueError):
                pid = process.pid  # it failed before forking; its message is in its output
            return process, pid
        finally:
            if report_w is not None:
                os.close(report_w)
            os.close(report_r)

    def run(self, command: str, timeout_s: float | None = None) -> RunResult:
        """Run `command` with /bin/sh in the work dir; wait for it (up to the timeout), its output."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if "\0" in command:
            return RunResult(
                126, "", False, "refused", "the command contains a NUL byte, which no shell can run"
            )
        timeout_s = self.limits.timeout_s if timeout_s is None else timeout_s
        with tempfile.TemporaryFile(dir=self._out_dir) as output:
            process, _ = self.spawn(
                ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
            try:
                limit = self._wait(process, timeout_s)
            finally:
                _kill_group(process.pid)
                process.wait()
            text = _read_output(output, self.limits.output_bytes)
        return RunResult(process.returncode, text, limit == "timeout", limit, self.quota_note(limit))

    def _wait(self, process: subprocess.Popen, timeout_s: float) -> str:
        """Wait for `process`: "" when it ended, else the limit that stops it ("timeout", "disk quota")."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            try:
                process.wait(remaining if self.mode == "namespaces" else min(remaining, 0.2))
                return ""
            except subprocess.TimeoutExpired:
                if self.mode == "plain" and self.over_quota():
                    return "disk quota"

    # ---- quota -------------------------------------------------------------------------------------------

    def disk_usage(self) -> tuple[int, int]:
        """(bytes, inodes) the episode uses in its work dir, /tmp and /dev/shm (plain: work dir, TMPDIR)."""
        if self.mode == "namespaces":
            st = os.statvfs(self._host_path(self.workdir))
            inodes = st.f_files - st.f_ffree - getattr(self, "_inodes_at_start", 0)
            return (st.f_blocks - st.f_bfree) * st.f_frsize, max(0, inodes)
        used = inodes = 0
        stack = [self.workdir, self._tmpdir]
        device = os.lstat(self.workdir).st_dev
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        st = entry.stat(follow_symlinks=False)
                        inodes += 1
                        used += st.st_blocks * 512
                        if entry.is_dir(follow_symlinks=False) and st.st_dev == device:
                            stack.append(entry.path)
            except OSError:
                pass
        return used, inodes

    def over_quota(self) -> str:
        """ "" within the quota, else what is over it."""
        used, inodes = self.disk_usage()
        if used >= self.limits.disk_bytes or inodes >= self.limits.inodes:
            return (
                f"{used} bytes in {inodes} files and directories; the limit is {self.limits.disk_bytes} "
                f"bytes and {self.limits.inodes} inodes"
            )
        return ""

    def quota_note(self, limit: str) -> str:
        """What to tell the agent about its disk use after a command ("" when within the quota)."""
        over = self.over_quota() if not self._closed else ""
        if limit == "disk quota":
            return f"the command went over the disk quota ({over or 'at the check'}) and was stopped; delete files"
        if not over:
            return ""
        effect = "writes fail" if self.mode == "namespaces" else "commands are stopped"
        return f"disk quota reached ({over}): {effect} until files are deleted"

    # ---- processes ---------------------------------------------------------------------------------------

    def processes(self) -> list[int]:
        """Host pids of the processes running in this sandbox (the holder excluded)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self._holder_pid:
                continue
            try:
                if self.mode == "namespaces":
                    if self._pid_ns is not None and os.stat(f"/proc/{entry}/ns/pid").st_ino == self._pid_ns:
                        pids.append(int(entry))
                elif self.uid is not None and os.stat(f"/proc/{entry}").st_uid == self.uid:
                    pids.append(int(entry))
            except OSError:
                pass
        return pids

    def kill_processes(self) -> int:
        """SIGKILL every process in the sandbox (the filesystem stays); how many there were."""
        killed = 0
        for _ in range(20):  # until none is left (a fork bomb refills between rounds)
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            time.sleep(0.01)
        return killed

    # ---- files, for the harness --------------------------------------------------------------------------

    def _host_path(self, inside: str) -> str:
        if self.mode == "namespaces":
            return f"/proc/self/fd/{self._root_fd}{inside}"
        return inside

    def _walk(self, path: str, create: bool = False) -> tuple[int, str]:
        """(fd of the parent directory, last name) of a sandbox path, symlinks refused at every step."""
        if not os.path.isabs(path):
            path = os.path.join(self.workdir, path)
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise SandboxFileError(f"{path!r}: not a file path inside the sandbox")
        if self.mode == "namespaces":
            fd = os.open(self._host_path("/"), os.O_PATH | os.O_DIRECTORY)
        else:
            if not (path + "/").startswith(self.root + "/"):
                raise SandboxFileError(f"{path!r} is outside the sandbox")
            fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY)
            parts = os.path.relpath(path, self.root).split("/")
        try:
            for part in parts[:-1]:
                try:
                    next_fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    self._give_to_agent(next_fd)
                os.close(fd)
                fd = next_fd
        except OSError as error:
            os.close(fd)
            raise SandboxFileError(f"{path!r}: {error.strerror} (symlinks are not followed)") from None
        return fd, parts[-1]

    def _give_to_agent(self, fd: int) -> None:
        uid = self._exec_uid()
        if uid is not None:
            os.chown(f"/proc/self/fd/{fd}", uid, uid, follow_symlinks=True)

    def read_file(self, path: str, max_bytes: int = 1 << 20) -> bytes:
        """The bytes of a regular file in the sandbox (relative paths: from the work dir). Raises
        SandboxFileError for a missing file, a symlink, a FIFO or device, or more than `max_bytes`."""
        parent, name = self._walk(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=parent)
        except OSError as error:
            raise SandboxFileError(f"{path!r}: {error.strerror} (symlinks are not followed)") from None
        finally:
            os.close(parent)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SandboxFileError(f"{path!r} is not a regular file")
            if st.st_size > max_bytes:
                raise SandboxFileError(f"{path!r} has {st.st_size} bytes, more than the {max_bytes} allowed")
            data = os.read(fd, max_bytes + 1)
            if len(data) > max_bytes:
                raise SandboxFileError(f"{path!r} is larger than the {max_bytes} bytes allowed")
            return data
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write a file into the sandbox (parents created), owned by the sandbox's user; never through a
        symlink. Raises SandboxFileError (e.g. outside the writable dirs, or over the quota)."""
        data = data.encode() if isinstance(data, str) else data
        parent, name = self._walk(path, create=True)
        try:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK,
                mode,
                dir_fd=parent,
            )
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise SandboxFileError(f"{path!r} is not a regular file")
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                uid = self._exec_uid()
                if uid is not None:
                    os.fchown(fd, uid, uid)
            finally:
                os.close(fd)
        except SandboxFileError:
            raise
        except OSError as error:
            raise SandboxFileError(f"{path!r}: {error.strerror}") from None
        finally:
            os.close(parent)

    def copy_in(self, source: str, dest: str) -> None:
        """Copy a host file or directory tree into the sandbox at `dest` (symlinks in it are skipped)."""
        if os.path.isdir(source):
            for directory, _, files in os.walk(source):
                relative = os.path.relpath(directory, source)
                for name in files:
                    host = os.path.join(directory, name)
                    if not os.path.islink(host):
                        with open(host, "rb") as file:
                            target = os.path.normpath(os.path.join(dest, relative, name))
                            self.write_file(target, file.read(), os.stat(host).st_mode & 0o777)
        else:
            with open(source, "rb") as file:
                self.write_file(dest, file.read(), os.stat(source).st_mode & 0o777)

    # ---- the end -----------------------------------------------------------------------------------------

    def close(self) -> bool:
        """End every process of the sandbox and delete its files; never raises. True iff all is gone."""
        if self._closed:
            return True
        self._closed = True
        clean = True
        try:
            if self._holder is not None:
                holder = self._holder
                try:
                    holder.stdin.close()  # the holder ends on EOF; the kernel then ends its pid namespace
                except OSError:
                    pass
                try:
                    holder.wait(5)
                except subprocess.TimeoutExpired:
                    _kill_group(holder.pid)
                    holder.wait(5)
                holder.stdout.close()
            elif self.mode == "plain" and self.uid is not None:
                self.kill_processes()
        except Exception as error:  # noqa: BLE001 - close must never raise
            clean = False
            _warn_once(f"could not end the sandbox's processes: {error!r}")
        for fd in [*self._ns_fds.values(), self._root_fd]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._ns_fds, self._root_fd = {}, None
        if not remove_tree(self.root):
            clean = False
            _warn_once(f"could not delete {self.root}")
        return clean

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)  # also after a normal exit: leftovers in the group
    except (ProcessLookupError, PermissionError):
        pass
