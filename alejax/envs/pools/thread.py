"""Environments in this process behind the `EnvPool` interface: one env per episode, calls on threads.

Right for fast or I/O-bound envs and for tests (no IPC, no pickling); `ProcessEnvPool` runs envs in
sandboxed worker processes behind the same interface (and survives envs that crash their process).

A thread cannot be killed, so a hang is handled by walking away from it: with `step_timeout_s`, a call
still running after that long (`reset_timeout_s` for a reset) resolves to an aborted result
(`info["timeout"] = True`), its episode is dropped (later calls on it resolve aborted, so the scheduler
re-samples it from the seed), and a fresh thread takes the hung one's place, so the pool keeps its
concurrency. The hung thread is a daemon and is counted (`stats()["abandoned_threads"]`, and
`hung_threads` while it is still stuck); it ends with the call, or with the interpreter. Its env is closed
once both the call has returned and the episode is released. Abandoned threads are not free (a stack each,
whatever the env holds), so once `max_hung_threads` are stuck at the same time the pool stops taking calls:
each resolves aborted and says why (use the process pool, whose workers can be killed).

An episode released while one of its calls still runs (the scheduler gave up on it) is closed when that
call returns, never under it. Closing an env never raises out of `release` (a failure is counted).
"""

from __future__ import annotations

import collections
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
    deadline: float = float("inf")  # when the watchdog gives up on it (with a timeout)
    timed_out: bool = False  # the watchdog answered for it: its thread is abandoned


