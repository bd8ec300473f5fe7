"""Advantage estimators behind names: `ADVANTAGES[name](batch, config) -> (advantages [B, T], returns | None)`.

`batch` is a dict of arrays in the trajectory layout (`alejax.rollout.trajectory`):
  loss_mask      [B, T]  1 on model tokens
  chunk_id       [B, T]  k >= 1 on the model tokens of the k-th turn, 0 elsewhere
  reward         [B]     the trajectory's reward R (a [B, T] broadcast copy is accepted too)
  group_id       [B]     any integer ids; rows sharing an id form a group (GRPO's samples of one task)
  values         [B, T]  (gae) the value head's V at each model token, aligned like the log-probs
  token_rewards  [B, T]  (optional) extra per-token rewards, e.g. -β·KL(π_old || π_ref) from `kl_penalty`
  turn_rewards   [B, K]  (optional) per-turn env rewards, used with `reward_placement="turn"`
Advantages are 0 off the loss mask. Every estimator is a pure jnp function: jit it with the config closed
over (the config is a frozen dataclass, hashable, so it may also be a static argument).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from alejax.rl.registry import Registry

Array = jax.Array
AdvantageFn = Callable[[Mapping[str, Array], "AdvantageConfig"], tuple[Array, Array | None]]


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
    gamma: float = 1.0  # per-token discount (gae, reinforce_pp)
    lam: float = 1.0  # GAE λ
    chunk_gamma: float = 0.95  # per-chunk discount (chunk_discounted, IPA Eq. 7)
    norm_std: bool = True  # grpo: divide by the group std
    std_ddof: int = 1  # ddof of the group std (1 = unbiased, as torch.std in GRPO implementations)
    eps: float = 1e-6
    failure_reward: float | None = None  # chunk_discounted: R of failed trajectories (R <= 0); None keeps R
    reward_placement: str = "outcome"  # gae / reinforce_pp: "outcome" (R on the last model token) or "turn"


ADVANTAGES: Registry = Registry("advantage estimator")


# -- shared pieces ---------------------------------------------------------------------------------------
def per_row(x: Array) -> Array:
    """[B] from [B] or from a [B, T] row-broadcast copy."""
    x = jnp.asarray(x)
    return x[:, 0] if x.ndim == 2 else x


def last_token_mask(loss_mask: Array) -> Array:
    """True at the last model token of each row (nowhere in a row without model tokens)."""
    positions = jnp.arange(loss_mask.shape[1])
    has = loss_mask > 0
    last = jnp.max(jnp.where(has, positions, -1), axis=1, keepdims=True)
    return has & (positions == last)


def chunk_segments(chunk_id: Array) -> tuple[Array, int]:
    """A flat segment id per token, unique per (row, chunk), and the static segment count B·(T+1)."""
    batch, length = chunk_id.shape
    # chunk ids lie in [0, T] (a chunk has at least one token), so (T + 1) ids per row never collide.
    seg = jnp.arange(batch)[:, None] * (length + 1) + jnp.clip(chunk_id, 0, length)
    return seg, batch * (length + 1)


def chunk_sum(x: Array, weights: Array, chunk_id: Array) -> tuple[Array, Array]:
    """Per token: Σ over its chunk of weights·x, and Σ of weights (chunk_id 0 tokens are never a chunk)."""
    seg, n = chunk_segments(chunk_id)
    w = weights * (chunk_id > 0)
    total = jax.ops.segment_sum((x * w).ravel(), seg.ravel(), n)[seg]
    count = jax.ops.segment_sum(w.ravel(), seg.ravel(), n)[seg]
    return total, count


def chunk_mean(x: Array, weights: Array, chunk_id: Array) -> Array:
    """Per token: the weighted mean of x over its chunk, Σ_c w·x / Σ_c w (0 where the chunk has no weight)."""
    total, count = chunk_sum(x, weights, chunk_id)
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


def chunk_returns(reward: Array, chunk_id: Array, gamma: float, failure_reward: float | None = None) -> Array:
    """IPA Eq. 7, per token: G_k = γ^(K−k)·R with K = the row's number of chunks (max chunk_id), 0 off chunks.

    With `failure_reward`, trajectories with R <= 0 use it in place of R (the final chunk decides success).
    """
    reward = per_row(reward).astype(jnp.float32)
    if failure_reward is not None:
        reward = jnp.where(reward > 0, reward, failure_reward)
    n_chunks = jnp.max(chunk_id, axis=1, keepdims=True)
    returns = reward[:, None] * jnp.power(gamma, (n_chunks - chunk_id).astype(jnp.float32))
    return jnp.where(chunk_id > 0, returns, 0.0)


def group_index(group_id: Array) -> Array:
    """Dense ids in [0, B) for arbitrary group ids, so segment ops run with the static num_segments = B."""
    group_id = per_row(group_id)
    _, inverse = jnp.unique(group_id, size=group_id.shape[0], return_inverse=True)
    return inverse.reshape(-1)


def group_stats(reward: Array, group_id: Array, ddof: int = 0) -> tuple[Array, Array, Array]:
    """Per row: its group's size n, mean reward, and std with `ddof` (0 for a group of one)."""
    reward = per_row(reward).astype(jnp.float32)
    seg = group_index(group_id)
    n_seg = reward.shape[0]
    count = jax.ops.segment_sum(jnp.ones_like(reward), seg, n_seg)[seg]
    mean = jax.ops.segment_sum(reward, seg, n_seg)[seg] / count
    # Centered second moment (not E[r²] − mean²) so equal rewards give exactly 0, never a tiny negative.
    sq = jax.ops.segment_sum((reward - mean) ** 2, seg, n_seg)[seg]
    std = jnp.sqrt(sq / jnp.maximum(count - ddof, 1.0))
    return count, mean, std


