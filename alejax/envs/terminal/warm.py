"""Sandboxes made ahead of time, as Tunix and ROCK pre-warm theirs: a background thread keeps `size` of them
ready, so an episode's reset takes one instead of waiting for a holder process and its namespaces.

The ready sandboxes belong to the process, one set per recipe (the same limits, base directory and, for a
Harbor task, workdir and writable dirs; the task's files go in after the take), and every env in the process
draws from it: a pool worker makes an env per episode and closes it at release, while the ready sandboxes
stay. So it lives once, under every pool kind (threads, worker processes, Ray actors).
`close_warm_sandboxes()` closes the unused ones; it also runs at interpreter exit (a pool worker that is
killed instead takes them with it: their holders end when their owner dies, and the pool deletes the
worker's scratch directory).
"""

from __future__ import annotations

import atexit
import collections
import threading
from typing import Any, Callable, Hashable


class WarmSandboxes:
    """`size` results of `make()` kept ready by a background thread; `dispose(item)` ends an unused one."""

    def __init__(self, make: Callable[[], Any], dispose: Callable[[Any], None], size: int):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._make, self._dispose, self.size = make, dispose, size
        self._ready: collections.deque = collections.deque()
        self._changed = threading.Condition()
        self._closed = False
        self.hits = self.misses = self.failures = 0
        self._thread = threading.Thread(target=self._fill, name="warm-sandboxes", daemon=True)
        self._thread.start()

    def take(self) -> tuple[Any, bool]:
        """A ready sandbox and True, or (when none is ready yet) a fresh one made now and False."""
        with self._changed:
            item = self._ready.popleft() if self._ready else None
            if item is None:
                self.misses += 1
            else:
                self.hits += 1
            self._changed.notify_all()  # one fewer ready: the thread makes the next
        return (item, True) if item is not None else (self._make(), False)

    def ready(self) -> int:
        with self._changed:
            return len(self._ready)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop filling and end every unused sandbox (waits for the one being made, up to `timeout_s`)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout_s)
        with self._changed:
            unused, self._ready = list(self._ready), collections.deque()
        for item in unused:
            self._dispose(item)

    def _fill(self) -> None:
        backoff = 0.5
        while True:
            with self._changed:
                while not self._closed and len(self._ready) >= self.size:
                    self._changed.wait()
                if self._closed:
                    return
            try:
                item = self._make()
            except Exception:  # noqa: BLE001 - take() makes its own sandbox and raises the real reason
                with self._changed:
                    self.failures += 1
                    self._changed.wait(backoff)  # a refused or loaded machine: do not spin
                backoff = min(2 * backoff, 30.0)
                continue
            backoff = 0.5
            with self._changed:
                if not self._closed:
                    self._ready.append(item)
                    continue
            self._dispose(item)  # closed while it was being made
            return


_SETS: dict[Hashable, WarmSandboxes] = {}
_SETS_LOCK = threading.Lock()


def warm_sandboxes(key: Hashable, make: Callable[[], Any], dispose: Callable[[Any], None], size: int):
    """This process's set of ready sandboxes for recipe `key` (made on first use; a larger `size` grows it)."""
    with _SETS_LOCK:
        sandboxes = _SETS.get(key)
        if sandboxes is None:
            sandboxes = _SETS[key] = WarmSandboxes(make, dispose, size)
        elif size > sandboxes.size:
            with sandboxes._changed:
                sandboxes.size = size
                sandboxes._changed.notify_all()
        return sandboxes


def close_warm_sandboxes() -> None:
    """End every unused ready sandbox of this process (a later reset starts a new set)."""
    with _SETS_LOCK:
        sets = list(_SETS.values())
        _SETS.clear()
    for sandboxes in sets:
        sandboxes.close()


atexit.register(close_warm_sandboxes)
