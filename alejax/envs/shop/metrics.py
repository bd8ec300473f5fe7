"""Aggregate metrics over episodes: means with bootstrap confidence intervals, and pass^k over repeats."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

METRICS = ("success", "strict", "loose", "right")


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0):
    """(mean, low, high): percentile bootstrap of the mean."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(low), float(high)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """tau-bench's pass^k for one task: the chance that k trials drawn from n (c successful) all succeed."""
    if k > n:
        raise ValueError(f"k={k} > n={n} trials")
    return math.comb(c, k) / math.comb(n, k)


def pass_hat_k_mean(trials: dict, k: int) -> float:
    """Mean pass^k over tasks; `trials` maps a task to its list of per-trial successes (bools)."""
    return float(np.mean([pass_hat_k(len(t), int(sum(t)), k) for t in trials.values()]))


def aggregate(episodes: Sequence[dict], seed: int = 0) -> dict:
    """Episodes are dicts with the score fields of `scoring.Score`, `tags`, and optionally `task`.
    Returns {metric: (mean, low, high)}, tag rates and, when tasks repeat, pass^k for k = 1..n."""
    out = {m: bootstrap_ci([e.get(m, 0.0) for e in episodes], seed=seed) for m in METRICS}
    tags = defaultdict(int)
    for e in episodes:
        for tag in set(e.get("tags", ())):
            tags[tag] += 1
    out["tags"] = {t: c / max(1, len(episodes)) for t, c in sorted(tags.items())}
    trials = defaultdict(list)
    for e in episodes:
        if "task" in e:
            trials[e["task"]].append(e.get("success", 0.0) == 1.0)
    n = min((len(t) for t in trials.values()), default=0)
    if n > 1:
        out["pass^k"] = {
            k: pass_hat_k_mean({t: v[:n] for t, v in trials.items()}, k) for k in range(1, n + 1)
        }
    out["episodes"] = len(episodes)
    return out
