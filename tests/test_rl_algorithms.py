"""Advantage estimators, policy losses, aggregations, KL and mismatch correction against numpy references.

Every reference below is a plain loop over rows / groups / chunks / tokens, written from the formulas and
not from the jnp code. The jnp side always runs under jax.jit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alejax.rl import (
    ADVANTAGES,
    AGGREGATIONS,
    KL_PENALTIES,
    POLICY_LOSSES,
    AdvantageConfig,
    LossConfig,
    LossInputs,
    get_advantage,
    get_aggregation,
    get_policy_loss,
    kl_penalty,
    mismatch_correction,
    rl_loss,
)

B, T = 9, 40
EMPTY_ROW = 4  # a row with no model tokens (e.g. the episode aborted before the model spoke)
TOL = dict(rtol=2e-4, atol=2e-5)


# -- random batches --------------------------------------------------------------------------------------
def random_layout(rng: np.random.Generator, batch: int = B, length: int = T):
    """loss_mask / chunk_id with a prompt, several model chunks separated by observations, and padding."""
    mask = np.zeros((batch, length), np.float32)
    chunk = np.zeros((batch, length), np.int32)
    for b in range(batch):
        if b == EMPTY_ROW:
            continue
        t, k, end = int(rng.integers(1, 5)), 0, length - int(rng.integers(0, 6))
        while t < end:
            n = int(rng.integers(1, 6))
            k += 1
            mask[b, t : min(t + n, end)] = 1
            chunk[b, t : min(t + n, end)] = k
            t += n + int(rng.integers(1, 4))
    return mask, chunk


def random_groups(rng: np.random.Generator, batch: int = B) -> np.ndarray:
    """Arbitrary (non-dense, unsorted) group ids, including a singleton group."""
    ids = rng.choice(np.array([17, 3, 250, 9]), size=batch - 1)
    return rng.permutation(np.concatenate([ids, [1000]])).astype(np.int32)


def random_batch(seed: int):
    rng = np.random.default_rng(seed)
    mask, chunk = random_layout(rng)
    reward = rng.choice(np.array([0.0, 1.0, 0.5, -0.5]), size=B).astype(np.float32)
    return {
        "loss_mask": mask,
        "chunk_id": chunk,
        "reward": reward,
        "group_id": random_groups(rng),
        "values": (rng.normal(size=(B, T)) * mask).astype(np.float32),
        "token_rewards": (rng.normal(size=(B, T)) * 0.1 * mask).astype(np.float32),
        "turn_rewards": rng.normal(size=(B, 5)).astype(np.float32),
    }


def random_loss_inputs(seed: int, spread: float = 0.3, advantages=None) -> LossInputs:
    rng = np.random.default_rng(seed)
    batch = random_batch(seed)
    mask = batch["loss_mask"]
    logp = -rng.uniform(0.05, 3.0, size=(B, T))
    old = logp + rng.normal(size=(B, T)) * spread
    behaviour = old + rng.normal(size=(B, T)) * spread
    if advantages is None:
        advantages = rng.normal(size=(B, T))
    f32 = lambda x: np.asarray(x * mask, np.float32)
    return LossInputs(
        logp=f32(logp),
        old_logp=f32(old),
        behaviour_logp=f32(behaviour),
        advantages=f32(advantages),
        loss_mask=mask,
        chunk_id=batch["chunk_id"],
        reward=batch["reward"],
        ref_logp=f32(logp + rng.normal(size=(B, T)) * 0.2),
        entropy=f32(rng.uniform(0.0, 2.0, size=(B, T))),
    )


def chunks_of(mask_row, chunk_row):
    """{k: [token positions]} for the model tokens of one row."""
    out: dict[int, list[int]] = {}
    for t in range(len(mask_row)):
        if mask_row[t] > 0 and chunk_row[t] > 0:
            out.setdefault(int(chunk_row[t]), []).append(t)
    return out


def jit_adv(name, config):
    return jax.jit(lambda batch: get_advantage(name)(batch, config))


def jit_loss(name, config):
    return jax.jit(lambda inputs: get_policy_loss(name)(inputs, config))


def np64(x):
    return np.asarray(x, np.float64)


# -- registries ------------------------------------------------------------------------------------------
def test_registries_name_the_known_algorithms():
    assert set(ADVANTAGES) >= {"gae", "grpo", "dr_grpo", "rloo", "reinforce_pp", "chunk_discounted"}
    assert set(POLICY_LOSSES) >= {"ppo_clip", "gspo", "topr", "ipa_chunk"}
    assert set(AGGREGATIONS) >= {"token_mean", "seq_mean_token_mean", "seq_mean_token_sum"}
    assert set(KL_PENALTIES) == {"k1", "k2", "k3"}
    for getter, known in [
        (get_advantage, "grpo"),
        (get_policy_loss, "ppo_clip"),
        (get_aggregation, "token_mean"),
    ]:
        with pytest.raises(KeyError, match=known):
            getter("no_such_algorithm")
    with pytest.raises(ValueError, match="already registered"):
        ADVANTAGES.register("grpo")(lambda batch, config: None)


# -- advantages ------------------------------------------------------------------------------------------
def np_group_adv(reward, group, kind, eps=1e-6, ddof=1):
    out = np.zeros(len(reward))
    for i in range(len(reward)):
        members = [j for j in range(len(reward)) if group[j] == group[i]]
        rs = np64([reward[j] for j in members])
        if kind == "grpo":
            std = np.std(rs, ddof=ddof) if len(rs) > ddof else 0.0
            out[i] = (reward[i] - rs.mean()) / (std + eps)
        elif kind == "dr_grpo":
            out[i] = reward[i] - rs.mean()
        elif kind == "rloo":
            others = [reward[j] for j in members if j != i]
            out[i] = reward[i] - np.mean(others) if others else 0.0
    return out


@pytest.mark.parametrize("kind", ["grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("seed", [0, 1])
def test_group_advantages_match_numpy(kind, seed):
    batch = random_batch(seed)
    adv, returns = jit_adv(kind, AdvantageConfig())(batch)
    expected = np_group_adv(batch["reward"], batch["group_id"], kind)[:, None] * batch["loss_mask"]
    np.testing.assert_allclose(adv, expected, **TOL)
    assert returns is None
    assert np.all(np.asarray(adv)[EMPTY_ROW] == 0)  # a row without model tokens gets nothing


def test_grpo_std_optional_and_ddof():
    batch = random_batch(2)
    no_std, _ = jit_adv("grpo", AdvantageConfig(norm_std=False))(batch)
    dr, _ = jit_adv("dr_grpo", AdvantageConfig())(batch)
    np.testing.assert_allclose(no_std, dr, **TOL)
    biased, _ = jit_adv("grpo", AdvantageConfig(std_ddof=0))(batch)
    expected = np_group_adv(batch["reward"], batch["group_id"], "grpo", ddof=0)[:, None] * batch["loss_mask"]
    np.testing.assert_allclose(biased, expected, **TOL)


def test_group_with_equal_rewards_gets_zero_advantage_and_no_nan():
    batch = random_batch(3)
    batch["group_id"] = np.array([5, 5, 5, 8, 8, 8, 2, 2, 2], np.int32)
    batch["reward"] = np.array([1, 1, 1, 0, 1, 0, 0.3, 0.3, 0.3], np.float32)
    for kind in ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"]:
        adv, _ = jit_adv(kind, AdvantageConfig())(batch)
        adv = np.asarray(adv)
        assert np.isfinite(adv).all(), kind
        if kind != "reinforce_pp_baseline":  # (its batch whitening moves the zero; finiteness is the point)
            assert np.all(adv[[0, 1, 2, 6, 7, 8]] == 0), kind
            assert np.abs(adv[3:6]).max() > 0, kind


def np_token_rewards(batch, placement="outcome"):
    mask, chunk = batch["loss_mask"], batch["chunk_id"]
    rewards = np.zeros((B, T))
    for b in range(B):
        positions = [t for t in range(T) if mask[b, t] > 0]
        if not positions:
            continue
        if placement == "outcome":
            rewards[b, positions[-1]] += batch["reward"][b]
        else:
            for k, ts in chunks_of(mask[b], chunk[b]).items():
                if k - 1 < batch["turn_rewards"].shape[1]:
                    rewards[b, ts[-1]] += batch["turn_rewards"][b, k - 1]
        for t in positions:
            rewards[b, t] += batch.get("token_rewards", np.zeros((B, T)))[b, t]
    return rewards


def np_gae(batch, gamma, lam, placement="outcome"):
    mask, values = batch["loss_mask"], np64(batch["values"])
    rewards = np_token_rewards(batch, placement)
    adv, ret = np.zeros((B, T)), np.zeros((B, T))
    for b in range(B):
        running, next_value = 0.0, 0.0  # terminal: V = 0 after the last model token
        for t in reversed([t for t in range(T) if mask[b, t] > 0]):
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t], ret[b, t] = running, running + values[b, t]
            next_value = values[b, t]
    return adv, ret


@pytest.mark.parametrize(
    "gamma,lam,placement", [(0.99, 0.95, "outcome"), (1.0, 1.0, "outcome"), (0.9, 0.8, "turn")]
)
def test_gae_matches_numpy(gamma, lam, placement):
    batch = random_batch(4)
    adv, ret = jit_adv("gae", AdvantageConfig(gamma=gamma, lam=lam, reward_placement=placement))(batch)
    exp_adv, exp_ret = np_gae(batch, gamma, lam, placement)
    np.testing.assert_allclose(adv, exp_adv, **TOL)
    np.testing.assert_allclose(ret, exp_ret, **TOL)


def test_gae_with_lambda_one_and_zero_values_is_the_discounted_return():
    batch = dict(random_batch(5), values=np.zeros((B, T), np.float32))
    del batch["token_rewards"]
    adv, _ = jit_adv("gae", AdvantageConfig(gamma=0.9, lam=1.0))(batch)
    mask = batch["loss_mask"]
    for b in range(B):
        positions = [t for t in range(T) if mask[b, t] > 0]
        for i, t in enumerate(positions):  # R discounted once per model token still to come
            assert float(adv[b, t]) == pytest.approx(
                batch["reward"][b] * 0.9 ** (len(positions) - 1 - i), abs=1e-5
            )


def np_reinforce_pp(batch, gamma, eps=1e-6):
    mask = batch["loss_mask"]
    rewards = np_token_rewards(batch)
    returns = np.zeros((B, T))
    for b in range(B):
        running = 0.0
        for t in reversed([t for t in range(T) if mask[b, t] > 0]):
            running = rewards[b, t] + gamma * running
            returns[b, t] = running
    values = returns[mask > 0]
    adv = (returns - values.mean()) / (values.std() + eps) * mask
    return adv, returns


@pytest.mark.parametrize("gamma", [1.0, 0.97])
def test_reinforce_pp_matches_numpy(gamma):
    batch = random_batch(6)
    adv, ret = jit_adv("reinforce_pp", AdvantageConfig(gamma=gamma))(batch)
    exp_adv, exp_ret = np_reinforce_pp(batch, gamma)
    np.testing.assert_allclose(ret, exp_ret, **TOL)
    np.testing.assert_allclose(adv, exp_adv, **TOL)
    masked = np.asarray(adv)[batch["loss_mask"] > 0]
    assert abs(masked.mean()) < 1e-5 and masked.std() == pytest.approx(1.0, abs=1e-4)


def test_reinforce_pp_baseline_subtracts_the_group_mean_first():
    batch = random_batch(7)
    adv, _ = jit_adv("reinforce_pp_baseline", AdvantageConfig())(batch)
    centred = dict(batch, reward=np_group_adv(batch["reward"], batch["group_id"], "dr_grpo"))
    exp_adv, _ = np_reinforce_pp(centred, 1.0)
    np.testing.assert_allclose(adv, exp_adv, **TOL)


@pytest.mark.parametrize("failure_reward", [None, -1.0])
def test_chunk_discounted_is_ipa_eq7(failure_reward):
    batch = random_batch(8)
    config = AdvantageConfig(chunk_gamma=0.9, failure_reward=failure_reward)
    adv, ret = jit_adv("chunk_discounted", config)(batch)
    expected = np.zeros((B, T))
    for b in range(B):
        chunks = chunks_of(batch["loss_mask"][b], batch["chunk_id"][b])
        n_chunks = max(chunks, default=0)
        r = batch["reward"][b]
        if failure_reward is not None and r <= 0:
            r = failure_reward
        for k, ts in chunks.items():
            expected[b, ts] = 0.9 ** (n_chunks - k) * r
    np.testing.assert_allclose(adv, expected, **TOL)
    np.testing.assert_allclose(ret, expected, **TOL)


# -- policy losses ---------------------------------------------------------------------------------------
def np_token_mean_grad(per_token_grad, mask):
    """d(token_mean)/d logp from d(ℓ_t)/d logp_t."""
    return per_token_grad * mask / max(mask.sum(), 1.0)


def loss_and_grad(name, config, inputs):
    """The per-token loss, its metrics, and d(aggregated loss)/d logp, all jit'd."""

    def total(logp):
        loss, _ = get_policy_loss(name)(inputs._replace(logp=logp), config)
        return get_aggregation(config.aggregation)(loss, inputs.loss_mask.astype(jnp.float32), config)

    loss, metrics = jit_loss(name, config)(inputs)
    grad = jax.jit(jax.grad(total))(inputs.logp)
    return np.asarray(loss), metrics, np.asarray(grad)


