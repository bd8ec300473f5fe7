"""A persistent shell session: one interactive bash per episode, inside the episode's sandbox.

`cd`, variables, functions and background jobs carry over from one command to the next, as in a terminal.
bash reads commands from a pipe and writes to a pty that is its controlling terminal, so it runs with job
control: each command is a foreground process group of its own. A command is sent as

    __alejax_c=$'<the command, every byte escaped>'
    __alejax_status "$__alejax_rc"; builtin eval "$__alejax_c" < /dev/null
    __alejax_rc=$?; builtin printf '\\036\\036%s:%d\\036\\n' <nonce>-<n> "$__alejax_rc"

and its output is what the pty shows up to that marker (the nonce is random per session; the marker's
bytes never appear in the source line, so `set -v` cannot fake it). Past the command's timeout the
foreground group gets SIGINT (and the shell itself, once), then SIGKILL; a shell that still does not
answer (a builtin loop under `trap '' INT`, `exec`, `exit`, `set -e`) is ended with everything it
started, and a fresh shell takes its place, which the result says. Output keeps its head and tail up
to `Limits.output_bytes`, with a marker for what was left out; binary output is shown escaped, never as
raw control bytes or NULs.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import select
import signal
import struct
import termios
import time

from alejax.envs.terminal.sandbox import RunResult, Sandbox, SandboxError, format_output

_MAX_COMMAND_BYTES = 1 << 20
_INIT = (
    "set +H +o history; unset HISTFILE PROMPT_COMMAND; PS1=; PS2=; PS0=; PS4='+ '; "
    '__alejax_status() { return "$1"; }; __alejax_rc=0; builtin cd -- {workdir} 2>/dev/null; '
    "[[ $- == *m* ]]\n"
)


def _ansi_c(data: bytes) -> str:
    """bash $'...' quoting of arbitrary bytes (NUL excepted)."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (0x27, 0x5C) else f"\\x{b:02x}" for b in data)


