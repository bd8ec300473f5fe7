"""The reward worker: a trained reward model scores trajectories inside the RL step."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from alejax.rollout.sampler import bucket_length
from alejax.rollout.trajectory import Trajectory, collate


@dataclasses.dataclass
class RewardWorker:
    """Adds `weight * (score - mean) / std` to each trajectory's reward (`Trajectory.model_reward`).

    `scorer(params, tokens [B, T]) -> [B]` reads each right-padded sequence at its last real token (e.g.
    `alejax.reward.training.make_scorer`); `mean` / `std` normalise with the RM's scores on evaluation data, as
    the released CausalRM recipe does. The RM must share the policy's tokenizer.
    """

    scorer: Callable[[Any, np.ndarray], np.ndarray]
    params: Any
    weight: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    batch_size: int = 32

    def scores(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """Raw RM scores, in fixed-shape batches (one compilation per length bucket)."""
        width = bucket_length(max(len(t.tokens) for t in trajectories), minimum=64)
        tokens = collate(trajectories, pad_to=width).tokens
        n = len(tokens)
        padded = np.concatenate([tokens, np.repeat(tokens[-1:], (-n) % self.batch_size, axis=0)])
        out = [
            self.scorer(self.params, padded[i : i + self.batch_size])
            for i in range(0, len(padded), self.batch_size)
        ]
        return np.concatenate(out)[:n]

    def __call__(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        if not trajectories:
            return np.zeros(0, np.float32)
        normalised = (self.scores(trajectories) - self.mean) / max(self.std, 1e-8)
        for trajectory, value in zip(trajectories, normalised):
            trajectory.model_reward = float(self.weight * value)
        return normalised
