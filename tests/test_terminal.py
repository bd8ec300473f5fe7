"""Terminal env: every task's scripted solution passes, and the sandbox contains what an agent might do."""

import os
import time

import pytest

from alejax.envs import make, replay
from alejax.envs.terminal import TASKS, Limits, NetworkUnavailable, Sandbox, TerminalEnv, capabilities
from alejax.envs.terminal.tasks import category
from alejax.envs.toolcall import format_tool_call

ISOLATED = capabilities()["mode"] == "namespaces"
needs_isolation = pytest.mark.skipif(
    not ISOLATED, reason="unshare (namespaces) does not work on this machine"
)


def bash(command: str) -> str:
    return format_tool_call("bash", {"command": command})


def test_at_least_twelve_tasks():
    assert len(TASKS) >= 12


# Two tasks of each category through the env and its scripted policy (tests/test_terminal_tasks.py runs every
# task's oracle and start-state check; this plays the episode as an agent would).
PLAYED = [
    n
    for c in sorted({category(t) for t in TASKS.values()})
    for n in sorted(n for n, t in TASKS.items() if category(t) == c)[:2]
]


@pytest.mark.parametrize("name", PLAYED)
def test_solution_passes_and_doing_nothing_fails(name):
    if TASKS[name].network and not capabilities()["network_isolated"]:
        pytest.skip("network-dependent task; no network isolation here")
    env = make(f"terminal/{name}")
    try:
        observation, info = env.reset(0)
        assert TASKS[name].instruction in observation and info["task"] == name
        policy = env.scripted_policy()
        first = policy([])
        run = env.step(first)
        assert not run[2], run
        observation, reward, terminated, truncated, info = env.step(policy([{"role": "assistant"}]))
        assert reward == 1.0 and terminated and not truncated, info["tests_output"]
        env.reset(0)
        assert env.step(format_tool_call("submit"))[1] == 0.0
    finally:
        env.close()


def test_replay_is_deterministic():
    env = make("terminal/all")
    actions = [
        bash("ls; cat *.txt 2>/dev/null | head -3"),
        bash("echo hi > x && wc -c x"),
        format_tool_call("submit"),
    ]
    first, results = replay(env, 4, actions)
    first2, results2 = replay(env, 4, actions)
    assert first == first2 and [r.observation for r in results] == [r.observation for r in results2]
    env.close()


def test_malformed_call_and_turn_cap():
    env = TerminalEnv(task="hello_file", max_turns=2)
    env.reset(0)
    observation, reward, terminated, truncated, info = env.step('<tool_call>{"name": "bash"}</tool_call>')
    assert "missing required argument" in observation and not (terminated or truncated)
    observation, reward, terminated, truncated, _ = env.step(bash("echo 'Hello, world!' > hello.txt"))
    assert truncated and not terminated and reward == 1.0  # the tests still run after the turn cap
    env.close()


# ---- containment ---------------------------------------------------------------------------------


@pytest.fixture
def sandbox():
    box = Sandbox(Limits(timeout_s=3.0, cpu_s=2, memory_bytes=256 << 20, file_size_bytes=1 << 20, nproc=32))
    yield box
    box.close()


@needs_isolation
def test_cannot_write_outside_workdir(sandbox, tmp_path):
    outside = tmp_path / "outside.txt"
    result = sandbox.run(
        f"echo x > ../escape; echo x > {outside}; echo x > /var/tmp/alejax-escape; echo x > /tmp/escape-$$;"
        f" echo x > {os.getcwd()}/escape; echo inside > ok.txt; cat ok.txt"
    )
    # Outside paths are read-only or absent from the sandbox's root; /tmp and /var/tmp are its own tmpfs.
    assert result.output.count("cannot create") >= 3, result.output
    assert result.output.strip().endswith("inside")
    assert not outside.exists() and not os.path.exists("/var/tmp/alejax-escape")
    assert not os.path.exists(os.path.join(os.path.dirname(sandbox.workdir), "escape"))
    assert sandbox.read_file("ok.txt") == b"inside\n"


@needs_isolation
def test_no_network(sandbox):
    script = "import socket; s = socket.socket(); s.settimeout(2); print('rc', s.connect_ex(('1.1.1.1', 53)))"
    result = sandbox.run(f'python3 -c "{script}"')
    assert "rc 0" not in result.output and "rc" in result.output