class _Capture:
    """A command's output: the first half-limit bytes, the last bytes, how many in between."""

    def __init__(self, limit: int, prefix: bytes = b""):
        self.limit, self.head, self.dropped = limit, b"", 0
        self.buffer = bytearray(prefix)
        self.searched = 0
        self.match: re.Match | None = None

    def add(self, data: bytes) -> None:
        self.buffer += data
        keep = self.limit + 4096
        if len(self.buffer) > 4 * keep:
            if not self.head:
                self.head = bytes(self.buffer[: self.limit // 2])
                del self.buffer[: self.limit // 2]
            cut = len(self.buffer) - keep
            del self.buffer[:cut]
            self.dropped += cut
            self.searched = max(0, self.searched - cut)

    def find(self, marker: re.Pattern) -> re.Match | None:
        self.match = marker.search(self.buffer, max(0, self.searched - 64))
        self.searched = len(self.buffer)
        return self.match

    def text(self, end: int | None = None) -> str:
        body = bytes(self.buffer[:end])
        if not self.head:
            return format_output(body, body, len(body), self.limit)
        return format_output(self.head, body, len(self.head) + self.dropped + len(body), self.limit)


class Shell:
    """One interactive bash in `sandbox`; `run(command)` returns a RunResult, like `Sandbox.run`."""

    def __init__(self, sandbox: Sandbox, timeout_s: float | None = None):
        self.sandbox = sandbox
        self.timeout_s = sandbox.limits.timeout_s if timeout_s is None else timeout_s
        self.restarts = 0
        self._process = None
        self._master = self._commands = None
        self._start()

    # ---- the bash process --------------------------------------------------------------------------------

    def _start(self) -> None:
        self._nonce, self._count, self._pending = secrets.token_hex(8), 0, b""
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[0] &= ~(termios.ICRNL | termios.IXON)  # input: nothing is typed on it anyway
        attrs[1] &= ~termios.OPOST  # output as written: no \n -> \r\n
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        command_r, command_w = os.pipe()
        env = dict(self.sandbox.env, PS1="", PS2="", TERM="dumb")
        try:
            self._process, self.pid = self.sandbox.spawn(
                ["bash", "--norc", "--noprofile", "--noediting", "-i"],
                stdin=command_r,
                stdout=slave,
                stderr=slave,
                controlling_tty=True,
                env=env,
            )
        finally:
            os.close(slave)
            os.close(command_r)
        self._master, self._commands = master, command_w
        os.set_blocking(master, False)
        os.set_blocking(command_w, False)
        workdir = "'" + self.sandbox.workdir.replace("'", "'\\''") + "'"
        code, output, status = self._exchange(_INIT.replace("{workdir}", workdir), 30.0)
        if status != "ok":
            self.close()
            raise SandboxError(f"the sandbox's shell did not start ({status}): {output.text()[-500:]}")
        self.job_control = code == 0

    def _marker(self) -> tuple[str, re.Pattern]:
        self._count += 1
        tag = f"{self._nonce}-{self._count}"
        line = f"__alejax_rc=$?; builtin printf '\\036\\036%s:%d\\036\\n' {tag} \"$__alejax_rc\"\n"
        return line, re.compile(rb"\x1e\x1e" + tag.encode() + rb":(-?\d+)\x1e\n")

    def _exchange(self, script: str, timeout_s: float, capture: _Capture | None = None):
        """Send `script` and a marker line; read until the marker. Returns (exit code, capture, status):
        status "ok", or the limit that interrupted the wait ("timeout", "disk quota", "dead")."""
        line, marker = self._marker()
        data = (script + line).encode("utf-8", errors="replace")
        capture = capture or _Capture(self.sandbox.limits.output_bytes)
        status = self._pump(data, marker, capture, time.monotonic() + timeout_s)
        self._last_marker = marker
        if status == "ok":
            return self._split(capture), capture, status
        return None, capture, status

    def _split(self, capture: _Capture) -> int:
        """Cut the marker off the output (what follows it waits for the next command); its exit code."""
        match = capture.match
        code = int(match.group(1))  # before the buffer changes under the match
        self._pending = bytes(capture.buffer[match.end() :])
        del capture.buffer[match.start() :]
        return code

    def _pump(
        self, data: bytes, marker: re.Pattern, capture: _Capture, deadline: float, watch_quota: bool = True
    ) -> str:
        check_quota = watch_quota and self.sandbox.mode == "plain"
        next_quota_check = time.monotonic() + 0.2
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            writers = [self._commands] if data else []
            try:
                readable, writable, _ = select.select([self._master], writers, [], min(deadline - now, 0.1))
            except (OSError, ValueError):
                return "dead"
            if writable:
                try:
                    data = data[os.write(self._commands, data) :]
                except BlockingIOError:
                    pass
                except OSError:
                    return "dead"
            if readable:
                try:
                    chunk = os.read(self._master, 1 << 16)
                except BlockingIOError:
                    chunk = None
                except OSError:  # EIO: every end of the pty is closed
                    chunk = b""
                if chunk:
                    capture.add(chunk)
                    if capture.find(marker):
                        return "ok"
                elif chunk == b"" and self._process.poll() is not None:
                    return "dead"
            if not readable and self._process.poll() is not None:
                return "dead"
            if check_quota and now >= next_quota_check:
                next_quota_check = now + 0.2
                if self.sandbox.over_quota():
                    return "disk quota"

    # ---- commands ----------------------------------------------------------------------------------------

    def run(self, command: str, timeout_s: float | None = None) -> RunResult:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        raw = command.encode("utf-8", errors="replace")
        if b"\0" in raw:
            return RunResult(
                126, "", False, "refused", "the command contains a NUL byte, which no shell can run"
            )
        if len(raw) > _MAX_COMMAND_BYTES:
            return RunResult(
                126, "", False, "refused", f"the command is longer than {_MAX_COMMAND_BYTES} bytes"
            )
        if self._process is None or self._process.poll() is not None:
            note = self._restart("the shell had ended")
            if self._process is None:
                return RunResult(-1, "", False, "refused", note)
        pending = self._drain()
        capture = _Capture(self.sandbox.limits.output_bytes, pending)
        script = f'__alejax_c=$\'{_ansi_c(raw)}\'\n__alejax_status "$__alejax_rc"; builtin eval "$__alejax_c" < /dev/null\n'
        code, capture, status = self._exchange(script, timeout_s, capture)
        if status == "ok":
            return RunResult(code, capture.text(), False, "", self.sandbox.quota_note(""))
        if status == "dead":
            exit_code = self._process.wait()
            text = capture.text()
            return RunResult(
                exit_code, text, False, "", self._restart(f"the shell ended (exit code {exit_code})")
            )
        limit = status  # "timeout" or "disk quota": interrupt the command, keep the session if we can
        code = self._interrupt(capture)
        what = f"timed out after {timeout_s:g} s" if limit == "timeout" else "went over the disk quota"
        if code is not None:
            note = f"the command {what} and was interrupted; the shell session is kept"
            if limit == "disk quota":
                note += f" ({self.sandbox.over_quota() or 'at the check'}: delete files)"
            return RunResult(code, capture.text(), limit == "timeout", limit, note)
        note = self._restart(f"the command {what} and could not be interrupted")
        return RunResult(-signal.SIGKILL, capture.text(), limit == "timeout", limit, note)

    def _interrupt(self, capture: _Capture) -> int | None:
        """SIGINT, then SIGKILL, to the foreground job; the exit code once the shell answers, else None.

        Each signal is sent again every 0.1 s of its phase: a loop of short commands (`while :; do head ...;
        done`) makes a new foreground group every few ms, so a single signal can land on a group that has
        just exited while the loop goes on. Nor may it reach a command at all: bash gives the terminal to
        the child it forked before that child has exec'd, and until then the child still has bash's SIGINT
        handler, which swallows the signal; on a busy machine that window is most of the time such a loop
        has a foreground job, and none of the signals ends it. So the shell itself gets SIGINT too, once:
        at once when it is the foreground job itself (a builtin loop), else after a third of the phase (an
        interactive bash that gets SIGINT while it waits for a job leaves its loop when the job ends). Once
        only, so that a second one cannot cut the marker's printf short. The wait does not watch the quota
        (the files are still there: that is why we interrupt), only for the shell's marker."""
        for sig, wait_s in ((signal.SIGINT, 1.5), (signal.SIGKILL, 1.5)):
            deadline = time.monotonic() + wait_s
            shell_due = time.monotonic() + wait_s / 3 if sig == signal.SIGINT else None
            while (now := time.monotonic()) < deadline:
                group = self._foreground_group()
                if group is None:  # the shell has ended (its helper may not have yet): replace it
                    return None
                try:
                    if group != self.pid:
                        os.killpg(group, sig)
                    if shell_due is not None and (group == self.pid or now >= shell_due):
                        os.kill(self.pid, sig)
                        shell_due = None
                except OSError:
                    pass
                wait_until = min(deadline, now + 0.1)
                status = self._pump(b"", self._last_marker, capture, wait_until, watch_quota=False)
                if status == "ok":
                    return self._split(capture)
                if status == "dead":
                    return None
        return None

    def _foreground_group(self) -> int | None:
        """The pty's foreground process group; None once the shell, the leader of its session, has ended.

        The terminal then has no foreground group and answers 0, which `os.killpg` takes for the caller's
        own process group: SIGINT or SIGKILL to this process and every process of its group (under
        pytest-xdist, the controller and all its workers). A shell can end in the middle of an interrupt
        (its RLIMIT_CPU ends a long builtin loop; `exit` in a trap) before its helper process has, so that
        `_pump` has not seen it yet. This process's own group is refused as well: it is never the pty's."""
        try:
            group = os.tcgetpgrp(self._master)
        except OSError:
            return self.pid
        if group <= 0 or group == os.getpgrp():
            return None
        return group

    def _drain(self) -> bytes:
        """Output that arrived between commands (background jobs), to show before the next one's."""
        data = self._pending
        self._pending = b""
        limit = self.sandbox.limits.output_bytes * 4
        while len(data) < limit:
            try:
                chunk = os.read(self._master, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data

    # ---- restarts and the end ----------------------------------------------------------------------------

    def _restart(self, reason: str) -> str:
        self._stop()
        self.restarts += 1
        try:
            self._start()
        except (SandboxError, OSError) as error:
            self._process = None
            return f"{reason}; no new shell could be started: {error}"
        return (
            f"{reason}; a new shell was started in {self.sandbox.workdir}: the directory, variables, "
            "functions and background jobs of the old one are gone"
        )

    def _stop(self) -> None:
        """End the shell, every job of its session, and the helper that waits for it."""
        if self._process is not None:
            for pid in [self.pid, *_session_members(self.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            # Let the helper reap bash (it waits for it, then exits) before killing the helper: killed first,
            # it would leave bash to the host's init, which may reap it seconds later, and until then the
            # sandbox's pid 1 cannot finish ending its namespace (Sandbox.close waits for that).
            try:
                self._process.wait(2)
            except Exception:  # noqa: BLE001 - stopping must not raise
                pass
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self._process.wait(5)
            except Exception:  # noqa: BLE001 - stopping must not raise
                pass
        for fd in (self._master, self._commands):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._commands = None

    def close(self) -> None:
        """End the session (never raises); the sandbox itself is closed by its owner."""
        try:
            self._stop()
        except Exception:  # noqa: BLE001
            pass
        self._process = None

    def __enter__(self) -> Shell:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _session_members(sid: int) -> list[int]:
    """Host pids of the processes in session `sid` (the shell's background jobs)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as file:
                    fields = file.read().rsplit(b")", 1)[1].split()
                if int(fields[3]) == sid and int(entry) != sid:
                    members.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return members
