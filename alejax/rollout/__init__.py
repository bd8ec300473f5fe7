"""Rollout: the jit'd sampler on the shared model and the multi-turn slot scheduler that calls envs."""

from alejax.rollout.model_policy import load_policy
from alejax.rollout.sampler import Sampler, SamplingConfig, bucket_length, sample_logits
from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, RolloutScheduler, RolloutStats
from alejax.rollout.trajectory import Trajectory, TrajectoryBatch, collate

__all__ = [
    "load_policy",
    "Sampler",
    "SamplingConfig",
    "bucket_length",
    "sample_logits",
    "EpisodeRequest",
    "RolloutConfig",
    "RolloutScheduler",
    "RolloutStats",
    "Trajectory",
    "TrajectoryBatch",
    "collate",
]
