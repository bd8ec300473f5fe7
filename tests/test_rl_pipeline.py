"""The single-controller RL step: phases, weight sync, μ vs π_old, dynamic sampling, and GRPO learning."""

import dataclasses
import os

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from alejax.config import load_config_file, section_of
from alejax.data.synthetic import generate_corpus
from alejax.data.tokenizer import train_bpe
from alejax.envs.base import register
from alejax.rl.build import build_pipeline
from alejax.rl.critic import CriticConfig
from alejax.rl.losses import LossConfig
from alejax.rl.pipeline import RLConfig, group_requests, keep_informative
from alejax.rollout import RolloutConfig, collate
from alejax.rollout.trajectory import Trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FirstLetterEnv:
    """One turn; reward 1 when the answer starts with a letter a-j (~25% for an untrained policy)."""

    tools: list = []
    system_prompt = "Answer."

    def reset(self, seed):
        return f"question {seed}", {}

    def step(self, action):
        reward = float(action[:1].lower() in "abcdefghij")
        return "", reward, True, False, {"success": bool(reward)}


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(generate_corpus(300, seed=0), vocab_size=400)


register("test/first_letter", FirstLetterEnv)
ONE_TURN = RolloutConfig(max_turns=1, max_new_tokens_per_turn=4)


def pipeline_config(
    tokenizer,
    rl: RLConfig,
    *,
    env: str = "test/first_letter",
    lr=2e-2,
    mesh_shape=None,
    seed=0,
    placement=None,
    critic=None,
    rollout=ONE_TURN,
    max_length=128,
) -> ConfigDict:
    """configs/rl.py with a 32-wide model over `tokenizer`, `rl` as its rl section and the test's env."""
    c = load_config_file(os.path.join(ROOT, "configs", "rl.py"))
    c.seed, c.steps, c.max_length = seed, 100, max_length
    c.env.name, c.env.kwargs = env, ConfigDict()
    c.model = ConfigDict(
        dict(
            vocab_size=tokenizer.vocab_size,
            d_model=32,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            head_dim=8,
            mlp_dim=64,
        )
    )
    c.rl = section_of(RLConfig, **{f.name: getattr(rl, f.name) for f in dataclasses.fields(rl)})
    c.rollout = section_of(RolloutConfig, **dataclasses.asdict(rollout))
    c.optim.learning_rate, c.optim.weight_decay = lr, 0.1
    if placement or mesh_shape:  # else: one device
        c.num_devices = -1
        c.placement = ConfigDict(placement or {})
        c.mesh = ConfigDict(mesh_shape or {})
    if critic is not None:
        c.critic = section_of(CriticConfig, **dataclasses.asdict(critic))
    return c


def _pipeline(tokenizer, rl: RLConfig, critic=None, **kwargs):
    """`critic`: a CriticConfig to give the pipeline a value model (on the critic role's mesh)."""
    pipeline = build_pipeline(pipeline_config(tokenizer, rl, critic=critic, **kwargs), tokenizer)
    return pipeline, pipeline.env_pool


