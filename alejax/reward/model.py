"""A reward model on the shared backbone: the Transformer's last-token hidden state -> RewardHead."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from alejax.models.config import ModelConfig
from alejax.models.transformer import Transformer
from alejax.reward.heads import HeadConfig, RewardHead
from alejax.reward.losses import RMLossConfig, head_pair_loss
from alejax.train.step import DROPOUT_KEY


class RewardModel(nnx.Module):
    """backbone (the policy's Transformer class) + a head stack reading the last non-pad token."""

    def __init__(
        self, model_config: ModelConfig, head_config: HeadConfig, *, pad_id: int = 0, rngs: nnx.Rngs
    ):
        self.backbone = Transformer(model_config, rngs=rngs)
        self.head = RewardHead(model_config.d_model, head_config, rngs=rngs)
        self.pad_id = pad_id

    def features(self, tokens: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """Hidden state [B, d_model] at each row's last non-pad token (rows are right-padded).
        `dropout_key`: the backbone's LoRA dropout, while training."""
        segment_ids = (tokens != self.pad_id).astype(jnp.int32)
        hidden, _ = self.backbone.hidden_states(tokens, segment_ids=segment_ids, dropout_key=dropout_key)
        last = jnp.maximum(segment_ids.sum(axis=1) - 1, 0)
        return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]

    def __call__(
        self, tokens: jax.Array, *, lam: jax.Array | float = 1.0, key: jax.Array | None = None
    ) -> dict:
        return self.head(self.features(tokens), lam=lam, key=key)


def score(model: RewardModel, tokens: jax.Array) -> jax.Array:
    """Deterministic rewards [B] (z = mu) for right-padded sequences, read at their final tokens."""
    return model(tokens)["reward"]


def pair_loss(
    model: RewardModel,
    batch: dict,
    config: RMLossConfig,
    lam: jax.Array | float = 1.0,
    key: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Loss on {chosen, rejected [B, T], attrs_w, attrs_l [B, A] optional}: one backbone pass over both."""
    n = batch["chosen"].shape[0]
    h = model.features(jnp.concatenate([batch["chosen"], batch["rejected"]]), batch.get(DROPOUT_KEY))
    pairs = {"h_w": h[:n], "h_l": h[n:]}
    if "attrs_w" in batch:
        pairs.update(attrs_w=batch["attrs_w"], attrs_l=batch["attrs_l"])
    return head_pair_loss(model.head, pairs, config, lam, key)
