"""Does a reward read known artifacts? Label-conditional dependence of a reward on artifact attributes,
measured on IID validation pairs (observed labels), and the penalty-weight rule built on it, which needs no
reversed or decorrelated split (spec/causal_rm.md; results in docs/reward.md).
"""

from __future__ import annotations

import numpy as np


def correlation(a, b) -> float:
    """Pearson correlation of two 1-d arrays (0 where either is constant)."""
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b) + 1e-12))


def pair_dependence(r: np.ndarray, attrs_w: np.ndarray, attrs_l: np.ndarray) -> float:
    """conditional_dependence on pairs: squared correlation of the margin r_w - r_l with each attribute's
    difference, summed; blind to prompt-level reward offsets (which cancel in every pair)."""
    n = len(r) // 2
    return float(
        sum(correlation(r[:n] - r[n:], attrs_w[:, j] - attrs_l[:, j]) ** 2 for j in range(attrs_w.shape[1]))
    )


def conditional_dependence(r: np.ndarray, attrs_w: np.ndarray, attrs_l: np.ndarray) -> float:
    """Label-conditional dependence of a reward on the known artifacts, from IID validation pairs (observed
    labels): the squared correlation of reward and each attribute within the chosen and within the rejected
    responses, summed. Artifacts attached given the label are independent of quality within each group, so a
    reward that reads only quality scores ~0 (noise floor ~ 2 x n_attrs / n)."""
    n = len(r) // 2
    total = 0.0
    for rr, aa in ((r[:n], attrs_w), (r[n:], attrs_l)):
        for j in range(aa.shape[1]):
            total += correlation(rr, aa[:, j]) ** 2
    return total


def dependence_se(r: np.ndarray, attrs_w: np.ndarray, attrs_l: np.ndarray, n_boot: int = 100) -> float:
    """Bootstrap standard error of conditional_dependence over validation pairs."""
    rng = np.random.default_rng(0)
    n = len(r) // 2
    stats = []
    for _ in range(n_boot):
        i = rng.integers(n, size=n)
        stats.append(conditional_dependence(np.concatenate([r[:n][i], r[n:][i]]), attrs_w[i], attrs_l[i]))
    return float(np.std(stats))


# The dependence a practitioner accepts: the four squared within-label correlations (2 artifacts x chosen /
# rejected) sum to at most 0.02, i.e. each artifact explains ~0.5% of the reward's variance given the label.
DEPENDENCE_TARGET = 0.02


def select_weight(val_dep: np.ndarray, dep_se: np.ndarray, target: float = DEPENDENCE_TARGET) -> int:
    """The index of the penalty weight a practitioner can pick from IID validation alone (grid ascending): the
    smallest weight whose label-conditional dependence meets `target`, or, where none does, is within one
    bootstrap SE of the lowest on the grid (a larger weight buys no measurable independence for the accuracy
    it costs). Validation accuracy is no guide here: observed labels reward artifact use, so it prefers
    weight 0."""
    best = int(np.argmin(val_dep))
    return int(np.flatnonzero(val_dep <= max(target, val_dep[best] + dep_se[best]))[0])
