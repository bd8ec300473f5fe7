"""Environments in worker processes behind the `EnvPool` interface (futures).

Each worker process is one sandbox: its own session (process group), its own scratch directory, and it
holds the envs of the episodes assigned to it (an episode stays on one worker, since env state lives
there). One dispatcher thread per worker batches the requests queued for that worker into one message,
so a fast env pays one IPC round trip per batch, not per step, and concurrency is bounded by
`num_workers * max_batch` requests in flight (the rest wait in the queue).

Failures never raise into the scheduler and never wedge it. A step that runs past its timeout, or a
worker that dies, gets the worker's whole process group killed and the worker restarted; every episode
that lived on it resolves (now or at its next call) to an aborted result (`truncated=True`,
`info={"aborted": True, ...}`), so the scheduler re-samples it from the same seed. `close()` stops every
worker and its children; workers also die with the pool (PR_SET_PDEATHSIG), so nothing is orphaned.

`release` closes the episode's env in its worker at once (queued behind the episode's last call; each
request carries its placement, so the release still reaches the worker after the pool has forgotten the
episode), so envs and their sandbox directories never pile up in long-lived workers; `worker_stats()` shows
what each worker holds (envs, open fds, memory, scratch entries).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import itertools
import multiprocessing.connection
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from typing import Any

from alejax.envs.pools.protocol import EnvSpec, Placement, aborted, aborted_result, resolved
from alejax.envs.pools.worker import EnvError, EnvHost


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent (thread) dies; no-op elsewhere."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_WORKER_BOOT = (
    "import sys; from alejax.envs.pools.process import _worker_main; _worker_main(int(sys.argv[1]))"
)


def _worker_main(fd: int) -> None:
    """Worker process: run batches of (request_id, op, episode_id, arg) and answer one result each."""
    set_parent_death_signal()
    conn = multiprocessing.connection.Connection(fd)
    try:
        spec, kwargs, scratch_dir = conn.recv()
    except (EOFError, OSError):
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pool owner's to handle
    host = EnvHost(spec, kwargs, scratch_dir)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            break
        if batch is None:
            break
        for request_id, op, episode_id, arg in batch:
            conn.send((request_id, host.handle(op, episode_id, arg)))
    host.close()


@dataclasses.dataclass
class _Request:
    op: str  # reset | step | release | stats
    episode_id: int
    arg: Any
    future: concurrent.futures.Future
    timeout_s: float
    # The episode's placement when the request was made (None for stats): a release still knows, once the
    # pool has forgotten the episode, which worker generation holds its env.
    placement: Placement | None = None


_STOP = object()


class _Worker:
    """One worker process, its request queue and the dispatcher thread that feeds it."""

    def __init__(self, pool: ProcessEnvPool, index: int):
        self.pool, self.index = pool, index
        self.queue: queue.Queue = queue.Queue()
        self.process: subprocess.Popen | None = None
        self.conn = None
        self.scratch_dir: str | None = None
        self.generation = 0
        self.restarts = 0
        self.episodes = 0  # live episodes assigned here (for placement)
        self.thread = threading.Thread(target=self._run, name=f"env-worker-{index}", daemon=True)
        self.started = threading.Event()

    # -- process lifecycle (dispatcher thread only) --
    def _start(self) -> None:
        # A fresh interpreter, not multiprocessing: no re-import of the caller's __main__, and the worker
        # gets its own session (process group) before it runs any code. Started from the dispatcher thread
        # on purpose: the worker's PR_SET_PDEATHSIG fires when this thread (or the pool) dies.
        self.scratch_dir = tempfile.mkdtemp(prefix=f"alejax-worker{self.index}-", dir=self.pool.scratch_root)
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT, str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),),
            start_new_session=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child_sock.close()
        self.conn = multiprocessing.connection.Connection(parent_sock.detach())
        self.conn.send((self.pool.spec, self.pool.env_kwargs, self.scratch_dir))

    def _kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            for kill in (lambda: os.killpg(process.pid, signal.SIGKILL), process.kill):
                try:
                    kill()
                except (ProcessLookupError, PermissionError, OSError):
                    pass
            process.wait()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
            self.scratch_dir = None

    def _fail(self) -> None:
        """Kill the worker; every episode on it loses its state (their later calls resolve aborted)."""
        self._kill()
        self.generation += 1
        self.restarts += 1

    def _stop(self) -> None:
        if self.process is not None and self.conn is not None:
            try:
                self.conn.send(None)
                self.process.wait(self.pool.shutdown_timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    # -- dispatcher --
    def _run(self) -> None:
        self.started.set()
        try:
            while True:
                first = self.queue.get()
                if first is _STOP:
                    break
                batch = [first]
                while len(batch) < self.pool.max_batch:
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        self.queue.put(_STOP)  # handle the batch, then stop
                        break
                    batch.append(item)
                try:
                    self._dispatch(batch)
                except Exception:  # noqa: BLE001 - never wedge the scheduler on a pool bug
                    error = traceback.format_exc(limit=4)
                    self._fail()
                    for request in batch:
                        if not request.future.done():
                            request.future.set_result(aborted(request.op, error, worker=self.index))
        finally:
            self._stop()

    def _dispatch(self, batch: list[_Request]) -> None:
        pool = self.pool
        if self.process is not None and self.process.poll() is not None:
            self._fail()
        live = []
        for request in batch:
            placement = request.placement
            if request.op == "stats":
                if self.process is None:  # nothing started here: nothing to measure
                    request.future.set_result(None)
                else:
                    live.append(request)
            elif request.op == "reset":
                placement.generation = self.generation
                live.append(request)
            elif placement.generation != self.generation:
                if request.op == "release":  # its env died with an earlier worker: nothing to close
                    request.future.set_result(None)
                else:
                    why = "was never reset" if placement.generation < 0 else "lost its worker"
                    request.future.set_result(
                        aborted(request.op, f"episode {request.episode_id} {why}", worker=self.index)
                    )
            else:
                live.append(request)
        if not live:
            return
        if self.process is None:
            self._start()
        ids = {}
        message = []
        for request in live:
            request_id = next(pool._ids)
            ids[request_id] = request
            message.append((request_id, request.op, request.episode_id, request.arg))
        try:
            self.conn.send(message)
        except (OSError, BrokenPipeError) as e:
            self._fail()
            for request in live:
                request.future.set_result(
                    aborted(request.op, f"worker {self.index} died: {e}", worker=self.index)
                )
            return
        pending = list(live)
        while pending:
            request = pending[0]
            error, timed_out = None, False
            try:
                if self.conn.poll(request.timeout_s):
                    request_id, result = self.conn.recv()
                else:
                    timed_out = True
                    error = (
                        f"{request.op} timed out after {request.timeout_s:g} s; worker {self.index} restarted"
                    )
            except (EOFError, OSError) as e:
                try:
                    exit_code = self.process.wait(1)
                except subprocess.TimeoutExpired:
                    exit_code = None
                error = f"worker {self.index} crashed (exit code {exit_code}): {type(e).__name__}"
            if error is not None:
                self._fail()
                for r in pending:
                    r.future.set_result(aborted(r.op, error, worker=self.index, timeout=timed_out))
                return
            done = ids.pop(request_id)
            pending.remove(done)
            if isinstance(result, EnvError):
                result = aborted(done.op, result.traceback, worker=self.index)
            done.future.set_result(result)


class ProcessEnvPool:
    """EnvPool on worker processes: batching, per-step timeouts, restart on crash or hang.

    `env` is a registered name (`"terminal/all"`) or a picklable factory; `env_kwargs` go to it.
    """

    def __init__(
        self,
        env: EnvSpec,
        env_kwargs: dict | None = None,
        num_workers: int = 2,
        step_timeout_s: float = 60.0,
        reset_timeout_s: float | None = None,
        max_batch: int = 16,
        scratch_root: str | None = None,
        shutdown_timeout_s: float = 5.0,
    ):
        if num_workers < 1 or max_batch < 1:
            raise ValueError("num_workers and max_batch must be >= 1")
        self.spec, self.env_kwargs = env, dict(env_kwargs or {})
        self.step_timeout_s = step_timeout_s
        self.reset_timeout_s = reset_timeout_s if reset_timeout_s is not None else max(step_timeout_s, 60.0)
        self.max_batch = max_batch
        self.shutdown_timeout_s = shutdown_timeout_s
        self.scratch_root = scratch_root
        self._ids = itertools.count()
        self._placements: dict[int, Placement] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._workers = [_Worker(self, i) for i in range(num_workers)]
        for worker in self._workers:
            worker.thread.start()

    # -- EnvPool interface --
    def reset(self, episode_id: int, seed: int) -> concurrent.futures.Future:
        with self._lock:
            self._check_open()
            placement = self._placements.get(episode_id)
            if placement is None:
                worker = min(self._workers, key=lambda w: (w.episodes, w.index))
                worker.episodes += 1
                placement = self._placements[episode_id] = Placement(worker.index)
        return self._submit("reset", placement, episode_id, seed, self.reset_timeout_s)

    def step(self, episode_id: int, action: str) -> concurrent.futures.Future:
        with self._lock:
            self._check_open()
            placement = self._placements.get(episode_id)
        if placement is None:
            return resolved(aborted_result(f"episode {episode_id} was never reset"))
        return self._submit("step", placement, episode_id, action, self.step_timeout_s)

    def release(self, episode_id: int) -> None:
        """Forgets the episode here and closes its env in its worker (queued behind its last call)."""
        with self._lock:
            placement = self._placements.pop(episode_id, None)
            if placement is None or self._closed:
                return
            self._workers[placement.worker].episodes -= 1
        self._submit("release", placement, episode_id, None, self.step_timeout_s)

    def close(self) -> None:
        """Stop every worker (gracefully, then by killing its process group) and wait for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for worker in self._workers:
            worker.queue.put(_STOP)
        for worker in self._workers:
            worker.thread.join()

    # -- helpers --
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the env pool is closed")

    def _submit(self, op: str, placement: Placement, episode_id: int, arg: Any, timeout_s: float):
        future: concurrent.futures.Future = concurrent.futures.Future()
        request = _Request(op, episode_id, arg, future, timeout_s, placement)
        self._workers[placement.worker].queue.put(request)
        return future

    def worker_stats(self, timeout_s: float = 30.0) -> list[dict[str, int] | None]:
        """Each worker's own view, measured after the requests queued before this call: live envs, open
        fds, resident KiB, scratch-directory entries, failed env cleanups (None: not started, or no answer
        in time). For leak tests and monitoring."""
        with self._lock:
            self._check_open()
            futures = []
            for worker in self._workers:
                futures.append(concurrent.futures.Future())
                worker.queue.put(_Request("stats", -1, None, futures[-1], timeout_s))
        out = []
        for future in futures:
            try:
                result = future.result(timeout_s)
            except concurrent.futures.TimeoutError:
                result = None
            out.append(result if isinstance(result, dict) else None)
        return out

    def stats(self) -> dict[str, float]:
        """Health counters for the trainer's metrics (no IPC)."""
        with self._lock:
            live = len(self._placements)
        return {"restarts": float(self.restarts), "live_episodes": float(live)}

    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes (for tests and monitoring)."""
        return [w.process.pid for w in self._workers if w.process is not None and w.process.pid is not None]

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self._workers)

    def __enter__(self) -> ProcessEnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
