"""Reward-model losses on pairs: BT prediction, adversary, reconstruction, KL, attribute terms, independence.

Every part is logged unweighted; the total is sum(weight[name] * part[name]) over the parts present, so a
logged run can be re-weighted by hand. Adversary objectives and independence penalties live in registries.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class RMLossConfig:
    """Weights (the released recipe by default) and the chosen options."""

    pred: float = 1.0  # lambda_pred: BT on the reward
    adv: float = 0.05  # lambda_adv: the adversary on z_n (0: the no-adversary ablation)
    rec: float = 0.001  # lambda_rec: reconstruction of h from [z_c; z_n]
    beta_c: float = 0.001
    beta_n: float = 0.001
    attr_sup: float = 0.0  # heads on z_n predict the known spurious attributes
    attr_adv: float = 0.0  # an adversary on z_c (behind the GRL) predicts them
    indep: str = "none"  # a name in INDEPENDENCE, or none
    indep_weight: float = 0.0
    indep_on: str = "reward"  # reward | z_c: what must be independent of the attributes (given the label)
    grl_schedule: str = "const"  # const | dann
    lam_max: float = 1.0

    def __post_init__(self):
        if self.indep != "none" and self.indep not in INDEPENDENCE:
            raise ValueError(f"indep={self.indep!r}; known: none, {sorted(INDEPENDENCE)}")
        if self.indep_on not in ("reward", "z_c"):
            raise ValueError(f"indep_on={self.indep_on!r}; expected reward or z_c")


def bt(x: Array) -> Array:
    """Bradley-Terry loss -log sigmoid(x), stable for large |x|."""
    return jax.nn.softplus(-x)


def gaussian_kl(mu: Array, logvar: Array) -> Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over factors, mean over rows."""
    return jnp.mean(0.5 * jnp.sum(jnp.exp(logvar) + mu * mu - 1.0 - logvar, axis=-1))


# ---- adversary objectives: (out_w, out_l) -> {part: value}; each part's weight is lambda_adv --------------


def _adv_grl_bt(out_w: dict, out_l: dict) -> dict[str, Array]:
    # The GRL already sits in the head: one loss, the adversary descends it, the encoder ascends it.
    return {"adv": jnp.mean(bt(out_w["adv"] - out_l["adv"]))}


def _adv_confusion(out_w: dict, out_l: dict) -> dict[str, Array]:
    # Adversary: BT on detached z_n. Encoder: make the (frozen) adversary's score difference vanish, a
    # bounded target, unlike ascending an unbounded log-loss (which turns z_n anti-predictive).
    diff = out_w["adv_encoder"] - out_l["adv_encoder"]
    return {"adv": jnp.mean(bt(out_w["adv"] - out_l["adv"])), "adv_confusion": jnp.mean(diff * diff)}


ADV_OBJECTIVES: dict[str, Callable[[dict, dict], dict[str, Array]]] = {
    "grl_bt": _adv_grl_bt,
    "confusion": _adv_confusion,
}


# ---- independence penalties: (target [B, k], attrs [B, A]) per label group -------------------------------


def _standardize(x: Array) -> Array:
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def _rbf(x: Array) -> Array:
    """RBF Gram matrix of standardized rows, bandwidth sqrt(dim) (the median scale of standard normals)."""
    sq = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return jnp.exp(-sq / (2.0 * x.shape[-1]))


def hsic(target: Array, attrs: Array) -> Array:
    """Biased HSIC between the target and each attribute (RBF kernels on standardized values), summed."""
    n = target.shape[0]
    center = jnp.eye(n) - 1.0 / n
    k = center @ _rbf(_standardize(target)) @ center
    total = 0.0
    for j in range(attrs.shape[-1]):
        gram = _rbf(_standardize(attrs[:, j : j + 1]))
        total = total + jnp.sum(k * gram) / (n - 1) ** 2
    return total


def mmd_split(target: Array, attrs: Array) -> Array:
    """Squared MMD between the target's distribution above / below each attribute's mean, summed."""
    gram = _rbf(_standardize(target))
    total = 0.0
    for j in range(attrs.shape[-1]):
        above = (attrs[:, j] > attrs[:, j].mean()).astype(target.dtype)
        w1 = above / jnp.maximum(above.sum(), 1.0)
        w0 = (1.0 - above) / jnp.maximum((1.0 - above).sum(), 1.0)
        diff = w1 - w0
        total = total + diff @ gram @ diff
    return total


def squared_correlation(target: Array, attrs: Array) -> Array:
    """Sum over target dims and attributes of the squared Pearson correlation."""
    corr = _standardize(target).T @ _standardize(attrs) / target.shape[0]
    return jnp.sum(corr * corr)


def _conditional(stat: Callable[[Array, Array], Array]):
    # Given the label: the statistic within the chosen responses plus within the rejected ones. The gold
    # utility is independent of artifacts attached given the label; a reward that reads an artifact is not.
    return lambda t_w, t_l, a_w, a_l: stat(t_w, a_w) + stat(t_l, a_l)


