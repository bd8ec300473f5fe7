"""Device meshes built from config: axes (data, fsdp, tensor), one of them may be -1 (fills)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_mesh_shape(shape: Mapping[str, int], n_devices: int) -> dict[str, int]:
    """Fill the single -1 entry so the product equals n_devices; check the rest."""
    unknown = [name for name in shape if name not in MESH_AXES]
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; expected a subset of {MESH_AXES}")
    sizes = {name: int(shape.get(name, 1)) for name in MESH_AXES}
    fill = [name for name, size in sizes.items() if size == -1]
    if len(fill) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {fill}")
    if any(size == 0 or size < -1 for size in sizes.values()):
        raise ValueError(f"mesh sizes must be positive or -1, got {sizes}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if fill:
        if n_devices % known:
            raise ValueError(f"cannot fill mesh {dict(shape)}: {n_devices} devices not divisible by {known}")
        sizes[fill[0]] = n_devices // known
    if math.prod(sizes.values()) != n_devices:
        raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, have {n_devices}")
    return sizes


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all) with axes (data, fsdp, tensor). Default: all devices on fsdp."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape or {"fsdp": -1}, len(devices))
    dims = tuple(sizes[name] for name in MESH_AXES)
    if len(devices) == len(jax.devices()):
        # jax.make_mesh orders devices for the physical topology (ICI rings on TPU).
        return jax.make_mesh(dims, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)
    return Mesh(np.asarray(devices).reshape(dims), MESH_AXES, axis_types=(AxisType.Auto,) * 3)