class ThreadEnvPool:
    """In-process pool: one env instance per episode (`env_factory()`), `max_concurrency` calls at a time.

    `step_timeout_s` (None: wait forever) bounds each step, `reset_timeout_s` (default: the step timeout)
    each reset; `max_hung_threads` bounds the threads abandoned to hung calls; see the module doc.
    """

    def __init__(
        self,
        env_factory: Callable[[], Env],
        max_concurrency: int = 8,
        step_timeout_s: float | None = None,
        reset_timeout_s: float | None = None,
        max_hung_threads: int = 32,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        for name, value in (("step_timeout_s", step_timeout_s), ("reset_timeout_s", reset_timeout_s)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or None), got {value}")
        if max_hung_threads < 1:
            raise ValueError(f"max_hung_threads must be >= 1, got {max_hung_threads}")
        self._factory = env_factory
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s if reset_timeout_s is not None else step_timeout_s
        self.max_hung_threads = max_hung_threads
        self._envs: dict[int, Env] = {}
        self._hung: set[int] = set()  # episodes whose env got stuck in a call (dropped)
        self._busy: collections.Counter = collections.Counter()  # episode -> its calls running now
        self._close_when_idle: dict[int, Env] = {}  # released while a call ran: closed when it returns
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()  # _Call, or None: a thread's stop signal
        self._threads: list[threading.Thread] = []  # serving threads (abandoned ones leave the list)
        self._abandoned: list[threading.Thread] = []
        self._abandoned_total = 0
        self._close_errors = 0
        self._thread_names = itertools.count()
        self._closed = False
        # With a timeout: the call each thread is running, and a watchdog that times them out.
        self._timed = step_timeout_s is not None or reset_timeout_s is not None
        self._running: dict[threading.Thread, _Call] = {}
        self._wake_watchdog = threading.Condition(self._lock)
        self._watchdog: threading.Thread | None = None
        for _ in range(max_concurrency):
            self._add_thread()
        if self._timed:
            self._watchdog = threading.Thread(target=self._watch, name="env-watchdog", daemon=True)
            self._watchdog.start()

    # -- EnvPool interface --
    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future:
        return self._submit("reset", episode_id, lambda env: ResetResult(*env.reset(seed)))

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future:
        return self._submit("step", episode_id, lambda env: StepResult(*env.step(action)))

    def release(self, episode_id: int) -> None:
        """Closes the episode's env now, or when its running call returns; never raises."""
        with self._lock:
            env = self._envs.pop(episode_id, None)
            self._hung.discard(episode_id)
            if env is not None and self._busy[episode_id]:
                self._close_when_idle[episode_id] = env
                env = None
        self._close(env)

    def close(self) -> None:
        """Cancel queued calls, wait for running ones (at most the longest timeout), close every env."""
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
        # A call still running past its timeout is left to its daemon thread.
        timeouts = [t for t in (self.step_timeout_s, self.reset_timeout_s) if t is not None]
        deadline = time.monotonic() + max(timeouts) if timeouts else None
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._watchdog is not None:
            self._watchdog.join()
        for episode_id in list(self._envs):
            self.release(episode_id)

    def stats(self) -> dict[str, float]:
        """Health counters: threads abandoned to hung calls (in all, and still stuck), live episodes, and
        env cleanups that raised."""
        with self._lock:
            self._abandoned = [t for t in self._abandoned if t.is_alive()]
            return {
                "abandoned_threads": float(self._abandoned_total),
                "hung_threads": float(len(self._abandoned)),
                "live_episodes": float(len(self._envs)),
                "close_errors": float(self._close_errors),
            }

    # -- helpers --
    def _close(self, env: Env | None) -> None:
        if env is not None and close_env(env) is not None:
            with self._lock:
                self._close_errors += 1

    def _submit(self, op: str, episode_id: int, run: Callable[[Env], Any]) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("the env pool is closed")
            if episode_id in self._hung:
                return resolved(aborted(op, f"episode {episode_id} was dropped: its env hung"))
            if self._abandoned and len(self._abandoned) >= self.max_hung_threads:
                self._abandoned = [t for t in self._abandoned if t.is_alive()]
                if len(self._abandoned) >= self.max_hung_threads:
                    return resolved(
                        aborted(
                            op,
                            f"{len(self._abandoned)} env threads are stuck in hung calls (max_hung_threads="
                            f"{self.max_hung_threads}); this env hangs: use the process env pool, which "
                            "kills hung workers",
                        )
                    )
        call = _Call(op, episode_id, run, concurrent.futures.Future())
        self._calls.put(call)
        return call.future

    def _add_thread(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"env-{next(self._thread_names)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _timeout_of(self, op: str) -> float | None:
        return self.reset_timeout_s if op == "reset" else self.step_timeout_s

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            call = self._calls.get()
            if call is None:
                return
            if not call.future.set_running_or_notify_cancel():
                continue
            with self._lock:
                env = self._envs.get(call.episode_id)
                self._busy[call.episode_id] += 1
                timeout = self._timeout_of(call.op) if self._timed else None
                if timeout is not None:
                    call.deadline = time.monotonic() + timeout
                    self._running[me] = call
                    self._wake_watchdog.notify()  # this deadline may come before the one it waits for
            try:
                if env is None and call.op == "reset":
                    # Outside the lock: a slow constructor must not hold up other episodes.
                    env = self._factory()
                    with self._lock:
                        env = self._envs.setdefault(call.episode_id, env)
                if env is None:
                    result = aborted(call.op, f"episode {call.episode_id} was never reset (or was released)")
                else:
                    result = call.run(env)
            except Exception:  # noqa: BLE001 - a broken env becomes a reported, aborted episode
                result = aborted(call.op, traceback.format_exc(limit=3))
            with self._lock:
                self._running.pop(me, None)
                self._busy[call.episode_id] -= 1
                idle = not self._busy[call.episode_id]
                if idle:
                    del self._busy[call.episode_id]
                to_close = self._close_when_idle.pop(call.episode_id, None) if idle else None
            self._close(to_close)
            if call.timed_out:  # answered by the watchdog; a new thread took this one's place
                return
            call.future.set_result(result)

    def _watch(self) -> None:
        """Watchdog thread: a call running past its timeout resolves aborted, its thread is abandoned."""
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
                    self._abandoned.append(thread)
                    self._abandoned_total += 1
                    self._add_thread()
                if not expired:
                    deadlines = [c.deadline for c in self._running.values()]
                    self._wake_watchdog.wait(min(deadlines) - now if deadlines else None)
                    continue
            for _, call in expired:
                error = f"{call.op} timed out after {self._timeout_of(call.op):g} s; its thread was abandoned"
                call.future.set_result(aborted(call.op, error, timeout=True))
