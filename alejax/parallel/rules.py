"""Logical axis names -> mesh axes: the one table that decides where every array lives.

Every parameter and activation in alejax is annotated with logical names ("embed", "heads", ...).
`LOGICAL_AXIS_RULES` maps each name to mesh axes (`data`, `fsdp`, `tensor`), in the spirit of t5x's
partitioning rules (which now live in flax). Changing a layout means changing this table, not the model.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Sequence

import jax
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None

LOGICAL_AXIS_RULES: tuple[tuple[str, MeshAxes], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),  # the residual stream stays whole on each device: batch already uses fsdp
    ("cache_length", None),
    # parameters (and the activations that share their feature axes)
    ("embed", "fsdp"),  # ZeRO-3 style: weights split over fsdp, gathered per layer in the step
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("lora_rank", None),  # an adapter's low-rank axis: small, kept whole
    (
        "layers",
        None,
    ),  # the stacked axis of the scanned layers (and of the KV cache): every device holds all layers
)

_local = threading.local()


def current_rules() -> tuple[tuple[str, MeshAxes], ...]:
    return getattr(_local, "rules", LOGICAL_AXIS_RULES)


@contextlib.contextmanager
def axis_rules(rules: Sequence[tuple[str, MeshAxes]]):
    """Temporarily replace the rule table (e.g. for a role that wants pure data parallelism)."""
    previous = current_rules()
    _local.rules = tuple(rules)
    try:
        yield
    finally:
        _local.rules = previous


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(
    names: Sequence[str | None], shape: Sequence[int] | None = None, mesh: Mesh | None = None, rules=None
) -> PartitionSpec:
    """PartitionSpec for an array whose dims carry `names`.

    With `shape` and `mesh`, mesh axes of size 1, axes absent from the mesh and axes that do not divide
    the dimension are dropped (that dimension is then replicated over them), and a mesh axis is used
    at most once per array — so one table serves every mesh shape and every model size.
    """
    table = dict(current_rules() if rules is None else rules)
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(names):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
        kept = []
        size = 1
        for axis in _as_tuple(table[name]):
            if axis in used:
                continue
            if mesh is not None:
                if axis not in mesh.shape or mesh.shape[axis] == 1:
                    continue
                if shape is not None and shape[dim] % (size * mesh.shape[axis]):
                    continue
                size *= mesh.shape[axis]
            kept.append(axis)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def batch_parallelism(mesh: Mesh, rules=None) -> int:
    """How many ways the rule table splits the `batch` axis on `mesh` (its data-parallel degree): a row count
    that is a multiple of it shards evenly."""
    spec = logical_to_spec(("batch",), (1 << 30,), mesh, rules)[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
    return math.prod(mesh.shape[a] for a in axes)


def _active_mesh():
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh is None or mesh.empty else mesh


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names; a no-op when no mesh is set."""
    mesh = _active_mesh()
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))


def variable_names(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    return variable.get_metadata().get("out_sharding")


def state_shardings(state: Any, mesh: Mesh, rules=None) -> Any:
    """NamedSharding for each variable of an (abstract) nnx.State, from its logical names and shape.

    Optimizer slots that hold no array (optax.MaskedNode, from multi_transform / masked transforms) stay as
    they are.
    """

    def one(leaf):
        if isinstance(leaf, nnx.Variable) and isinstance(leaf.get_value(), optax.MaskedNode):
            return leaf
        names = variable_names(leaf) if isinstance(leaf, nnx.Variable) else None
        shape = leaf.shape
        spec = PartitionSpec() if names is None else logical_to_spec(names, shape, mesh, rules)
        return (
            leaf.replace(NamedSharding(mesh, spec))
            if isinstance(leaf, nnx.Variable)
            else NamedSharding(mesh, spec)
        )

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
