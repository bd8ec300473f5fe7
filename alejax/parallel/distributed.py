"""Joining a multi-process (multi-host) job: `jax.distributed.initialize` when there is more than one
process, nothing at all on one process; and feeding each process's share of a global batch.

How a process learns it is part of a multi-process job, first match wins:

1. `config.distributed` (optional ConfigDict in a job config): `coordinator_address`, `num_processes`,
   `process_id`, and `enabled` (True: join, detecting the cluster unless named; False: never; "auto").
2. Explicit environment: `JAX_COORDINATOR_ADDRESS` + `JAX_NUM_PROCESSES` + `JAX_PROCESS_ID` (localhost
   tests, SLURM-less clusters). JAX itself only reads the first one; we read all three.
3. `ALEJAX_DISTRIBUTED=1`: call `jax.distributed.initialize()` with no arguments, letting JAX detect the
   cluster (on a Cloud TPU VM it reads the worker list and this worker's id from the VM metadata).
   `launch/tpu.py run` sets it on every worker. `ALEJAX_DISTRIBUTED=0` turns all of this off.

Anything else is a single-process run: no coordinator, no call, no cost.

Reading device values on the host goes through `to_host` (the one place: on several processes a batch-sharded
array is not all on this host, and `np.asarray` of it fails); small host-side Python values (env results) go
between processes through `exchange_objects`. Both are collective on several processes: every process calls
them at the same point, as SPMD calls to jit'd programs already must.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = [
    "distributed_settings",
    "maybe_initialize",
    "global_batch",
    "global_batch_from_full",
    "process_row_range",
    "to_host",
    "exchange_objects",
    "row_owners",
]

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def _as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _mode(value: Any, name: str) -> str:
    """The mode: on, off or auto, from a bool or its usual spellings."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if text in _ON:
        return "on"
    if text in _OFF:
        return "off"
    if text == "auto":
        return "auto"
    raise ValueError(f"{name}={value!r}: expected one of 1/0, true/false, auto")


def distributed_settings(
    config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The keyword arguments for `jax.distributed.initialize` ({} lets JAX detect the cluster), or None for
    a single-process run (see the module doc)."""
    env = os.environ if env is None else env
    section = None
    if config is not None and hasattr(config, "get"):
        section = config.get("distributed")
    if section:
        section = dict(section.items())
        unknown = sorted(set(section) - {"enabled", "coordinator_address", "num_processes", "process_id"})
        if unknown:
            raise ValueError(
                f"config.distributed has unknown keys {unknown}; "
                "expected enabled, coordinator_address, num_processes, process_id"
            )
        mode = _mode(section.get("enabled", "auto"), "config.distributed.enabled")
        if mode == "off":
            return None
        explicit = {k: section.get(k) for k in ("coordinator_address", "num_processes", "process_id")}
        if any(v not in (None, "", -1) for v in explicit.values()):
            return _explicit(explicit, "config.distributed")
        if mode == "on":  # on, with nothing named: let JAX detect the cluster
            return {}

    env_mode = _mode(env.get("ALEJAX_DISTRIBUTED", "auto"), "ALEJAX_DISTRIBUTED")
    if env_mode == "off":
        return None
    explicit = {
        "coordinator_address": env.get("JAX_COORDINATOR_ADDRESS"),
        "num_processes": env.get("JAX_NUM_PROCESSES"),
        "process_id": env.get("JAX_PROCESS_ID"),
    }
    if explicit["num_processes"] not in (None, ""):
        return _explicit(explicit, "environment JAX_*")
    if env_mode == "on":  # let JAX detect the cluster (TPU VM metadata, SLURM, ...)
        return {}
    return None


def _explicit(values: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    missing = [k for k, v in values.items() if v in (None, "", -1)]
    if missing:
        raise ValueError(
            f"{where}: coordinator_address, num_processes and process_id go together; missing {missing}"
        )
    num_processes = _as_int(values["num_processes"], f"{where} num_processes")
    process_id = _as_int(values["process_id"], f"{where} process_id")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"{where}: need 0 <= process_id ({process_id}) < num_processes ({num_processes})")
    if num_processes == 1:
        return None
    address = str(values["coordinator_address"])
    if ":" not in address:
        raise ValueError(f"{where}: coordinator_address={address!r} needs a port (host:port)")
    return {"coordinator_address": address, "num_processes": num_processes, "process_id": process_id}


def maybe_initialize(config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Join the multi-process job if this is one (before any other JAX call); True if it joined.

    Idempotent: a second call (or one after the caller initialized JAX itself) does nothing.
    """
    settings = distributed_settings(config, env)
    if settings is None:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.distributed.initialize(**settings)
    print(
        f"distributed: process {jax.process_index()}/{jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} global devices",
        flush=True,
    )
    return True


def process_row_range(sharding: jax.sharding.Sharding, global_rows: int) -> tuple[int, int]:
    """[start, stop) of the global batch rows this process's devices hold under `sharding` (dim 0).

    A data loader on each host reads only these rows. The rows must be one contiguous block, which holds
    for batch axes laid over the mesh in device order (what `make_mesh` builds).
    """
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map((global_rows,)).values():
        rows = index[0]
        starts.append(rows.start or 0)
        stops.append(global_rows if rows.stop is None else rows.stop)
    start, stop = min(starts), max(stops)
    covered = np.zeros(global_rows, bool)
    for a, b in zip(starts, stops):
        covered[a:b] = True
    if not covered[start:stop].all():
        raise ValueError(f"this process's rows under {sharding} are not one contiguous block")
    return start, stop


def global_batch(
    local_batch: Mapping[str, np.ndarray], shardings: Mapping[str, jax.sharding.Sharding]
) -> dict[str, jax.Array]:
    """Global arrays from each process's own rows (`process_row_range`); one process: the whole batch."""
    missing = sorted(set(local_batch) - set(shardings))
    if missing:
        raise KeyError(f"no sharding for batch keys {missing}")
    return {
        k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v)) for k, v in local_batch.items()
    }


