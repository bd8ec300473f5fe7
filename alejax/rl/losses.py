"""Policy losses behind names, loss aggregations, KL to a reference, entropy bonus, sampler-mismatch correction.

  POLICY_LOSSES[name](inputs: LossInputs, config: LossConfig) -> (loss_per_token [B, T], metrics)
  AGGREGATIONS[name](loss_per_token, mask, config) -> scalar
  AGGREGATION_WEIGHTS[name](mask, config) -> scalar   its denominator (how gradient accumulation weighs)
  rl_loss(inputs, config) -> (scalar, metrics)      the whole objective, composed from the named pieces

Three log-probabilities stay distinct (DESIGN.md): logp = log π_θ (the only input that carries gradient),
old_logp = log π_old (train weights before the update), behaviour_logp = log μ (the sampler). Policy ratios
are π_θ / π_old; the sampler/trainer mismatch π_old / μ is corrected separately (`mismatch_correction`), or
inside IPA's chunk mask. Per-token losses are 0 off the loss mask; metrics are scalars.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from alejax.rl.advantages import chunk_mean, chunk_sum, per_row
from alejax.rl.registry import Registry
from alejax.train.step import LOSS_WEIGHT

Array = jax.Array
Metrics = dict[str, Array]

# exp() of a log-ratio beyond ±20 is a numerical accident, not a signal; clamping keeps ratios finite.
LOG_RATIO_CLAMP = 20.0


class LossInputs(NamedTuple):
    logp: Array  # [B, T] log π_θ(tokens[t] | tokens[<t]), as `alejax.train.step.token_logprobs`
    old_logp: Array  # [B, T] log π_old
    behaviour_logp: Array  # [B, T] log μ (sampler)
    advantages: Array  # [B, T], 0 off the loss mask
    loss_mask: Array  # [B, T] 1 on model tokens
    chunk_id: Array  # [B, T] k >= 1 on the k-th turn's model tokens, 0 elsewhere
    reward: Array  # [B] trajectory reward R (a [B, T] broadcast copy works too)
    ref_logp: Array | None = None  # [B, T] log π_ref, for the KL term
    entropy: Array | None = None  # [B, T] per-token entropy of π_θ, for the entropy bonus


@dataclasses.dataclass(frozen=True)
class LossConfig:
    policy_loss: str = "ppo_clip"
    aggregation: str = "token_mean"
    norm_constant: float | None = None  # seq_mean_token_sum_norm's divisor per row (None: T)
    # ppo_clip
    clip_eps: float = 0.2  # ratio clipped to [1 − clip_eps, 1 + clip_eps_high]
    clip_eps_high: float | None = None  # "clip-higher" (DAPO, e.g. 0.28); None: clip_eps
    dual_clip: float | None = None  # c > 1: a negative advantage's loss is capped at c·|A| (dual-clip PPO)
    # gspo (sequence ratios sit near 1, hence the paper's tiny ε)
    gspo_clip_eps: float = 3e-4
    gspo_clip_eps_high: float | None = 4e-4
    # topr: "token" (per-token ratio) or "sequence" (trajectory ratio, the product over its tokens)
    topr_level: str = "token"
    # ipa_chunk (spec/ipa.md); its G_c are the advantages (chunk_discounted: G_k = γ^(K−k)·R, Eq. 7)
    ipa_mismatch_cap: float = 5.0  # H: drop a chunk where exp(mean (log π_old − log μ)) > H
    # KL to the reference and entropy bonus, added to the per-token loss by `rl_loss`
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    entropy_coef: float = 0.0
    # sampler/trainer mismatch correction on π_old / μ (off unless tis_cap or mis_high / mis_low is set)
    mismatch_level: str = "token"  # "token", "chunk" or "sequence"
    mismatch_reduce: str = "mean"  # chunk/sequence log-ratio: "mean" (geometric mean) or "sum" (product)
    tis_cap: float | None = None  # TIS: weight min(ratio, cap)
    mis_high: float | None = None  # MIS: drop where ratio > mis_high
    mis_low: float | None = None  # MIS: drop where ratio < mis_low


POLICY_LOSSES: Registry = Registry("policy loss")
AGGREGATIONS: Registry = Registry("loss aggregation")
KL_PENALTIES: Registry = Registry("KL estimator")

PolicyLossFn = Callable[[LossInputs, LossConfig], tuple[Array, Metrics]]
AggregationFn = Callable[[Array, Array, LossConfig], Array]


# -- helpers ---------------------------------------------------------------------------------------------
def masked_mean(x: Array, mask: Array) -> Array:
    """Σ x·m / Σ m (0 when the mask is empty)."""
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _row_mean(x: Array, mask: Array) -> Array:
    """[B, 1] mean of x over each row's masked tokens (0 for a row without any)."""
    return (x * mask).sum(1, keepdims=True) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)


