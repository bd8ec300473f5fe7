"""A shell sandbox: a private working directory, resource limits, no network, nothing left running.

Each command runs as

    prlimit (CPU s, address space, file size, processes, open files)
      setpriv --pdeathsig KILL        dies with the env process, whatever way that one ends
        unshare --net --mount --pid --fork --kill-child --mount-proc [--map-root-user]
          sh WRAPPER                  pid 1 of a fresh pid namespace: every mount read-only except the
                                      working directory (and a private /tmp); then, as an unprivileged
                                      uid when we are root, `sh -c COMMAND`

in its own process group. On a timeout the group is killed; killing pid 1 takes the whole pid namespace
with it, so a fork bomb or a daemonized child cannot outlive the command. RLIMIT_NPROC is what stops a
fork bomb, and Linux ignores it for root: hence the unprivileged uid (a per-sandbox uid when root, the
caller's own uid inside a user namespace otherwise).

Where `unshare` does not work (no namespaces), commands run in "plain" mode: same rlimits and process-group
kill, but no network or filesystem isolation; `capabilities()` says which mode is in use.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import resource
import shutil
import signal
import subprocess
import tempfile
from typing import NamedTuple

# pid 1 of the namespace. Arguments: $1 workdir, $2 uid to drop to ("" = stay), $3 the command.
_WRAPPER = r"""
set -e
wd=$1; uid=$2; cmd=$3
mount --make-rprivate /
mount --bind "$wd" "$wd"
case "$wd" in /tmp/*) ;; *) mount -t tmpfs -o size=64m,mode=1777 tmpfs /tmp ;; esac
mount -t tmpfs -o size=16m,mode=1777 tmpfs /dev/shm 2>/dev/null || true
mount -o remount,bind,ro /
for m in $(awk '{print $2}' /proc/self/mounts); do
  case "$m" in /|"$wd"|/proc|/proc/*|/tmp|/dev|/dev/pts|/dev/shm) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
cd "$wd"
set +e
if [ -n "$uid" ]; then
  setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all --bounding-set=-all -- sh -c "$cmd"
else
  sh -c "$cmd"
fi
exit $?
"""
# pid 1 stays a plain shell that waits (no `exec`): dropping the uid would clear its parent-death signal.

_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock per command
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # address space
    file_size_bytes: int = 16 << 20  # largest file a command may write
    nproc: int = 64  # processes (of the sandbox uid)
    nofile: int = 256
    output_bytes: int = 8192  # what the agent sees of a command's output (head and tail kept)


class RunResult(NamedTuple):
    exit_code: int  # negative: killed by that signal
    output: str  # stdout and stderr together, truncated to Limits.output_bytes
    timed_out: bool


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def capabilities() -> dict:
    """Which isolation works on this machine (probed once per process)."""
    root = os.geteuid() == 0
    tools = all(shutil.which(t) for t in ("unshare", "prlimit", "setpriv"))
    base = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if not root:
        base.append("--map-root-user")
    namespaces = False
    if tools:
        probe_dir = tempfile.mkdtemp(prefix="alejax-probe-")
        try:
            uid = "" if not root else "65534"
            os.chmod(probe_dir, 0o777)
            namespaces = _works(base + ["sh", "-c", _WRAPPER, "sandbox", probe_dir, uid, "touch ok"])
            namespaces = namespaces and os.path.exists(os.path.join(probe_dir, "ok"))
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)
    return {
        "mode": "namespaces" if namespaces else "plain",
        "network_isolated": namespaces,
        "filesystem_isolated": namespaces,
        "root": root,
        "unshare_argv": base,
    }


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


def _set_limits_plain(limits: Limits, nproc: int) -> None:
    """preexec_fn for plain mode (no prlimit / namespaces)."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from alejax.envs.pools.process import set_parent_death_signal

    set_parent_death_signal()


def _truncate(data: bytes, limit: int) -> str:
    if len(data) > limit:
        half = limit // 2
        data = data[:half] + f"\n[... {len(data) - limit} bytes omitted ...]\n".encode() + data[-half:]
    return data.decode("utf-8", errors="replace")


class Sandbox:
    """One private working directory and the means to run shell commands inside it."""

    def __init__(self, limits: Limits | None = None, base_dir: str | None = None):
        self.limits = limits or Limits()
        self.caps = capabilities()
        base_dir = base_dir or os.environ.get("ALEJAX_SCRATCH_DIR") or None
        self.root = tempfile.mkdtemp(prefix="alejax-term-", dir=base_dir)
        self.workdir = os.path.join(self.root, "work")
        os.mkdir(self.workdir)
        self._output_dir = tempfile.mkdtemp(prefix="out-", dir=self.root)  # not visible as writable inside
        self.uid: int | None = None
        if self.caps["mode"] == "namespaces" and self.caps["root"]:
            # A uid of its own: RLIMIT_NPROC counts per uid, and this one owns nothing outside the workdir.
            self.uid = random.SystemRandom().randrange(200_000, 1_000_000)
            os.chown(self.workdir, self.uid, self.uid)
            for path in (base_dir, self.root):
                if path and os.stat(path).st_uid == os.geteuid():
                    os.chmod(path, os.stat(path).st_mode | 0o711)  # traversable by the sandbox uid

    def run(self, command: str, timeout_s: float | None = None) -> RunResult:
        limits = self.limits
        timeout_s = limits.timeout_s if timeout_s is None else timeout_s
        env = {"PATH": _SAFE_PATH, "HOME": self.workdir, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "TERM": "dumb"}
        with tempfile.TemporaryFile(dir=self._output_dir) as output:
            if self.caps["mode"] == "namespaces":
                nproc = limits.nproc
                if not self.caps["root"]:  # NPROC counts all of our uid's processes
                    nproc += _count_user_processes(os.getuid())
                argv = [
                    "prlimit",
                    f"--cpu={limits.cpu_s}",
                    f"--as={limits.memory_bytes}",
                    f"--fsize={limits.file_size_bytes}",
                    f"--nproc={nproc}",
                    f"--nofile={limits.nofile}",
                    "--core=0",
                    "--",
                    "setpriv",
                    "--pdeathsig=KILL",
                    "--",
                    *self.caps["unshare_argv"],
                    "sh",
                    "-c",
                    _WRAPPER,
                    "sandbox",
                    self.workdir,
                    "" if self.uid is None else str(self.uid),
                    command,
                ]
                preexec = None
            else:
                nproc = limits.nproc + _count_user_processes(os.getuid())
                argv = ["sh", "-c", command]
                preexec = functools.partial(_set_limits_plain, limits, nproc)
            process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
            timed_out = False
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                self._kill_group(process)
            output.seek(0)
            data = output.read(limits.output_bytes * 4)
        exit_code = process.returncode
        text = _truncate(data, limits.output_bytes)
        return RunResult(exit_code, text, timed_out)

    @staticmethod
    def _kill_group(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # also after a normal exit: leftovers in the group
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
