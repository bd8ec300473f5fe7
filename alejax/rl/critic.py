"""The critic GAE needs: the shared Transformer backbone + a scalar value head per token, its own optimizer
and train step, on the `critic` role's mesh.

Values are aligned like the log-probs (`alejax.train.step.token_logprobs`): values[:, t] is V of the state
before tokens[t] (read from the hidden state at t - 1), so GAE pairs each model token's action with the value
of the context it was chosen in; values[:, 0] = 0.

    critic = Critic.create(model_config, meshes["critic"], CriticConfig(), backbone_params=...)
    values = critic.values(batch)                              # [B, T] numpy
    advantages, returns = compute_advantages("gae", ..., batch, values)   # alejax.rl.objective
    metrics = critic.update(batch, returns, values)            # value loss (clipped around `values`)

`backbone_params` lets a critic start from another model's backbone (the policy's params, or a reward
model's `params["backbone"]`) instead of a random one.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from alejax.models.config import ModelConfig
from alejax.models.transformer import Transformer
from alejax.parallel.distributed import to_host
from alejax.parallel.placement import reshard
from alejax.train.state import TrainState, create_train_state, make_optimizer
from alejax.train.step import LOSS_WEIGHT, make_train_step, minibatch_epochs

if TYPE_CHECKING:
    from alejax.rollout.trajectory import TrajectoryBatch


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    learning_rate: float = 1e-3
    warmup_steps: int = 1
    total_steps: int = 10_000
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    value_clip: float | None = 0.2  # PPO value clipping around the values the advantages used; None: off
    epochs: int = 1  # passes over each RL step's batch
    minibatch_size: int = 32
    microbatches: int = 1  # gradient accumulation: each minibatch in this many parts, one update


class ValueModel(nnx.Module):
    """backbone (the policy's Transformer class; its LM head is unused) + a linear value head."""

    def __init__(self, model_config: ModelConfig, *, rngs: nnx.Rngs):
        self.backbone = Transformer(model_config, rngs=rngs)
        # Zero init: V starts at 0 everywhere, so the first advantages are the plain (discounted) rewards.
        self.value_head = nnx.Param(
            jnp.zeros((model_config.d_model,), model_config.jnp_param_dtype),
            out_sharding=("embed",),
            eager_sharding=False,
        )
        self.value_bias = nnx.Param(jnp.zeros((), jnp.float32), out_sharding=(), eager_sharding=False)

    def __call__(self, batch) -> jax.Array:
        """[B, T] f32 values aligned with token_logprobs (values[:, 0] = 0)."""
        hidden, _ = self.backbone.hidden_states(
            batch["tokens"], batch.get("positions"), batch.get("segment_ids")
        )
        v = hidden.astype(jnp.float32) @ self.value_head[...].astype(jnp.float32) + self.value_bias[...]
        return jnp.concatenate([jnp.zeros_like(v[:, :1]), v[:, :-1]], axis=1)


def value_loss(model: ValueModel, batch, value_clip: float | None):
    """0.5·(V − R)² over model tokens; clipped: 0.5·max((V − R)², (V_old + clip(V − V_old, ±c) − R)²)."""
    values = model(batch)
    mask = batch["loss_mask"].astype(jnp.float32)
    returns = batch["returns"]
    err = jnp.square(values - returns)
    if value_clip is not None:
        old = batch["old_values"]
        clipped = old + jnp.clip(values - old, -value_clip, value_clip)
        err_clipped = jnp.square(clipped - returns)
        clip_frac = ((err_clipped > err) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        err = jnp.maximum(err, err_clipped)
    else:
        clip_frac = jnp.zeros(())
    n = jnp.maximum(mask.sum(), 1.0)
    loss = 0.5 * (err * mask).sum() / n
    mean_v = (values * mask).sum() / n
    return loss, {
        "value_loss": loss,
        "value_mean": mean_v,
        "value_clip_frac": clip_frac,
        LOSS_WEIGHT: mask.sum(),
    }


def _check_backbone(backbone_params, model_config: ModelConfig) -> None:
    expected = nnx.state(nnx.eval_shape(lambda: Transformer(model_config, rngs=nnx.Rngs(0))))
    want = jax.tree.map(lambda x: (x.shape, jnp.dtype(x.dtype)), expected)
    got = jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)), backbone_params)
    if jax.tree.structure(want) != jax.tree.structure(got) or jax.tree.leaves(want) != jax.tree.leaves(got):
        raise ValueError(
            "backbone_params do not match a Transformer of the critic's model_config (same tree of "
            "parameters, shapes and dtypes expected): pass a policy's params or a reward model's "
            "params['backbone'] built with the same ModelConfig"
        )


