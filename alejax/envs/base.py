"""The environment protocol and the registry (env pools, which run envs for the scheduler, are in `pools/`).

An environment is a text game: `reset(seed)` gives the first observation, `step(action_text)` the next.
Everything is deterministic given the seed, so an episode can be replayed from its seed and action prefix
(IPA's chunk-initialized resampling does exactly that).
"""

from __future__ import annotations

import importlib
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
    "prompt_set": "alejax.envs.prompt_set",
    "relation": "alejax.envs.relation",
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