def test_file_size_limit(sandbox):
    result = sandbox.run("head -c 5000000 /dev/zero > big; wc -c < big")
    assert int(result.output.split()[-1]) <= 1 << 20


def test_memory_limit(sandbox):
    result = sandbox.run("python3 -c 'x = bytearray(600 * 1024 * 1024); print(\"allocated\")'")
    assert "MemoryError" in result.output and "allocated" not in result.output


def test_endless_sleep_is_killed_at_the_wall_clock(sandbox):
    start = time.monotonic()
    result = sandbox.run("sleep 60")
    assert result.timed_out and time.monotonic() - start < 5


def test_endless_loop_is_killed(sandbox):
    start = time.monotonic()
    result = sandbox.run("while true; do :; done")
    assert result.timed_out or result.exit_code in (-9, 128 + 9, 128 + 24)  # wall clock or RLIMIT_CPU
    assert time.monotonic() - start < 5


def test_cpu_limit_before_wall_clock(sandbox):
    result = sandbox.run("python3 -c 'while True: pass'", timeout_s=20)
    assert not result.timed_out and result.exit_code != 0  # SIGXCPU / SIGKILL at cpu_s=2, well before 20 s


@needs_isolation
def test_background_processes_do_not_outlive_the_episode(sandbox):
    # The command's process group ends with it; a daemon that left the group (setsid) outlives the command,
    # as in a real terminal, but never the episode.
    # The command waits until the daemon has called setsid (it writes its pid after): a slow machine could
    # otherwise end the command, and kill its group, while the forked child is still in it.
    result = sandbox.run(
        "setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' & nohup sleep 301 >/dev/null 2>&1 & "
        "while [ ! -s daemon.pid ]; do sleep 0.01; done; echo started"
    )
    assert "started" in result.output and result.exit_code == 0
    pids = sandbox.processes()
    assert pids  # the setsid daemon survived its command
    sandbox.close()
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]


@pytest.mark.slow
@needs_isolation
def test_fork_bomb_is_contained(sandbox):
    # Safe for a small CI machine: RLIMIT_NPROC=32 caps the bomb (as a non-root uid), the pid namespace
    # and process-group kill end it after 3 s, and the loop cannot fork past the cap.
    start = time.monotonic()
    result = sandbox.run("bash -c ':(){ :|:& };:'; sleep 30")
    # Either the wall clock ends it, or `sleep` itself cannot fork under the cap and the command fails.
    assert (result.timed_out or result.exit_code != 0) and time.monotonic() - start < 8
    assert "Resource temporarily unavailable" in result.output or "fork" in result.output
    deadline = time.monotonic() + 5  # the bomb's process group is killed with its command
    while sandbox.processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.processes() == []
    assert sandbox.run("echo alive").output.strip() == "alive"


def test_network_task_refused_without_isolation(monkeypatch):
    import alejax.envs.terminal as terminal

    monkeypatch.setattr(terminal, "capabilities", lambda: {"network_isolated": False, "mode": "plain"})
    env = TerminalEnv(task="offline_check")
    with pytest.raises(NetworkUnavailable, match="network-dependent"):
        env.reset(0)


def test_terminal_env_in_worker_processes():
    from alejax.envs.pools import ProcessEnvPool, wait_all

    names = ["csv_sum", "fix_python_add", "find_todo"]
    with ProcessEnvPool("terminal/all", {"tasks": names}, num_workers=2, step_timeout_s=20) as pool:
        resets = wait_all([pool.reset(i, i) for i in range(3)], 60)
        assert not any(r.info.get("aborted") for r in resets), resets
        for i, reset in enumerate(resets):
            solution = TASKS[reset.info["task"]].solution
            assert pool.step(i, bash(solution)).result(30).info["exit_code"] == 0
            final = pool.step(i, format_tool_call("submit")).result(30)
            assert final.reward == 1.0, final.info
            pool.release(i)


def test_terminal_rl_config_holds_out_whole_tasks():
    # configs/terminal.py: SFT on the training tasks' oracle, RL on tasks SFT never saw; each name is a task.
    from alejax.config import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config_file(os.path.join(root, "configs", "terminal.py"))
    held_out, training = set(config.env.kwargs.tasks), set(config.sft.env.kwargs.tasks)
    assert held_out and training and not held_out & training
    assert held_out | training <= set(TASKS)
    env = make(config.env.name, **config.env.kwargs.to_dict())
    try:
        env.reset(0)
        assert env.task.name in held_out
    finally:
        env.close()
