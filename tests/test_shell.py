"""The persistent shell: state carries over, timeouts keep the session, hostile commands end as observations."""

import contextlib
import dataclasses
import os
import signal
import threading
import time

import pytest

from alejax.envs.terminal import Limits, Sandbox, Shell, Task, TerminalEnv, capabilities
from alejax.envs.toolcall import format_tool_call

LIMITS = Limits(
    timeout_s=2.0,
    cpu_s=3,
    memory_bytes=512 << 20,
    file_size_bytes=4 << 20,
    nproc=48,
    disk_bytes=16 << 20,
    inodes=500,
    output_bytes=1024,
)
PLAIN = ("plain", False, capabilities()["seccomp"])


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(LIMITS) as box:
        yield box


@pytest.fixture
def shell(sandbox):
    with Shell(sandbox) as session:
        yield session


def test_directory_variables_functions_and_jobs_persist(shell):
    assert shell.job_control
    assert shell.run("mkdir -p a/b && cd a/b && export X=41 && Y=1; f() { echo f:$1; }; alias ll='echo ll'")
    assert shell.run("pwd; echo $((X + Y)); f ok; ll").output.split()[1:] == ["42", "f:ok", "ll"]
    assert shell.run("pwd").output.strip().endswith("/a/b")
    started = shell.run("sleep 30 & echo pid=$!")
    assert "pid=" in started.output and started.exit_code == 0
    assert "Running" in shell.run("jobs").output
    assert shell.run("kill %1; wait %1; echo $?").output.strip().endswith("143")
    assert shell.run("(sleep 0.2; echo from-the-background) &").exit_code == 0
    time.sleep(0.4)
    assert "from-the-background" in shell.run("true").output  # output between commands is not lost


def test_exit_codes_and_the_previous_status(shell):
    assert shell.run("false").exit_code == 1
    assert shell.run("echo $?").output == "1\n"  # $? of the agent's previous command, not of the harness
    assert shell.run("(exit 7)").exit_code == 7
    assert shell.run("sh -c 'kill -9 $$'").exit_code == 137
    assert shell.run("echo 'unterminated").exit_code == 2  # a syntax error, not a hang


def test_timeout_interrupts_the_command_and_keeps_the_session(shell):
    shell.run("cd /tmp; KEEP=yes")
    for command in (
        "sleep 30",
        "while :; do :; done",
        "cat /dev/zero > /dev/null",
        "python3 -c 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(30)'",
    ):
        start = time.monotonic()
        result = shell.run(command, timeout_s=0.5)
        assert result.timed_out and result.limit == "timeout" and "session is kept" in result.note, command
        assert result.exit_code in (130, 137) and time.monotonic() - start < 3, (command, result)
        assert shell.run("echo $KEEP $PWD").output == "yes /tmp\n", command
    assert shell.restarts == 0


@pytest.mark.xfail(
    reason="quarantined 2026-12-07: in the full xdist suite (not alone, not in the shell/sandbox/terminal "
    "files together) bash's `trap '' INT` did not hold: the loop ended with 130 at the SIGINT (docs/envs.md)",
    strict=False,
)
def test_a_shell_that_cannot_be_interrupted_is_replaced(shell, sandbox):
    # The trap is set by a command of its own: in the same command, a loaded machine could deliver the
    # timeout's SIGINT before bash has read the trap, and the loop would be interrupted after all.
    shell.run("cd /tmp; STATE=old; sleep 300 &")
    shell.run("trap '' INT")
    result = shell.run("while :; do :; done", timeout_s=0.5)
    assert result.timed_out and "could not be interrupted" in result.note and "new shell" in result.note
    after = shell.run("echo state=$STATE; pwd; jobs")
    assert after.output == f"state=\n{sandbox.workdir}\n" and shell.restarts == 1
    for command, code in (("exit 3", 3), ("set -e; false", 1), ("exec true", 0)):
        result = shell.run(command)
        assert result.exit_code == code and "a new shell was started" in result.note, command
        assert shell.run("echo alive").output == "alive\n"
    assert shell.restarts == 4


