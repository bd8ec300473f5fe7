"""Terminal environment (Terminal-Bench style): shell tool calls in a sandbox, reward = the task's tests.

`make("terminal/all")` samples a task from the seed; `make("terminal/<task>")` fixes one;
`make("terminal", task_dir=PATH)` plays a Harbor or Terminal-Bench 1 task directory (`harbor.py`). The agent has
two tools: `bash` (run a command in the episode's persistent shell: `cd`, variables and background jobs
carry over) and `submit` (end the episode). After the episode (submit or turn cap) the task's test script
runs in the same sandbox: reward 1 iff it passes (a Harbor task: the reward its verifier writes).
"""

from __future__ import annotations

import functools
import os
import random
import time

from alejax.envs.base import register
from alejax.envs.terminal import harbor
from alejax.envs.terminal.harbor import HarborTask, HarborTaskError, load_harbor_task, load_task_dir
from alejax.envs.terminal.sandbox import Limits, RunResult, Sandbox, capabilities
from alejax.envs.terminal.shell import Shell
from alejax.envs.terminal.tasks import TASKS, Task, add_task, typed_solution
from alejax.envs.terminal.warm import close_warm_sandboxes, warm_sandboxes
from alejax.envs.toolcall import error_observation, format_tool_call, parse_action, tool_schema

__all__ = [
    "HarborTask",
    "HarborTaskError",
    "Limits",
    "RunResult",
    "Sandbox",
    "Shell",
    "TASKS",
    "Task",
    "TerminalEnv",
    "add_task",
    "capabilities",
    "close_warm_sandboxes",
    "load_harbor_task",
    "load_task_dir",
]

TOOLS = [
    tool_schema("bash", "Run a shell command in your working directory.", {"command": {"type": "string"}}),
    tool_schema("submit", "Finish: your work is checked by the task's tests."),
]

SYSTEM_PROMPT = (
    "You are working in a Linux terminal without network access. Solve the task with the bash tool, one "
    "command per call, then call submit."
)


class NetworkUnavailable(RuntimeError):
    """A network-dependent task on a machine where the sandbox cannot cut the network."""


