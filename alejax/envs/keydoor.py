"""Key-and-door corridor game with a configurable horizon: a fast, verifiable long-horizon env.

Rooms 0..n-1 in a row. The agent must walk to the key, `take` it, walk to the door and `open` it; reward 1
on opening, 0 otherwise. The optimal episode is about 2n steps for a corridor of n rooms and hinges on one
crucial action (`take`), the kind of fork chunk-level credit assignment (IPA) is about. Pure Python,
microseconds per step; the vocabulary is a handful of words and digits.
"""

from __future__ import annotations

import random

from alejax.envs.base import register
from alejax.envs.toolcall import error_observation, format_tool_call, parse_action, tool_schema

TOOLS = [
    tool_schema("left", "Move one room left."),
    tool_schema("right", "Move one room right."),
    tool_schema("take", "Take the key in this room."),
    tool_schema("open", "Open the door in this room."),
]


class KeyDoorEnv:
    tools = TOOLS
    system_prompt = "Find the key, take it, then open the door. Actions: left, right, take, open."

    def __init__(self, n_rooms: int = 8, max_steps: int | None = None):
        if n_rooms < 3:
            raise ValueError("need at least 3 rooms")
        self.n_rooms = n_rooms
        self.max_steps = max_steps if max_steps is not None else 4 * n_rooms
        self.pos = self.key = self.door = 0
        self.has_key = False
        self.t = 0
        self.done = True

    def _describe(self) -> str:
        where = f"room {self.pos}."
        if not self.has_key:
            return f"{where} key in room {self.key}. door in room {self.door}."
        return f"{where} you have the key. door in room {self.door}."

    def reset(self, seed: int) -> tuple[str, dict]:
        rng = random.Random(seed)
        self.pos, self.key, self.door = rng.sample(range(self.n_rooms), 3)
        self.has_key, self.t, self.done = False, 0, False
        return f"{self.n_rooms} rooms. {self._describe()}", {"optimal_steps": len(self.optimal_actions())}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.t += 1
        truncated = self.t >= self.max_steps
        self.done = truncated
        parsed = parse_action(action, self.tools)
        if parsed.error or not parsed.calls:
            error = parsed.error or "no action; use left, right, take or open."
            return error_observation(error), 0.0, False, truncated, {"malformed": True}
        name = parsed.calls[0].name
        if name == "left":
            self.pos = max(0, self.pos - 1)
        elif name == "right":
            self.pos = min(self.n_rooms - 1, self.pos + 1)
        elif name == "take":
            if self.pos != self.key or self.has_key:
                return f"no key here. {self._describe()}", 0.0, False, truncated, {}
            self.has_key = True
        elif name == "open":
            if self.pos != self.door:
                return f"no door here. {self._describe()}", 0.0, False, truncated, {}
            if not self.has_key:
                return f"the door is locked. {self._describe()}", 0.0, False, truncated, {}
            self.done = True
            return "the door opens. you win.", 1.0, True, False, {"success": True}
        return self._describe(), 0.0, False, truncated, {}

    def optimal_actions(self, compact: bool = False) -> list[str]:
        names = []
        pos = self.pos
        if not self.has_key:
            names += ["right" if self.key > pos else "left"] * abs(self.key - pos) + ["take"]
            pos = self.key
        names += ["right" if self.door > pos else "left"] * abs(self.door - pos) + ["open"]
        return names if compact else [format_tool_call(n) for n in names]

    def scripted_policy(self, compact: bool = False):
        """Optimal play for the current episode, as a Policy (messages -> assistant text)."""
        actions = self.optimal_actions(compact)
        return lambda messages: actions[
            min(sum(m["role"] == "assistant" for m in messages), len(actions) - 1)
        ]


@register("keydoor/corridor")
def make_corridor(**kwargs) -> KeyDoorEnv:
    return KeyDoorEnv(**kwargs)


register("keydoor/short", lambda **kw: KeyDoorEnv(**{"n_rooms": 4, **kw}))
register("keydoor/long", lambda **kw: KeyDoorEnv(**{"n_rooms": 32, **kw}))