def np_ppo(inputs, eps_low, eps_high, dual=None):
    mask = inputs.loss_mask
    loss, grad, clipped = np.zeros((B, T)), np.zeros((B, T)), np.zeros((B, T), bool)
    for b in range(B):
        for t in range(T):
            if mask[b, t] == 0:
                continue
            a = float(inputs.advantages[b, t])
            r = math.exp(float(inputs.logp[b, t]) - float(inputs.old_logp[b, t]))
            unclipped, clip_value = -a * r, -a * min(max(r, 1 - eps_low), 1 + eps_high)
            if clip_value > unclipped:  # the clipped branch: the ratio is past the bound, no gradient
                loss[b, t], g, clipped[b, t] = clip_value, 0.0, True
            else:
                loss[b, t], g = unclipped, -a * r
            if dual is not None and a < 0 and loss[b, t] > -a * dual:
                loss[b, t], g = -a * dual, 0.0
            grad[b, t] = g
    return loss, grad, clipped


@pytest.mark.parametrize(
    "eps_high,dual", [(None, None), (0.28, None), (0.28, 3.0)], ids=["symmetric", "clip_higher", "dual_clip"]
)
def test_ppo_clip_loss_and_gradient_match_numpy(eps_high, dual):
    inputs = random_loss_inputs(10, spread=0.6)
    config = LossConfig(clip_eps=0.2, clip_eps_high=eps_high, dual_clip=dual)
    loss, metrics, grad = loss_and_grad("ppo_clip", config, inputs)
    exp_loss, exp_grad, clipped = np_ppo(inputs, 0.2, eps_high or 0.2, dual)
    mask = inputs.loss_mask
    np.testing.assert_allclose(loss, exp_loss, **TOL)
    np.testing.assert_allclose(grad, np_token_mean_grad(exp_grad, mask), **TOL)
    assert 0 < clipped[mask > 0].mean() < 1
    assert float(metrics["clip_fraction"]) == pytest.approx(clipped[mask > 0].mean(), abs=1e-6)
    ratio = np.exp(np64(inputs.logp) - np64(inputs.old_logp))
    assert float(metrics["ratio_mean"]) == pytest.approx(ratio[mask > 0].mean(), rel=1e-4)
    k3 = ratio - 1 - np.log(ratio)
    assert float(metrics["approx_kl"]) == pytest.approx(k3[mask > 0].mean(), rel=1e-3)
    if dual is not None:
        dual_active = (inputs.advantages < 0) & (ratio > dual) & (mask > 0)
        assert dual_active.any()
        assert float(metrics["dual_clip_fraction"]) == pytest.approx(dual_active.sum() / mask.sum(), abs=1e-6)