def _log_ratio(logp: Array, old_logp: Array) -> Array:
    return jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _approx_kl(log_ratio: Array, mask: Array) -> Array:
    """k3 estimate of KL(π_old || π_θ) on π_old's samples: E[r − 1 − log r], r = π_θ / π_old."""
    return masked_mean(jnp.exp(log_ratio) - 1.0 - log_ratio, mask)


def _clipped_surrogate(ratio: Array, advantages: Array, low: float, high: float) -> tuple[Array, Array]:
    """PPO's max(−A·r, −A·clip(r, low, high)), and where the clipped branch is taken (zero gradient)."""
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, low, high)
    is_clipped = clipped > unclipped
    return jnp.where(is_clipped, clipped, unclipped), is_clipped


# -- policy losses ---------------------------------------------------------------------------------------
@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """PPO: r = π_θ/π_old, ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)); dual clip: ℓ = min(ℓ, c·|A|) for A < 0."""
    mask = inputs.loss_mask.astype(jnp.float32)
    adv = inputs.advantages
    log_ratio = _log_ratio(inputs.logp, inputs.old_logp)
    ratio = jnp.exp(log_ratio)
    high = config.clip_eps if config.clip_eps_high is None else config.clip_eps_high
    loss, is_clipped = _clipped_surrogate(ratio, adv, 1.0 - config.clip_eps, 1.0 + high)
    metrics = {
        "clip_fraction": masked_mean(is_clipped, mask),
        "clip_low_fraction": masked_mean(is_clipped & (adv < 0), mask),
        "clip_high_fraction": masked_mean(is_clipped & (adv > 0), mask),
        "ratio_mean": masked_mean(ratio, mask),
        "approx_kl": _approx_kl(log_ratio, mask),
    }
    if config.dual_clip is not None:
        # Far off-policy negative-advantage tokens would otherwise get an unbounded push down.
        cap = -adv * config.dual_clip
        dual = (adv < 0) & (loss > cap)
        loss = jnp.where(dual, cap, loss)
        metrics["dual_clip_fraction"] = masked_mean(dual, mask)
    return loss * mask, metrics


