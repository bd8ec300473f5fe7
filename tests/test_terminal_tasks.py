"""The shipped terminal tasks (Harbor task dirs): every oracle earns reward 1, every untouched start state
reward 0 (the oracle check CI runs), the layout is Harbor's, and `--check-oracles` reports and exits as it says."""

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from alejax.envs.terminal import TASKS, capabilities
from alejax.envs.terminal.tasks import TASK_DIRS, category, check_tasks, shipped_task_dirs

# The tasks shipped in Python before they became task dirs: their names are kept (configs/terminal.py uses them).
FIRST_TASKS = {
    "hello_file", "count_lines", "sort_unique", "word_freq", "fix_python_add", "fix_python_fib", "csv_sum",
    "rename_ext", "find_todo", "json_extract", "replace_text", "make_script", "dir_tree", "log_errors",
    "offline_check",
}  # fmt: skip


def test_every_oracle_passes_and_every_start_state_fails():
    rows, summary = check_tasks(TASKS.values(), workers=2)
    failed = [
        row for row in rows if "skipped" not in row and not (row["oracle_pass"] and row["start_state_fail"])
    ]
    assert not failed, json.dumps(failed, indent=1)[:6000]
    assert summary["ok"] and summary["tasks"] == len(TASKS) >= 40
    skipped = [row["task"] for row in rows if "skipped" in row]
    assert skipped == ([] if capabilities()["network_isolated"] else ["offline_check"])
    assert summary["oracle_pass"] == summary["start_state_fail"] == len(TASKS) - len(skipped)
    counts = {name: c["tasks"] for name, c in summary["by_category"].items()}
    assert len(counts) >= 5 and min(counts.values()) >= 5, counts


def test_harbor_layout():
    assert FIRST_TASKS <= set(TASKS)
    dirs = shipped_task_dirs()
    assert len(dirs) == len(TASKS)
    for path in dirs:
        config = tomllib.load(open(os.path.join(path, "task.toml"), "rb"))
        name, folder = os.path.basename(path), os.path.basename(os.path.dirname(path))
        task = TASKS[name]
        assert config["task"]["name"] == name and task.path == path
        assert config["metadata"]["category"] == folder == category(task)
        assert config["metadata"]["difficulty"] in ("easy", "medium", "hard")
        assert config["verifier"]["timeout_sec"] > 0 and config["agent"]["timeout_sec"] > 0
        assert {"cpus", "memory_mb", "storage_mb", "workdir"} <= set(config["environment"]), path
        for file in ("instruction.md", "environment/Dockerfile", "solution/solve.sh", "tests/test.sh"):
            assert os.path.isfile(os.path.join(path, file)), (path, file)
        assert "/logs/verifier/reward.txt" in task.test_script
        # The sandbox applies every Dockerfile step but the base image; cpus has no cgroup to go to.
        assert sorted(s.split()[0] for s in task.not_applied) == ["FROM", "[environment]"], (
            name,
            task.not_applied,
        )
    # A wheel's package data (pyproject: task_dirs/**/*) leaves out dotfiles: the tasks must not need any.
    hidden = [
        os.path.join(d, f) for d, subdirs, files in os.walk(TASK_DIRS) for f in files + subdirs if f[0] == "."
    ]
    assert not hidden


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "alejax.envs.terminal", *args], capture_output=True, text=True, timeout=120
    )


def test_check_oracles_command(tmp_path):
    result = _cli("--check-oracles", "--tasks", "hello_file,git_tag_release", "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    *task_lines, last = result.stdout.strip().splitlines()
    summary = json.loads(last)
    assert summary["tasks"] == summary["oracle_pass"] == summary["start_state_fail"] == 2
    assert summary["by_category"]["git"] == {
        "tasks": 1,
        "oracle_pass": 1,
        "start_state_fail": 1,
        "skipped": 0,
    }
    assert len(task_lines) == 2 and all(line.startswith("ok ") and " in " in line for line in task_lines)

    # A task dir of your own: an oracle that does nothing fails, a verifier that always pays passes the start state.
    lazy, generous = tmp_path / "lazy", tmp_path / "generous"
    for copy in (lazy, generous):
        shutil.copytree(TASKS["hello_file"].path, copy)
    (lazy / "solution" / "solve.sh").write_text("#!/bin/bash\ntrue\n")
    (generous / "tests" / "test.sh").write_text(
        "#!/bin/bash\nmkdir -p /logs/verifier\necho 1 > /logs/verifier/reward.txt\n"
    )
    result = _cli("--check-oracles", "--task-dir", str(lazy), "--task-dir", str(generous))
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["tasks"] == 2 and summary["oracle_pass"] == 1 and summary["start_state_fail"] == 1
    assert summary["failed_oracles"] == summary["passing_start_states"] == ["hello_file"]

    assert _cli("--check-oracles", "--tasks", "no_such_task").returncode == 2
    assert _cli().returncode == 2


@pytest.mark.parametrize("name", ["git_merge_feature", "fix_shell_quoting"])
def test_env_plays_a_shipped_task(name):
    # Through the env, as a policy sees it: the oracle in one bash call, then submit.
    from alejax.envs import make
    from alejax.envs.toolcall import format_tool_call

    env = make(f"terminal/{name}")
    try:
        observation, info = env.reset(0)
        assert TASKS[name].instruction in observation and info["task"] == name
        policy = env.scripted_policy()
        assert "exit code 0" in env.step(policy([]))[0]
        observation, reward, terminated, _, info = env.step(policy([{"role": "assistant"}]))
        assert reward == 1.0 and terminated and "Tests passed." in observation, info
        env.reset(0)
        assert env.step(format_tool_call("submit"))[1] == 0.0
    finally:
        env.close()