def test_ppo_clip_gradient_vanishes_only_past_the_bound_in_the_advantage_direction():
    # One row, four tokens: (A, ratio) = (+, high), (+, low), (−, low), (−, high); and a dual-clip token.
    adv = np.array([[1.0, 1.0, -1.0, -1.0, -1.0]], np.float32)
    log_ratio = np.log(np.array([[1.5, 0.5, 0.5, 1.5, 4.0]], np.float32))
    old = np.full((1, 5), -1.0, np.float32)
    ones = np.ones((1, 5), np.float32)
    inputs = LossInputs(old + log_ratio, old, old, adv, ones, ones.astype(np.int32), np.zeros(1, np.float32))

    def grad_for(config):
        fn = lambda lp: get_policy_loss("ppo_clip")(inputs._replace(logp=lp), config)[0].sum()
        return np.asarray(jax.jit(jax.grad(fn))(inputs.logp))[0]

    g = grad_for(LossConfig(clip_eps=0.2))
    assert g[0] == 0 and g[2] == 0  # pushed past the bound in the advantage's direction: clipped
    assert g[1] == pytest.approx(-0.5) and g[3] == pytest.approx(1.5) and g[4] == pytest.approx(4.0)
    g = grad_for(LossConfig(clip_eps=0.2, dual_clip=3.0))
    assert g[4] == 0 and g[3] == pytest.approx(1.5)  # ratio 4 > c = 3 with A < 0: capped; 1.5 < c is not


