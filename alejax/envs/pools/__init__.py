"""Env pools: where environments run while the rollout scheduler samples (one interface, `EnvPool`).

| kind | class | envs run | for |
|---|---|---|---|
| `thread` | `ThreadEnvPool` | in this process, on threads | fast or I/O-bound envs, tests |
| `process` | `ProcessEnvPool` | in sandboxed worker processes | slow, unsafe or crashing envs |
| `ray` | `RayEnvPool` | on Ray actors (ray optional) | env workers spread over a cluster |

A job builds its pool from config: `make_env_pool(config.env.pool, config.env.name,
config.env.kwargs.to_dict(), config.env.pool_size, **options)`.
"""

from __future__ import annotations

import inspect
from typing import Any

from alejax.envs.base import make
from alejax.envs.pools.process import ProcessEnvPool
from alejax.envs.pools.protocol import EnvPool, aborted, aborted_result, wait_all
from alejax.envs.pools.ray import RayEnvPool
from alejax.envs.pools.thread import ThreadEnvPool

POOL_KINDS = ("thread", "process", "ray")


def make_env_pool(kind: str, env_name: str, env_kwargs: dict, size: int, **options: Any) -> EnvPool:
    """The env pool of `kind` for the registered env `env_name(**env_kwargs)`.

    `size`: how many env calls run at once (threads for `thread`, worker processes or actors otherwise).
    `options` go to the pool's constructor: `step_timeout_s` for every kind (None: no timeout, thread
    only); `reset_timeout_s`, `max_batch`, `scratch_root`, `shutdown_timeout_s` for `process`;
    `reset_timeout_s`, `actor_options` for `ray`.
    """
    env_kwargs = dict(env_kwargs or {})
    if kind == "thread":
        cls, args = ThreadEnvPool, (lambda: make(env_name, **env_kwargs), size)
    elif kind == "process":
        cls, args = ProcessEnvPool, (env_name, env_kwargs, size)
    elif kind == "ray":
        cls, args = RayEnvPool, (env_name, env_kwargs, size)
    else:
        raise ValueError(f"env pool kind {kind!r} is not one of {', '.join(POOL_KINDS)}")
    accepted = list(inspect.signature(cls).parameters)[len(args) :]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} env pool: unknown option(s) {unknown}; it takes {', '.join(accepted)}")
    return cls(*args, **options)


__all__ = [
    "POOL_KINDS",
    "EnvPool",
    "ProcessEnvPool",
    "RayEnvPool",
    "ThreadEnvPool",
    "aborted",
    "aborted_result",
    "make_env_pool",
    "wait_all",
]
