"""Building a model whose parameters are born sharded (never whole on one device)."""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh

from alejax.models.config import ModelConfig
from alejax.models.transformer import Transformer
from alejax.parallel.rules import state_shardings


def abstract_model(config: ModelConfig) -> Transformer:
    """The model's structure with ShapeDtypeStruct leaves: no memory, no FLOPs."""
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))


def model_shardings(config: ModelConfig, mesh: Mesh, rules=None) -> nnx.State:
    """NamedSharding per parameter, from its logical names through the rule table."""
    _, abstract_state = nnx.split(abstract_model(config))
    return state_shardings(abstract_state, mesh, rules)


def create_model(config: ModelConfig, mesh: Mesh | None = None, seed: int = 0, rules=None) -> Transformer:
    """A freshly initialised model; with a mesh, each device computes only its own parameter shards."""
    if mesh is None:
        return Transformer(config, rngs=nnx.Rngs(seed))
    graphdef, abstract_state = nnx.split(abstract_model(config))
    shardings = state_shardings(abstract_state, mesh, rules)

    @jax.jit(out_shardings=shardings)
    def init_state():
        return nnx.split(Transformer(config, rngs=nnx.Rngs(seed)))[1]

    with jax.set_mesh(mesh):
        return nnx.merge(graphdef, init_state())
