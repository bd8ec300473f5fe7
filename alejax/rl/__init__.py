"""RL algorithms behind names: advantage estimators, policy losses, aggregations; the RL pipeline."""

from alejax.rl.advantages import (
    ADVANTAGES,
    AdvantageConfig,
    chunk_returns,
    get_advantage,
    token_level_rewards,
)
from alejax.rl.losses import (
    AGGREGATIONS,
    KL_PENALTIES,
    POLICY_LOSSES,
    LossConfig,
    LossInputs,
    entropy_bonus,
    get_aggregation,
    get_policy_loss,
    imitation_loss,
    kl_penalty,
    mismatch_correction,
    rl_loss,
)
from alejax.rl.registry import Registry
from alejax.rl.resample import ChunkResampler, Expert, ResampleConfig, crucial_fork, env_teacher

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "KL_PENALTIES",
    "POLICY_LOSSES",
    "AdvantageConfig",
    "ChunkResampler",
    "Expert",
    "ResampleConfig",
    "crucial_fork",
    "env_teacher",
    "imitation_loss",
    "LossConfig",
    "LossInputs",
    "Registry",
    "chunk_returns",
    "entropy_bonus",
    "get_advantage",
    "get_aggregation",
    "get_policy_loss",
    "kl_penalty",
    "mismatch_correction",
    "rl_loss",
    "token_level_rewards",
]
