"""Statistics for evaluations (numpy only): bootstrap confidence intervals, pass@k and pass^k from n trials,
and paired differences of two policies on the same tasks.

Every learning claim in this project is a mean over tasks with an interval, and a comparison of two policies
is paired by task (the same seeds, so task difficulty cancels): these are the functions that compute them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0):
    """(mean, low, high): the mean and its percentile-bootstrap (1 - alpha) interval."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(x.mean()), float(low), float(high)


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample std / sqrt(n)); 0 for fewer than two values."""
    x = np.asarray(values, np.float64)
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one task from n trials of which c succeeded (Chen et al. 2021): the chance that
    at least one of k trials drawn without replacement from the n succeeds."""
    _check_trials(n, c, k)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """tau-bench's pass^k of one task: the chance that k trials drawn from the n (c successful) all succeed."""
    _check_trials(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def _check_trials(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, float]:
    """b - a on the same tasks (index i of both is task i): mean difference, its standard error and bootstrap
    interval, mean/SE (how many SEs the gain is), and the tasks where b is better / worse / tied."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same tasks: shapes {a.shape} and {b.shape}")
    d = b - a
    mean, low, high = bootstrap_ci(d, seed=seed)
    se = standard_error(d)
    return {
        "tasks": float(d.size),
        "mean_difference": mean,
        "se": se,
        "ci_low": low,
        "ci_high": high,
        "gain_over_se": mean / se if se > 0 else (math.inf if mean > 0 else 0.0),
        "better": float(np.sum(d > 0)),
        "worse": float(np.sum(d < 0)),
        "tied": float(np.sum(d == 0)),
    }


def linear_trend(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares slope of y over x with its standard error and 95% interval (normal approximation):
    whether a training curve rises, stated with its uncertainty."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3:
        raise ValueError(f"a trend needs at least 3 points, got {x.size}")
    dx = x - x.mean()
    slope = float(np.sum(dx * (y - y.mean())) / np.sum(dx**2))
    residual = y - y.mean() - slope * dx
    se = float(np.sqrt(np.sum(residual**2) / (x.size - 2) / np.sum(dx**2)))
    return {
        "slope": slope,
        "se": se,
        "ci_low": slope - 1.96 * se,
        "ci_high": slope + 1.96 * se,
        "points": float(x.size),
    }