def _conditional_pairs(stat: Callable[[Array, Array], Array]):
    # Given the label, on pairs: the margin r_w - r_l against the artifact differences. A reward that shifts
    # with the prompt (token RMs) dilutes a per-response statistic without changing any pair's ranking; the
    # margin cancels such offsets, and an honest margin (quality difference) is independent of artifacts
    # attached given the label.
    return lambda t_w, t_l, a_w, a_l: stat(t_w - t_l, a_w - a_l)


def _marginal(stat: Callable[[Array, Array], Array]):
    # Pooled over labels (ODIN-style): also penalizes the label's own correlation with the artifact.
    return lambda t_w, t_l, a_w, a_l: stat(jnp.concatenate([t_w, t_l]), jnp.concatenate([a_w, a_l]))


INDEPENDENCE: dict[str, Callable[[Array, Array, Array, Array], Array]] = {
    "hsic": _conditional(hsic),
    "mmd_conditional": _conditional(mmd_split),
    "mmd_conditional_pair": _conditional_pairs(mmd_split),
    "decorrelation_conditional": _conditional(squared_correlation),
    "decorrelation": _marginal(squared_correlation),
    "hsic_marginal": _marginal(hsic),
}


# ---- the total -----------------------------------------------------------------------------------------


def split_pairs(out: dict) -> tuple[dict, dict]:
    """Outputs on [chosen; rejected] rows -> (chosen outputs, rejected outputs)."""
    n = out["reward"].shape[0] // 2
    return jax.tree.map(lambda x: x[:n], out), jax.tree.map(lambda x: x[n:], out)


def loss_weights(config: RMLossConfig) -> dict[str, float]:
    return {
        "pred": config.pred,
        "adv": config.adv,
        "adv_confusion": config.adv,
        "rec": config.rec,
        "kl_c": config.beta_c,
        "kl_n": config.beta_n,
        "attr_sup": config.attr_sup,
        "attr_adv": config.attr_adv,
        "indep": config.indep_weight,
    }


def rm_loss(
    out: dict, h: Array, config: RMLossConfig, attrs: Array | None = None
) -> tuple[Array, dict[str, Array], dict[str, Array]]:
    """(total, parts, metrics) for head outputs on rows [chosen (B); rejected (B)], features h [2B, H].

    attrs [2B, A]: known spurious attributes per response (needed by attr_* and independence terms).
    """
    out_w, out_l = split_pairs(out)
    margin = out_w["reward"] - out_l["reward"]
    parts = {"pred": jnp.mean(bt(margin))}
    metrics = {"accuracy": jnp.mean(margin > 0), "margin": jnp.mean(margin), "reward_sd": out["reward"].std()}
    if "mu_c" in out:
        parts["kl_c"] = gaussian_kl(out["mu_c"], out["logvar_c"])
    if "mu_n" in out:
        parts["kl_n"] = gaussian_kl(out["mu_n"], out["logvar_n"])
        # The decoder reconstructs h; the target is detached so reconstruction does not reshape the backbone.
        parts["rec"] = jnp.mean((out["h_hat"] - jax.lax.stop_gradient(h.astype(jnp.float32))) ** 2)
        objective = "confusion" if "adv_encoder" in out else "grl_bt"
        parts.update(ADV_OBJECTIVES[objective](out_w, out_l))
        metrics["adv_accuracy"] = jnp.mean(out_w["adv"] > out_l["adv"])
    needs_attrs = config.attr_sup or config.attr_adv or config.indep != "none"
    if needs_attrs and attrs is None:
        raise ValueError("attribute-aware losses need the batch's spurious attributes (attrs)")
    if attrs is not None and "attr_from_n" in out:
        parts["attr_sup"] = jnp.mean((out["attr_from_n"] - attrs) ** 2)
        parts["attr_adv"] = jnp.mean((out["attr_from_c"] - attrs) ** 2)
    if config.indep != "none":
        n = margin.shape[0]
        target = out["reward"][:, None] if config.indep_on == "reward" else out["z_c"]
        parts["indep"] = INDEPENDENCE[config.indep](target[:n], target[n:], attrs[:n], attrs[n:])
    weights = loss_weights(config)
    total = sum(weights[k] * v for k, v in parts.items())
    return total, parts, metrics


def head_pair_loss(
    head, batch: dict, config: RMLossConfig, lam: Array | float = 1.0, key: Array | None = None
) -> tuple[Array, dict[str, Array]]:
    """Loss of a RewardHead on a batch of feature pairs {h_w, h_l [B, H], attrs_w, attrs_l [B, A] optional}.

    Returns (total, metrics) with every loss part under `loss/<name>` (unweighted) and `loss` the total.
    """
    h = jnp.concatenate([batch["h_w"], batch["h_l"]])
    attrs = jnp.concatenate([batch["attrs_w"], batch["attrs_l"]]) if "attrs_w" in batch else None
    out = head(h, lam=lam, key=key)
    total, parts, metrics = rm_loss(out, h, config, attrs)
    return total, {"loss": total, **{f"loss/{k}": v for k, v in parts.items()}, **metrics}
