"""What runs inside a pool worker, a process (`ProcessEnvPool`) or a Ray actor (`RayEnvPool`): the envs of
the episodes placed there and the one function that serves a request, so both pools answer alike."""

from __future__ import annotations

import os
import traceback
from typing import Any, NamedTuple

from alejax.envs.base import Env, ResetResult, StepResult
from alejax.envs.pools.protocol import EnvSpec, aborted_result, close_env, make_env


class EnvError(NamedTuple):
    """An env raised: the answer the pool turns into an aborted episode (the worker lives on). Its own type,
    not a bare tuple, so a reset whose observation happens to be "error" is never mistaken for one."""

    traceback: str


class EnvHost:
    """The envs of one worker's episodes, keyed by episode id; sandboxes go under `scratch_dir`."""

    def __init__(self, spec: EnvSpec, kwargs: dict, scratch_dir: str):
        self.spec, self.kwargs, self.scratch_dir = spec, kwargs, scratch_dir
        os.environ["ALEJAX_SCRATCH_DIR"] = scratch_dir  # where envs put their sandboxes
        self.envs: dict[int, Env] = {}
        self.close_errors = 0

    def handle(self, op: str, episode_id: int, arg: Any) -> Any:
        """The answer to one request (reset | step | release | stats); an env that raises: an `EnvError`."""
        try:
            if op == "reset":
                if episode_id not in self.envs:
                    self.envs[episode_id] = make_env(self.spec, self.kwargs)
                return ResetResult(*self.envs[episode_id].reset(arg))
            if op == "step":
                env = self.envs.get(episode_id)
                if env is None:
                    return aborted_result(f"episode {episode_id} was never reset on this worker")
                return StepResult(*env.step(arg))
            if op == "release":
                self.close_errors += close_env(self.envs.pop(episode_id, None)) is not None
                return None
            if op == "stats":
                return self.stats()
            raise ValueError(f"unknown env-pool request {op!r}")
        except Exception:  # noqa: BLE001 - a broken env becomes an aborted episode, not a dead worker
            return EnvError(traceback.format_exc(limit=4))

    def stats(self) -> dict[str, int]:
        """What a leak would grow, measured inside the worker: live envs, open fds, resident memory, entries in
        its scratch directory (sandboxes live there), and env cleanups that failed."""
        return {
            "envs": len(self.envs),
            "open_fds": _count_entries("/proc/self/fd"),
            "rss_kib": _rss_kib(),
            "scratch_entries": _count_entries(self.scratch_dir),
            "close_errors": self.close_errors,
        }

    def close(self) -> None:
        for env in self.envs.values():
            close_env(env)
        self.envs.clear()


def _count_entries(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return -1


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return -1
