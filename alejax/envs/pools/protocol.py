"""The env-pool interface the rollout scheduler calls, and what every pool shares.

`reset`/`step` return futures at once, so environment latency overlaps decoding. A failure never raises
into the scheduler: the future resolves to a result whose info has {"aborted": True, "error": ...} (and,
for a step, truncated=True), and the scheduler re-samples the episode from the same seed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
import traceback
from typing import Any, Callable, Protocol

from alejax.envs.base import Env, ResetResult, StepResult, make

EnvSpec = str | Callable[..., Env]  # a registered name, or a picklable factory


class EnvPool(Protocol):
    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future: ...  # -> ResetResult

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future: ...  # -> StepResult

    def release(self, episode_id: int) -> None: ...

    def close(self) -> None: ...

    # Optional: `stats() -> dict[str, float]`, the pool's health counters (restarts, abandoned threads, ...),
    # which the RL pipeline logs each step.


def aborted_result(error: str) -> StepResult:
    """An aborted step: truncated, no reward, `info={"aborted": True, "error": error}`."""
    return StepResult("", 0.0, False, True, {"aborted": True, "error": error})


def aborted(op: str, error: str, **info) -> ResetResult | StepResult:
    """The aborted result of a `reset` or a `step` (`op`), with extra `info` (worker, timeout, ...)."""
    if op == "reset":
        return ResetResult("", {"aborted": True, "error": error, **info})
    result = aborted_result(error)
    result.info.update(info)
    return result


def resolved(result: Any) -> concurrent.futures.Future:
    """A future that is already done (an answer known without asking a worker)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(result)
    return future


def make_env(spec: EnvSpec, kwargs: dict) -> Env:
    return make(spec, **kwargs) if isinstance(spec, str) else spec(**kwargs)


def close_env(env: Any) -> str | None:
    """Closes `env` (if it has a `close`); never raises: a failure comes back as its traceback's text, so a
    broken cleanup costs a count in the pool's stats, not an exception in the scheduler's `release`."""
    close = getattr(env, "close", None)
    if close is None:
        return None
    try:
        close()
    except Exception:  # noqa: BLE001 - see the docstring
        return traceback.format_exc(limit=3)
    return None


def pool_stats(pool: Any) -> dict[str, float]:
    """The pool's health counters (`stats()`), or {} for a pool without them; never raises."""
    stats = getattr(pool, "stats", None)
    if stats is None:
        return {}
    try:
        return {k: float(v) for k, v in stats().items()}
    except Exception:  # noqa: BLE001 - monitoring must not break a step
        return {}


@dataclasses.dataclass
class Placement:
    """Where an episode's env state lives in a pool of workers (processes or Ray actors)."""

    worker: int
    generation: int = -1  # the worker generation holding its env state; -1 = not reset yet


def wait_all(futures: list[concurrent.futures.Future], timeout_s: float | None = None) -> list[Any]:
    """Results of `futures` in order (a small convenience for scripts and tests)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    return [f.result(None if deadline is None else max(0.0, deadline - time.monotonic())) for f in futures]