def np_gspo(inputs, eps_low, eps_high):
    mask = inputs.loss_mask
    loss, grad = np.zeros((B, T)), np.zeros((B, T))
    rows = [b for b in range(B) if mask[b].sum() > 0]
    for b in rows:
        ts = [t for t in range(T) if mask[b, t] > 0]
        s = math.exp(np.mean([float(inputs.logp[b, t]) - float(inputs.old_logp[b, t]) for t in ts]))
        for t in ts:
            a = float(inputs.advantages[b, t])
            unclipped, clip_value = -a * s, -a * min(max(s, 1 - eps_low), 1 + eps_high)
            loss[b, t] = max(unclipped, clip_value)
            # seq_mean_token_mean: d/d logp_t of (1/n_rows)(1/|y|)Σ_t ℓ_t, and dℓ_t/d logp_t = −A·s unclipped
            grad[b, t] = 0.0 if clip_value > unclipped else -a * s / (len(ts) * len(rows))
    return loss, grad


def test_gspo_sequence_ratio_loss_and_gradient():
    rng = np.random.default_rng(11)
    seq_adv = rng.normal(size=(B, 1)) * np.ones((1, T))  # GSPO: one advantage per sequence
    inputs = random_loss_inputs(11, spread=0.25, advantages=seq_adv)
    config = LossConfig(gspo_clip_eps=0.02, gspo_clip_eps_high=0.03, aggregation="seq_mean_token_mean")
    loss, metrics, grad = loss_and_grad("gspo", config, inputs)
    exp_loss, exp_grad = np_gspo(inputs, 0.02, 0.03)
    np.testing.assert_allclose(loss, exp_loss, **TOL)
    np.testing.assert_allclose(grad, exp_grad, **TOL)
    clipped_rows = [b for b in range(B) if inputs.loss_mask[b].sum() > 0 and np.all(exp_grad[b] == 0)]
    assert clipped_rows and len(clipped_rows) < B - 1  # some sequences clipped as a whole, not all
    assert 0 < float(metrics["clip_fraction"]) < 1


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_topr_truncates_only_negative_trajectories(level):
    inputs = random_loss_inputs(12, spread=0.4)
    loss, metrics, grad = loss_and_grad("topr", LossConfig(topr_level=level), inputs)
    mask = inputs.loss_mask
    exp_loss, exp_grad = np.zeros((B, T)), np.zeros((B, T))
    for b in range(B):
        seq_log_ratio = sum(
            float(inputs.logp[b, t]) - float(inputs.old_logp[b, t]) for t in range(T) if mask[b, t] > 0
        )
        for t in range(T):
            if mask[b, t] == 0:
                continue
            a = float(inputs.advantages[b, t])
            log_ratio = (
                float(inputs.logp[b, t]) - float(inputs.old_logp[b, t]) if level == "token" else seq_log_ratio
            )
            w = 1.0 if a >= 0 else min(math.exp(min(log_ratio, 50.0)), 1.0)
            exp_loss[b, t] = -w * a * float(inputs.logp[b, t])
            exp_grad[b, t] = -w * a
    np.testing.assert_allclose(loss, exp_loss, **TOL)
    np.testing.assert_allclose(grad, np_token_mean_grad(exp_grad, mask), **TOL)
    positive = (inputs.advantages > 0) & (mask > 0)
    np.testing.assert_allclose(
        grad[positive], -inputs.advantages[positive] / mask.sum(), **TOL
    )  # no IS at all
    assert 0 < float(metrics["truncated_fraction"]) < float(metrics["negative_fraction"])


