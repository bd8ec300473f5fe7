"""The RL objective the controller trains on: the named advantage estimator and the named policy loss
(with KL, entropy and mismatch correction), wired to the trajectory batch layout."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from alejax.rl.advantages import AdvantageConfig, get_advantage
from alejax.rl.losses import LossConfig, LossInputs, imitation_loss, rl_loss
from alejax.rl.resample import ResampleConfig
from alejax.train.step import token_logprobs

if TYPE_CHECKING:
    from alejax.rollout.trajectory import TrajectoryBatch


def advantage_inputs(batch: "TrajectoryBatch", values: np.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """What the advantage estimators read from a batch (plus the critic's values for GAE)."""
    arrays = {
        "loss_mask": jnp.asarray(batch.loss_mask),
        "chunk_id": jnp.asarray(batch.chunk_id),
        "reward": jnp.asarray(batch.reward),
        "group_id": jnp.asarray(batch.group_id),
        "turn_rewards": jnp.asarray(batch.turn_rewards),
    }
    if values is not None:
        arrays["values"] = jnp.asarray(values)
    return arrays


def compute_advantages(
    name: str, config: AdvantageConfig, batch: "TrajectoryBatch", values: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(advantages, returns) [B, T] of the estimator registered as `name` (0 off the model's tokens); the one
    place every estimator runs. With the critic's `values`, returns are the value targets (an estimator
    without returns gives A + V)."""
    arrays = advantage_inputs(batch, values)
    advantages, returns = get_advantage(name)(arrays, config)
    if returns is None and values is not None:
        returns = (advantages + arrays["values"]) * arrays["loss_mask"]
    as_numpy = lambda x: None if x is None else np.asarray(x, np.float32)  # noqa: E731
    return as_numpy(advantages), as_numpy(returns)


def make_rl_loss(loss_config: LossConfig, resample: ResampleConfig | None = None):
    """loss_fn(model, batch) -> (loss, metrics) for `make_train_step`; the batch carries the rollout's arrays.

    With resampling enabled (IPA's chunk-initialized resampling) the loss is Eq. 10:
    λ_RL · (the policy loss on resampled chunks) + λ_IL · `imitation_loss` on the batch's `il_weight`.
    """
    need_entropy = loss_config.entropy_coef > 0
    resampling = resample is not None and resample.enabled

    def loss_fn(model, batch):
        logp, entropy = token_logprobs(model, batch)
        inputs = LossInputs(
            logp=logp,
            old_logp=batch["old_logp"],
            behaviour_logp=batch["behaviour_logp"],
            advantages=batch["advantages"],
            loss_mask=batch["loss_mask"],
            chunk_id=batch["chunk_id"],
            reward=batch["reward"],
            ref_logp=batch.get("ref_logp"),
            entropy=entropy if need_entropy else None,
        )
        loss, metrics = rl_loss(inputs, loss_config)
        if resampling:
            loss = resample.lambda_rl * loss
            if resample.lambda_il > 0 and "il_weight" in batch:
                # A mean over its own tokens: weighed by the RL term's LOSS_WEIGHT, microbatches only
                # approximate its full-batch gradient.
                il, il_metrics = imitation_loss(logp, batch["il_weight"])
                loss = loss + resample.lambda_il * il
                metrics = dict(metrics, **il_metrics)
            metrics = dict(metrics, loss=loss)
        return loss, metrics

    return loss_fn