def global_batch_from_full(
    batch: Mapping[str, np.ndarray], shardings: Mapping[str, jax.sharding.Sharding]
) -> dict[str, jax.Array]:
    """Global arrays when every process holds the whole, identical batch (same data seed on every host):
    each process places only the pieces its devices hold. On more than one process, jit refuses numpy
    inputs with non-replicated shardings; this is the drop-in conversion."""
    missing = sorted(set(batch) - set(shardings))
    if missing:
        raise KeyError(f"no sharding for batch keys {missing}")
    out = {}
    for k, v in batch.items():
        if isinstance(v, jax.Array):  # already placed (e.g. by `global_batch`): leave it to jit
            out[k] = v
            continue
        v = np.asarray(v)
        out[k] = jax.make_array_from_callback(v.shape, shardings[k], lambda index, v=v: v[index])
    return out


def to_host(tree: Any) -> Any:
    """`tree`'s arrays as numpy on this host: the one way the rollout path reads device values.

    An array this process holds whole (one process, or replicated) is read in place; one sharded over
    devices of other processes is first all-gathered on the devices (`process_allgather`), never fetched from
    devices this host cannot address. Collective in that case: every process must call it, with the same tree.
    """

    def local(x) -> bool:
        return not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated

    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, x in enumerate(leaves) if not local(x)]
    if spread:  # one gather for all of them
        gathered = multihost_utils.process_allgather([leaves[i] for i in spread], tiled=True)
        for i, x in zip(spread, gathered):
            leaves[i] = x
    return jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])


def exchange_objects(obj: Any, inline_bytes: int = 1024) -> list[Any]:
    """Every process's `obj` (picklable), in process order, on every process (one process: `[obj]`).

    Collective: every process calls it at the same point. Used for small host-side values such as the env
    results of the rows a process owns: one all-gather when every payload fits in `inline_bytes`, else a second
    one padded to a power of two (so few programs compile)."""
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(pickle.dumps(obj), np.uint8)
    head = np.zeros(4 + inline_bytes, np.uint8)  # the payload's size (4 bytes), then the payload if it fits
    head[:4] = np.frombuffer(np.array([data.size], "<u4").tobytes(), np.uint8)
    if data.size <= inline_bytes:
        head[4 : 4 + data.size] = data
    heads = np.asarray(multihost_utils.process_allgather(head)).reshape(-1, head.size)
    sizes = [int(np.frombuffer(h[:4].tobytes(), "<u4")[0]) for h in heads]
    if max(sizes) <= inline_bytes:
        payloads = [h[4 : 4 + n] for h, n in zip(heads, sizes)]
    else:
        padded = np.zeros(1 << (max(sizes) - 1).bit_length(), np.uint8)
        padded[: data.size] = data
        payloads = [
            row[:n]
            for row, n in zip(
                np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1), sizes
            )
        ]
    return [pickle.loads(p.tobytes()) for p in payloads]


def row_owners(sharding: jax.sharding.Sharding, shape: tuple[int, ...], axis: int = 0) -> np.ndarray:
    """The process that owns each index along `axis` of an array of `shape` under `sharding`: one of the
    processes whose devices hold it (rows replicated over several processes are dealt round-robin among
    them), so per-row host work (a row's env) runs where the row's data lives and is spread evenly."""
    holders = [set() for _ in range(shape[axis])]
    for device, index in sharding.devices_indices_map(tuple(shape)).items():
        for row in range(shape[axis])[index[axis]]:
            holders[row].add(device.process_index)
    return np.array([sorted(h)[row % len(h)] for row, h in enumerate(holders)], np.int32)
