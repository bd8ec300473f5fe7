"""The RL objective the controller trains on: the named advantage estimator and the named policy loss
(with KL, entropy and mismatch correction), wired to the trajectory batch layout."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from alejax.rl.advantages import get_advantage
from alejax.rl.losses import LossInputs, imitation_loss, rl_loss
from alejax.train.step import token_logprobs

if TYPE_CHECKING:
    from alejax.rl.pipeline import RLConfig
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


def compute_advantages(config: "RLConfig", batch: "TrajectoryBatch", old_logp: np.ndarray) -> np.ndarray:
    """Per-token advantages [B, T] from the configured estimator (0 off the model's tokens)."""
    advantages, _ = get_advantage(config.advantage)(advantage_inputs(batch), config.advantage_config)
    return np.asarray(advantages, np.float32)


def make_rl_loss(config: "RLConfig"):
    """loss_fn(model, batch) -> (loss, metrics) for `make_train_step`; the batch carries the rollout's arrays.

    With `config.resample` (IPA's chunk-initialized resampling) the loss is Eq. 10:
    λ_RL · (the policy loss on resampled chunks) + λ_IL · `imitation_loss` on the batch's `il_weight`.
    """
    loss_config = config.loss
    need_entropy = loss_config.entropy_coef > 0
    resample = getattr(config, "resample", None)

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
        if resample is not None:
            loss = resample.lambda_rl * loss
            if resample.lambda_il > 0 and "il_weight" in batch:
                il, il_metrics = imitation_loss(logp, batch["il_weight"])
                loss = loss + resample.lambda_il * il
                metrics = dict(metrics, **il_metrics)
            metrics = dict(metrics, loss=loss)
        return loss, metrics

    return loss_fn
