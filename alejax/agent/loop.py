"""Play one episode: env + policy + context engineering -> the recorded conversation and its reward."""

from __future__ import annotations

import dataclasses
from typing import Callable

from alejax.agent.context import ContextManager, RepeatDetector
from alejax.agent.policy import Policy
from alejax.envs.base import Env


@dataclasses.dataclass
class Episode:
    messages: list[dict]  # as recorded (system, first observation, then assistant / observation turns)
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    turns: int = 0
    info: dict = dataclasses.field(default_factory=dict)


def run_episode(
    env: Env,
    policy: Policy | Callable[[Env], Policy],
    seed: int,
    max_turns: int = 50,
    context: ContextManager | None = None,
    on_message: Callable[[dict], None] | None = None,
    policy_needs_env: bool = False,
) -> Episode:
    """Reset `env` from `seed` and alternate policy turns and env steps until the episode ends.

    With `policy_needs_env`, `policy(env)` is called after the reset to build the episode's policy (how
    scripted policies get the episode's state). Observations after the first go in as role "tool", the
    way chat templates render tool responses.
    """
    context = context or ContextManager()
    repeats = RepeatDetector(context.config.max_repeats)
    emit = on_message or (lambda message: None)
    observation, info = env.reset(seed)
    act = policy(env) if policy_needs_env else policy
    messages: list[dict] = []
    if env.system_prompt:
        messages.append({"role": "system", "content": env.system_prompt})
    messages.append({"role": "user", "content": observation})
    for m in messages:
        emit(m)
    episode = Episode(messages, info=dict(info))
    while episode.turns < max_turns:
        try:
            action = act(context.view(messages))
        except EOFError:
            episode.truncated = True
            break
        messages.append({"role": "assistant", "content": action})
        emit(messages[-1])
        episode.turns += 1
        observation, reward, terminated, truncated, info = env.step(action)
        episode.reward += reward
        episode.info.update(info)
        repeats.observe(action)
        warning = repeats.warning()
        if warning and not (terminated or truncated):
            observation = f"{observation}\n{warning}"
        messages.append({"role": "tool", "content": observation})
        emit(messages[-1])
        if terminated or truncated:
            episode.terminated, episode.truncated = terminated, truncated
            break
        if context.over_budget(messages):
            episode.truncated = True
            episode.info["context_exhausted"] = True
            break
    else:
        episode.truncated = True
    return episode