class TerminalEnv:
    tools = TOOLS
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        task: str | Task | None = None,
        tasks: list[str] | None = None,
        limits: Limits | None = None,
        max_turns: int | None = None,
        base_dir: str | None = None,
        task_dir: str | None = None,
        warm_sandboxes: int = 0,
    ):
        """`warm_sandboxes`: how many sandboxes this process keeps made ahead (`warm.py`), 0 = none."""
        self.sandbox: Sandbox | None = None  # first: __del__ closes what exists, even when loading fails
        self.shell: Shell | None = None
        if task_dir:  # "" as None: a config's unset task dir
            task = load_task_dir(task_dir)
        if task is not None:
            self.pool = [task if isinstance(task, Task) else TASKS[task]]
        else:
            self.pool = [TASKS[name] for name in (tasks or sorted(TASKS))]
        self.limits, self.base_dir, self.max_turns_override = limits or Limits(), base_dir, max_turns
        self.warm_sandboxes = warm_sandboxes
        self.task: Task | None = None
        self.t = 0
        self.done = True
        self.deadline = float("inf")  # a Harbor task's [agent] timeout_sec, from reset

    def reset(self, seed: int) -> tuple[str, dict]:
        task = self.pool[random.Random(seed).randrange(len(self.pool))]
        if task.network and not capabilities()["network_isolated"]:
            raise NetworkUnavailable(
                f"task {task.name!r} is network-dependent and this machine cannot isolate the network "
                "(unshare --net does not work here); refusing to run it"
            )
        if isinstance(task, HarborTask) and task.needs_network:
            raise NetworkUnavailable(
                f"task {task.name!r} asks for network_mode={task.network_mode!r}; alejax's sandbox "
                + (
                    "has no network (its own network namespace, loopback only)"
                    if capabilities()["network_isolated"]
                    else "cannot confine the network on this machine (no network namespace)"
                )
                + "; refusing to run it"
            )
        self.close()
        self.task, self.t, self.done = task, 0, False
        self.sandbox, warm = self._start_sandbox(task)
        if isinstance(task, HarborTask):
            self.deadline = time.monotonic() + task.agent_timeout_s
        else:
            self.deadline = float("inf")
        setup = self.sandbox.run(task.setup) if task.setup.strip() else RunResult(0, "", False)
        if setup.exit_code != 0:
            raise RuntimeError(f"setup of task {task.name!r} failed ({setup.exit_code}): {setup.output}")
        self.shell = Shell(self.sandbox)
        info = {"task": task.name, "sandbox": capabilities()["mode"]}
        if self.warm_sandboxes:
            info["warm_sandbox"] = warm
        return f"Task: {task.instruction}", info

    def _start_sandbox(self, task: Task) -> tuple[Sandbox, bool]:
        """The episode's sandbox, and whether it was made ahead. Sandboxes made ahead are shared by every task
        with the same recipe (limits, base dir; a Harbor task's workdir and writable dirs): the task's own
        files and ENV go in after it is taken."""
        if isinstance(task, HarborTask):
            recipe, skipped = harbor.sandbox_recipe(task, self.limits)
            make = functools.partial(recipe.make, self.base_dir)
        else:
            recipe, make = self.limits, functools.partial(Sandbox, self.limits, self.base_dir)
        if not self.warm_sandboxes:
            sandbox, warm = make(), False
        else:
            capabilities()  # probed once, here, not by the filling thread and this one at the same time
            # Sandboxes go under base_dir, else the pool worker's scratch dir: both belong in the key.
            key = (recipe, self.base_dir, os.environ.get("ALEJAX_SCRATCH_DIR"))
            sandbox, warm = warm_sandboxes(key, make, Sandbox.close, self.warm_sandboxes).take()
        if isinstance(task, HarborTask):
            try:
                harbor.furnish_sandbox(task, sandbox, skipped)
            except BaseException:
                sandbox.close()
                raise
        return sandbox, warm

    @property
    def max_turns(self) -> int:
        return self.max_turns_override or (self.task.max_turns if self.task else 20)

    def _finish(self, truncated: bool, observation: str) -> tuple[str, float, bool, bool, dict]:
        self.done = True
        if isinstance(self.task, HarborTask):
            reward, info = harbor.verify(self.task, self.sandbox)
            info.update(task=self.task.name, success=reward >= 1.0, reward=reward)
            # Said as for every terminal task ("Tests passed."), with the verifier's reward.
            verdict = "passed" if reward >= 1.0 else "failed"
            observation = f"{observation}\nTests {verdict}. Verifier reward: {reward:g}."
            return observation.strip(), reward, not truncated, truncated, info
        result = self.sandbox.run(self.task.tests)
        passed = result.exit_code == 0 and not result.timed_out
        info = {"task": self.task.name, "success": passed, "tests_output": result.output}
        observation = f"{observation}\nTests {'passed' if passed else 'failed'}."
        return observation.strip(), float(passed), not truncated, truncated, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.done or self.sandbox is None:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.t += 1
        if time.monotonic() > self.deadline:
            return self._finish(True, "Out of time (the task's agent timeout).")
        out_of_turns = self.t >= self.max_turns
        parsed = parse_action(action, self.tools)
        if parsed.error or not parsed.calls:
            observation = error_observation(parsed.error or "no tool call; use bash or submit.")
            if out_of_turns:
                return self._finish(True, observation + "\nOut of turns.")
            return observation, 0.0, False, False, {"malformed": True}
        call = parsed.calls[0]
        if call.name == "submit":
            return self._finish(False, "Submitted.")
        result = self.shell.run(call.arguments["command"])
        status = "timed out" if result.timed_out else f"exit code {result.exit_code}"
        if result.note:
            status += f"; {result.note}"
        observation = (
            f"{result.output}[{status}]"
            if result.output.endswith("\n") or not result.output
            else (f"{result.output}\n[{status}]")
        )
        if out_of_turns:
            return self._finish(True, observation + "\nOut of turns.")
        return observation, 0.0, False, False, {"exit_code": result.exit_code, "timed_out": result.timed_out}

    def scripted_policy(self):
        """The task's solution in one bash call, then submit (a Policy: messages -> assistant text)."""
        solution = self.task.solution
        if isinstance(self.task, HarborTask):  # solve.sh's commands, or solve.sh and its files from /solution
            task, sandbox = self.task, self.sandbox
            solution = typed_solution(task, sandbox) or harbor.oracle_command(task, sandbox)
        actions = [format_tool_call("bash", {"command": solution}), format_tool_call("submit")]
        return lambda messages: actions[min(sum(m["role"] == "assistant" for m in messages), 1)]

    def close(self) -> None:
        if self.shell is not None:
            self.shell.close()
            self.shell = None
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None

    def __del__(self):
        self.close()


register("terminal", lambda **kw: TerminalEnv(**kw))  # e.g. make("terminal", task_dir=PATH)
register("terminal/all", lambda **kw: TerminalEnv(**kw))
for _name in TASKS:
    register(f"terminal/{_name}", lambda _task=_name, **kw: TerminalEnv(task=_task, **kw))