def init_critic_state(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    seed: int = 0,
    backbone_params: Any = None,
):
    """(graphdef, TrainState, shardings), born sharded on `mesh`; the backbone is `backbone_params` when given
    (copied onto the critic's layout; the source is never aliased) else randomly initialised. Adam's moments
    start at zero whatever the params, so only the params change."""
    graphdef, state, shardings = create_train_state(
        lambda rngs: ValueModel(model_config, rngs=rngs), tx, mesh, seed
    )
    if backbone_params is not None:
        _check_backbone(backbone_params, model_config)
        params = jax.tree.map(lambda x: x, state.params)  # a new State of the same tree, then one subtree
        params["backbone"] = reshard(backbone_params, shardings.params["backbone"])
        state = state.replace(params=params)
    return graphdef, state, shardings


@dataclasses.dataclass
class Critic:
    """The value model's train state, optimizer and jit'd programs on its (critic role's) mesh."""

    config: CriticConfig
    graphdef: nnx.GraphDef
    state: TrainState
    shardings: Any
    tx: optax.GradientTransformation
    mesh: Mesh
    values_fn: Any  # (params, model inputs) -> [B, T] values, jit'd
    train_step: Any  # (state, minibatch) -> (state, metrics) on the value loss, jit'd and donated

    @classmethod
    def create(
        cls,
        model_config: ModelConfig,
        mesh: Mesh,
        config: CriticConfig = CriticConfig(),
        *,
        seed: int = 0,
        backbone_params: Any = None,
    ) -> "Critic":
        tx = make_optimizer(
            config.learning_rate,
            config.warmup_steps,
            config.total_steps,
            config.weight_decay,
            grad_clip=config.grad_clip,
            schedule="constant",
        )
        graphdef, state, shardings = init_critic_state(
            model_config, tx, mesh, seed=seed, backbone_params=backbone_params
        )
        values_fn = jax.jit(lambda params, inputs: nnx.merge(graphdef, params)(inputs))
        clip = config.value_clip
        if config.minibatch_size % config.microbatches:
            raise ValueError(
                f"critic minibatch_size={config.minibatch_size} is not divisible by "
                f"microbatches={config.microbatches}"
            )
        train_step = make_train_step(
            graphdef,
            tx,
            shardings,
            mesh,
            lambda m, b: value_loss(m, b, clip),
            microbatches=config.microbatches,
        )
        return cls(config, graphdef, state, shardings, tx, mesh, values_fn, train_step)

    def values(self, batch: "TrajectoryBatch") -> np.ndarray:
        """[B, T] values of the batch under the current critic weights."""
        out, n = [], self.config.minibatch_size
        with jax.set_mesh(self.mesh):
            for i in range(0, len(batch), n):
                inputs = {k: jnp.asarray(v[i : i + n]) for k, v in batch.model_inputs().items()}
                out.append(to_host(self.values_fn(self.state.params, inputs)))
        return np.concatenate(out)

    def update(
        self, batch: "TrajectoryBatch", returns: np.ndarray, old_values: np.ndarray
    ) -> dict[str, float]:
        """Minibatch updates of the value loss toward `returns`; metrics averaged, prefixed `critic/`."""
        cfg = self.config
        arrays = {
            "tokens": batch.tokens,
            "loss_mask": batch.loss_mask,
            "segment_ids": batch.segment_ids,
            "returns": np.asarray(returns, np.float32),
            "old_values": np.asarray(old_values, np.float32),
        }
        self.state, metrics = minibatch_epochs(
            self.train_step, self.state, arrays, epochs=cfg.epochs, minibatch_size=cfg.minibatch_size
        )
        return {f"critic/{k}": v for k, v in metrics.items()}
