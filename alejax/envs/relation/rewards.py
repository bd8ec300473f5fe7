"""Rewards of the relation envs, behind names: a reward is built by `reward_function(name, ...)` and maps a
`Judgement` (what the answer predicted against the gold) to a float.

Rule rewards: `exact` (1 for exactly the gold set of relations, else minus the hallucination penalty times the
share of gold NO-RELATION pairs the answer labelled) and `f1` (micro-F1 of the answer's triples, 1 when both
are empty, minus the same penalty). The causal reward model plugs in here: register a factory under a name
(`register_reward("causal_rm", factory)`, factory(hallucination_penalty=..., **reward_kwargs) -> callable)
and pick it with the env's `reward="causal_rm"`, `reward_kwargs={...}`; or pass a callable
`Judgement -> float` as `reward` directly. Scoring whole trajectories with a trained RM inside the RL step
is `alejax.reward.worker.RewardWorker`'s job and needs nothing from the env.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

Triple = tuple[str, str, str]  # (subject id, object id, relation)


@dataclasses.dataclass(frozen=True)
class Judgement:
    observation: str  # what the policy saw
    answer: str  # what it wrote
    predicted: frozenset  # of Triple: the relations the answer asserts (NO-RELATION left out)
    gold: frozenset  # of Triple: the gold relations
    negatives: frozenset  # of (subject id, object id): candidate pairs whose gold label is NO-RELATION
    sentence: Any = None  # the episode's schema.Sentence (an RM that rebuilds per-pair views reads it)

    @property
    def hallucinated(self) -> frozenset:
        """Gold NO-RELATION pairs the answer gave a relation."""
        return frozenset((s, o) for s, o, _ in self.predicted if (s, o) in self.negatives)

    @property
    def hallucination_rate(self) -> float:
        return len(self.hallucinated) / len(self.negatives) if self.negatives else 0.0

    @property
    def f1(self) -> float:
        if not self.predicted and not self.gold:
            return 1.0
        correct = len(self.predicted & self.gold)
        return 2 * correct / (len(self.predicted) + len(self.gold))


RewardFn = Callable[[Judgement], float]


def exact_reward(judgement: Judgement, hallucination_penalty: float = 0.0) -> float:
    if judgement.predicted == judgement.gold:
        return 1.0
    return -hallucination_penalty * judgement.hallucination_rate


def f1_reward(judgement: Judgement, hallucination_penalty: float = 0.0) -> float:
    return judgement.f1 - hallucination_penalty * judgement.hallucination_rate


def _rule(fn: Callable[..., float]) -> Callable[..., RewardFn]:
    def factory(hallucination_penalty: float = 0.0, **kwargs: Any) -> RewardFn:
        if kwargs:
            raise TypeError(f"the {fn.__name__} takes no reward_kwargs, got {sorted(kwargs)}")
        return lambda judgement: fn(judgement, hallucination_penalty)

    return factory


REWARDS: dict[str, Callable[..., RewardFn]] = {"exact": _rule(exact_reward), "f1": _rule(f1_reward)}
# Rewards that register in a module too heavy to import with the envs (JAX and the RM code): imported on
# first use, so an env built from a config in a fresh worker process still finds them.
REWARD_MODULES = {
    "relation_rm": "alejax.envs.relation.hacking",
    "relation_rm_set": "alejax.envs.relation.hacking",
}


def register_reward(name: str, factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
    """Add a reward under `name`: `factory(hallucination_penalty=..., **reward_kwargs)` -> Judgement -> float."""
    if name in REWARDS and REWARDS[name] is not factory:
        raise ValueError(f"relation reward {name!r} is already registered")
    REWARDS[name] = factory
    return factory


def reward_function(
    reward: str | RewardFn, hallucination_penalty: float = 0.0, reward_kwargs: dict | None = None
) -> RewardFn:
    if callable(reward):
        return reward
    if reward not in REWARDS and reward in REWARD_MODULES:
        importlib.import_module(REWARD_MODULES[reward])
    if reward not in REWARDS:
        known = sorted(set(REWARDS) | set(REWARD_MODULES))
        raise KeyError(f"unknown relation reward {reward!r}; known: {', '.join(known)}")
    return REWARDS[reward](hallucination_penalty=hallucination_penalty, **(reward_kwargs or {}))
