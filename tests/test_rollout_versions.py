"""Weight sync and staleness: syncs land between turns (no turn mixes two policy versions), every turn records
its version, and async RL keeps up to k rollouts in flight through the one scheduler (tested at k = 2)."""

import itertools
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_rl_pipeline import pipeline_config  # the 32-wide test model over a small BPE

from alejax.data.synthetic import generate_corpus
from alejax.data.tokenizer import train_bpe
from alejax.envs.base import register
from alejax.envs.pools import ThreadEnvPool
from alejax.models import ModelConfig, create_model
from alejax.rl.build import build_pipeline
from alejax.rl.pipeline import RLConfig, following_steps
from alejax.rollout import RolloutConfig, collate
from alejax.rollout.sampler import Sampler, SamplingConfig
from alejax.rollout.scheduler import EpisodeRequest, RolloutScheduler, SlotState
from alejax.rollout.trajectory import Trajectory
from alejax.train.step import token_logprobs


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(generate_corpus(300, seed=0), vocab_size=400)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
    )
    return create_model(cfg, seed=3)


def _sampler(model, tokenizer):
    """4 rows of 128 positions, decode segments of 4 tokens (the tests' samplers share compiled programs)."""
    return Sampler(model, 4, 128, SamplingConfig(1.0), stop_ids=[tokenizer.eos_id], segment=4)


class TwoTurnEnv:
    """Two turns; every other episode sleeps `slow_s` on each step (slow tool calls), so episodes end apart."""

    tools: list = []
    system_prompt = "Answer."
    resets = itertools.count()
    slow_s = 0.0
    log: list = []  # (event, task seed, time): "reset" and "end" of each episode

    def reset(self, seed):
        self.seed, self.turn, self.slow = seed, 0, next(TwoTurnEnv.resets) % 2
        TwoTurnEnv.log.append(("reset", seed, time.perf_counter()))
        return f"task {seed}: answer twice", {}

    def step(self, action):
        if self.slow:
            time.sleep(TwoTurnEnv.slow_s)
        self.turn += 1
        if self.turn == 2:
            TwoTurnEnv.log.append(("end", self.seed, time.perf_counter()))
            reward = float(action[:1].lower() in "abcdefghij")
            return "", reward, True, False, {"success": bool(reward)}
        return f"observation {self.turn}", 0.0, False, False, {}


register("test/two_turns", TwoTurnEnv)


def _teacher_forced_check(logprobs_under, trajectory: Trajectory):
    """Each sampled turn's μ equals the teacher-forced log-probs under the weights of the turn's version."""
    mask = np.asarray(trajectory.loss_mask, bool)
    chunks = np.asarray(trajectory.chunk_id)
    for chunk, version in enumerate(trajectory.turn_policy_versions, start=1):
        if version < 0:
            continue
        on = mask & (chunks == chunk)
        logp = logprobs_under(version, trajectory)
        np.testing.assert_allclose(
            logp[on], np.asarray(trajectory.behaviour_logp)[on], atol=1e-4, err_msg=f"turn {chunk} v{version}"
        )