def reverse_linear_scan(coeff: Array, inputs: Array) -> Array:
    """x_t = inputs_t + coeff_t · x_{t+1} along axis 1 with x_T = 0, as a log-depth associative scan."""

    def combine(inner, outer):
        # Affine maps x -> a·x + b; `inner` covers the later positions, `outer` the earlier ones.
        a_in, b_in = inner
        a_out, b_out = outer
        return a_out * a_in, b_out + a_out * b_in

    _, x = jax.lax.associative_scan(combine, (coeff, inputs), reverse=True, axis=1)
    return x


def token_level_rewards(batch: Mapping[str, Array], config: AdvantageConfig) -> Array:
    """Per-token rewards r_t on model tokens: the outcome R on the last model token ("outcome") or turn k's
    reward on the last token of chunk k ("turn"), plus `token_rewards` (e.g. a KL penalty) when given."""
    mask = jnp.asarray(batch["loss_mask"]).astype(jnp.float32)
    if config.reward_placement == "outcome":
        rewards = jnp.where(last_token_mask(mask), per_row(batch["reward"])[:, None], 0.0)
    elif config.reward_placement == "turn":
        chunk_id = jnp.asarray(batch["chunk_id"])
        turn_rewards = jnp.asarray(batch["turn_rewards"], jnp.float32)
        seg, n = chunk_segments(chunk_id)
        positions = jnp.broadcast_to(jnp.arange(mask.shape[1]), mask.shape)
        in_chunk = (mask > 0) & (chunk_id > 0)
        chunk_last = jax.ops.segment_max(jnp.where(in_chunk, positions, -1).ravel(), seg.ravel(), n)[seg]
        turn = jnp.clip(chunk_id - 1, 0, turn_rewards.shape[1] - 1)
        per_turn = jnp.take_along_axis(turn_rewards, turn, axis=1)
        known = chunk_id <= turn_rewards.shape[1]  # a chunk with no recorded turn reward gets none
        rewards = jnp.where(in_chunk & known & (positions == chunk_last), per_turn, 0.0)
    else:
        raise ValueError(f"reward_placement must be 'outcome' or 'turn', got {config.reward_placement!r}")
    if "token_rewards" in batch:
        rewards = rewards + jnp.asarray(batch["token_rewards"], jnp.float32)
    return rewards * mask


def masked_whiten(x: Array, mask: Array, eps: float) -> Array:
    """(x − mean) / (std + eps) with mean and (biased) std over the masked entries; 0 off the mask."""
    n = jnp.maximum(mask.sum(), 1.0)
    mean = (x * mask).sum() / n
    std = jnp.sqrt((((x - mean) * mask) ** 2).sum() / n)
    return (x - mean) / (std + eps) * mask


def _model_token_returns(rewards: Array, mask: Array, gamma: float) -> Array:
    """G_t = r_t + γ·G_{t'} with t' the next model token: observation tokens are skipped, not discounted."""
    coeff = jnp.where(mask > 0, gamma, 1.0)
    return reverse_linear_scan(coeff, rewards * mask) * mask


