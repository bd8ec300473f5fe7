"""Start a critic (value model) from a trained reward model: its backbone and, for the factored RM, the causal
encoder (spec/causal_rm.md: "for PPO the critic's value head sits on mu_c").

`critic_init_from_rm(source)` accepts a `RewardModel`, its parameters (`nnx.State`), or an rm job's
checkpoint directory with that job's config, and returns plain parameter trees a value model can load:

    init = critic_init_from_rm("runs/rm_causal_tiny/checkpoints", config=rm_config)
    nnx.update(critic.backbone, init.backbone)          # same tree as Transformer(init.model_config)
    value_trunk = init.trunk                             # enc1 / enc2 / mu_c (None for a BT head)
    features = causal_features(init.trunk, h)            # [B, d_c] = the RM's mu_c on h [B, d_model]
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from alejax.models.config import ModelConfig
from alejax.reward.heads import HeadConfig

TRUNK_LAYERS = ("enc1", "enc2", "mu_c")  # s = relu(enc2(relu(enc1(h)))); mu_c = Linear(s)


@dataclasses.dataclass
class CriticInit:
    backbone: nnx.State  # the Transformer's parameters (embedding, layers, final_norm[, lm_head])
    trunk: dict | None  # {"enc1", "enc2"[, "mu_c"]}: {"kernel", "bias"} arrays; mu_c absent for a BT head
    model_config: ModelConfig | None
    head_config: HeadConfig | None
    d_trunk: int  # width of causal_features' output (d_c, or enc_hidden for a BT head)


def _dense(p: dict, x: jax.Array) -> jax.Array:
    y = x @ p["kernel"].astype(x.dtype)
    return y if p.get("bias") is None else y + p["bias"].astype(x.dtype)


def causal_features(trunk: dict, h: jax.Array) -> jax.Array:
    """The RM's deterministic causal factors mu_c [B, d_c] (or the BT encoder's output) from hidden states h."""
    s = jax.nn.relu(_dense(trunk["enc2"], jax.nn.relu(_dense(trunk["enc1"], h.astype(jnp.float32)))))
    return _dense(trunk["mu_c"], s) if "mu_c" in trunk else s


def _restore_params(directory: str, config) -> tuple[nnx.State, ModelConfig, HeadConfig]:
    # Rebuild the job's exact train state (same optimizer tree) and restore it: one path, checked by orbax.
    from alejax.reward.training import init_rm_from_config
    from alejax.train.checkpoint import Checkpointer

    _, state, _, _, _, model_config, head_config = init_rm_from_config(config)
    checkpointer = Checkpointer(directory, keep=1_000_000, async_save=False)
    try:
        restored = checkpointer.restore(state)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no restorable rm checkpoint under {directory!r}")
    return restored[0].model_params(), model_config, head_config


def critic_init_from_rm(
    source: Any,
    *,
    config=None,
    model_config: ModelConfig | None = None,
    head_config: HeadConfig | None = None,
) -> CriticInit:
    """Backbone parameters (+ the causal encoder as the value head's trunk) of a trained reward model.

    source: a `RewardModel`; its `nnx.State` (pass head_config to know d_c); or an rm checkpoint directory,
    which needs `config` (the rm job's ConfigDict) to rebuild the state it restores into.
    """
    if isinstance(source, (str, os.PathLike)):
        if config is None:
            raise ValueError("critic_init_from_rm(<checkpoint dir>) needs config= (the rm job's ConfigDict)")
        params, model_config, head_config = _restore_params(os.fspath(source), config)
    elif isinstance(source, nnx.Module):
        if not (hasattr(source, "backbone") and hasattr(source, "head")):
            raise TypeError(f"expected a RewardModel (backbone + head), got {type(source).__name__}")
        params = nnx.state(source, nnx.Param)
        model_config = model_config or source.backbone.config
        head_config = head_config or source.head.config
    elif isinstance(source, nnx.State):
        params = source
    else:
        raise TypeError(
            f"source must be a RewardModel, its nnx.State or a checkpoint directory; got {type(source)}"
        )
    if "backbone" not in params or "head" not in params:
        raise ValueError(f"not reward-model parameters (top-level keys {sorted(params.keys())})")
    head = nnx.to_pure_dict(params["head"])
    trunk = {name: head[name] for name in TRUNK_LAYERS if name in head}
    if "enc1" not in trunk or "enc2" not in trunk:
        raise ValueError(f"the reward head has no encoder (keys {sorted(head)})")
    d_trunk = (trunk["mu_c"] if "mu_c" in trunk else trunk["enc2"])["kernel"].shape[-1]
    return CriticInit(params["backbone"], trunk, model_config, head_config, int(d_trunk))