@pytest.mark.xfail(
    reason="quarantined 2026-12-07: in the full xdist suite (not alone, not in the shell/sandbox/terminal "
    "files together) bash's `trap '' INT` did not hold: the loop ended with 130 at the SIGINT (docs/envs.md)",
    strict=False,
)
def test_a_shell_that_ends_while_interrupted_never_signals_our_own_process_group(shell, monkeypatch):
    # The shell dies in the middle of the interrupt (as RLIMIT_CPU kills a builtin loop that runs ~3 s on a
    # quiet machine) before its helper process is seen to end (a loaded machine: made certain here). The pty
    # then has no foreground group, tcgetpgrp answers 0, and os.killpg(0, ...) would signal this process's
    # own group: pytest, and under xdist its controller and every worker.
    sent = []
    killpg = os.killpg

    def recording_killpg(group, sig):
        sent.append(group)
        if group > 0 and group != os.getpgrp():
            killpg(group, sig)

    monkeypatch.setattr(os, "killpg", recording_killpg)
    shell.run("sleep 300 &")  # holds the pty: no EOF on it once the shell is gone
    shell.run("trap '' INT")
    monkeypatch.setattr(shell._process, "poll", lambda: None)  # the helper that waits for bash, not yet ended

    def kill_bash():  # the shell may already be gone when the timer fires (then nothing to kill)
        with contextlib.suppress(ProcessLookupError):
            os.kill(shell.pid, signal.SIGKILL)

    threading.Timer(1.0, kill_bash).start()  # in the SIGINT phase
    result = shell.run("while :; do :; done", timeout_s=0.3)
    assert result.timed_out and "a new shell was started" in result.note, result
    assert not [group for group in sent if group <= 0 or group == os.getpgrp()], sent
    assert shell.run("echo alive").output == "alive\n" and shell.restarts == 1


def test_output_is_truncated_with_a_marker_and_binary_is_escaped(shell):
    start = time.monotonic()
    flood = shell.run("head -c 3000000 /dev/zero | tr '\\0' 'y'; echo; echo END")
    assert "bytes omitted" in flood.output and flood.output.endswith("END\n") and len(flood.output) < 1300
    assert time.monotonic() - start < 5
    binary = shell.run("printf 'a\\000b\\033[31mc\\r\\n'; head -c 2000 /dev/urandom")
    assert binary.output.startswith("a\\x00b\\x1b[31mc\n") and "\x00" not in binary.output
    binary.output.encode("utf-8")
    assert shell.run("echo ok").output == "ok\n"


def test_commands_keep_their_bytes(shell):
    text = "quotes ' \" `x` $HOME \\ ! \t tab, ünïcödé ✓, $(not run)"
    assert shell.run(f"cat <<'EOF'\n{text}\nEOF").output == text + "\n"
    big = "x" * 200_000
    assert shell.run(f"printf %s '{big}' | wc -c").output.strip() == "200000"
    assert shell.run("echo hi!").output == "hi!\n"  # no history expansion
    refused = shell.run("echo a\0b")
    assert refused.limit == "refused" and "NUL" in refused.note
    assert shell.run("cat; read x; echo read=$?; python3").output == "read=1\n"  # stdin is /dev/null


def test_closing_ends_the_session_and_its_jobs(sandbox):
    session = Shell(sandbox)
    session.run("sleep 300 & sleep 301 & (sleep 302 &)")
    members = [pid for pid in sandbox.processes()]
    assert len(members) >= 4
    session.close()
    deadline = time.monotonic() + 3
    while any(os.path.exists(f"/proc/{p}") for p in members) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.processes() == [] or sandbox.mode == "plain" and sandbox.uid is None
    session.close()  # twice is fine


def test_the_shell_in_plain_mode(tmp_path):
    limits = dataclasses.replace(LIMITS, disk_bytes=4 << 20)
    with Sandbox(limits, _isolation=PLAIN) as box, Shell(box) as session:
        assert session.run("cd /tmp && V=3").exit_code == 0
        assert session.run("echo $V $PWD").output == "3 /tmp\n"
        assert session.run("sleep 10", timeout_s=0.3).timed_out
        result = session.run(
            "cd $HOME; i=0; while :; do i=$((i+1)); head -c 1000000 /dev/zero > f$i; done", timeout_s=10
        )
        assert result.limit == "disk quota" and "session is kept" in result.note and not result.timed_out
        assert session.run("rm -f f*; echo $V").output == "3\n"


def test_terminal_env_uses_one_shell_per_episode():
    task = Task(
        "persist",
        "Make a directory deeper, go into it, and write done.txt there.",
        setup="",
        tests='[ -f deeper/done.txt ] && [ "$(cat $TMPDIR/bg)" = "bg" ]',
        solution="",
    )
    env = TerminalEnv(task=task, limits=dataclasses.replace(LIMITS, timeout_s=0.5))
    try:
        env.reset(0)
        bash = lambda command: format_tool_call("bash", {"command": command})  # noqa: E731
        env.step(bash("mkdir deeper && cd deeper"))
        observation = env.step(bash("touch done.txt; pwd; (sleep 0.2; echo bg > $TMPDIR/bg) &"))[0]
        assert "/deeper\n" in observation and "exit code 0" in observation
        assert "timed out" in env.step(bash("sleep 10"))[0]
        time.sleep(0.3)
        observation, reward, terminated, _, info = env.step(format_tool_call("submit"))
        assert reward == 1.0 and terminated, info  # the tests see what the shell and its job did
        env.reset(1)  # a fresh episode: a fresh shell
        assert "/deeper" not in env.step(bash("pwd"))[0]
    finally:
        env.close()