# -- estimators ------------------------------------------------------------------------------------------
@ADVANTAGES.register("gae")
def gae(batch: Mapping[str, Array], config: AdvantageConfig) -> tuple[Array, Array]:
    """GAE over model tokens: δ_t = r_t + γ·V_{t'} − V_t, A_t = δ_t + γλ·A_{t'}, returns = A + V.

    t' is the next model token (observation tokens are the env's transition, not a step), V after the last
    model token is 0 (terminal), and r_t comes from `token_level_rewards`.
    """
    mask = jnp.asarray(batch["loss_mask"]).astype(jnp.float32)
    values = jnp.asarray(batch["values"], jnp.float32) * mask
    rewards = token_level_rewards(batch, config)
    # next_value[t] = V at the first model token after t: y_t = m_t·V_t + (1 − m_t)·y_{t+1}, shifted by one.
    carried = reverse_linear_scan(1.0 - mask, values)
    next_value = jnp.concatenate([carried[:, 1:], jnp.zeros_like(carried[:, :1])], axis=1)
    delta = (rewards + config.gamma * next_value - values) * mask
    advantages = reverse_linear_scan(jnp.where(mask > 0, config.gamma * config.lam, 1.0), delta) * mask
    return advantages, (advantages + values) * mask


@ADVANTAGES.register("grpo")
def grpo(batch: Mapping[str, Array], config: AdvantageConfig) -> tuple[Array, None]:
    """GRPO: A_i = (R_i − mean_group R) / (std_group R + eps) on every model token (std optional)."""
    reward = per_row(batch["reward"]).astype(jnp.float32)
    _, mean, std = group_stats(reward, batch["group_id"], config.std_ddof)
    adv = reward - mean
    if config.norm_std:
        adv = adv / (std + config.eps)
    return adv[:, None] * jnp.asarray(batch["loss_mask"], jnp.float32), None


@ADVANTAGES.register("dr_grpo")
def dr_grpo(batch: Mapping[str, Array], config: AdvantageConfig) -> tuple[Array, None]:
    """Dr.GRPO: A_i = R_i − mean_group R (no std division, which over-weights easy and hard prompts)."""
    return grpo(batch, dataclasses.replace(config, norm_std=False))


@ADVANTAGES.register("rloo")
def rloo(batch: Mapping[str, Array], config: AdvantageConfig) -> tuple[Array, None]:
    """RLOO: A_i = R_i − mean of the other rewards in the group = n/(n−1)·(R_i − mean); 0 in a group of one."""
    reward = per_row(batch["reward"]).astype(jnp.float32)
    count, mean, _ = group_stats(reward, batch["group_id"])
    adv = jnp.where(count > 1, (reward - mean) * count / jnp.maximum(count - 1.0, 1.0), 0.0)
    return adv[:, None] * jnp.asarray(batch["loss_mask"], jnp.float32), None


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(batch: Mapping[str, Array], config: AdvantageConfig) -> tuple[Array, Array]:
    """REINFORCE++: G_t = Σ_{s>=t} γ^(s−t)·r_s over model tokens (r may fold in −β·KL via `token_rewards`),
    A = (G − mean) / (std + eps) with mean and std over all model tokens of the batch."""
    mask = jnp.asarray(batch["loss_mask"]).astype(jnp.float32)
    returns = _model_token_returns(token_level_rewards(batch, config), mask, config.gamma)
    return masked_whiten(returns, mask, config.eps), returns


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline(batch: Mapping[str, Array], config: AdvantageConfig) -> tuple[Array, Array]:
    """REINFORCE++-baseline: R_i − mean_group R as the outcome, then REINFORCE++ (returns, batch whitening)."""
    reward = per_row(batch["reward"]).astype(jnp.float32)
    _, mean, _ = group_stats(reward, batch["group_id"])
    return reinforce_pp(dict(batch, reward=reward - mean), config)


@ADVANTAGES.register("chunk_discounted")
def chunk_discounted(batch: Mapping[str, Array], config: AdvantageConfig) -> tuple[Array, Array]:
    """IPA Eq. 7: every token of chunk k gets G_k = γ^(K−k)·R (γ = chunk_gamma, K = the row's chunk count)."""
    mask = jnp.asarray(batch["loss_mask"], jnp.float32)
    returns = chunk_returns(
        batch["reward"], jnp.asarray(batch["chunk_id"]), config.chunk_gamma, config.failure_reward
    )
    returns = returns * mask
    return returns, returns


def get_advantage(name: str) -> AdvantageFn:
    """The estimator registered as `name` (KeyError listing the known names otherwise)."""
    return ADVANTAGES[name]