def np_ipa(inputs, gamma, cap, failure_reward=None):
    """Per-token loss and d(ℓ_t)/d logp_t for IPA, one chunk at a time."""
    mask = inputs.loss_mask
    loss, grad = np.zeros((B, T)), np.zeros((B, T))
    dropped = 0
    for b in range(B):
        chunks = chunks_of(mask[b], inputs.chunk_id[b])
        n_chunks = max(chunks, default=0)
        r = float(inputs.reward[b])
        success = r > 0
        if failure_reward is not None and not success:
            r = failure_reward
        for k, ts in chunks.items():
            log_rho = np.mean([float(inputs.logp[b, t]) - float(inputs.old_logp[b, t]) for t in ts])
            mismatch = np.mean(
                [float(inputs.old_logp[b, t]) - float(inputs.behaviour_logp[b, t]) for t in ts]
            )
            keep = 1.0 if math.exp(mismatch) <= cap else 0.0
            dropped += keep == 0
            g_k = gamma ** (n_chunks - k) * r
            w = 1.0 if success else min(max(math.exp(log_rho), 0.0), 1.0)
            for t in ts:
                loss[b, t] = -w * g_k * keep * float(inputs.logp[b, t])
                grad[b, t] = -w * g_k * keep
    return loss, grad, dropped


