"""Reward models: Bradley-Terry and the factored causal RM (spec/causal_rm.md), their losses and training."""

from alejax.reward.grl import GRL_SCHEDULES, gradient_reversal, grl_lambda
from alejax.reward.heads import HeadConfig, RewardHead
from alejax.reward.losses import ADV_OBJECTIVES, INDEPENDENCE, RMLossConfig, rm_loss

__all__ = [
    "ADV_OBJECTIVES",
    "GRL_SCHEDULES",
    "INDEPENDENCE",
    "HeadConfig",
    "RMLossConfig",
    "RewardHead",
    "gradient_reversal",
    "grl_lambda",
    "rm_loss",
]
