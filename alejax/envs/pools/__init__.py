"""Env pools: where environments run while the rollout scheduler samples (one interface, `EnvPool`).

| kind | class | envs run | for |
|---|---|---|---|
| `thread` | `ThreadEnvPool` | in this process, on threads | fast or I/O-bound envs, tests |
| `process` | `ProcessEnvPool` | in sandboxed worker processes | slow, unsafe, hanging or crashing envs |
| `ray` | `RayEnvPool` | on Ray actors (ray optional) | env workers spread over a cluster |

A job builds its pool from its `env_pool` config section (`EnvPoolConfig`: kind, workers, timeouts and the
kind's own options) with one call: `env_pool_from_config(config.env_pool, config.env.name,
config.env.kwargs.to_dict())`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from alejax.envs.pools.process import ProcessEnvPool
from alejax.envs.pools.protocol import (
    EnvPool,
    EnvSpec,
    aborted,
    aborted_result,
    make_env,
    pool_stats,
    wait_all,
)
from alejax.envs.pools.ray import RayEnvPool
from alejax.envs.pools.thread import ThreadEnvPool

POOL_KINDS = ("thread", "process", "ray")


@dataclasses.dataclass(frozen=True)
class EnvPoolConfig:
    """A job's `env_pool` section. None: the pool kind's own default; an option the kind does not take
    must stay None (setting it is an error that names the options the kind takes)."""

    kind: str = "thread"  # thread | process (sandboxed workers, killed on hang or crash) | ray
    workers: int = 8  # env calls at once: threads (thread), worker processes (process) or actors (ray)
    # A step running longer resolves to an aborted episode, which the scheduler re-samples. A thread cannot
    # be killed: the thread pool abandons it (counted) and starts another.
    step_timeout_s: float | None = 60.0
    reset_timeout_s: float | None = None  # default: the step timeout (thread), max(step, 60 s) otherwise
    max_hung_threads: int | None = None  # thread: stop taking calls once this many threads are stuck
    max_batch: int | None = None  # process: requests per IPC message to a worker
    scratch_root: str | None = None  # process, ray: where worker scratch (sandbox) directories go
    shutdown_timeout_s: float | None = None  # process, ray: grace before a worker is killed at close
    actor_options: dict | None = None  # ray: options of each env actor (default {"num_cpus": 1})

    def __post_init__(self):
        if self.kind not in POOL_KINDS:
            raise ValueError(f"env pool kind {self.kind!r} is not one of {', '.join(POOL_KINDS)}")
        if self.workers < 1:
            raise ValueError(f"env_pool.workers must be >= 1, got {self.workers}")

    def options(self) -> dict[str, Any]:
        """The constructor options that were set (everything but kind and workers)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("kind", "workers") and getattr(self, f.name) is not None
        }


def make_env_pool(kind: str, env: EnvSpec, env_kwargs: dict, size: int, **options: Any) -> EnvPool:
    """The env pool of `kind` for `env` (a registered name, or a picklable factory) with `env_kwargs`.

    `size`: how many env calls run at once (threads for `thread`, worker processes or actors otherwise).
    `options` go to the pool's constructor: `step_timeout_s`, `reset_timeout_s` for every kind;
    `max_hung_threads` for `thread`; `scratch_root`, `shutdown_timeout_s` for `process` and `ray`;
    `max_batch` for `process`; `actor_options` for `ray`.
    """
    env_kwargs = dict(env_kwargs or {})
    if kind == "thread":
        cls, args = ThreadEnvPool, (lambda: make_env(env, env_kwargs), size)
    elif kind == "process":
        cls, args = ProcessEnvPool, (env, env_kwargs, size)
    elif kind == "ray":
        cls, args = RayEnvPool, (env, env_kwargs, size)
    else:
        raise ValueError(f"env pool kind {kind!r} is not one of {', '.join(POOL_KINDS)}")
    accepted = list(inspect.signature(cls).parameters)[len(args) :]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} env pool: unknown option(s) {unknown}; it takes {', '.join(accepted)}")
    return cls(*args, **options)


def env_pool_from_config(section: Any, env: EnvSpec, env_kwargs: dict) -> EnvPool:
    """The pool a job's `env_pool` section (an `EnvPoolConfig`, a ConfigDict or a dict) describes."""
    if not isinstance(section, EnvPoolConfig):
        from alejax.config import from_section  # the config system sits above the library's packages

        section = from_section(EnvPoolConfig, section)
    return make_env_pool(section.kind, env, env_kwargs, section.workers, **section.options())


__all__ = [
    "POOL_KINDS",
    "EnvPool",
    "EnvPoolConfig",
    "ProcessEnvPool",
    "RayEnvPool",
    "ThreadEnvPool",
    "aborted",
    "aborted_result",
    "env_pool_from_config",
    "make_env_pool",
    "pool_stats",
    "wait_all",
]
