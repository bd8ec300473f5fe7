"""The environment protocol, the registry, and the env-pool interface the rollout scheduler calls.

An environment is a text game: `reset(seed)` gives the first observation, `step(action_text)` the next.
Everything is deterministic given the seed, so an episode can be replayed from its seed and action prefix
(IPA's chunk-initialized resampling does exactly that).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import threading
import traceback
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable


class StepResult(NamedTuple):
    observation: str
    reward: float
    terminated: bool  # the episode reached an end state (success or failure)
    truncated: bool  # cut short (step cap, timeout, crashed worker); not a real end state
    info: dict


class ResetResult(NamedTuple):
    observation: str
    info: dict


@runtime_checkable
class Env(Protocol):
    """What every alejax environment provides.

    `tools` (JSON schemas, possibly empty) and `system_prompt` tell the agent what it may call; they are
    rendered into the chat the same way in training and in play.
    """

    tools: list[dict]
    system_prompt: str

    def reset(self, seed: int) -> tuple[str, dict]: ...

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]: ...


# ---------------------------------------------------------------------------------------------------
# Registry: "family/variant" -> a factory. Modules register on import; `make` imports lazily by family.

_REGISTRY: dict[str, Callable[..., Env]] = {}
# Where each family's registrations live (imported on first use so heavy envs cost nothing until asked).
_FAMILY_MODULES: dict[str, str] = {
    "shop": "alejax.envs.shop",
    "terminal": "alejax.envs.terminal",
    "arithmetic": "alejax.envs.arithmetic",
    "keydoor": "alejax.envs.keydoor",
    "toy": "alejax.envs.toy",
}


def register(name: str, factory: Callable[..., Env] | None = None):
    """Register `factory` under `name`; usable as a decorator."""

    def add(f):
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"environment {name!r} is already registered")
        _REGISTRY[name] = f
        return f

    return add(factory) if factory is not None else add


def _import_family(name: str) -> None:
    module = _FAMILY_MODULES.get(name.split("/", 1)[0])
    if module is not None:
        importlib.import_module(module)


def make(name: str, **kwargs: Any) -> Env:
    """`make("shop/single", seed=0)` -> a new environment instance."""
    if name not in _REGISTRY:
        _import_family(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown environment {name!r}; registered: {registered()}")
    return _REGISTRY[name](**kwargs)


def registered() -> list[str]:
    for family in _FAMILY_MODULES:
        try:
            _import_family(family)
        except ImportError:
            pass  # a family not built yet, or an optional dependency missing
    return sorted(_REGISTRY)


def replay(env: Env, seed: int, actions: Sequence[str]) -> tuple[str, list[StepResult]]:
    """Reset from `seed` and re-apply `actions`; returns the first observation and each step's result."""
    observation, _ = env.reset(seed)
    results = [StepResult(*env.step(a)) for a in actions]
    return observation, results


# ---------------------------------------------------------------------------------------------------
# Env pools: the interface the rollout scheduler uses. `reset`/`step` return futures immediately, so
# environment latency overlaps decoding. A failure never raises into the scheduler: the future resolves
# to a result whose info has {"aborted": True, "error": ...} and truncated=True, and the scheduler
# re-samples the episode from the same seed.


class EnvPool(Protocol):
    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future: ...  # -> ResetResult

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future: ...  # -> StepResult

    def release(self, episode_id: int) -> None: ...

    def close(self) -> None: ...


def aborted_result(error: str) -> StepResult:
    return StepResult("", 0.0, False, True, {"aborted": True, "error": error})


class ThreadEnvPool:
    """In-process pool: one env instance per episode, steps on a thread pool.

    Right for fast or I/O-bound envs and for tests; `alejax.envs.manager` runs envs in sandboxed worker
    processes behind the same interface.
    """

    def __init__(self, env_factory: Callable[[], Env], max_concurrency: int = 8):
        self._factory = env_factory
        self._executor = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="env")
        self._envs: dict[int, Env] = {}
        self._lock = threading.Lock()

    def _env(self, episode_id: int) -> Env:
        with self._lock:
            if episode_id not in self._envs:
                self._envs[episode_id] = self._factory()
            return self._envs[episode_id]

    def _guarded(self, fn: Callable[[], Any], on_error: Callable[[str], Any]):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - a broken env becomes a reported, aborted episode
            return on_error(traceback.format_exc(limit=3))

    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future:
        def run():
            return ResetResult(*self._env(episode_id).reset(seed))

        return self._executor.submit(
            self._guarded, run, lambda e: ResetResult("", {"aborted": True, "error": e})
        )

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future:
        def run():
            return StepResult(*self._env(episode_id).step(action))

        return self._executor.submit(self._guarded, run, aborted_result)

    def release(self, episode_id: int) -> None:
        with self._lock:
            env = self._envs.pop(episode_id, None)
        close = getattr(env, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for episode_id in list(self._envs):
            self.release(episode_id)
