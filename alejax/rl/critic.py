"""The critic GAE needs: the shared Transformer backbone + a scalar value head per token, its own optimizer
and train step, on the `critic` role's mesh.

Values are aligned like the log-probs (`alejax.train.step.token_logprobs`): values[:, t] is V of the state
before tokens[t] (read from the hidden state at t - 1), so GAE pairs each model token's action with the value
of the context it was chosen in; values[:, 0] = 0.

    critic = Critic.create(model_config, meshes["critic"], CriticConfig(), backbone_params=...)
    values = critic.values(batch)                              # [B, T] numpy
    advantages, returns = critic.advantages(rl_config, batch, values)
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
from alejax.parallel.placement import reshard
from alejax.parallel.rules import state_shardings
from alejax.rl.advantages import get_advantage
from alejax.rl.objective import advantage_inputs
from alejax.train.state import TrainState, make_optimizer
from alejax.train.step import make_train_step, minibatch_epochs

if TYPE_CHECKING:
    from alejax.rl.pipeline import RLConfig
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
    return loss, {"value_loss": loss, "value_mean": mean_v, "value_clip_frac": clip_frac}


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
    (copied onto the critic's layout; the source is never aliased) else randomly initialised."""

    def build():
        return ValueModel(model_config, rngs=nnx.Rngs(seed))

    graphdef, abstract_params = nnx.split(nnx.eval_shape(build))
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=abstract_params,
        opt_state=jax.eval_shape(tx.init, abstract_params),
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    shardings = state_shardings(abstract, mesh)
    if backbone_params is not None:
        _check_backbone(backbone_params, model_config)
        backbone_params = reshard(backbone_params, shardings.params["backbone"])

    @jax.jit(out_shardings=shardings)
    def init(backbone):
        model = build()
        if backbone is not None:
            nnx.update(model.backbone, backbone)
        params = nnx.state(model)
        return TrainState(
            jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.key_data(jax.random.key(seed + 1))
        )

    with jax.set_mesh(mesh):
        return graphdef, init(backbone_params), shardings


@dataclasses.dataclass
class Critic:
    """The value model's train state, optimizer and jit'd programs on its (critic role's) mesh."""

    config: CriticConfig
    graphdef: nnx.GraphDef
    state: TrainState
    shardings: Any
    tx: optax.GradientTransformation
    mesh: Mesh

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
        return cls(config, graphdef, state, shardings, tx, mesh)

    def values(self, batch: "TrajectoryBatch") -> np.ndarray:
        """[B, T] values of the batch under the current critic weights."""
        if not hasattr(self, "_values_fn"):
            graphdef = self.graphdef
            self._values_fn = jax.jit(lambda params, inputs: nnx.merge(graphdef, params)(inputs))
        out, n = [], self.config.minibatch_size
        with jax.set_mesh(self.mesh):
            for i in range(0, len(batch), n):
                inputs = {k: jnp.asarray(v[i : i + n]) for k, v in batch.model_inputs().items()}
                out.append(np.asarray(self._values_fn(self.state.params, inputs)))
        return np.concatenate(out)

    @staticmethod
    def advantages(
        rl_config: "RLConfig", batch: "TrajectoryBatch", values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(advantages, returns) [B, T] of the configured estimator with the critic's values (GAE's
        returns = A + V are the value targets; an estimator without returns gives A + V too)."""
        arrays = advantage_inputs(batch, values)
        advantages, returns = get_advantage(rl_config.advantage)(arrays, rl_config.advantage_config)
        if returns is None:
            returns = (advantages + arrays["values"]) * arrays["loss_mask"]
        return np.asarray(advantages, np.float32), np.asarray(returns, np.float32)

    def update(
        self, batch: "TrajectoryBatch", returns: np.ndarray, old_values: np.ndarray
    ) -> dict[str, float]:
        """Minibatch updates of the value loss toward `returns`; metrics averaged, prefixed `critic/`."""
        cfg = self.config
        if not hasattr(self, "_train_step"):
            clip = cfg.value_clip
            self._train_step = make_train_step(
                self.graphdef, self.tx, self.shardings, self.mesh, lambda m, b: value_loss(m, b, clip)
            )
        arrays = {
            "tokens": batch.tokens,
            "loss_mask": batch.loss_mask,
            "segment_ids": batch.segment_ids,
            "returns": np.asarray(returns, np.float32),
            "old_values": np.asarray(old_values, np.float32),
        }
        self.state, metrics = minibatch_epochs(
            self._train_step, self.state, arrays, epochs=cfg.epochs, minibatch_size=cfg.minibatch_size
        )
        return {f"critic/{k}": v for k, v in metrics.items()}