def test_one_step_times_every_phase_and_syncs_weights(tokenizer):
    rl = RLConfig(groups_per_step=4, group_size=8, minibatch_size=8, loss=LossConfig(kl_coef=0.05))
    pipeline, pool = _pipeline(tokenizer, rl)
    before = jax.tree.map(np.asarray, pipeline.state.params)
    metrics = pipeline.step(range(4))
    pool.close()
    for phase in ("rollout", "reward", "reference", "old_logp", "train", "sync", "idle"):
        assert metrics[f"time_{phase}_s"] >= 0, phase
    assert metrics["policy_version"] == 1 and "kl" in metrics and np.isfinite(metrics["loss"])
    after = jax.tree.map(np.asarray, pipeline.state.params)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    # The sampler now holds the new weights, as its own copy (not the donated train buffers).
    for a, b in zip(jax.tree.leaves(pipeline.sampler.params), jax.tree.leaves(pipeline.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The reference stays frozen at the initial weights.
    for a, b in zip(jax.tree.leaves(pipeline.reference_params), jax.tree.leaves(before)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_behaviour_and_old_logprobs_agree_before_an_update_but_stay_distinct(tokenizer):
    rl = RLConfig(groups_per_step=2, group_size=8, minibatch_size=16, filter_zero_variance_groups=False)
    pipeline, pool = _pipeline(tokenizer, rl)
    trajectories, _ = pipeline.scheduler.collect(group_requests(range(2), 8))
    batch = collate(trajectories, pad_to=128)
    old = pipeline._logprobs(pipeline.state.params, batch)
    mask = batch.loss_mask.astype(bool)
    agree = np.abs(old[mask] - batch.behaviour_logp[mask]).max()
    assert agree < 1e-4  # same weights, same numbers (up to the sampler's and trainer's float rounding)
    assert "skipped_update" not in pipeline.step(range(2, 4))
    after = pipeline._logprobs(pipeline.state.params, batch)
    # π_θ moved (an update of these tasks shifts these tokens' log-probs far beyond rounding); μ stays what
    # was sampled.
    assert np.abs(after[mask] - batch.behaviour_logp[mask]).max() > 20 * max(agree, 1e-5)
    pool.close()


@pytest.mark.parametrize("logprob", ["sampled", "full"])
def test_truncated_sampling_gives_the_trainer_the_mu_that_drew_each_token(tokenizer, logprob):
    """top-k sampling: μ (what TIS / MIS and IPA's mismatch mask divide by) is the truncated, renormalised
    log-prob by default, >= the trainer's full-vocabulary log-prob with equality only where the top-k held
    all the mass; with logprob="full" the two agree."""
    rl = RLConfig(groups_per_step=2, group_size=8, minibatch_size=16, filter_zero_variance_groups=False)
    c = pipeline_config(tokenizer, rl)
    c.sampling.top_k, c.sampling.logprob = 4, logprob
    pipeline = build_pipeline(c, tokenizer)
    trajectories, _ = pipeline.scheduler.collect(group_requests(range(2), 8))
    batch = collate(trajectories, pad_to=128)
    old = pipeline._logprobs(pipeline.state.params, batch)
    mask = batch.loss_mask.astype(bool)
    gap = batch.behaviour_logp[mask] - old[mask]  # log(μ / π_old) per generated token
    pipeline.close()
    if logprob == "full":
        assert np.abs(gap).max() < 1e-4
    else:
        assert gap.min() > -1e-4 and gap.max() > 1e-3, (gap.min(), gap.max())


def test_dynamic_sampling_refills_the_batch_with_informative_groups(tokenizer):
    """Groups of 2 on a ~25% task: most groups have one reward value. Refill plays new groups until
    groups_per_step informative ones are in hand (capped), and logs how many it played."""
    rl = RLConfig(groups_per_step=4, group_size=2, minibatch_size=8, max_refill_groups=40)
    pipeline, pool = _pipeline(tokenizer, rl)
    metrics = pipeline.step(range(4))
    pipeline.close()
    assert metrics["informative_groups_before_refill"] < 4  # without refill this step would train on less
    assert metrics["informative_groups"] == 4 and metrics["kept_fraction"] == 1.0
    assert 0 < metrics["refill_groups"] <= 40 and metrics["refill_rounds"] >= 1
    assert "skipped_update" not in metrics and metrics["time_refill_s"] > 0
    # The cap holds: one extra group at most.
    capped, pool = _pipeline(tokenizer, dataclasses.replace(rl, max_refill_groups=1))
    metrics = capped.step(range(4))
    capped.close()
    assert metrics["refill_groups"] == 1 and metrics["refill_rounds"] == 1
    assert metrics["informative_groups"] <= metrics["informative_groups_before_refill"] + 1


def test_colocated_and_disaggregated_layouts_give_the_same_update(tokenizer):
    rl = RLConfig(groups_per_step=2, group_size=8, minibatch_size=8, filter_zero_variance_groups=False)
    layouts = {
        "colocated": {"actor_train": {"mesh": {"fsdp": -1}}},
        "disaggregated": {
            "actor_train": {"devices": [0, 1, 2, 3], "mesh": {"fsdp": -1}},
            "actor_infer": {"devices": [4, 5, 6, 7], "mesh": {"data": -1}},
        },
    }
    results = {}
    for name, placement in layouts.items():
        pipeline, pool = _pipeline(tokenizer, rl, lr=1e-3, placement=placement)
        metrics = pipeline.step(range(2))
        pool.close()
        results[name] = (metrics, jax.tree.map(np.asarray, pipeline.state.params))
        sampler_devices = {d.id for leaf in jax.tree.leaves(pipeline.sampler.params) for d in leaf.devices()}
        assert sampler_devices == ({4, 5, 6, 7} if name == "disaggregated" else set(range(8)))
    (m_a, p_a), (m_b, p_b) = results["colocated"], results["disaggregated"]
    assert m_a["reward"] == m_b["reward"] and m_a["generated_tokens"] == m_b["generated_tokens"]
    np.testing.assert_allclose(m_a["loss"], m_b["loss"], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(p_a), jax.tree.leaves(p_b)):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_dynamic_sampling_drops_flat_groups_and_aborted_episodes():
    def traj(group, reward, aborted=False):
        t = Trajectory(episode_id=0, task_seed=group, group_id=group, turn_rewards=[reward])
        t.aborted = aborted
        return t

    trajectories = [traj(0, 1), traj(0, 1), traj(1, 0), traj(1, 1), traj(2, 1, aborted=True), traj(2, 0)]
    kept = keep_informative(trajectories, filter_zero_variance=True)
    assert [(t.group_id, t.reward) for t in kept] == [(1, 0), (1, 1)]
    assert len(keep_informative(trajectories, filter_zero_variance=False)) == 5


@pytest.mark.slow
def test_grpo_raises_reward(tokenizer):
    rl = RLConfig(groups_per_step=4, group_size=8, minibatch_size=8, epochs=2)
    pipeline, pool = _pipeline(tokenizer, rl, seed=1)
    rewards = [pipeline.step(range(4 * i, 4 * i + 4))["reward"] for i in range(20)]
    pool.close()
    first, last = np.mean(rewards[:4]), np.mean(rewards[-4:])
    assert last > first + 0.4 and last > 0.8, rewards


def test_reward_worker_scores_trajectories_and_the_rl_step_trains_on_the_sum(tokenizer):
    from alejax.reward.worker import RewardWorker

    def length_scorer(params, tokens):  # a stand-in RM: the number of real tokens (right padding is 0)
        assert tokens.shape[0] == 8  # fixed batches: one compilation per bucket
        return (tokens != 0).sum(axis=1).astype(np.float32) * params

    rl = RLConfig(groups_per_step=2, group_size=8, minibatch_size=8)
    pipeline, pool = _pipeline(tokenizer, rl)
    worker = RewardWorker(length_scorer, params=1.0, weight=0.5, mean=40.0, std=2.0, batch_size=8)
    trajectories, _ = pipeline.scheduler.collect(group_requests(range(2), 8)[:5])
    env_rewards = [t.reward for t in trajectories]
    normalised = worker(trajectories)
    for t, env, z in zip(trajectories, env_rewards, normalised):
        assert z == pytest.approx((np.count_nonzero(t.tokens) - 40.0) / 2.0)
        assert t.reward == pytest.approx(env + 0.5 * z)
    pipeline.reward_worker = worker
    metrics = pipeline.step(range(2, 4))
    pool.close()
    assert metrics["reward"] != pytest.approx(
        metrics["env_reward"]
    )  # the RM's share is in the trained reward


def test_async_rollout_overlaps_training_within_the_version_gap(tokenizer):
    rl = RLConfig(
        groups_per_step=2,
        group_size=8,
        minibatch_size=8,
        filter_zero_variance_groups=False,
        max_policy_version_gap=1,
    )
    pipeline, pool = _pipeline(tokenizer, rl, lr=1e-2)
    # Keep the trainer's weights of every version: each turn's μ must come from exactly the weights of the
    # version the turn records (syncs land between turns, never inside one; tests/test_rollout_versions.py).
    weights = {0: jax.tree.map(np.asarray, pipeline.state.params)}
    taken = []
    take = pipeline._take_rollout

    def recording_take(seeds):
        trajectories, stats, wall = take(seeds)
        taken.append(trajectories)
        return trajectories, stats, wall

    pipeline._take_rollout = recording_take
    seeds = [range(2 * i, 2 * i + 2) for i in range(4)]
    steps = []
    for i, s in enumerate(seeds):
        steps.append(pipeline.step(s, seeds[i + 1] if i + 1 < len(seeds) else None))
        weights[pipeline.policy_version] = jax.tree.map(np.asarray, pipeline.state.params)
    pipeline.close()
    pool.close()
    # The first rollout has nothing to overlap; the second started while the first step trained (compiling).
    assert [m["staleness"] for m in steps[:2]] == [0, 1] and all(m["staleness"] <= 1 for m in steps)
    assert [m["policy_version"] for m in steps] == [1, 2, 3, 4]
    assert all(m["stale_dropped"] == 0 and "skipped_update" not in m for m in steps)
    assert all(m["overlap_fraction"] > 0 for m in steps[1:]) and steps[0]["overlap_fraction"] == 0
    assert [m["rollouts_in_flight"] for m in steps] == [1, 1, 1, 0]
    for m in steps:
        for phase in ("rollout", "reward", "reference", "old_logp", "train", "sync", "idle"):
            assert m[f"time_{phase}_s"] >= 0, phase
    # The last step synced at once (nothing in flight): the sampler holds the final weights.
    assert pipeline.sampler_version == pipeline.policy_version == 4
    for step, trajectories in enumerate(taken):
        for version in {t.turn_policy_versions[0] for t in trajectories}:  # one turn each
            sampled = [t for t in trajectories if t.turn_policy_versions == [version]]
            assert step - 1 <= version <= step and all(t.info["policy_version"] == version for t in sampled)
            batch = collate(sampled, pad_to=128)
            mask = batch.loss_mask.astype(bool)
            logp = pipeline._logprobs(jax.tree.map(jax.numpy.asarray, weights[version]), batch)
            np.testing.assert_allclose(
                logp[mask], batch.behaviour_logp[mask], atol=1e-4, err_msg=f"v{version}"
            )


def test_a_batch_staler_than_the_gap_is_not_trained_on(tokenizer):
    rl = RLConfig(groups_per_step=2, group_size=8, minibatch_size=8, filter_zero_variance_groups=False)
    pipeline, pool = _pipeline(tokenizer, rl)
    pipeline.policy_version = 3  # as if the trainer had moved on while these episodes were sampled
    metrics = pipeline.step(range(2))
    pool.close()
    assert metrics["staleness"] == 3 and metrics["stale_dropped"] == 16 and metrics["skipped_update"] == 1
    assert metrics["policy_version"] == 3
    with pytest.raises(ValueError, match="max_policy_version_gap"):
        RLConfig(max_policy_version_gap=-1)


@pytest.mark.slow
def test_async_grpo_raises_reward(tokenizer):
    rl = RLConfig(groups_per_step=4, group_size=8, minibatch_size=8, epochs=2, max_policy_version_gap=1)
    pipeline, pool = _pipeline(tokenizer, rl, seed=1)
    seeds = [range(4 * i, 4 * i + 4) for i in range(21)]
    steps = [pipeline.step(seeds[i], seeds[i + 1]) for i in range(20)]
    pipeline.close()
    pool.close()
    rewards = [m["reward"] for m in steps]
    assert max(m["staleness"] for m in steps) == 1
    first, last = np.mean(rewards[:4]), np.mean(rewards[-4:])
    assert last > first + 0.4 and last > 0.8, rewards