def test_a_sync_requested_mid_turn_waits_for_the_turn_boundary(tokenizer, model):
    """The sync is asked for in a decode call whose rows all have more than a segment of their turn left:
    those turns finish with the old weights, the swap happens when no row is decoding, the next turns use the
    new weights. The sampler's version, recorded per prefill / decode call and row, is one per turn and is
    what the trajectory records; μ of every turn is its version's teacher-forced log-prob (the KV of the old
    weights is recomputed after the swap)."""
    sampler = _sampler(model, tokenizer)
    pool = ThreadEnvPool(TwoTurnEnv, max_concurrency=4)
    config = RolloutConfig(max_turns=2, max_new_tokens_per_turn=12)
    scheduler = RolloutScheduler(
        sampler, tokenizer, pool, system_prompt=TwoTurnEnv.system_prompt, config=config
    )
    weights = {0: sampler.params, 1: jax.tree.map(lambda x: x * 1.5, sampler.params)}
    current = {"version": 0}
    seen: dict[tuple[int, int], set[int]] = {}  # (episode, turn) -> sampler versions of its calls
    request = {}  # the decode call at which the sync was asked for, and the turns then inside decode
    calls = {"decode": 0}

    def note(row, turn):
        episode = scheduler.slots[row].trajectory.episode_id
        seen.setdefault((episode, turn), set()).add(current["version"])

    prefill, decode, update = sampler.prefill, sampler.decode, sampler.update_params

    def recording_prefill(cache, chunks, starts, rng):
        for row, chunk in enumerate(chunks):
            traj = scheduler.slots[row].trajectory
            if chunk and starts[row] + len(chunk) == len(traj.tokens):  # samples the turn's first token
                note(row, traj.n_turns + 1)
        return prefill(cache, chunks, starts, rng)

    def recording_decode(cache, token, position, budget, rng, **kwargs):
        rows = [i for i, b in enumerate(budget) if b > 0]
        if not request and rows and all(budget[i] > sampler.segment for i in rows):
            scheduler.update_weights(weights[1], 1)  # from the loop's own thread: it cannot swap now
            request.update(
                call=calls["decode"],
                turns={
                    (scheduler.slots[i].trajectory.episode_id, scheduler.slots[i].trajectory.n_turns)
                    for i in rows
                },
            )
        calls["decode"] += 1
        for i in rows:
            note(i, scheduler.slots[i].trajectory.n_turns)
        return decode(cache, token, position, budget, rng, **kwargs)

    def recording_update(params):
        assert not any(s.state is SlotState.DECODING for s in scheduler.slots)  # only between turns
        current["version"] += 1
        current["swap_call"] = calls["decode"]
        update(params)

    sampler.prefill, sampler.decode, sampler.update_params = (
        recording_prefill,
        recording_decode,
        recording_update,
    )
    try:
        trajectories, stats = scheduler.collect([EpisodeRequest(task_seed=s) for s in range(4)])
    finally:
        pool.close()
    assert current["version"] == 1 and scheduler.policy_version == 1
    assert stats.weight_swaps == 1 and stats.time_swap_wait_s > 0
    assert current["swap_call"] >= request["call"] + 2  # the turns inside decode ran on before the swap
    for turn in request["turns"]:
        assert seen[turn] == {0}  # finished with the weights that began it
    assert all(len(versions) == 1 for versions in seen.values()), seen  # no turn mixes versions
    by_episode = {t.episode_id: t for t in trajectories}
    for (episode, turn), versions in seen.items():
        assert by_episode[episode].turn_policy_versions[turn - 1] == versions.pop()
    for t in trajectories:
        assert t.turn_policy_versions in ([0, 0], [0, 1], [1, 1])
        assert t.oldest_policy_version == t.turn_policy_versions[0]
    # The episodes inside their first turn at the sync span versions across turns, never inside one.
    assert any(turn == 1 for _, turn in request["turns"])
    assert all(by_episode[e].turn_policy_versions == [0, 1] for e, turn in request["turns"] if turn == 1)
    # One teacher-forced pass per version (attention is causal: the padding changes nothing before it).
    batch = collate(trajectories, pad_to=128)
    forward = jax.jit(
        lambda state, tokens: token_logprobs(nnx.merge(sampler.graphdef, state), {"tokens": tokens})[0]
    )
    logp = {v: np.asarray(forward(w, jnp.asarray(batch.tokens))) for v, w in weights.items()}
    row = {id(t): r for r, t in enumerate(trajectories)}
    for t in trajectories:
        _teacher_forced_check(lambda v, t: logp[v][row[id(t)], : len(t.tokens)], t)


def test_turn_versions_align_with_chunks():
    t = Trajectory(episode_id=0, task_seed=0, group_id=0)
    t.add_replayed([5, 6])  # chunk 1: replayed, not sampled
    t.add_generated([1, 2], [-0.1, -0.2], chunk=2, policy_version=3)
    t.add_generated([3], [-0.3], chunk=2, policy_version=3)  # the same turn, the same version
    t.add_context([9])
    t.add_generated([4], [-0.4], chunk=3, policy_version=4)
    assert t.turn_policy_versions == [-1, 3, 4] and t.oldest_policy_version == 3
    with pytest.raises(RuntimeError, match="inside a turn"):
        t.add_generated([7], [-0.5], chunk=3, policy_version=5)
    assert Trajectory(episode_id=1, task_seed=0, group_id=0).oldest_policy_version is None
    assert following_steps(None) == [] and following_steps(range(2)) == [(0, 1)]
    assert following_steps([range(2), [np.int64(5)]]) == [(0, 1), (5,)]


