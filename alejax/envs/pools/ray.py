"""Environments on Ray actors behind the `EnvPool` interface (env workers spread over a cluster).

Optional: ray is imported only when a `RayEnvPool` is built. One actor per worker; an episode stays on
one actor. A call past its timeout, or a dead actor, gets the actor killed and replaced; the episodes that
lived on it resolve aborted, as in `ProcessEnvPool`.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from alejax.envs.base import ResetResult, StepResult
from alejax.envs.pools.protocol import (
    EnvSpec,
    Placement,
    aborted,
    aborted_result,
    close_env,
    make_env,
    resolved,
)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError("RayEnvPool needs ray (pip install ray); ProcessEnvPool needs nothing") from e
    return ray


class _EnvActor:
    """The envs of the episodes placed on one actor."""

    def __init__(self, spec: EnvSpec, kwargs: dict):
        self.spec, self.kwargs, self.envs = spec, kwargs, {}

    def call(self, op: str, episode_id: int, arg: Any):
        if op == "reset":
            if episode_id not in self.envs:
                self.envs[episode_id] = make_env(self.spec, self.kwargs)
            return ResetResult(*self.envs[episode_id].reset(arg))
        if op == "step":
            if episode_id not in self.envs:
                return aborted_result(f"episode {episode_id} was never reset on this actor")
            return StepResult(*self.envs[episode_id].step(arg))
        close_env(self.envs.pop(episode_id, None))
        return None


class RayEnvPool:
    """EnvPool on Ray actors. Timeouts kill and restart the actor; a dead actor's episodes resolve
    aborted, as in `ProcessEnvPool`."""

    def __init__(
        self,
        env: EnvSpec,
        env_kwargs: dict | None = None,
        num_workers: int = 2,
        step_timeout_s: float = 60.0,
        reset_timeout_s: float | None = None,
        actor_options: dict | None = None,
    ):
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        self._actor_cls = ray.remote(**(actor_options or {"num_cpus": 1}))(_EnvActor)
        self.spec, self.env_kwargs = env, dict(env_kwargs or {})
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s if reset_timeout_s is not None else max(step_timeout_s, 60.0)
        self._actors = [self._actor_cls.remote(self.spec, self.env_kwargs) for _ in range(num_workers)]
        self._generations = [0] * num_workers
        self._placements: dict[int, Placement] = {}
        self._lock = threading.Lock()
        # Waiting on refs with a timeout needs a thread each; bounded like the process pool's batches.
        self._executor = concurrent.futures.ThreadPoolExecutor(4 * num_workers, thread_name_prefix="ray-env")

    def _call(self, placement: Placement, op: str, episode_id: int, arg: Any, timeout_s: float):
        ray = self._ray
        index = placement.worker
        with self._lock:
            if op == "reset":
                placement.generation = self._generations[index]
            elif placement.generation != self._generations[index]:
                return aborted(op, f"episode {episode_id} lost its worker", worker=index)
            actor, generation = self._actors[index], self._generations[index]
        try:
            return ray.get(actor.call.remote(op, episode_id, arg), timeout=timeout_s)
        except Exception as e:  # noqa: BLE001 - timeout, dead actor or env error: abort, restart if needed
            if isinstance(e, ray.exceptions.RayTaskError):
                return aborted(op, str(e), worker=index)
            with self._lock:
                if self._generations[index] == generation:
                    ray.kill(actor, no_restart=True)
                    self._actors[index] = self._actor_cls.remote(self.spec, self.env_kwargs)
                    self._generations[index] += 1
            return aborted(op, f"{type(e).__name__}: {e}; worker {index} restarted", worker=index)

    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future:
        with self._lock:
            placement = self._placements.get(episode_id)
            if placement is None:
                counts = [0] * len(self._actors)
                for p in self._placements.values():
                    counts[p.worker] += 1
                placement = self._placements[episode_id] = Placement(counts.index(min(counts)))
        return self._executor.submit(self._call, placement, "reset", episode_id, seed, self.reset_timeout_s)

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future:
        placement = self._placements.get(episode_id)
        if placement is None:
            return resolved(aborted_result(f"episode {episode_id} was never reset"))
        return self._executor.submit(self._call, placement, "step", episode_id, action, self.step_timeout_s)

    def release(self, episode_id: int) -> None:
        with self._lock:
            placement = self._placements.pop(episode_id, None)
        if placement is not None:
            self._executor.submit(self._call, placement, "release", episode_id, None, self.step_timeout_s)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []
