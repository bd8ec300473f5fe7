"""Multi-step arithmetic with a calculator tool: a fast, verifiable env for learning tests.

The task is a fully parenthesized expression over small integers. The calculator evaluates ONE binary
operation per call, so a policy that uses it must reduce the expression step by step; `answer` ends the
episode with reward 1 iff the value is right. Pure Python, microseconds per step, a vocabulary of digits,
operators and a dozen words.
"""

from __future__ import annotations

import random
import re
from typing import Any

from alejax.envs.base import register
from alejax.envs.toolcall import error_observation, format_tool_call, parse_action, tool_schema

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_CALC_RE = re.compile(r"^\s*(-?\d+)\s*([-+*])\s*(-?\d+)\s*$")

TOOLS = [
    tool_schema("calc", "Evaluate one operation: a + b, a - b or a * b.", {"expression": {"type": "string"}}),
    tool_schema("answer", "Give the final value.", {"value": {"type": ["integer", "string"]}}),
]

# A tree is an int or (op, left, right).
Tree = Any


def _random_tree(rng: random.Random, n_ops: int, max_operand: int, ops: str) -> Tree:
    if n_ops == 0:
        return rng.randint(1, max_operand)
    left_ops = rng.randint(0, n_ops - 1)
    return (
        rng.choice(ops),
        _random_tree(rng, left_ops, max_operand, ops),
        _random_tree(rng, n_ops - 1 - left_ops, max_operand, ops),
    )


def _render(tree: Tree, top: bool = True) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    text = f"{_render(left, False)} {op} {_render(right, False)}"
    return text if top else f"({text})"


def _evaluate(tree: Tree) -> int:
    if isinstance(tree, int):
        return tree
    op, left, right = tree
    return _OPS[op](_evaluate(left), _evaluate(right))


def _reduction_steps(tree: Tree) -> list[str]:
    """The calc expressions of a post-order reduction (the scripted optimal policy's calls)."""
    if isinstance(tree, int):
        return []
    op, left, right = tree
    return _reduction_steps(left) + _reduction_steps(right) + [f"{_evaluate(left)} {op} {_evaluate(right)}"]


class ArithmeticEnv:
    tools = TOOLS
    system_prompt = "Compute the expression. calc does one operation per call. Then answer."

    def __init__(self, n_ops: int = 3, max_operand: int = 9, ops: str = "+-*", max_steps: int | None = None):
        self.n_ops, self.max_operand, self.ops = n_ops, max_operand, ops
        self.max_steps = max_steps if max_steps is not None else 2 * n_ops + 2
        self.tree: Tree = 0
        self.seed = 0
        self.t = 0
        self.done = True

    def reset(self, seed: int) -> tuple[str, dict]:
        rng = random.Random(seed)
        self.tree = _random_tree(rng, self.n_ops, self.max_operand, self.ops)
        self.seed, self.t, self.done = seed, 0, False
        return f"Compute {_render(self.tree)}", {"target": _evaluate(self.tree)}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.t += 1
        truncated = self.t >= self.max_steps
        parsed = parse_action(action, self.tools)
        if parsed.error or not parsed.calls:
            self.done = truncated
            error = parsed.error or "no tool call; use calc or answer."
            return error_observation(error), 0.0, False, truncated, {"malformed": True}
        call = parsed.calls[0]
        if call.name == "answer":
            self.done = True
            value = str(call.arguments["value"]).strip()
            correct = value.lstrip("-").isdigit() and int(value) == _evaluate(self.tree)
            return ("correct" if correct else "wrong"), float(correct), True, False, {"success": correct}
        match = _CALC_RE.match(call.arguments["expression"])
        self.done = truncated
        if not match:
            return "Error: calc takes one operation like 3 + 4.", 0.0, False, truncated, {"malformed": True}
        a, op, b = match.groups()
        return f"= {_OPS[op](int(a), int(b))}", 0.0, False, truncated, {}

    def optimal_actions(self, compact: bool = False) -> list[str]:
        calls = [("calc", {"expression": e}) for e in _reduction_steps(self.tree)]
        calls.append(("answer", {"value": _evaluate(self.tree)}))
        return _format_calls(calls, compact)

    def guessed_actions(self, compact: bool = False) -> list[str]:
        """No tool use: answer at once with a value drawn (seeded by the episode) from 0..2*max_operand,
        independent of the expression, so usually wrong."""
        guess = random.Random(f"guess-{self.seed}").randint(0, 2 * self.max_operand)
        return _format_calls([("answer", {"value": guess})], compact)

    def scripted_policy(self, compact: bool = False, guess_fraction: float = 0.0):
        """Optimal play for the current episode, as a Policy (messages -> assistant text).

        `guess_fraction`: the share of episodes (chosen by the episode's seed, so data is reproducible) that
        are played by `guessed_actions` instead: a mixed expert whose SFT'd policy must still learn, e.g.
        by RL, to prefer the calculator."""
        guess = guess_fraction > 0 and random.Random(f"mix-{self.seed}").random() < guess_fraction
        actions = self.guessed_actions(compact) if guess else self.optimal_actions(compact)
        return lambda messages: actions[
            min(sum(m["role"] == "assistant" for m in messages), len(actions) - 1)
        ]


def _format_calls(calls: list[tuple[str, dict]], compact: bool) -> list[str]:
    if compact:  # one line `NAME ARG`
        return [f"{name} {next(iter(args.values()))}" for name, args in calls]
    return [format_tool_call(name, args) for name, args in calls]


@register("arithmetic/calc")
def make_calc(**kwargs) -> ArithmeticEnv:
    return ArithmeticEnv(**kwargs)


register("arithmetic/easy", lambda **kw: ArithmeticEnv(**{"n_ops": 2, **kw}))
register("arithmetic/hard", lambda **kw: ArithmeticEnv(**{"n_ops": 6, **kw}))