def with_chunk_returns(inputs: LossInputs, gamma: float, failure_reward: float | None) -> LossInputs:
    """The advantages the pipeline hands ipa_chunk: the registry's chunk_discounted returns (Eq. 7)."""
    batch = {"reward": inputs.reward, "chunk_id": inputs.chunk_id, "loss_mask": inputs.loss_mask}
    config = AdvantageConfig(chunk_gamma=gamma, failure_reward=failure_reward)
    returns, _ = get_advantage("chunk_discounted")(batch, config)
    return inputs._replace(advantages=np.asarray(returns, np.float32))


@pytest.mark.parametrize("failure_reward", [None, -1.0])
def test_ipa_chunk_matches_spec(failure_reward):
    inputs = with_chunk_returns(random_loss_inputs(13, spread=0.5), 0.9, failure_reward)
    config = LossConfig(ipa_mismatch_cap=1.3)
    loss, metrics, grad = loss_and_grad("ipa_chunk", config, inputs)
    exp_loss, exp_grad, dropped = np_ipa(inputs, 0.9, 1.3, failure_reward)
    mask = inputs.loss_mask
    np.testing.assert_allclose(loss, exp_loss, **TOL)
    np.testing.assert_allclose(grad, np_token_mean_grad(exp_grad, mask), **TOL)
    assert dropped > 0 and 0 < float(metrics["chunk_masked_fraction"]) < 1
    # The trainer may hand the reward as a [B, T] row-broadcast copy: same loss.
    broadcast = inputs._replace(reward=np.repeat(inputs.reward[:, None], T, axis=1))
    np.testing.assert_allclose(jit_loss("ipa_chunk", config)(broadcast)[0], loss, rtol=1e-6)
    n_chunks = sum(len(chunks_of(mask[b], inputs.chunk_id[b])) for b in range(B))
    assert float(metrics["chunk_masked_fraction"]) == pytest.approx(dropped / n_chunks, abs=1e-6)


def test_ipa_success_is_weighted_sft_and_failure_is_weighted_by_clipped_chunk_ratio():
    # Row 0 succeeds, row 1 fails; both have chunks 1, 2 and are far off-policy (ρ ≠ 1); μ = π_old.
    mask = np.array([[0, 1, 1, 0, 1, 1, 1], [0, 1, 1, 0, 1, 1, 1]], np.float32)
    chunk = np.array([[0, 1, 1, 0, 2, 2, 2], [0, 1, 1, 0, 2, 2, 2]], np.int32)
    old = np.full((2, 7), -1.0, np.float32) * mask
    log_ratio = np.array([[0, 0.7, 0.9, 0, -0.6, -0.2, -0.4], [0, 0.7, 0.9, 0, -0.6, -0.2, -0.4]], np.float32)
    reward = np.array([1.0, 0.0], np.float32)
    inputs = LossInputs(old + log_ratio, old, old, np.zeros_like(old), mask, chunk, reward)
    inputs = with_chunk_returns(inputs, 0.5, -1.0)
    config = LossConfig(ipa_mismatch_cap=5.0, aggregation="seq_mean_token_sum")
    _, _, grad = loss_and_grad("ipa_chunk", config, inputs)
    n_rows = 2
    # Success: exactly −G_k per token (no ratio anywhere), G_1 = 0.5·1, G_2 = 1.
    np.testing.assert_allclose(grad[0], np.array([0, -0.5, -0.5, 0, -1, -1, -1]) / n_rows, rtol=1e-6)
    # Failure (R := −1): chunk 1 has ρ = e^0.8 > 1 -> weight 1; chunk 2 has ρ = e^−0.4 -> weight e^−0.4.
    rho2 = math.exp(-0.4)
    np.testing.assert_allclose(grad[1], np.array([0, 0.5, 0.5, 0, rho2, rho2, rho2]) / n_rows, rtol=1e-5)
    # A chunk whose sampler mismatch exceeds H is dropped whole, the other chunk is untouched.
    behaviour = old - np.array([[0, 0, 0, 0, 3.0, 2.0, 1.0]] * 2, np.float32)  # mean gap 2 > log 5
    _, metrics, grad = loss_and_grad("ipa_chunk", config, inputs._replace(behaviour_logp=behaviour))
    assert np.all(grad[:, 4:] == 0) and grad[0, 1] == pytest.approx(-0.25)
    assert float(metrics["chunk_masked_fraction"]) == pytest.approx(0.5)


