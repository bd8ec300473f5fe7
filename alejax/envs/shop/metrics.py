"""Aggregate metrics over episodes: means with bootstrap confidence intervals, pass^k over repeats, and the
paper's failure analysis (each failure tag's share of the wrong purchases)."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from alejax.envs.shop import scoring
from alejax.stats import bootstrap_ci, pass_hat_k

METRICS = ("success", "strict", "loose", "right")
# The failure modes ShopSimulator reports, as shares of the wrong purchases (docs/shop.md defines each tag).
FAILURE_TAGS = (
    scoring.NO_DETAILS,
    scoring.AFTER_REFUSAL,
    scoring.PERSONA_UNDER_USE,
    scoring.PERSONA_OVER_READING,
)


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


def failure_rates(infos: Sequence[dict]) -> dict[str, float]:
    """The failure analysis of a set of episodes from their final infos (ShopEnv's last `info`, or a rollout
    trajectory's merged info): how many bought, how many bought wrongly (bought, not a full success), and
    each of FAILURE_TAGS as a share of the wrong purchases (0 when there were none). An episode that never
    reached its end in the env (a rollout's turn or context limit) has no `bought` and counts as no purchase."""
    bought = [i for i in infos if i.get("bought")]
    wrong = [i for i in bought if not i.get("success")]
    out = {
        "episodes": float(len(infos)),
        "purchases": float(len(bought)),
        "wrong_purchases": float(len(wrong)),
    }
    for tag in FAILURE_TAGS:
        out[tag] = float(np.mean([tag in i.get("tags", ()) for i in wrong])) if wrong else 0.0
    return out
