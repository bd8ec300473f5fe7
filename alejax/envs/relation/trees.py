"""Checks on dependency trees given as CoNLL-U heads (1-based, 0 = root): validity and projectivity."""

from __future__ import annotations

from typing import Sequence


def tree_errors(heads: Sequence[int | None]) -> list[str]:
    """What is wrong with `heads` as a dependency tree (empty when it is one): missing or out-of-range
    heads, not exactly one root, self-loops, cycles."""
    n = len(heads)
    errors = []
    for i, h in enumerate(heads, start=1):
        if h is None:
            errors.append(f"token {i} has no head")
        elif not 0 <= h <= n:
            errors.append(f"token {i} has head {h}, outside 0..{n}")
        elif h == i:
            errors.append(f"token {i} is its own head")
    if errors:
        return errors
    roots = [i for i, h in enumerate(heads, start=1) if h == 0]
    if len(roots) != 1:
        errors.append(f"{len(roots)} roots (tokens {roots}); a tree has exactly one")
    for i in range(1, n + 1):  # walking up from every token must reach the root within n steps
        node, steps = i, 0
        while node != 0 and steps <= n:
            node, steps = heads[node - 1], steps + 1
        if node != 0:
            errors.append(f"token {i} is on a cycle")
            break
    return errors


def is_projective(heads: Sequence[int]) -> bool:
    """No two arcs cross (the root arc included, drawn from position 0)."""
    arcs = [(min(i, h), max(i, h)) for i, h in enumerate(heads, start=1)]
    for a_lo, a_hi in arcs:
        for b_lo, b_hi in arcs:
            if a_lo < b_lo < a_hi < b_hi:
                return False
    return True
