"""The shipped terminal tasks (Harbor task directories in `task_dirs/<category>/<name>/`) and their checks.

Each task is a Harbor directory (instruction.md, task.toml, environment/Dockerfile, solution/solve.sh,
tests/test.sh writing /logs/verifier/reward.txt), read by `harbor.load_harbor_task` and played by the
`terminal` env; `TASKS` maps each name to its task and `make("terminal/<name>")` plays one.
`check_tasks` runs every oracle and the verifier on every untouched start state (`python -m
alejax.envs.terminal --check-oracles`, and tests/test_terminal_tasks.py): an oracle must earn reward 1 and a
start state reward 0, so a task can neither be unsolvable nor solved by doing nothing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import resource
import time
import warnings

from alejax.envs.terminal import harbor
from alejax.envs.terminal.harbor import Task, load_harbor_task, load_own_task_dir  # noqa: F401 (re-exported)
from alejax.envs.terminal.sandbox import Limits, capabilities

TASK_DIRS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "task_dirs")


def shipped_task_dirs() -> list[str]:
    """Every task directory under task_dirs/<category>/, sorted by category and name."""
    found = []
    for category in sorted(os.listdir(TASK_DIRS)):
        folder = os.path.join(TASK_DIRS, category)
        if os.path.isdir(folder):
            found += [
                os.path.join(folder, name)
                for name in sorted(os.listdir(folder))
                if os.path.isfile(os.path.join(folder, name, "task.toml"))
            ]
    return found


def load_shipped_tasks() -> dict[str, Task]:
    tasks = {}
    for path in shipped_task_dirs():
        with warnings.catch_warnings():
            # Every shipped task names a base image and cpus, which the sandbox does not apply; the test
            # checks that nothing else is left unapplied, so the warning would say nothing new.
            warnings.filterwarnings("ignore", message=r"task .* runs on the host's root filesystem")
            task = load_harbor_task(path)
        # A task that says no-network is graded on the network being absent (offline_check): it is refused
        # where the sandbox cannot cut the network, as a network-dependent task is.
        task = dataclasses.replace(task, network=task.network_mode == "no-network")
        if task.name in tasks:
            raise ValueError(f"two shipped tasks are named {task.name!r}: {tasks[task.name].path} and {path}")
        tasks[task.name] = task
    return tasks


_registry: dict[str, Task] | None = None


def _tasks() -> dict[str, Task]:
    global _registry
    if _registry is None:
        _registry = load_shipped_tasks()
    return _registry


def __getattr__(name: str):
    # TASKS is read from the task dirs on first use (52 directories: not at import).
    if name == "TASKS":
        return _tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_task(task: Task) -> Task:
    """Register a task of your own (a `Task`, or a `HarborTask` from `load_task_dir`) under its name."""
    tasks = _tasks()
    if task.name in tasks:
        raise ValueError(f"task {task.name!r} already exists")
    tasks[task.name] = task
    return task


def typed_solution(task, sandbox) -> str | None:
    """The commands of a Harbor task's solve.sh, to type into the agent's shell, when solution/ holds nothing else
    and [solution] sets no env (every shipped task): a demonstration made from the oracle (SFT) then shows the
    commands, not `bash /solution/solve.sh`. None when solve.sh needs its files or env (run it from /solution)."""
    if task.solution_env or (task.solution_dir and set(os.listdir(task.solution_dir)) != {"solve.sh"}):
        return None
    script = task.solution
    if script.startswith("#!"):
        script = script.partition("\n")[2]
    # In plain mode the sandbox has no /app: its literal paths are rewritten as harbor.py rewrites solve.sh's.
    return harbor._rewrite(script, harbor._paths(task, sandbox)).strip() or None


def category(task: Task) -> str:
    return str(dict(getattr(task, "metadata", ())).get("category", "uncategorized"))


# ---- checking the tasks: the oracle passes, the untouched start state fails ----------------------------------


def _verify(task, after_oracle: bool, limits) -> dict:
    """Reward of the verifier in a fresh sandbox, after the oracle or on the untouched start state."""
    start = time.monotonic()
    sandbox = harbor.start_sandbox(task, limits, None)
    try:
        oracle_output = ""
        if after_oracle:
            oracle = sandbox.run(harbor.oracle_command(task, sandbox))  # the limits' wall clock: 60 s
            oracle_output = (
                f"[exit {oracle.exit_code}{', timed out' if oracle.timed_out else ''}] {oracle.output}"
            )
        reward, info = harbor.verify(task, sandbox)
        disk_bytes, inodes = sandbox.disk_usage()
    finally:
        sandbox.close()
    return {
        "reward": reward,
        "wrote_reward": info.get("reward_source") == "ok",
        "seconds": time.monotonic() - start,
        "disk_bytes": disk_bytes,
        "inodes": inodes,
        "oracle_output": oracle_output,
        "tests_output": info.get("tests_output", ""),
    }


def check_task(task, limits=None) -> dict:
    """Run the task's oracle then its verifier, and its verifier on the untouched start state (each in its own
    sandbox). The oracle passes iff its reward is 1; the start state fails iff the verifier wrote reward 0."""
    if not isinstance(task, harbor.HarborTask):
        raise TypeError(f"task {task.name!r} is not a Harbor or Terminal-Bench 1 task dir: nothing to check")
    limits = limits or Limits(timeout_s=60.0, cpu_s=60)
    if task.network and not capabilities()["network_isolated"]:
        return {"task": task.name, "category": category(task), "skipped": "needs network isolation"}
    oracle = _verify(task, True, limits)
    start = _verify(task, False, limits)
    return {
        "task": task.name,
        "category": category(task),
        "oracle_pass": oracle["reward"] == 1.0,
        "start_state_fail": start["reward"] == 0.0 and start["wrote_reward"],
        "oracle_s": round(oracle["seconds"], 3),
        "start_state_s": round(start["seconds"], 3),
        "disk_bytes": oracle["disk_bytes"],  # the sandbox's work dir, /tmp and /dev/shm after the oracle
        "inodes": oracle["inodes"],
        "oracle_reward": oracle["reward"],
        "start_state_reward": start["reward"],
        "oracle_output": oracle["oracle_output"][-2000:],
        "oracle_tests_output": oracle["tests_output"][-2000:],
        "start_state_tests_output": start["tests_output"][-2000:],
    }


def check_tasks(tasks, workers: int = 2, on_result=None) -> tuple[list[dict], dict]:
    """`check_task` over `tasks` on `workers` threads (the work is in sandboxed processes). Returns the rows (in
    the order of `tasks`) and the summary: counts overall and by category, wall time, the CPU time of the
    sandboxed processes."""
    tasks = list(tasks)
    start, cpu_before = time.monotonic(), _children_cpu_s()
    rows: list[dict | None] = [None] * len(tasks)
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(check_task, task): i for i, task in enumerate(tasks)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                rows[i] = future.result()
            except Exception as error:  # noqa: BLE001 - a task that cannot even start is a failed check
                rows[i] = {
                    "task": tasks[i].name,
                    "category": category(tasks[i]),
                    "oracle_pass": False,
                    "start_state_fail": False,
                    "error": f"{type(error).__name__}: {error}",
                }
            if on_result is not None:
                on_result(rows[i])
    return rows, summarize(rows, time.monotonic() - start, _children_cpu_s() - cpu_before)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarize(rows: list[dict], wall_s: float = 0.0, cpu_s: float = 0.0) -> dict:
    by_category: dict[str, dict] = {}
    for row in rows:
        counts = by_category.setdefault(
            row["category"], {"tasks": 0, "oracle_pass": 0, "start_state_fail": 0, "skipped": 0}
        )
        counts["tasks"] += 1
        counts["oracle_pass"] += bool(row.get("oracle_pass"))
        counts["start_state_fail"] += bool(row.get("start_state_fail"))
        counts["skipped"] += "skipped" in row
    total = {
        key: sum(c[key] for c in by_category.values())
        for key in ("tasks", "oracle_pass", "start_state_fail", "skipped")
    }
    checked = total["tasks"] - total["skipped"]
    return {
        **total,
        "ok": total["oracle_pass"] == checked and total["start_state_fail"] == checked,
        "failed_oracles": [r["task"] for r in rows if "skipped" not in r and not r.get("oracle_pass")],
        "passing_start_states": [
            r["task"] for r in rows if "skipped" not in r and not r.get("start_state_fail")
        ],
        "by_category": dict(sorted(by_category.items())),
        "wall_s": round(wall_s, 2),
        "sandbox_cpu_s": round(cpu_s, 2),
    }