def test_ipa_with_given_advantages_uses_them_as_returns():
    inputs = random_loss_inputs(14)
    config = LossConfig(ipa_mismatch_cap=1e9)
    loss, _ = jit_loss("ipa_chunk", config)(inputs)
    mask = inputs.loss_mask
    expected = np.zeros((B, T))
    for b in range(B):
        for ts in chunks_of(mask[b], inputs.chunk_id[b]).values():
            log_rho = np.mean([float(inputs.logp[b, t]) - float(inputs.old_logp[b, t]) for t in ts])
            w = 1.0 if inputs.reward[b] > 0 else min(math.exp(log_rho), 1.0)
            for t in ts:
                expected[b, t] = -w * float(inputs.advantages[b, t]) * float(inputs.logp[b, t])
    np.testing.assert_allclose(loss, expected, **TOL)


# -- aggregations, KL, entropy ---------------------------------------------------------------------------
def test_aggregations_match_numpy():
    rng = np.random.default_rng(15)
    mask = random_batch(15)["loss_mask"]
    loss = rng.normal(size=(B, T)).astype(np.float32)
    rows = [b for b in range(B) if mask[b].sum() > 0]
    expected = {
        "token_mean": sum(loss[b, t] for b in range(B) for t in range(T) if mask[b, t]) / mask.sum(),
        "seq_mean_token_mean": np.mean([np.mean([loss[b, t] for t in range(T) if mask[b, t]]) for b in rows]),
        "seq_mean_token_sum": np.mean([np.sum([loss[b, t] for t in range(T) if mask[b, t]]) for b in rows]),
        "seq_mean_token_sum_norm": np.sum(loss * mask) / (B * 64.0),
    }
    config = LossConfig(norm_constant=64.0)
    for name, value in expected.items():
        got = jax.jit(lambda x, m, name=name: get_aggregation(name)(x, m, config))(loss, mask)
        assert float(got) == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
        empty = jax.jit(lambda x, m, name=name: get_aggregation(name)(x, m, config))(loss, 0 * mask)
        assert float(empty) == 0.0, name  # nothing to learn from: 0, not NaN


def test_kl_estimators_match_numpy():
    rng = np.random.default_rng(16)
    logp = -rng.uniform(0.1, 3, size=(B, T)).astype(np.float32)
    ref = (logp + rng.normal(size=(B, T)) * 0.5).astype(np.float32)
    d = np64(logp) - np64(ref)
    expected = {"k1": d, "k2": 0.5 * d**2, "k3": np.exp(-d) - 1 + d}
    for kind, value in expected.items():
        got = jax.jit(lambda a, b, kind=kind: kl_penalty(a, b, kind))(logp, ref)
        np.testing.assert_allclose(got, value, **TOL)
    assert np.all(np.asarray(kl_penalty(logp, ref, "k3")) >= 0)
    # k2's gradient is log π − log π_ref: the score-function gradient of KL(π || π_ref).
    grad = jax.grad(lambda lp: kl_penalty(lp, ref, "k2").sum())(logp)
    np.testing.assert_allclose(grad, d, **TOL)
    with pytest.raises(KeyError, match="k3"):
        kl_penalty(logp, ref, "k4")


# -- sampler / trainer mismatch --------------------------------------------------------------------------
def np_mismatch(inputs, level, reduce, tis_cap, mis_high, mis_low):
    mask = inputs.loss_mask
    log_w_tok = np64(inputs.old_logp) - np64(inputs.behaviour_logp)
    log_w = np.zeros((B, T))
    for b in range(B):
        if level == "token":
            log_w[b] = log_w_tok[b]
        elif level == "chunk":
            for ts in chunks_of(mask[b], inputs.chunk_id[b]).values():
                values = [log_w_tok[b, t] for t in ts]
                log_w[b, ts] = np.sum(values) if reduce == "sum" else np.mean(values)
        else:
            values = [log_w_tok[b, t] for t in range(T) if mask[b, t] > 0]
            if values:
                log_w[b, :] = np.sum(values) if reduce == "sum" else np.mean(values)
    weights, keep = np.zeros((B, T)), np.zeros((B, T))
    for b in range(B):
        for t in range(T):
            if mask[b, t] == 0:
                continue
            ratio = math.exp(log_w[b, t])
            kept = (mis_high is None or ratio <= mis_high) and (mis_low is None or ratio >= mis_low)
            keep[b, t] = float(kept)
            weights[b, t] = float(kept) * (1.0 if tis_cap is None else min(ratio, tis_cap))
    return weights, keep


