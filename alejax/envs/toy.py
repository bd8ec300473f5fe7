"""Tiny environments for tests and benchmarks: an echo env with optional latency, and a faulty env.

`toy/echo` answers each action with a counter, optionally after `latency_s` (an env bound by I/O or a
remote sandbox). `toy/faulty` misbehaves on command (`crash`, `hang`, `raise`, `spawn`), which is how the
env pools' restart, timeout and no-orphan guarantees are tested.
"""

from __future__ import annotations

import os
import subprocess
import time

from alejax.envs.base import register


class EchoEnv:
    tools: list[dict] = []
    system_prompt = "Say anything; say done to finish."

    def __init__(self, horizon: int = 1_000_000, latency_s: float = 0.0):
        self.horizon = horizon
        self.latency_s = latency_s
        self.seed = 0
        self.t = 0

    def reset(self, seed: int) -> tuple[str, dict]:
        self.seed, self.t = seed, 0
        return f"seed {seed}", {}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.latency_s:
            time.sleep(self.latency_s)
        self.t += 1
        done = action.strip() == "done"
        return (
            f"{self.t}: {action}",
            float(done),
            done,
            self.t >= self.horizon and not done,
            {"pid": os.getpid()},
        )

    def scripted_policy(self):
        return lambda messages: "done"


class FaultyEnv(EchoEnv):
    """Echo env that crashes its process, hangs, raises, or leaves a child process, on command."""

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        command = action.strip()
        if command == "crash":
            os._exit(3)  # the worker dies without cleanup, like a segfault
        if command == "hang":
            time.sleep(3600)
        if command == "raise":
            raise RuntimeError("faulty env raised on purpose")
        if command == "spawn":
            child = subprocess.Popen(["sleep", "3600"])  # a grandchild the manager must not orphan
            return str(child.pid), 0.0, False, False, {"child_pid": child.pid, "pid": os.getpid()}
        return super().step(action)


register("toy/echo", EchoEnv)
register("toy/faulty", FaultyEnv)
