"""A name -> function registry: algorithms live behind names so a config can pick them with a string."""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(dict):
    """A dict of named functions; an unknown name raises a KeyError that lists the known ones."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: `@REGISTRY.register("name")`. Registering a name twice is an error (no silent override)."""

        def add(fn: F) -> F:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = fn
            return fn

        return add

    def __missing__(self, name: str):
        raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}")
