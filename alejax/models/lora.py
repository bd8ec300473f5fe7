"""LoRA on the one graph: which parameters train, and merging adapters into the weights for export.

The adapters are `nnx.LoRAParam` variables inside the projections (see `alejax.models.transformer`), so
the same graph, sharding table and layer scan serve the base and the adapted model. A train state holds
the trainable part (`TrainState.params`: the adapters) apart from the frozen base (`TrainState.frozen`):
gradients, optimizer moments, checkpoints and weight syncs cover the adapters only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from alejax.models.config import LoRAConfig, ModelConfig
from alejax.models.init import abstract_model
from alejax.models.transformer import Transformer

ADAPTER_SUFFIXES = ("_lora_a", "_lora_b")


def trainable(config: ModelConfig):
    """The nnx filter of what trains: the adapters when LoRA is on, else every parameter."""
    return nnx.LoRAParam if config.lora.rank else nnx.Param


def with_lora(config: ModelConfig, lora: LoRAConfig | None) -> ModelConfig:
    """`config` with the adapters `lora` describes (None or rank 0: none)."""
    return config.replace(lora=lora or LoRAConfig())


def without_adapters(params: nnx.State) -> nnx.State:
    """`params` with every adapter's B set to zero: the same tree, computing the base model exactly (a
    fine-tuned policy's zero-shot starting point)."""
    flat = [
        (path, v.replace(jnp.zeros_like(v.get_value())) if str(path[-1]).endswith("_lora_b") else v)
        for path, v in nnx.to_flat_state(params)
    ]
    return nnx.from_flat_state(flat)


def merged_params(params: nnx.State, config: ModelConfig) -> nnx.State:
    """The base parameters with each adapter folded in (W + s A B) and the adapters removed: the state of
    `config.replace(lora=LoRAConfig())`'s graph, which exports and samples like any model."""
    if not config.lora.rank:
        return params
    flat = dict(nnx.to_flat_state(params))
    scale = config.lora.scale
    merged = {}
    for path, variable in flat.items():
        name = str(path[-1])
        if name.endswith(ADAPTER_SUFFIXES):
            continue
        a_path = path[:-1] + (name + "_lora_a",)
        if a_path in flat:
            a, b = flat[a_path].get_value(), flat[path[:-1] + (name + "_lora_b",)].get_value()
            w = variable.get_value()
            layers, rank = a.shape[0], a.shape[-1]  # stacked: [L, *fan_in, r] and [L, r, *fan_out]
            fan_in = math.prod(a.shape[1:-1])
            delta = jnp.matmul(
                a.reshape(layers, fan_in, rank).astype(jnp.float32),
                b.reshape(layers, rank, -1).astype(jnp.float32),
            )
            variable = variable.replace(
                (w.astype(jnp.float32) + scale * delta.reshape(w.shape)).astype(w.dtype)
            )
        merged[path] = variable
    return nnx.from_flat_state(merged)


def merged_model(model: Transformer) -> Transformer:
    """`model` with its adapters folded in, as a model of the base config (itself when it has none)."""
    if not model.config.lora.rank:
        return model
    graphdef = nnx.graphdef(abstract_model(with_lora(model.config, None)))
    return nnx.merge(graphdef, merged_params(nnx.state(model), model.config))


def tree_bytes(params: nnx.State) -> int:
    """Bytes of the arrays in `params` (what a weight sync of that tree moves)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
