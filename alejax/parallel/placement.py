"""AutoDeviceMapping: which devices each RL role uses, and moving weights between role meshes.

Roles: actor_train (the trainer), actor_infer (the sampler), reference, critic, reward. A placement maps
each role to a device subset and a mesh shape over it:

    {"actor_train": {"devices": [0, 1, 2, 3], "mesh": {"fsdp": -1}},
     "actor_infer": {"devices": [4, 5, 6, 7], "mesh": {"data": -1}}}

Roles not named share actor_train's mesh (colocated). Weight sync is a reshard: `jax.device_put` onto the
destination role's shardings, which moves and re-lays out the arrays between meshes in one call.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from alejax.parallel.mesh import make_mesh

ROLES = ("actor_train", "actor_infer", "reference", "critic", "reward")


def place_roles(
    placement: Mapping[str, Mapping[str, Any]] | None = None, devices: Sequence[jax.Device] | None = None
) -> dict[str, Mesh]:
    """A mesh per role. Empty placement: every role on all devices, mesh {fsdp: -1} (fully colocated)."""
    devices = list(jax.devices() if devices is None else devices)
    placement = dict(placement or {})
    unknown = sorted(set(placement) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown roles {unknown}; roles are {ROLES}")
    meshes: dict[str, Mesh] = {}

    def mesh_for(role: str) -> Mesh:
        spec = placement.get(role, {})
        extra = sorted(set(spec) - {"devices", "mesh"})
        if extra:
            raise ValueError(f"placement of {role} has unknown keys {extra}; expected devices, mesh")
        ids = spec.get("devices")
        if ids is None:
            chosen = devices
        else:
            bad = [i for i in ids if not 0 <= i < len(devices)]
            if bad:
                raise ValueError(f"{role}: device ids {bad} out of range (have {len(devices)} devices)")
            chosen = [devices[i] for i in ids]
        return make_mesh(spec.get("mesh", {"fsdp": -1}), devices=chosen)

    meshes["actor_train"] = mesh_for("actor_train")
    for role in ROLES[1:]:
        meshes[role] = mesh_for(role) if role in placement else meshes["actor_train"]
    return meshes


def is_colocated(meshes: Mapping[str, Mesh], a: str, b: str) -> bool:
    return set(meshes[a].devices.flat) == set(meshes[b].devices.flat)


def reshard(tree: Any, shardings: Any) -> Any:
    """Copy `tree` onto `shardings` (another mesh or layout). Never aliases the source buffers, so the
    source may be donated afterwards (the trainer donates its state every step)."""
    out = jax.device_put(tree, shardings, may_alias=False)
    # jax 0.10 still reuses a buffer when a replicated array moves to a subset of its devices (e.g. from
    # an 8-device mesh to a 1-device one) despite may_alias=False: copy such leaves for real.
    return jax.tree.map(_unshared, tree, out)


def _buffers(x) -> set[int]:
    return (
        {s.data.unsafe_buffer_pointer() for s in x.addressable_shards} if isinstance(x, jax.Array) else set()
    )


def _unshared(source, moved):
    return jnp.copy(moved) if _buffers(source) & _buffers(moved) else moved