def test_async_k2_keeps_two_rollouts_in_flight_within_the_bound_and_trains(tokenizer):
    TwoTurnEnv.log.clear()
    TwoTurnEnv.slow_s = 0.15
    rl = RLConfig(
        groups_per_step=2,
        group_size=2,
        minibatch_size=4,
        filter_zero_variance_groups=False,
        max_policy_version_gap=2,
    )
    config = pipeline_config(
        tokenizer, rl, env="test/two_turns", rollout=RolloutConfig(max_turns=2, max_new_tokens_per_turn=4)
    )
    pipeline = build_pipeline(config, tokenizer)
    # Rollouts submitted and not yet finished, right after each submit: the in-flight count the bound caps.
    futures, in_flight = [], []
    submit = pipeline.scheduler.submit

    def counting_submit(requests):
        futures.append(submit(requests))
        in_flight.append(sum(not f.done() for f in futures))
        return futures[-1]

    pipeline.scheduler.submit = counting_submit
    taken = []  # each step's trajectories
    take = pipeline._take_rollout

    def take_and_keep(seeds):
        trajectories, stats, wall = take(seeds)
        taken.append(trajectories)
        return trajectories, stats, wall

    pipeline._take_rollout = take_and_keep
    weights = {0: jax.tree.map(np.asarray, pipeline.state.params)}
    n = 4
    steps = [range(2 * i, 2 * i + 2) for i in range(n)]
    metrics = []
    try:
        for i, seeds in enumerate(steps):
            # Three following steps offered: only k = 2 of them may be in flight.
            metrics.append(pipeline.step(seeds, steps[i + 1 : i + 4]))
            weights[pipeline.policy_version] = jax.tree.map(np.asarray, pipeline.state.params)
            assert len(pipeline._in_flight) == min(2, len(steps) - i - 1)
    finally:
        pipeline.close()
        pipeline.env_pool.close()
        TwoTurnEnv.slow_s = 0.0
    assert max(in_flight) == 2  # the bound holds, and is reached
    assert [m["rollouts_in_flight"] for m in metrics] == [2, 2, 1, 0]
    # Two rollouts really share the scheduler: a later step's episodes start before the earlier one's end.
    rollout_of = lambda seed: seed // 2  # noqa: E731
    starts = {
        s: min(t for e, seed, t in TwoTurnEnv.log if e == "reset" and rollout_of(seed) == s) for s in range(n)
    }
    ends = {
        s: max(t for e, seed, t in TwoTurnEnv.log if e == "end" and rollout_of(seed) == s) for s in range(n)
    }
    assert any(starts[s + 1] < ends[s] for s in range(1, n - 1)), (starts, ends)
    # Every step trained; staleness counts from each trajectory's oldest turn and stays within k.
    assert [m["policy_version"] for m in metrics] == [1, 2, 3, 4]
    assert all(
        "skipped_update" not in m and m["stale_dropped"] == 0 and np.isfinite(m["loss"]) for m in metrics
    )
    assert all(m["staleness"] <= 2 for m in metrics) and metrics[0]["staleness"] == 0
    assert pipeline.sampler_version == pipeline.policy_version == 4
    for step, (m, trajectories) in enumerate(zip(metrics, taken)):
        trained_at = step  # the trainer's version when this step's batch was scored
        oldest = [t.info["policy_version"] for t in trajectories]
        assert m["staleness"] == max(trained_at - v for v in oldest)
        for t in trajectories:
            versions = t.turn_policy_versions
            assert len(versions) == t.n_turns and min(versions) >= 0
            assert versions == sorted(versions) and t.info["policy_version"] == versions[0]
            assert versions[-1] <= trained_at
    # μ of each turn is the log-prob under the trainer's weights of that turn's version.
    everything = [t for trajectories in taken for t in trajectories]
    batch = collate(everything, pad_to=128)
    logp = {v: pipeline._logprobs(jax.tree.map(jnp.asarray, w), batch) for v, w in weights.items()}
    row = {id(t): r for r, t in enumerate(everything)}
    for t in everything:
        _teacher_forced_check(lambda v, t: logp[v][row[id(t)], : len(t.tokens)], t)


def test_a_sync_with_nothing_playing_is_immediate_and_play_is_single(tokenizer, model):
    """With no loop running the swap is at once; a second `play` while one runs returns at once."""
    sampler = _sampler(model, tokenizer)
    pool = ThreadEnvPool(TwoTurnEnv, max_concurrency=4)
    scheduler = RolloutScheduler(
        sampler, tokenizer, pool, config=RolloutConfig(max_turns=2, max_new_tokens_per_turn=3)
    )
    scheduler.update_weights(sampler.params, 7)
    assert scheduler.policy_version == 7
    first, second = scheduler.submit([EpisodeRequest(0)] * 3), scheduler.submit([EpisodeRequest(1)] * 2)
    empty = scheduler.submit([])
    player = threading.Thread(target=scheduler.play)
    player.start()
    scheduler.play()  # returns at once or plays: either way every rollout ends
    player.join()
    pool.close()
    (a, stats_a), (b, _), (none, _) = first.result(), second.result(), empty.result()
    assert len(a) == 3 and len(b) == 2 and none == [] and stats_a.episodes == 3
    assert all(t.turn_policy_versions == [7] * t.n_turns for t in a + b)
