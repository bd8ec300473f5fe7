"""Evaluate a policy's weights on held-out env tasks: greedy episodes through the same scheduler as rollout.

    summary, trajectories = evaluate_policy(graphdef, params, tokenizer, env_factory, seeds, ...)

The summary averages what every episode reports (reward, success, turns, truncation) plus each numeric
field of a final `info["score"]` dict when the env scores episodes (ShopSimulator: success, strict, loose).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from flax import nnx

from alejax.data.tokenizer import Tokenizer
from alejax.envs.pools import ThreadEnvPool
from alejax.rollout.sampler import SamplingConfig
from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, build_rollout
from alejax.rollout.trajectory import Trajectory

GREEDY = SamplingConfig(temperature=0.0)


def episode_success(t: Trajectory) -> bool:
    """The env's own verdict (info["success"] or a score's success), else a positive reward."""
    if "success" in t.info:
        return bool(t.info["success"])
    score = t.info.get("score")
    if isinstance(score, dict) and "success" in score:
        return bool(score["success"])
    return t.reward > 0


def summarize(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    if not trajectories:
        raise ValueError("no trajectories to summarize")
    out = {
        "episodes": float(len(trajectories)),
        "reward": float(np.mean([t.reward for t in trajectories])),
        "success": float(np.mean([episode_success(t) for t in trajectories])),
        "turns": float(np.mean([t.n_turns for t in trajectories])),
        "truncated": float(np.mean([t.truncated for t in trajectories])),
        "aborted": float(np.mean([t.aborted for t in trajectories])),
    }
    scores = [t.info.get("score") for t in trajectories]
    keys = {k for s in scores if isinstance(s, dict) for k, v in s.items() if isinstance(v, (int, float))}
    for key in sorted(keys):
        # An episode that never bought (step cap, context limit) scores 0 on every part.
        out[f"score/{key}"] = float(np.mean([(s or {}).get(key, 0.0) for s in scores]))
    return out


def evaluate_policy(
    graphdef: nnx.GraphDef,
    params: Any,
    tokenizer: Tokenizer,
    env_factory: Callable[[], Any],
    task_seeds: Sequence[int],
    *,
    system_prompt: str = "",
    tools: list[dict] | None = None,
    rollout: RolloutConfig | None = None,
    max_length: int = 1024,
    batch_size: int = 32,
    sampling: SamplingConfig = GREEDY,
    mesh=None,
    seed: int = 0,
    pool_size: int = 8,
) -> tuple[dict[str, float], list[Trajectory]]:
    """Plays one episode per task seed with `params` (greedy by default) and summarizes them."""
    pool = ThreadEnvPool(env_factory, pool_size)
    try:
        scheduler = build_rollout(
            nnx.merge(graphdef, params),
            tokenizer,
            pool,
            batch_size=min(batch_size, len(task_seeds)),
            max_length=max_length,
            sampling=sampling,
            rollout=rollout,
            system_prompt=system_prompt,
            tools=tools,
            mesh=mesh,
            seed=seed,
        )
        trajectories, _ = scheduler.collect([EpisodeRequest(int(s), i) for i, s in enumerate(task_seeds)])
    finally:
        pool.close()
    return summarize(trajectories), trajectories