@pytest.mark.parametrize(
    "level,reduce,tis_cap,mis_high,mis_low",
    [
        ("token", "mean", 1.5, None, None),
        ("token", "mean", None, 1.4, 0.6),
        ("chunk", "mean", 1.2, 1.7, None),
        ("chunk", "sum", 2.0, None, None),
        ("sequence", "mean", 0.95, 1.05, None),
        ("sequence", "sum", 3.0, 8.0, 0.1),
    ],
)
def test_mismatch_correction_matches_numpy(level, reduce, tis_cap, mis_high, mis_low):
    inputs = random_loss_inputs(17, spread=0.4)
    config = LossConfig(
        mismatch_level=level, mismatch_reduce=reduce, tis_cap=tis_cap, mis_high=mis_high, mis_low=mis_low
    )
    fn = jax.jit(lambda old, mu, m, c: mismatch_correction(old, mu, m, c, config))
    weights, keep, metrics = fn(inputs.old_logp, inputs.behaviour_logp, inputs.loss_mask, inputs.chunk_id)
    exp_weights, exp_keep = np_mismatch(inputs, level, reduce, tis_cap, mis_high, mis_low)
    np.testing.assert_allclose(keep, exp_keep)
    np.testing.assert_allclose(weights, exp_weights, **TOL)
    mask = inputs.loss_mask
    assert float(metrics["mismatch_masked_fraction"]) == pytest.approx(
        1 - exp_keep.sum() / mask.sum(), abs=1e-6
    )
    if mis_high is not None or mis_low is not None:
        assert 0 < exp_keep.sum() < mask.sum()  # the threshold bites, but not everywhere
    if tis_cap is not None:
        assert (exp_weights == tis_cap).any()  # some weights truncated


# -- the composed objective ------------------------------------------------------------------------------
def test_rl_loss_composes_mismatch_policy_kl_entropy_and_aggregation():
    inputs = random_loss_inputs(18, spread=0.4)
    config = LossConfig(
        policy_loss="ppo_clip",
        aggregation="seq_mean_token_mean",
        tis_cap=1.5,
        mis_high=2.0,
        kl_coef=0.1,
        kl_kind="k3",
        entropy_coef=0.01,
    )
    loss, metrics = jax.jit(lambda x: rl_loss(x, config))(inputs)
    weights, keep = np_mismatch(inputs, "token", "mean", 1.5, 2.0, None)
    policy, _, _ = np_ppo(inputs, 0.2, 0.2)
    d = np64(inputs.logp) - np64(inputs.ref_logp)
    per_token = policy * weights + 0.1 * (np.exp(-d) - 1 + d) - 0.01 * np64(inputs.entropy)
    rows = [b for b in range(B) if keep[b].sum() > 0]
    expected = np.mean([per_token[b][keep[b] > 0].mean() for b in rows])
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["loss"]) == float(loss)
    for key in ["clip_fraction", "approx_kl", "kl", "entropy", "mismatch_masked_fraction", "policy_loss"]:
        assert np.ndim(metrics[key]) == 0 and np.isfinite(float(metrics[key])), key


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_every_policy_loss_is_finite_and_zero_on_an_empty_row(name):
    batch = random_batch(19)
    adv, _ = jit_adv("grpo", AdvantageConfig())(batch)
    inputs = random_loss_inputs(19, advantages=np.asarray(adv))
    for aggregation in sorted(AGGREGATIONS):
        config = LossConfig(policy_loss=name, aggregation=aggregation, kl_coef=0.05)
        loss, metrics = jax.jit(lambda x, config=config: rl_loss(x, config))(inputs)
        grad = jax.jit(jax.grad(lambda lp, config=config: rl_loss(inputs._replace(logp=lp), config)[0]))(
            inputs.logp
        )
        assert np.isfinite(float(loss)) and np.isfinite(np.asarray(grad)).all(), aggregation
        assert np.all(np.asarray(grad)[EMPTY_ROW] == 0)
        assert all(np.ndim(v) == 0 and np.isfinite(float(v)) for v in metrics.values()), metrics


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_every_advantage_is_zero_off_the_loss_mask(name):
    batch = random_batch(20)
    adv, returns = jit_adv(name, AdvantageConfig())(batch)
    adv = np.asarray(adv)
    assert np.isfinite(adv).all()
    assert np.all(adv[batch["loss_mask"] == 0] == 0)
    if returns is not None:
        assert np.all(np.asarray(returns)[batch["loss_mask"] == 0] == 0)
