"""IPA's chunk-initialized resampling: prefix replay in the scheduler, anchors, p_k and forks, expert refresh,
the imitation fallback (Eq. 10) against a numpy reference, the pipeline wiring, and a learning check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from alejax.data.episodes import episode_tokens
from alejax.envs import ThreadEnvPool, make
from alejax.models import ModelConfig, create_model
from alejax.rl.losses import LossConfig, imitation_loss
from alejax.rl.objective import make_rl_loss
from alejax.rl.pipeline import RLConfig
from alejax.rl.resample import (
    ChunkResampler,
    ResampleConfig,
    crucial_fork,
    env_teacher,
    spread_anchors,
)
from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, build_rollout
from alejax.rollout.trajectory import Trajectory, collate

ENV_KW = {"n_rooms": 5}


@pytest.fixture(scope="module")
def tokenizer():
    from alejax.data.episodes import expert_episodes
    from alejax.data.tokenizer import train_bpe

    chats = expert_episodes(
        "keydoor/corridor", range(100), env_kwargs=ENV_KW, policy_kwargs={"compact": True}
    )
    probe = train_bpe(["x"], vocab_size=300)
    return train_bpe([probe.apply_chat_template(c) for c in chats], vocab_size=400)


def _scheduler(tokenizer, slots=4, max_length=512):
    cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        head_dim=16,
        mlp_dim=64,
    )
    pool = ThreadEnvPool(lambda: make("keydoor/corridor", **ENV_KW), 4)
    scheduler = build_rollout(
        create_model(cfg, seed=0),
        tokenizer,
        pool,
        batch_size=slots,
        max_length=max_length,
        rollout=RolloutConfig(max_turns=12, max_new_tokens_per_turn=4),
        system_prompt=make("keydoor/corridor", **ENV_KW).system_prompt,
    )
    return scheduler, pool


def test_request_prefix_must_be_action_strings():
    assert EpisodeRequest(1, 0, ["left", "take"]).prefix == ("left", "take")
    with pytest.raises(TypeError, match="prefix"):
        EpisodeRequest(1, 0, "left")


def test_scheduler_replays_a_prefix_as_context_then_samples(tokenizer):
    scheduler, pool = _scheduler(tokenizer)
    teach = env_teacher("keydoor/corridor", env_kwargs=ENV_KW, policy_kwargs={"compact": True})
    seeds = [3, 4]
    experts = {s: teach(s) for s in seeds}
    requests = [EpisodeRequest(s, i, tuple(experts[s][:2])) for i, s in enumerate(seeds)]
    requests += [EpisodeRequest(s, 9, tuple(experts[s])) for s in seeds]  # the whole expert: nothing sampled
    trajectories, _ = scheduler.collect(requests)
    pool.close()
    by = {(t.task_seed, t.group_id): t for t in trajectories}
    env = make("keydoor/corridor", **ENV_KW)
    for s in seeds:
        partial, full = by[(s, seeds.index(s))], by[(s, 9)]
        # The full replay is the teacher's successful episode, laid out exactly as SFT (and sampling) would.
        assert full.reward == 1.0 and full.info["success"] and sum(full.loss_mask) == 0
        assert full.actions() == experts[s] and full.prefix_turns == len(experts[s])
        tokens, mask = episode_tokens(tokenizer, full.messages)
        assert full.tokens == tokens
        assert [int(c > 0) for c in full.prefix_chunk_id] == mask
        # The partial replay: 2 replayed turns (context, marked), then sampled chunks numbered from 3.
        assert partial.prefix_turns == 2 and partial.actions()[:2] == experts[s][:2]
        chunk = np.array(partial.chunk_id)
        prefix = np.array(partial.prefix_chunk_id)
        assert np.all(np.array(partial.loss_mask)[prefix > 0] == 0)
        assert set(prefix[prefix > 0]) == {1, 2} and chunk[chunk > 0].min() == 3
        assert partial.n_turns == len(partial.actions())
        first_sampled = int(np.argmax(chunk > 0))
        assert prefix[:first_sampled].max() == 2 and prefix[first_sampled:].max() == 0
        # The replayed transcript renders like the template (the sampler continues a well-formed chat).
        head = tokenizer.decode(partial.tokens[:first_sampled])
        assert head == tokenizer.apply_chat_template(
            partial.messages[:6],
            add_generation_prompt=True,  # system, first obs, 2 x (action, obs)
        )
        env.reset(s)
        assert env.optimal_actions(compact=True) == experts[s]
    batch = collate(trajectories)
    assert batch.il_weight.shape == batch.tokens.shape and not batch.il_weight.any()


def test_spread_anchors_and_crucial_fork():
    assert (
        spread_anchors(9, 4) == [1, 4, 6, 9]
        and spread_anchors(2, 4) == [1, 2]
        and spread_anchors(0, 3) == [1]
    )
    # p rises sharply once chunks 4..6 are replayed: the fork is the last of them.
    assert crucial_fork({1: 0.0, 4: 0.1, 7: 0.9, 9: 1.0}, 0.5) == 6
    assert crucial_fork({1: 0.2, 4: 0.4, 7: 0.5}, 0.5) is None
    assert crucial_fork({1: 0.0, 3: 0.6, 5: 0.6, 6: 1.0}, 0.3) == 2  # the largest rise wins


def _traj(seed, prefix_turns, success, actions, group=0, sampled_tokens=2, tokens_per_turn=3):
    """A finished episode: `prefix_turns` replayed turns then sampled ones (3 tokens each, 1 context token)."""
    t = Trajectory(episode_id=0, task_seed=seed, group_id=group)
    t.add_context([1])
    for _ in range(prefix_turns):
        t.add_replayed([7] * tokens_per_turn)
        t.add_context([1])
    for j in range(len(actions) - prefix_turns):
        t.add_generated([8] * sampled_tokens, [-1.0] * sampled_tokens, chunk=prefix_turns + j + 1)
        t.add_context([1])
    t.messages = [{"role": "user", "content": "obs"}]
    for a in actions:
        t.messages += [{"role": "assistant", "content": a}, {"role": "tool", "content": "obs"}]
    t.turn_rewards = [0.0] * (len(actions) - 1) + [float(success)]
    t.info["success"] = bool(success)
    return t


def test_resampler_spreads_anchors_finds_the_fork_and_falls_back_to_imitation():
    expert = ["r", "r", "take", "l", "l", "l", "open"]  # K* = 7
    cfg = ResampleConfig(anchors_per_task=4, fork_drop=0.5, stats_decay=0.0, lambda_il=1.0, il_gamma=0.9)
    resampler = ChunkResampler(cfg, teacher=lambda seed: expert if seed == 5 else None)
    requests = resampler.requests([5, 6], group_size=8)
    assert len(requests) == 16 and {r.group_id for r in requests[:8]} == {0}
    assert sorted({len(r.prefix) + 1 for r in requests[:8]}) == [1, 3, 5, 7]  # spread_anchors(7, 4)
    assert all(r.prefix == tuple(expert[: len(r.prefix)]) for r in requests[:8])
    assert all(r.prefix == () for r in requests[8:])  # no expert for task 6: plain sampling
    # The policy fails whenever "take" (chunk 3) is left to it, succeeds once it is replayed.
    wrong = ["r", "r", "l", "l", "l", "l", "l"]
    trajectories = [
        _traj(5, len(r.prefix), len(r.prefix) >= 3, expert if len(r.prefix) >= 3 else wrong)
        for r in requests[:8]
    ]
    metrics = resampler.observe(trajectories)
    assert resampler.p[5] == {1: 0.0, 3: 0.0, 5: 1.0, 7: 1.0}
    assert resampler.fork(5) == 4 and metrics["resample_forks"] == 1  # between anchors 3 and 5
    assert 5 in resampler.anchors(5)  # the row type covering the fork stays in the anchor set
    # Imitation fallback: rows anchored at 5 (prefix = chunks 1..4) carry G_j = γ^(K*−j) on chunks <= 4.
    marked = [t for t in trajectories if t.il_weight]
    assert marked and all(t.prefix_turns == 4 for t in marked)
    for t in marked:
        chunks = np.array(t.prefix_chunk_id)
        expected = np.where((chunks >= 1) & (chunks <= 4), 0.9 ** (7.0 - chunks), 0.0)
        np.testing.assert_allclose(t.il_weight, expected, rtol=1e-6)
    assert metrics["resample_il_tasks"] == 1 and metrics["resample_il_tokens"] == 3 * 4 * len(marked)
    assert all(not t.il_weight for t in trajectories if t.prefix_turns != 4)
    # Once anything started before the fork succeeds, no imitation.
    again = [_traj(5, 0, True, expert)] + [_traj(5, 4, True, expert)]
    assert resampler.observe(again)["resample_il_tasks"] == 0


def test_a_policy_that_fails_everywhere_imitates_the_whole_expert():
    """p_{K*+1} = 1 (the full replay succeeds): all-zero p puts the fork at K*, and the full-replay rows
    (nothing sampled) carry the imitation weights on every expert chunk."""
    expert = ["r", "take", "l", "open"]
    resampler = ChunkResampler(ResampleConfig(anchors_per_task=2, stats_decay=0.0), teacher=lambda s: expert)
    assert resampler.anchors(0) == [1, 4] and resampler.fork(0) is None
    resampler.observe([_traj(0, k, False, expert[:k] + ["x"] * (4 - k)) for k in (0, 3, 0, 3)])
    assert resampler.fork(0) == 4 and resampler.anchors(0) == [1, 4, 5]
    assert [len(r.prefix) for r in resampler.requests([0], 2)] == [4, 0]  # few samples: the fork row first
    requests = resampler.requests([0], 6)
    assert sum(r.prefix == tuple(expert) for r in requests) == 2
    rows = [
        _traj(0, len(r.prefix), len(r.prefix) == 4, [*r.prefix] + ["x"] * (4 - len(r.prefix)))
        for r in requests
    ]
    metrics = resampler.observe(rows)
    full = [t for t in rows if t.prefix_turns == 4]
    assert metrics["resample_il_tasks"] == 1 and all(t.il_weight for t in full)
    assert metrics["resample_success_sampled"] == 0.0  # the full replays sampled nothing


def test_expert_refresh_keeps_the_shortest_success_and_resets_its_statistics():
    resampler = ChunkResampler(ResampleConfig(refresh="shortest"))
    assert resampler.anchors(1) == [1] and resampler.expert(1) is None  # no teacher: sample from the reset
    resampler.observe([_traj(1, 0, True, ["a", "b", "c", "d"]), _traj(1, 0, False, ["a", "b"])])
    assert resampler.expert(1).actions == ("a", "b", "c", "d") and resampler.expert(1).source == "self"
    resampler.observe([_traj(1, 2, True, ["a", "b", "c", "d", "e", "f"])])  # longer: kept out
    assert resampler.expert(1).actions == ("a", "b", "c", "d") and 3 in resampler.p[1]
    resampler.observe([_traj(1, 0, True, ["x", "y"])])
    assert resampler.expert(1).actions == ("x", "y") and 1 not in resampler.p.get(1, {})
    never = ChunkResampler(ResampleConfig(refresh="none"), teacher=lambda s: ["t"] * 5)
    never.observe([_traj(2, 0, True, ["x"])])
    assert never.expert(2).actions == ("t",) * 5


def test_sequential_rollback_moves_the_anchor_back_when_the_tail_is_mastered():
    cfg = ResampleConfig(schedule="sequential", mastery=0.75, stats_decay=0.0, lambda_il=0.0)
    resampler = ChunkResampler(cfg, teacher=lambda s: ["a", "b", "c", "d"])
    assert resampler.anchors(0) == [4]
    reqs = resampler.requests([0], 4)
    assert {len(r.prefix) for r in reqs} == {3}
    resampler.observe([_traj(0, 3, i < 2, ["a", "b", "c", "x"]) for i in range(4)])  # 50%: stay
    assert resampler.anchors(0) == [4]
    resampler.observe([_traj(0, 3, True, ["a", "b", "c", "d"]) for _ in range(4)])
    assert resampler.anchors(0) == [3]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="schedule"):
        ResampleConfig(schedule="random")
    with pytest.raises(ValueError, match="refresh"):
        ResampleConfig(refresh="best")
    with pytest.raises(ValueError, match="anchors_per_task"):
        ResampleConfig(anchors_per_task=0)


def test_imitation_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logp = -rng.random((3, 11)).astype(np.float32) * 3
    weight = np.where(rng.random((3, 11)) < 0.4, rng.random((3, 11)), 0.0).astype(np.float32)
    loss, metrics = imitation_loss(jnp.asarray(logp), jnp.asarray(weight))
    marked = weight > 0
    np.testing.assert_allclose(loss, -(weight * logp).sum() / marked.sum(), rtol=1e-6)
    np.testing.assert_allclose(metrics["il_nll"], -logp[marked].mean(), rtol=1e-6)
    assert float(imitation_loss(jnp.asarray(logp), jnp.zeros_like(jnp.asarray(weight)))[0]) == 0.0


def test_rl_loss_is_lambda_rl_policy_plus_lambda_il_imitation():
    """Eq. 10 as the train step sees it: gradients of the composed loss = λ_RL·∇RL + λ_IL·∇IL."""
    cfg = ModelConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, mlp_dim=32)
    model = create_model(cfg, seed=0)
    rng = np.random.default_rng(1)
    b, t = 4, 16
    tokens = rng.integers(0, 50, (b, t)).astype(np.int32)
    loss_mask = np.zeros((b, t), np.float32)
    loss_mask[:, 9:14] = 1
    chunk_id = (loss_mask * np.array([0] * 9 + [3, 3, 4, 4, 4] + [0, 0])).astype(np.int32)
    il_weight = np.zeros((b, t), np.float32)
    il_weight[:2, 2:7] = 0.9
    batch = {
        "tokens": tokens,
        "loss_mask": loss_mask,
        "segment_ids": np.ones((b, t), np.int32),
        "chunk_id": chunk_id,
        "behaviour_logp": -np.ones((b, t), np.float32) * loss_mask,
        "old_logp": -np.ones((b, t), np.float32) * loss_mask,
        "advantages": np.zeros((b, t), np.float32),
        "reward": np.broadcast_to(np.array([1.0, 0.0, 1.0, 1.0])[:, None], (b, t)).astype(np.float32),
        "il_weight": il_weight,
    }
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    loss_cfg = LossConfig(policy_loss="ipa_chunk")
    rl_only = make_rl_loss(loss_cfg)
    both = make_rl_loss(loss_cfg, ResampleConfig(enabled=True, lambda_rl=0.7, lambda_il=0.3))
    from flax import nnx

    from alejax.train.step import token_logprobs

    graphdef, params = nnx.split(model)

    def grad(fn):
        return jax.jit(jax.grad(lambda p: fn(nnx.merge(graphdef, p), batch)[0]))(params)

    def il_fn(m, batch):
        return imitation_loss(token_logprobs(m, batch)[0], batch["il_weight"])

    g_rl, g_il, g_both = grad(rl_only), grad(il_fn), grad(both)
    for a, c, d in zip(jax.tree.leaves(g_rl), jax.tree.leaves(g_il), jax.tree.leaves(g_both)):
        np.testing.assert_allclose(d, 0.7 * a + 0.3 * c, rtol=1e-4, atol=1e-6)
    loss, metrics = both(model, batch)
    assert metrics["il_tokens"] == 10 and np.isfinite(float(loss))


def _keydoor_pipeline(tokenizer, rl, seed=0, lr=3e-3, turn_tokens=3):
    from test_rl_pipeline import pipeline_config

    from alejax.rl.build import build_pipeline

    rollout = RolloutConfig(max_turns=10, max_new_tokens_per_turn=turn_tokens)
    c = pipeline_config(
        tokenizer, rl, env="keydoor/corridor", lr=lr, seed=seed, rollout=rollout, max_length=512
    )
    c.env.kwargs = ConfigDict(ENV_KW)
    c.expert = ConfigDict({"compact": True})  # the teacher whose prefixes resampling replays
    pipeline = build_pipeline(c, tokenizer)
    return pipeline, pipeline.env_pool


def test_pipeline_step_with_resampling_trains_only_on_resampled_chunks(tokenizer):
    rl = RLConfig(
        groups_per_step=2,
        group_size=4,
        minibatch_size=8,
        advantage="chunk_discounted",
        loss=LossConfig(policy_loss="ipa_chunk"),
        filter_zero_variance_groups=False,
        resample=ResampleConfig(enabled=True, anchors_per_task=4),
    )
    pipeline, pool = _keydoor_pipeline(tokenizer, rl)
    requests = pipeline.resampler.requests([0, 1], 4)
    assert {len(r.prefix) for r in requests} > {0}  # teacher experts: replayed prefixes
    metrics = pipeline.step([0, 1])
    pipeline.close()
    pool.close()
    assert metrics["resample_experts"] == 2 and "skipped_update" not in metrics
    assert metrics["resample_mean_prefix_turns"] > 0 and np.isfinite(metrics["loss"])
    assert metrics["policy_version"] == 1


@pytest.mark.slow
def test_ipa_resampling_raises_success_on_keydoor(tokenizer):
    """From an untrained policy nothing succeeds from any anchor, so the fork sits at the expert's last chunk
    and the imitation fallback trains on the full replays; within a few steps episodes that sample the
    expert's tail start to succeed (from zero)."""
    rl = RLConfig(
        groups_per_step=2,
        group_size=8,
        minibatch_size=16,
        advantage="chunk_discounted",
        loss=LossConfig(policy_loss="ipa_chunk"),
        filter_zero_variance_groups=False,
        resample=ResampleConfig(enabled=True, anchors_per_task=2, lambda_il=1.0),
    )
    pipeline, pool = _keydoor_pipeline(tokenizer, rl, lr=3e-2, turn_tokens=2)
    history = [pipeline.step([0, 1]) for _ in range(12)]
    pipeline.close()
    pool.close()
    sampled = [m["resample_success_sampled"] for m in history]
    assert sampled[0] == 0.0 and history[1]["resample_il_tasks"] == 2  # hopeless at first: imitate
    assert history[-1]["il_nll"] < history[1]["il_nll"] - 3.0, [m["il_nll"] for m in history]
    assert sum(sampled[4:]) > 0, sampled  # resampled tails now succeed
