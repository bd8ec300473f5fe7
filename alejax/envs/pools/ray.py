"""Environments on Ray actors behind the `EnvPool` interface (env workers spread over a cluster).

Optional: ray is imported only when a `RayEnvPool` is built (`pip install alejax[ray]`). The rules are the
process pool's: one actor per worker, an episode stays on its actor, a step past its timeout or a dead actor
gets the actor killed and replaced, and every episode that lived on it resolves (now or at its next call)
to an aborted result, so the scheduler re-samples it from its seed. `release` closes the env in its actor
(the request carries its placement), `close()` shuts every actor down.

Each call is submitted to its actor at once (an actor runs its calls one at a time, in order); one waiter
thread per actor collects the answers in that order, so a call's timeout counts from the answer before it,
as in the process pool (not from when it was queued behind other episodes' calls).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import shutil
import tempfile
import threading
import uuid
from typing import Any

from alejax.envs.pools.protocol import EnvSpec, Placement, aborted, aborted_result, resolved
from alejax.envs.pools.worker import EnvError, EnvHost


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "RayEnvPool needs ray (pip install 'alejax[ray]'); ProcessEnvPool needs nothing"
        ) from e
    return ray


class _EnvActor:
    """One actor: an `EnvHost` in a scratch directory of its own on the actor's machine. The directory's name
    is fixed per worker slot, so the actor that replaces a killed one removes what that one left there."""

    def __init__(self, spec: EnvSpec, kwargs: dict, scratch_name: str, scratch_root: str | None):
        scratch_dir = os.path.join(scratch_root or tempfile.gettempdir(), scratch_name)
        shutil.rmtree(scratch_dir, ignore_errors=True)
        os.makedirs(scratch_dir, mode=0o700)
        self.host = EnvHost(spec, kwargs, scratch_dir)

    def call(self, op: str, episode_id: int, arg: Any) -> Any:
        return self.host.handle(op, episode_id, arg)

    def pid(self) -> int:
        return os.getpid()

    def shutdown(self) -> None:
        self.host.close()
        shutil.rmtree(self.host.scratch_dir, ignore_errors=True)


@dataclasses.dataclass
class _Call:
    op: str  # reset | step | release | stats
    episode_id: int
    ref: Any  # the actor call's ObjectRef
    future: concurrent.futures.Future
    timeout_s: float
    generation: int  # the actor generation it was sent to


_STOP = object()


class RayEnvPool:
    """EnvPool on Ray actors: per-call timeouts, restart on crash or hang, aborted episodes (see the module
    doc). `env` is a registered name or a picklable factory; `actor_options` go to `ray.remote` (default
    {"num_cpus": 1}); `scratch_root` is where each actor's scratch (sandbox) directory goes on its machine."""

    def __init__(
        self,
        env: EnvSpec,
        env_kwargs: dict | None = None,
        num_workers: int = 2,
        step_timeout_s: float = 60.0,
        reset_timeout_s: float | None = None,
        actor_options: dict | None = None,
        scratch_root: str | None = None,
        shutdown_timeout_s: float = 5.0,
    ):
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        self._actor_cls = ray.remote(**(actor_options or {"num_cpus": 1}))(_EnvActor)
        self.spec, self.env_kwargs, self.scratch_root = env, dict(env_kwargs or {}), scratch_root
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s if reset_timeout_s is not None else max(step_timeout_s, 60.0)
        self.shutdown_timeout_s = shutdown_timeout_s
        self._name = f"alejax-ray-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._closed = False
        self._placements: dict[int, Placement] = {}
        self._episodes = [0] * num_workers  # live episodes per worker (for placement)
        self._generations = [0] * num_workers
        self._restarts = [0] * num_workers
        self._actors = [self._new_actor(i) for i in range(num_workers)]
        self._queues: list[queue.Queue] = [queue.Queue() for _ in range(num_workers)]
        self._waiters = [
            threading.Thread(target=self._wait_loop, args=(i,), name=f"ray-env-{i}", daemon=True)
            for i in range(num_workers)
        ]
        for waiter in self._waiters:
            waiter.start()

    # -- EnvPool interface --
    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future:
        with self._lock:
            self._check_open()
            placement = self._placements.get(episode_id)
            if placement is None:
                worker = min(range(len(self._actors)), key=lambda i: (self._episodes[i], i))
                self._episodes[worker] += 1
                placement = self._placements[episode_id] = Placement(worker)
            return self._submit("reset", placement, episode_id, seed, self.reset_timeout_s)

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future:
        with self._lock:
            self._check_open()
            placement = self._placements.get(episode_id)
            if placement is None:
                return resolved(aborted_result(f"episode {episode_id} was never reset"))
            return self._submit("step", placement, episode_id, action, self.step_timeout_s)

    def release(self, episode_id: int) -> None:
        """Forgets the episode here and closes its env in its actor (after its last call)."""
        with self._lock:
            placement = self._placements.pop(episode_id, None)
            if placement is None or self._closed:
                return
            self._episodes[placement.worker] -= 1
            self._submit("release", placement, episode_id, None, self.step_timeout_s)

    def close(self) -> None:
        """Let each actor finish its queued calls, close its envs and scratch directory, then kill it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for q, actor in zip(self._queues, self._actors):
                q.put((_STOP, actor.shutdown.remote()))
        for waiter in self._waiters:
            waiter.join()

    # -- monitoring --
    def stats(self) -> dict[str, float]:
        """Health counters for the trainer's metrics (no remote calls)."""
        with self._lock:
            return {"restarts": float(self.restarts), "live_episodes": float(len(self._placements))}

    @property
    def restarts(self) -> int:
        return sum(self._restarts)

    def worker_stats(self, timeout_s: float = 30.0) -> list[dict[str, int] | None]:
        """Each actor's own view after the calls queued before this one (as `ProcessEnvPool.worker_stats`)."""
        with self._lock:
            self._check_open()
            futures = [
                self._send(i, "stats", -1, None, timeout_s, self._generations[i])
                for i in range(len(self._actors))
            ]
        out = []
        for future in futures:
            try:
                result = future.result(timeout_s + 5)
            except concurrent.futures.TimeoutError:
                result = None
            out.append(result if isinstance(result, dict) else None)
        return out

    def worker_pids(self, timeout_s: float = 30.0) -> list[int]:
        """Pids of the actors' processes (on their machines; for tests and monitoring)."""
        with self._lock:
            refs = [actor.pid.remote() for actor in self._actors]
        pids = []
        for ref in refs:
            try:
                pids.append(self._ray.get(ref, timeout=timeout_s))
            except Exception:  # noqa: BLE001 - a dead or hung actor has no pid to report
                pass
        return pids

    # -- helpers (the pool lock held unless said otherwise) --
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the env pool is closed")

    def _new_actor(self, index: int):
        return self._actor_cls.remote(self.spec, self.env_kwargs, f"{self._name}-{index}", self.scratch_root)

    def _submit(self, op: str, placement: Placement, episode_id: int, arg: Any, timeout_s: float):
        index = placement.worker
        if op == "reset":
            placement.generation = self._generations[index]
        elif placement.generation != self._generations[index]:
            if op == "release":  # its env died with an earlier actor: nothing to close
                return resolved(None)
            why = "was never reset" if placement.generation < 0 else "lost its worker"
            return resolved(aborted(op, f"episode {episode_id} {why}", worker=index))
        return self._send(index, op, episode_id, arg, timeout_s, placement.generation)

    def _send(self, index: int, op: str, episode_id: int, arg: Any, timeout_s: float, generation: int):
        # Sent now, under the lock: the actor runs calls in the order they were sent, the waiter reads
        # the answers in the same order.
        ref = self._actors[index].call.remote(op, episode_id, arg)
        call = _Call(op, episode_id, ref, concurrent.futures.Future(), timeout_s, generation)
        self._queues[index].put(call)
        return call.future

    def _replace(self, index: int, generation: int) -> bool:
        """Kill actor `index` if it is still `generation` and start a fresh one (its episodes are lost);
        False when an earlier call of the same actor already had it replaced."""
        with self._lock:
            if self._generations[index] != generation:
                return False
            self._ray.kill(self._actors[index], no_restart=True)
            self._generations[index] += 1
            self._restarts[index] += 1
            if not self._closed:
                self._actors[index] = self._new_actor(index)
            return True

    def _wait_loop(self, index: int) -> None:
        """Waiter thread of actor `index`: resolve its calls' futures in order; never raises."""
        ray = self._ray
        while True:
            item = self._queues[index].get()
            if isinstance(item, tuple) and item[0] is _STOP:
                try:
                    ray.get(item[1], timeout=self.shutdown_timeout_s)
                except Exception:  # noqa: BLE001 - a hung or dead actor is killed all the same
                    pass
                with self._lock:
                    ray.kill(self._actors[index], no_restart=True)
                return
            call: _Call = item
            try:
                result = ray.get(call.ref, timeout=call.timeout_s)
            except ray.exceptions.GetTimeoutError:
                self._replace(index, call.generation)
                error = f"{call.op} timed out after {call.timeout_s:g} s; worker {index} restarted"
                result = aborted(call.op, error, worker=index, timeout=True)
            except ray.exceptions.RayTaskError as e:  # the call itself failed (e.g. an unpicklable result)
                result = aborted(call.op, str(e), worker=index)
            except Exception as e:  # noqa: BLE001 - the actor died (or Ray lost it): replace it
                if self._replace(index, call.generation):
                    error = f"worker {index} crashed ({type(e).__name__}: {str(e)[:300]}); restarted"
                else:  # sent to the actor an earlier call's timeout or crash already replaced
                    error = f"episode {call.episode_id} lost its worker ({index}, restarted)"
                result = aborted(call.op, error, worker=index, timeout=False)
            if isinstance(result, EnvError):
                result = aborted(call.op, result.traceback, worker=index)
            call.future.set_result(result)

    def __enter__(self) -> RayEnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