@POLICY_LOSSES.register("gspo")
def gspo(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """GSPO: s_i = exp(mean over the sequence of (log π_θ − log π_old)), ℓ = max(−A·s, −A·clip(s, 1−ε, 1+ε_high)).

    Written in GSPO-token form s_{i,t} = sg(s_i)·π_θ(y_t)/sg(π_θ(y_t)): its value is s_i, its gradient is
    s_i·∇log π_θ(y_t); with sequence-level advantages and the "seq_mean_token_mean" aggregation this is
    exactly GSPO's gradient s_i·A_i·(1/|y_i|)·Σ_t ∇log π_θ(y_t).
    """
    mask = inputs.loss_mask.astype(jnp.float32)
    seq_log_ratio = jnp.clip(
        _row_mean(inputs.logp - inputs.old_logp, mask), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP
    )
    log_ratio = jax.lax.stop_gradient(seq_log_ratio) + inputs.logp - jax.lax.stop_gradient(inputs.logp)
    ratio = jnp.exp(log_ratio)
    high = config.gspo_clip_eps if config.gspo_clip_eps_high is None else config.gspo_clip_eps_high
    loss, is_clipped = _clipped_surrogate(ratio, inputs.advantages, 1.0 - config.gspo_clip_eps, 1.0 + high)
    has_tokens = (mask.sum(1) > 0).astype(jnp.float32)
    seq_ratio = jnp.exp(seq_log_ratio[:, 0])
    metrics = {
        "clip_fraction": masked_mean(is_clipped, mask),
        "seq_ratio_mean": masked_mean(seq_ratio, has_tokens),
        "approx_kl": _approx_kl(_log_ratio(inputs.logp, inputs.old_logp), mask),
    }
    return loss * mask, metrics


@POLICY_LOSSES.register("topr")
def topr(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """TOPR: ℓ = −w·A·log π_θ with w = 1 where A >= 0 (no IS) and w = sg(clip(π_θ/π_old, 0, 1)) where A < 0.

    `topr_level="sequence"` uses the trajectory's ratio (the product over its tokens), as in the paper.
    """
    mask = inputs.loss_mask.astype(jnp.float32)
    log_ratio = jax.lax.stop_gradient(inputs.logp - inputs.old_logp) * mask
    if config.topr_level == "sequence":
        log_ratio = jnp.broadcast_to(log_ratio.sum(1, keepdims=True), log_ratio.shape)
    elif config.topr_level != "token":
        raise ValueError(f"topr_level must be 'token' or 'sequence', got {config.topr_level!r}")
    # clip(exp(x), 0, 1) = exp(min(x, 0)), which cannot overflow even for a long sequence's summed log-ratio.
    truncated = jnp.exp(jnp.minimum(log_ratio, 0.0))
    negative = inputs.advantages < 0
    weight = jnp.where(negative, truncated, 1.0)
    loss = -weight * inputs.advantages * inputs.logp
    metrics = {
        "negative_fraction": masked_mean(negative, mask),
        "truncated_fraction": masked_mean(negative & (log_ratio < 0), mask),
        "weight_mean": masked_mean(weight, mask),
        "approx_kl": _approx_kl(_log_ratio(inputs.logp, inputs.old_logp), mask),
    }
    return loss * mask, metrics


@POLICY_LOSSES.register("ipa_chunk")
def ipa_chunk(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """IPA (spec/ipa.md, Eq. 7-9): ℓ_t = −sg(w_c)·G_c·m_c·log π_θ(t) on the tokens of chunk c, where
    ρ_c = exp(mean_c (log π_θ − log π_old)), m_c = 1[exp(mean_c (log π_old − log μ)) <= H],
    G_c = the advantages the registry computed (chunk_discounted: γ^(K−k)·R, Eq. 7) and w_c = 1 for
    successful trajectories (R > 0), clip(ρ_c, 0, 1) for failed ones.
    """
    mask = inputs.loss_mask.astype(jnp.float32)
    chunk_id = inputs.chunk_id
    log_rho = jax.lax.stop_gradient(chunk_mean(inputs.logp - inputs.old_logp, mask, chunk_id))
    mismatch = chunk_mean(inputs.old_logp - inputs.behaviour_logp, mask, chunk_id)
    keep = (mismatch <= math.log(config.ipa_mismatch_cap)).astype(jnp.float32)  # in log space: no overflow
    returns = inputs.advantages
    success = (per_row(inputs.reward) > 0)[:, None]
    weight = jnp.where(success, 1.0, jnp.exp(jnp.minimum(log_rho, 0.0)))  # clip(ρ, 0, 1), overflow-free
    loss = -weight * returns * keep * inputs.logp * mask
    # Each token counts 1/|its chunk|, so these sums count chunks rather than tokens.
    _, chunk_size = chunk_sum(mask, mask, chunk_id)
    per_chunk = jnp.where(chunk_size > 0, mask / jnp.where(chunk_size > 0, chunk_size, 1.0), 0.0)
    failed = (~success).astype(jnp.float32) * per_chunk
    metrics = {
        "chunk_ratio_mean": masked_mean(jnp.exp(log_rho), per_chunk),
        "chunk_masked_fraction": masked_mean(1.0 - keep, per_chunk),
        "failure_clip_fraction": masked_mean(log_rho > 0, failed),
        "success_fraction": masked_mean(success.astype(jnp.float32), per_chunk),
        "approx_kl": _approx_kl(_log_ratio(inputs.logp, inputs.old_logp), mask),
    }
    return loss, metrics


def get_policy_loss(name: str) -> PolicyLossFn:
    """The policy loss registered as `name` (KeyError listing the known names otherwise)."""
    return POLICY_LOSSES[name]


# -- aggregations ----------------------------------------------------------------------------------------
@AGGREGATIONS.register("token_mean")
def token_mean(loss: Array, mask: Array, config: LossConfig) -> Array:
    """Σ_{b,t} ℓ·m / Σ_{b,t} m: every token weighs the same (long sequences weigh more)."""
    return masked_mean(loss, mask)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(loss: Array, mask: Array, config: LossConfig) -> Array:
    """mean over rows with tokens of (Σ_t ℓ·m / Σ_t m): every sequence weighs the same (GRPO, GSPO)."""
    has_tokens = (mask.sum(1) > 0).astype(jnp.float32)
    return masked_mean(_row_mean(loss, mask)[:, 0], has_tokens)


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(loss: Array, mask: Array, config: LossConfig) -> Array:
    """mean over rows with tokens of Σ_t ℓ·m."""
    has_tokens = (mask.sum(1) > 0).astype(jnp.float32)
    return masked_mean((loss * mask).sum(1), has_tokens)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(loss: Array, mask: Array, config: LossConfig) -> Array:
    """Σ_{b,t} ℓ·m / (B·C), C = norm_constant (default T): Dr.GRPO's constant normalizer, no length bias."""
    constant = loss.shape[1] if config.norm_constant is None else config.norm_constant
    return (loss * mask).sum() / (loss.shape[0] * constant)


def get_aggregation(name: str) -> AggregationFn:
    """The aggregation registered as `name` (KeyError listing the known names otherwise)."""
    return AGGREGATIONS[name]


# What each aggregation divides by. A microbatched train step weighs each part's gradient by it
# (`alejax.train.step.LOSS_WEIGHT`), which makes the accumulated gradient the whole batch's exactly.
AGGREGATION_WEIGHTS: Registry = Registry("aggregation weight")


@AGGREGATION_WEIGHTS.register("token_mean")
def _token_mean_weight(mask: Array, config: LossConfig) -> Array:
    return mask.sum()


@AGGREGATION_WEIGHTS.register("seq_mean_token_mean")
@AGGREGATION_WEIGHTS.register("seq_mean_token_sum")
def _rows_with_tokens(mask: Array, config: LossConfig) -> Array:
    return (mask.sum(1) > 0).sum().astype(jnp.float32)


@AGGREGATION_WEIGHTS.register("seq_mean_token_sum_norm")
def _rows(mask: Array, config: LossConfig) -> Array:
    return jnp.asarray(mask.shape[0], jnp.float32)


def aggregation_weight(mask: Array, config: LossConfig) -> Array:
    """The denominator of `config.aggregation` on `mask`; the row count for an aggregation registered without
    one in AGGREGATION_WEIGHTS (equal microbatches then weigh equally)."""
    weight = AGGREGATION_WEIGHTS.get(config.aggregation, _rows)
    return weight(mask, config)


# -- KL to a reference, entropy --------------------------------------------------------------------------
@KL_PENALTIES.register("k1")
def kl_k1(logp: Array, ref_logp: Array) -> Array:
    """k1 = log π − log π_ref (unbiased for KL(π || π_ref) on π's samples; can be negative)."""
    return logp - ref_logp


@KL_PENALTIES.register("k2")
def kl_k2(logp: Array, ref_logp: Array) -> Array:
    """k2 = ½·(log π − log π_ref)²; its gradient is that of KL(π || π_ref) on π's samples."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_PENALTIES.register("k3")
def kl_k3(logp: Array, ref_logp: Array) -> Array:
    """k3 = π_ref/π − 1 − log(π_ref/π) >= 0: unbiased, low variance (GRPO's KL term)."""
    log_ratio = jnp.clip(ref_logp - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return jnp.exp(log_ratio) - 1.0 - log_ratio


def kl_penalty(logp: Array, ref_logp: Array, kind: str = "k3") -> Array:
    """Per-token KL(π || π_ref) estimate [B, T] (unmasked). In the loss, gradient flows through logp; in the
    reward, pass stop-gradient'd (or π_old) log-probs and fold −β·kl into `token_rewards`."""
    return KL_PENALTIES[kind](logp, ref_logp)


def entropy_bonus(entropy: Array, loss_mask: Array, coef: float) -> Array:
    """Per-token term −coef·H_t·m_t to add to the loss (maximizing entropy)."""
    return -coef * entropy * loss_mask


# -- sampler / trainer mismatch --------------------------------------------------------------------------
def mismatch_correction(
    old_logp: Array, behaviour_logp: Array, loss_mask: Array, chunk_id: Array, config: LossConfig
) -> tuple[Array, Array, Metrics]:
    """Importance weights and a keep mask for π_old / μ at token, chunk or sequence level.

    log w = log π_old − log μ per token, or its mean ("mean": a geometric mean) / sum ("sum": the product)
    over the token's chunk or sequence. TIS: weight = min(w, tis_cap); MIS: drop where w > mis_high or
    w < mis_low. Returns (weights [B, T]: the TIS weight on kept tokens, 0 elsewhere; mask [B, T]: the loss
    mask with MIS drops; metrics). Neither depends on π_θ, so no stop-gradient is needed.
    """
    mask = loss_mask.astype(jnp.float32)
    token_log_w = (old_logp - behaviour_logp) * mask
    if config.mismatch_reduce not in ("mean", "sum"):
        raise ValueError(f"mismatch_reduce must be 'mean' or 'sum', got {config.mismatch_reduce!r}")
    if config.mismatch_level == "token":
        log_w = token_log_w
    elif config.mismatch_level == "chunk":
        total, count = chunk_sum(token_log_w, mask, chunk_id)
        log_w = total if config.mismatch_reduce == "sum" else total / jnp.maximum(count, 1.0)
    elif config.mismatch_level == "sequence":
        total = token_log_w.sum(1, keepdims=True)
        count = mask.sum(1, keepdims=True)
        log_w = total if config.mismatch_reduce == "sum" else total / jnp.maximum(count, 1.0)
        log_w = jnp.broadcast_to(log_w, mask.shape)
    else:
        raise ValueError(f"mismatch_level must be token, chunk or sequence, got {config.mismatch_level!r}")
    keep = mask > 0
    if config.mis_high is not None:
        keep &= log_w <= math.log(config.mis_high)
    if config.mis_low is not None:
        keep &= log_w >= math.log(config.mis_low)
    keep_mask = keep.astype(jnp.float32)
    ratio = jnp.exp(jnp.clip(log_w, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    # Per token k3 = w − 1 − log w on μ's samples estimates KL(μ || π_old), the size of the mismatch.
    metrics = {
        "mismatch_ratio_mean": masked_mean(ratio, mask),
        "mismatch_masked_fraction": masked_mean(1.0 - keep_mask, mask),
        "mismatch_kl": masked_mean(jnp.exp(token_log_w) - 1.0 - token_log_w, mask),
    }
    if config.tis_cap is None:
        weights = jnp.ones_like(ratio)  # MIS only: kept tokens keep weight 1
    else:
        weights = jnp.minimum(ratio, config.tis_cap)
        metrics["mismatch_truncated_fraction"] = masked_mean(ratio > config.tis_cap, keep_mask)
    return weights * keep_mask, keep_mask, metrics


# -- IPA's imitation fallback ----------------------------------------------------------------------------
def imitation_loss(logp: Array, il_weight: Array) -> tuple[Array, Metrics]:
    """IPA Eq. 10's imitation term: −Σ G_j·log π_θ(expert chunk j tokens | prefix), as a mean over the
    marked tokens. `il_weight` [B, T] is G_j = γ^(K*−j) on the replayed expert tokens of chunks j <= c_f
    (set by `alejax.rl.resample`), 0 elsewhere; those tokens are context (loss_mask 0) for the RL term."""
    marked = (il_weight > 0).astype(jnp.float32)
    n = marked.sum()
    loss = -(il_weight * logp).sum() / jnp.maximum(n, 1.0)
    return loss, {"il_loss": loss, "il_tokens": n, "il_nll": -masked_mean(logp, marked)}


# -- the whole objective ---------------------------------------------------------------------------------
def rl_loss(inputs: LossInputs, config: LossConfig) -> tuple[Array, Metrics]:
    """loss = aggregate( w_IS·ℓ_policy + β·KL(π_θ || π_ref) − c·H ) over the (MIS-masked) loss mask.

    Tokens dropped by MIS are treated as non-model tokens by the policy loss too (they leave its chunk and
    sequence means and the aggregation's denominators). metrics[LOSS_WEIGHT] is that denominator, so a
    microbatched train step gives the whole minibatch's gradient for every aggregation.
    """
    mask = inputs.loss_mask.astype(jnp.float32)
    metrics: Metrics = {}
    weights = mask
    if config.tis_cap is not None or config.mis_high is not None or config.mis_low is not None:
        weights, mask, mismatch_metrics = mismatch_correction(
            inputs.old_logp, inputs.behaviour_logp, mask, inputs.chunk_id, config
        )
        metrics.update(mismatch_metrics)
    inputs = inputs._replace(loss_mask=mask)
    policy_tok, policy_metrics = POLICY_LOSSES[config.policy_loss](inputs, config)
    metrics.update(policy_metrics)
    aggregate = AGGREGATIONS[config.aggregation]
    total = policy_tok * weights
    metrics["policy_loss"] = aggregate(total, mask, config)
    if config.kl_coef > 0:
        if inputs.ref_logp is None:
            raise ValueError("kl_coef > 0 needs LossInputs.ref_logp")
        kl = kl_penalty(inputs.logp, inputs.ref_logp, config.kl_kind) * mask
        total = total + config.kl_coef * kl
        metrics["kl"] = masked_mean(kl, mask)
    if config.entropy_coef > 0:
        if inputs.entropy is None:
            raise ValueError("entropy_coef > 0 needs LossInputs.entropy")
        total = total + entropy_bonus(inputs.entropy, mask, config.entropy_coef)
        metrics["entropy"] = masked_mean(inputs.entropy, mask)
    loss = aggregate(total, mask, config)
    metrics["loss"] = loss
    metrics[LOSS_WEIGHT] = aggregation_weight(mask, config)
    return loss, metrics
