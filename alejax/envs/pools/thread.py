"""Environments in this process behind the `EnvPool` interface: one env per episode, calls on threads.

Right for fast or I/O-bound envs and for tests (no IPC, no pickling); `ProcessEnvPool` runs envs in
sandboxed worker processes behind the same interface.

A thread cannot be killed, so a hang is handled by walking away from it: with `step_timeout_s`, a call
still running after that long resolves to an aborted result (`info["timeout"] = True`), its episode is
dropped (later calls on it resolve aborted, so the scheduler re-samples it from the seed), and a fresh
thread takes the hung one's place. The hung thread is a daemon: it ends with the call, or with the
interpreter, and closes its env if the call ever returns.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import queue
import threading
import time
import traceback
from typing import Any, Callable

from alejax.envs.base import Env, ResetResult, StepResult
from alejax.envs.pools.protocol import aborted, close_env, resolved


@dataclasses.dataclass(eq=False)
class _Call:
    op: str  # reset | step
    episode_id: int
    run: Callable[[Env], Any]
    future: concurrent.futures.Future
    deadline: float = float("inf")  # when the watchdog gives up on it (with a step timeout)
    timed_out: bool = False  # the watchdog answered for it: its thread is abandoned


class ThreadEnvPool:
    """In-process pool: one env instance per episode (`env_factory()`), `max_concurrency` calls at a time.

    `step_timeout_s` (None: wait forever) bounds each reset and step; see the module doc.
    """

    def __init__(
        self,
        env_factory: Callable[[], Env],
        max_concurrency: int = 8,
        step_timeout_s: float | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if step_timeout_s is not None and step_timeout_s <= 0:
            raise ValueError(f"step_timeout_s must be > 0 (or None), got {step_timeout_s}")
        self._factory = env_factory
        self.step_timeout_s = step_timeout_s
        self._envs: dict[int, Env] = {}
        self._hung: set[int] = set()  # episodes whose env is stuck in a call
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()  # _Call, or None: a thread's stop signal
        self._threads: list[threading.Thread] = []  # serving threads (abandoned ones leave the list)
        self._thread_names = itertools.count()
        self._closed = False
        # With a step timeout: the call each thread is running, and a watchdog that times them out.
        self._running: dict[threading.Thread, _Call] = {}
        self._wake_watchdog = threading.Condition(self._lock)
        self._watchdog_idle = False
        self._watchdog: threading.Thread | None = None
        for _ in range(max_concurrency):
            self._add_thread()
        if step_timeout_s is not None:
            self._watchdog = threading.Thread(target=self._watch, name="env-watchdog", daemon=True)
            self._watchdog.start()

    # -- EnvPool interface --
    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future:
        return self._submit("reset", episode_id, lambda env: ResetResult(*env.reset(seed)))

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future:
        return self._submit("step", episode_id, lambda env: StepResult(*env.step(action)))

    def release(self, episode_id: int) -> None:
        with self._lock:
            env = self._envs.pop(episode_id, None)
            hung = episode_id in self._hung
            self._hung.discard(episode_id)
        if not hung:  # a hung env is closed by its thread, if its call ever returns
            close_env(env)

    def close(self) -> None:
        """Cancel queued calls, wait for running ones (at most the step timeout), close every env."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
            self._wake_watchdog.notify()
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call.future.cancel()
        for _ in threads:
            self._calls.put(None)
        # A call still running past the step timeout is left to its daemon thread.
        deadline = None if self.step_timeout_s is None else time.monotonic() + self.step_timeout_s
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._watchdog is not None:
            self._watchdog.join()
        for episode_id in list(self._envs):
            self.release(episode_id)

    # -- helpers --
    def _submit(self, op: str, episode_id: int, run: Callable[[Env], Any]) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("the env pool is closed")
            if episode_id in self._hung:
                return resolved(aborted(op, f"episode {episode_id} was dropped: its env hung"))
        call = _Call(op, episode_id, run, concurrent.futures.Future())
        self._calls.put(call)
        return call.future

    def _add_thread(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"env-{next(self._thread_names)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _env(self, episode_id: int) -> Env:
        with self._lock:
            env = self._envs.get(episode_id)
        if env is None:
            env = self._factory()  # outside the lock: a slow constructor must not hold up other episodes
            with self._lock:
                env = self._envs.setdefault(episode_id, env)
        return env

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            call = self._calls.get()
            if call is None:
                return
            if not call.future.set_running_or_notify_cancel():
                continue
            if self.step_timeout_s is not None:
                with self._lock:
                    call.deadline = time.monotonic() + self.step_timeout_s
                    self._running[me] = call
                    if self._watchdog_idle:
                        self._wake_watchdog.notify()
            env = None
            try:
                env = self._env(call.episode_id)
                result = call.run(env)
            except Exception:  # noqa: BLE001 - a broken env becomes a reported, aborted episode
                result = aborted(call.op, traceback.format_exc(limit=3))
            if self.step_timeout_s is not None:
                with self._lock:
                    self._running.pop(me, None)
                if call.timed_out:  # answered by the watchdog; a new thread took this one's place
                    close_env(env)
                    return
            call.future.set_result(result)

    def _watch(self) -> None:
        """Watchdog thread: a call running past the step timeout resolves aborted, its thread is abandoned."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [(t, c) for t, c in self._running.items() if c.deadline <= now]
                for thread, call in expired:
                    del self._running[thread]
                    call.timed_out = True
                    self._hung.add(call.episode_id)
                    self._threads.remove(thread)
                    self._add_thread()
                if not expired:
                    # Calls start in order with the same timeout: a new call never expires before these.
                    deadlines = [c.deadline for c in self._running.values()]
                    self._watchdog_idle = not deadlines
                    self._wake_watchdog.wait(min(deadlines) - now if deadlines else None)
                    self._watchdog_idle = False
                    continue
            for _, call in expired:
                error = f"{call.op} timed out after {self.step_timeout_s:g} s; its thread was abandoned"
                call.future.set_result(aborted(call.op, error, timeout=True))
