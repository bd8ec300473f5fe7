"""Meshes, the logical-axis rule table, and placement of arrays on them."""

from alejax.parallel.distributed import (
    exchange_objects,
    global_batch,
    global_batch_from_full,
    maybe_initialize,
    process_row_range,
    row_owners,
    to_host,
)
from alejax.parallel.mesh import MESH_AXES, make_mesh, resolve_mesh_shape
from alejax.parallel.placement import ROLES, place_roles, reshard
from alejax.parallel.rules import LOGICAL_AXIS_RULES, axis_rules, constrain, logical_to_spec, state_shardings

__all__ = [
    "exchange_objects",
    "row_owners",
    "to_host",
    "global_batch",
    "global_batch_from_full",
    "maybe_initialize",
    "process_row_range",
    "ROLES",
    "place_roles",
    "reshard",
    "MESH_AXES",
    "make_mesh",
    "resolve_mesh_shape",
    "LOGICAL_AXIS_RULES",
    "axis_rules",
    "constrain",
    "logical_to_spec",
    "state_shardings",
]
