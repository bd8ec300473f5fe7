"""Harbor and Terminal-Bench 1 task directories: the oracle earns reward 1, the untouched start state 0."""

import os
import shutil
import warnings

import pytest

from alejax.envs import make
from alejax.envs.terminal import (
    HarborTaskError,
    NetworkUnavailable,
    TerminalEnv,
    capabilities,
    load_harbor_task,
    load_task_dir,
)
from alejax.envs.toolcall import format_tool_call

DATA = os.path.join(os.path.dirname(__file__), "data", "harbor")
TASK_DIRS = ["count-lines", "sort-names", "tb1-greeting"]


def play_oracle(env) -> tuple[float, dict]:
    env.reset(0)
    policy = env.scripted_policy()
    observation, *_ = env.step(policy([]))
    assert "exit code 0" in observation, observation
    _, reward, terminated, truncated, info = env.step(policy([{"role": "assistant"}]))
    assert terminated and not truncated
    return reward, info


@pytest.mark.parametrize("name", TASK_DIRS)
def test_oracle_passes_and_start_state_fails(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        env = make("terminal", task_dir=os.path.join(DATA, name))
    try:
        reward, info = play_oracle(env)
        assert reward == 1.0 and info["success"] and info["reward_source"] == "ok", info
        env.reset(0)
        _, reward, terminated, _, info = env.step(format_tool_call("submit"))
        assert terminated and reward == 0.0 and not info["success"], info
        assert info["reward_source"] == "ok"  # the verifier ran and wrote its reward file: a real 0
    finally:
        env.close()


def test_what_each_layout_maps_to():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        count, names, tb1 = (load_task_dir(os.path.join(DATA, n)) for n in TASK_DIRS)
    assert count.layout == "harbor" and count.workdir == "/app"
    assert dict(count.env) == {"GREETING": "hello-from-dockerfile"}
    assert dict(count.verifier_env) == {"EXPECTED_LINES": "3"}
    assert count.memory_bytes == 1024 << 20 and count.disk_bytes == 64 << 20
    assert count.agent_timeout_s == 120.0 and count.verifier_timeout_s == 30.0
    assert (
        names.name == "alejax/sort-names" and names.workdir == "/work" and names.network_mode == "no-network"
    )
    assert [dest for _, dest in names.copies] == ["/work/data"]
    assert tb1.layout == "terminal-bench-1" and tb1.verifier_timeout_s == 30.0 and tb1.workdir == "/app"
    assert "Hello, Terminal-Bench!" in tb1.instruction and dict(tb1.metadata)["category"] == "file-operations"


def test_reward_json_without_a_reward_key_is_the_mean(tmp_path):
    task = tmp_path / "half"
    shutil.copytree(os.path.join(DATA, "sort-names"), task)
    (task / "solution" / "solve.sh").write_text("printf 'zoe\\nann\\n' > sorted.txt\n")  # exists, wrong order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        env = TerminalEnv(task_dir=str(task))
    try:
        reward, info = play_oracle(env)
        assert info["rewards"] == {"exists": 1.0, "content": 0.0} and reward == 0.5
    finally:
        env.close()


def test_dockerfile_warning_names_the_steps_not_applied():
    with pytest.warns(RuntimeWarning) as caught:
        load_harbor_task(os.path.join(DATA, "count-lines"))
    message = " ".join(str(w.message) for w in caught if "count-lines" in str(w.message))
    assert "RUN apt-get update && apt-get install -y --no-install-recommends coreutils jq" in message
    assert "RUN pip install --no-cache-dir pytest==8.3.4" in message and "FROM ubuntu:24.04" in message
    assert "cpus = 1" in message
    # Applied steps are not listed as unapplied.
    assert "WORKDIR" not in message and "ENV GREETING" not in message and "COPY" not in message


@pytest.mark.parametrize(
    "toml, field",
    [
        ('version = "1.0"\n[verifier]\ntimeout_sec = "soon"\n', "[verifier] timeout_sec"),
        ('version = "1.0"\n[environment]\nmemory_mb = -5\n', "[environment] memory_mb"),
        ('version = "1.0"\n[environment]\nnetwork_mode = "lan"\n', "[environment] network_mode"),
        ('version = "1.0"\n[verifier]\nenv = { "bad name" = "x" }\n', "[verifier] env"),
        ('version = "3.0"\n', "version '3.0'"),
        ('version = "1.0"\n[agent\n', "not valid TOML"),
    ],
)
def test_malformed_task_toml_names_the_field(tmp_path, toml, field):
    task = tmp_path / "broken"
    shutil.copytree(os.path.join(DATA, "count-lines"), task)
    (task / "task.toml").write_text(toml)
    with pytest.raises(HarborTaskError) as error:
        load_harbor_task(str(task))
    assert field in str(error.value) and "task.toml" in str(error.value), str(error.value)


def test_missing_file_is_named(tmp_path):
    task = tmp_path / "no-tests"
    shutil.copytree(os.path.join(DATA, "count-lines"), task)
    os.remove(task / "tests" / "test.sh")
    with pytest.raises(HarborTaskError, match=r"tests/test.sh: missing"):
        load_harbor_task(str(task))


@pytest.mark.parametrize("isolated", [False, True])
def test_network_task_is_refused(tmp_path, monkeypatch, isolated):
    import alejax.envs.terminal as terminal

    task = tmp_path / "needs-net"
    shutil.copytree(os.path.join(DATA, "sort-names"), task)
    toml = (task / "task.toml").read_text().replace('network_mode = "no-network"', 'network_mode = "public"')
    (task / "task.toml").write_text(toml)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        env = TerminalEnv(task_dir=str(task))
    monkeypatch.setattr(terminal, "capabilities", lambda: {"network_isolated": isolated, "mode": "plain"})
    expected = "has no network" if isolated else "cannot confine the network"
    with pytest.raises(NetworkUnavailable, match=expected):
        env.reset(0)
    assert env.sandbox is None  # refused before any sandbox was made


def test_agent_cannot_plant_tests_or_reward():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        env = make("terminal", task_dir=os.path.join(DATA, "count-lines"))
    if capabilities()["mode"] != "namespaces":
        pytest.skip("/tests and /logs exist only with mount namespaces")
    try:
        env.reset(0)
        plant = (
            "mkdir -p /logs/verifier && echo 1 > /logs/verifier/reward.txt && echo 'echo 1' > /tests/extra.sh"
        )
        env.step(format_tool_call("bash", {"command": plant}))
        _, reward, *_ = env.step(format_tool_call("submit"))
        assert reward == 0.0
    finally:
        env.close()


def test_plain_sandbox_places_tests_in_the_episode_dir(monkeypatch):
    # Where the kernel refuses namespaces, /tests, /logs and the workdir live in the episode's own directory.
    from alejax.envs.terminal import sandbox as sandbox_module

    plain = dict(capabilities(), mode="plain", user_namespace=False, network_isolated=False)
    monkeypatch.setattr(sandbox_module, "capabilities", lambda: plain)
    for name in ("count-lines", "sort-names"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            env = TerminalEnv(task_dir=os.path.join(DATA, name))
        try:
            reward, info = play_oracle(env)
            assert env.sandbox.mode == "plain" and reward == 1.0, info
        finally:
            env.close()
