"""Train state (params + optimizer state + step + RNG), born sharded, and the optimizer from config."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alejax.models.config import ModelConfig
from alejax.models.lora import trainable
from alejax.models.transformer import Transformer
from alejax.parallel.placement import reshard
from alejax.parallel.rules import state_shardings


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: nnx.State  # what trains (nnx.Param variables: logical names travel with them); LoRA: the adapters
    opt_state: Any  # of `params` only
    rng: jax.Array  # raw uint32 key data, so it checkpoints like any array
    frozen: nnx.State = dataclasses.field(default_factory=lambda: nnx.State({}))  # LoRA's base; else empty

    def model_params(self) -> nnx.State:
        """Every parameter of the model (frozen and trained): what `nnx.merge(graphdef, ...)` takes."""
        return nnx.merge_state(self.frozen, self.params) if self.frozen else self.params

    def with_model_params(self, model_params: nnx.State, shardings: "TrainState") -> "TrainState":
        """This state with its parameters taken from `model_params` (e.g. a pretrained or SFT model), placed
        on `shardings`. Only adapters may be absent and keep their init: a base model's tree starts fresh
        adapters (B = 0, so the model is the base exactly); an adapted model's tree brings its adapters too.
        A tree that does not fit (unknown, missing or mis-shaped entries) is a ValueError naming them. Optimizer
        moments stay as they are (zero at the start)."""
        given = dict(nnx.to_flat_state(model_params))
        own = dict(nnx.to_flat_state(self.frozen)) | dict(nnx.to_flat_state(self.params))
        name = lambda path: "/".join(map(str, path))  # noqa: E731
        problems = [f"{name(p)} is not a parameter of this model" for p in given if p not in own]
        # Only adapters may be absent (they then start at B = 0); any other parameter must be given.
        problems += [
            f"{name(p)} is missing"
            for p, v in own.items()
            if p not in given and not isinstance(v, nnx.LoRAParam)
        ]
        problems += [
            f"{name(p)} has shape {tuple(v.get_value().shape)}, this model's is {tuple(own[p].get_value().shape)}"
            for p, v in given.items()
            if p in own and tuple(v.get_value().shape) != tuple(own[p].get_value().shape)
        ]
        if problems:
            raise ValueError(
                f"the given params do not fit this model ({len(problems)} problems): "
                + "; ".join(problems[:3])
            )

        def take(own: nnx.State, placement: nnx.State) -> nnx.State:
            flat = {path: given.get(path, v) for path, v in nnx.to_flat_state(own)}
            return reshard(nnx.from_flat_state(flat), placement)

        return self.replace(
            params=take(self.params, shardings.params), frozen=take(self.frozen, shardings.frozen)
        )


def make_optimizer(
    learning_rate: float = 3e-4,
    warmup_steps: int = 100,
    total_steps: int = 10_000,
    weight_decay: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.95,
    grad_clip: float = 1.0,
    schedule: str = "cosine",
) -> optax.GradientTransformation:
    """AdamW with warmup + cosine (or constant) schedule; no decay on norms and biases.

    Warmup starts at learning_rate / warmup_steps, not 0, so the first update is never a no-op (an RL step
    with a single minibatch would otherwise waste its first batch).
    """
    warmup_start = learning_rate / max(warmup_steps, 1)
    if schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            warmup_start,
            learning_rate,
            max(warmup_steps, 1),
            max(total_steps, warmup_steps + 1),
            end_value=0.1 * learning_rate,
        )
    elif schedule == "constant":
        lr = optax.join_schedules(
            [
                optax.linear_schedule(warmup_start, learning_rate, max(warmup_steps, 1)),
                optax.constant_schedule(learning_rate),
            ],
            [max(warmup_steps, 1)],
        )
    else:
        raise ValueError(f"schedule={schedule!r}: expected cosine or constant")

    def decay_mask(params):
        return jax.tree.map(_decays, params, is_leaf=lambda x: isinstance(x, nnx.Variable))

    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask),
    )


def _decays(leaf) -> bool | nnx.Variable:
    """Weight decay for matrices, not for norms and biases: >= 2 dims besides the stacked `layers` axis."""
    if not isinstance(leaf, nnx.Variable):
        return jax.tree.map(lambda p: p.ndim >= 2, leaf)
    stacked = "layers" in (leaf.get_metadata().get("out_sharding") or ())
    # tree.map: a slot holding no array (optax.MaskedNode, an empty tree) stays as it is.
    return leaf.replace(jax.tree.map(lambda p: p.ndim - stacked >= 2, leaf.get_value()))


def optimizer_from(optim, total_steps: int) -> optax.GradientTransformation:
    """`make_optimizer` from a config's `optim` section (learning_rate, warmup_steps, weight_decay, grad_clip,
    schedule, ...: the same keys in every job). `microbatches` is left out: gradient accumulation belongs to
    the train step (`make_train_step(microbatches=...)`), not to the optimizer."""
    return make_optimizer(total_steps=total_steps, **{k: v for k, v in optim.items() if k != "microbatches"})


def create_train_state(
    build: Callable[[nnx.Rngs], nnx.Module],
    tx: optax.GradientTransformation,
    mesh: Mesh,
    seed: int = 0,
    rules=None,
    trains=nnx.Param,
):
    """(graphdef, TrainState, shardings) of the module `build(rngs)` makes, every array created directly in
    its sharded layout (optimizer moments follow their parameter's). `trains`: the nnx filter of the
    parameters that train (the rest go to `TrainState.frozen`). The one way every job, the critic and the
    reward model make a train state."""
    graphdef, abstract_params, abstract_frozen = nnx.split(
        nnx.eval_shape(lambda: build(nnx.Rngs(seed))), trains, ...
    )
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=abstract_params,
        opt_state=jax.eval_shape(tx.init, abstract_params),
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
        frozen=abstract_frozen,
    )
    shardings = state_shardings(abstract, mesh, rules)

    @jax.jit(out_shardings=shardings)
    def init():
        _, params, frozen = nnx.split(build(nnx.Rngs(seed)), trains, ...)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.key_data(jax.random.key(seed + 1)),
            frozen=frozen,
        )

    with jax.set_mesh(mesh):
        return graphdef, init(), shardings


def init_train_state(
    config: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh, seed: int = 0, rules=None
):
    """(graphdef, TrainState, shardings) of the policy Transformer of `config` (LoRA: only adapters train)."""
    build = lambda rngs: Transformer(config, rngs=rngs)  # noqa: E731
    return create_train_state(build, tx, mesh, seed, rules, trains=trainable(config))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
