"""Sampler parity with the full forward pass, bucketing, and the multi-turn slot scheduler."""

import dataclasses
import random
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alejax.data.synthetic import generate_corpus
from alejax.data.tokenizer import train_bpe
from alejax.envs.pools import ThreadEnvPool
from alejax.models import ModelConfig, RopeScaling, create_model
from alejax.parallel import make_mesh
from alejax.rollout.sampler import Sampler, SamplingConfig, bucket_length
from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, RolloutScheduler
from alejax.rollout.trajectory import collate
from alejax.train.step import token_logprobs

CFG = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64)


@pytest.fixture(scope="module")
def model():
    return create_model(CFG, seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(generate_corpus(300, seed=0), vocab_size=400)


def _prompts(lengths, seed=0, vocab=97):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).tolist() for n in lengths]


def _teacher_forced(model, prompt, generated):
    logp, _ = token_logprobs(model, {"tokens": jnp.asarray([prompt + generated])})
    return np.asarray(logp[0, len(prompt) :])


def test_greedy_equals_stepwise_argmax_of_the_full_forward(model):
    sampler = Sampler(model, batch_size=4, max_length=64, sampling=SamplingConfig(temperature=0), segment=5)
    prompts = _prompts([3, 9, 17])
    outputs, logps = sampler.generate(prompts, 12)
    forward = jax.jit(lambda tokens: model(tokens))  # one fixed width: later padding cannot affect the past
    for prompt, out, lp in zip(prompts, outputs, logps):
        seq = list(prompt)
        for _ in range(12):
            logits = forward(jnp.asarray([seq + [0] * (32 - len(seq))]))
            seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
        assert out == seq[len(prompt) :]
        np.testing.assert_allclose(lp, _teacher_forced(model, prompt, out), atol=1e-4)


def _truncated_log_probs(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """log of the top-k / top-p truncated, renormalised distribution, by enumeration (sort, cumulative sum)."""
    out = np.full_like(logits, -np.inf)
    for row, values in enumerate(logits):
        order = np.argsort(-values, kind="stable")[: top_k or len(values)]
        p = np.exp(values[order] - values[order].max())
        p /= p.sum()
        keep = (np.cumsum(p) - p) < top_p  # the smallest best-first prefix reaching top_p
        kept = values[order][keep]
        out[row, order[keep]] = kept - np.log(np.sum(np.exp(kept - kept.max()))) - kept.max()
    return out


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingConfig(1.0),
        SamplingConfig(0.7, top_k=8, top_p=0.9),  # μ under the truncated distribution that drew the token
        SamplingConfig(0.7, top_k=8, top_p=0.9, logprob="full"),  # μ under the tempered full one
    ],
)
def test_behaviour_logprobs_equal_teacher_forced(model, sampling):
    sampler = Sampler(model, batch_size=4, max_length=64, sampling=sampling, segment=7)
    prompts = _prompts([4, 11, 2, 20], seed=1)
    outputs, logps = sampler.generate(prompts, 16, seed=5)
    errors = []
    for prompt, out, lp in zip(prompts, outputs, logps):
        logits = model(jnp.asarray([prompt + out]))[0, len(prompt) - 1 : -1] / sampling.temperature
        if sampling.logprob == "full" or not (sampling.top_k or sampling.top_p < 1):
            log_probs = np.asarray(jax.nn.log_softmax(logits))
        else:
            log_probs = _truncated_log_probs(np.asarray(logits, np.float64), sampling.top_k, sampling.top_p)
        expected = log_probs[np.arange(len(out)), out]
        assert np.all(np.isfinite(expected))  # every drawn token was inside the kept set
        errors.append(np.abs(expected - np.asarray(lp)).max())
    assert max(errors) < 1e-4, errors
    # Sampling is not greedy: different seeds give different continuations.
    assert sampler.generate(prompts, 16, seed=6)[0] != outputs


def test_top_k_restricts_the_draw(model):
    sampler = Sampler(model, batch_size=2, max_length=48, sampling=SamplingConfig(1.0, top_k=1), segment=8)
    greedy = Sampler(model, batch_size=2, max_length=48, sampling=SamplingConfig(0.0), segment=8)
    prompts = _prompts([5, 6], seed=2)
    assert sampler.generate(prompts, 10, seed=1)[0] == greedy.generate(prompts, 10)[0]


def test_stop_tokens_and_per_row_budgets(model):
    sampler = Sampler(model, batch_size=3, max_length=64, sampling=SamplingConfig(0.0), segment=4)
    prompts = _prompts([6, 6, 6], seed=3)
    free, _ = sampler.generate(prompts, 10)
    stop = free[0][3]
    stopping = Sampler(
        model, batch_size=3, max_length=64, sampling=SamplingConfig(0.0), stop_ids=[stop], segment=4
    )
    outputs, _ = stopping.generate(prompts, [10, 2, 7])
    first_stop = free[0].index(stop)
    assert outputs[0] == free[0][: first_stop + 1]  # ends with the stop token
    assert len(outputs[1]) == min(2, (free[1].index(stop) + 1) if stop in free[1] else 2)
    assert len(outputs[2]) <= 7


def test_sampler_wants_one_key_per_row(model):
    sampler = Sampler(model, 2, 32)
    with pytest.raises(ValueError, match=r"one key per row, shape \(2,\)"):
        sampler.prefill(sampler.init_cache(), [[1, 2], None], [0, 0], jax.random.key(0))


def test_warm_sampler_does_not_recompile_over_mixed_lengths(model):
    sampler = Sampler(model, batch_size=4, max_length=160, sampling=SamplingConfig(1.0), segment=8)
    for n in (10, 20, 40, 100):  # one request per width bucket (16, 32, 64, 128) and row bucket (1, 2, 4)
        for rows in (1, 2, 4):
            sampler.generate(_prompts([n] * rows), 3)
    warm = sampler.compilations
    assert warm == 4 * 3 + 1  # prefill programs + one decode program
    rng = np.random.default_rng(0)
    for i in range(50):
        lengths = rng.integers(1, 110, size=rng.integers(1, 5)).tolist()
        sampler.generate(_prompts(lengths, seed=i), int(rng.integers(1, 20)), seed=i)
    assert sampler.compilations == warm
    assert [bucket_length(n) for n in (1, 16, 17, 100, 300)] == [16, 16, 32, 128, 512]


def test_cache_views_equal_the_whole_cache_and_compile_per_view(model):
    """Attention over the filled part only (a power-of-two view) samples what attending over the whole
    preallocated cache samples, and each view length is one decode program."""
    prompts = _prompts([5, 40, 13], seed=3)
    kwargs = dict(batch_size=3, max_length=512, sampling=SamplingConfig(1.0, top_k=20), segment=8)
    whole = Sampler(model, cache_views=False, **kwargs)
    viewed = Sampler(model, min_cache_view=16, **kwargs)
    expected, expected_logp = whole.generate(prompts, 60, seed=5)
    got, got_logp = viewed.generate(prompts, 60, seed=5)
    assert got == expected
    for a, b in zip(got_logp, expected_logp):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert viewed.cache_view(40) == 64 and viewed.cache_view(101) == 128 and viewed.cache_view(600) == 512
    assert whole.cache_view(40) == 512
    # prompts end at <= 40 (prefill view 64); 60 new tokens reach position 100: decode views 64 and 128
    assert viewed.compilations == 1 + 2
    assert whole.compilations == 2


def test_unstacked_decode_layers_sample_what_the_scan_samples(model):
    """Decode from per-layer weight copies and per-layer cache views (`unstack`, the CPU default without a
    mesh) samples the tokens and log-probs of the stacked layers' scan, across views and a weight update."""
    prompts = _prompts([5, 30, 13], seed=4)
    kwargs = dict(batch_size=3, max_length=256, sampling=SamplingConfig(1.0, top_k=20), segment=6)
    scan, unrolled = Sampler(model, unstack=False, **kwargs), Sampler(model, unstack=True, **kwargs)
    before = unrolled.generate(prompts, 40, seed=3)
    assert before[0] == scan.generate(prompts, 40, seed=3)[0]
    for sampler in (scan, unrolled):  # new weights: the per-layer copies made above must follow them
        sampler.update_params(jax.tree.map(lambda a: a * 1.5, sampler.params))
    expected, expected_logp = scan.generate(prompts, 40, seed=3)
    got, got_logp = unrolled.generate(prompts, 40, seed=3)
    assert got == expected and got != before[0]
    for a, b in zip(got_logp, expected_logp):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fewer_decode_rows_than_cache_rows_samples_the_same(model):
    """A sampler whose decode computes 2 of its 6 cache rows (the rest hold waiting rows' KV) samples
    what one decoding every row samples; early segment ends (`min_active`) change nothing either."""
    prompts = _prompts([4, 11, 7, 2, 9], seed=6)
    kwargs = dict(batch_size=6, max_length=64, sampling=SamplingConfig(1.0), segment=5)
    expected, expected_logp = Sampler(model, **kwargs).generate(prompts, 14, seed=2)
    narrow = Sampler(model, decode_rows=2, **kwargs)
    got, got_logp = narrow.generate(prompts, 14, seed=2)
    assert got == expected
    np.testing.assert_allclose(np.concatenate(got_logp), np.concatenate(expected_logp), atol=1e-5)
    with pytest.raises(ValueError, match="decode_rows=2"):
        narrow.decode(
            narrow.init_cache(), [0] * 6, [0] * 6, [3, 3, 3, 0, 0, 0], jax.random.split(jax.random.key(0), 6)
        )
    # min_active: the segment stops once fewer than 2 rows still decode (row 1 stops after 1 token).
    keys = jax.random.split(jax.random.key(0), 6)
    *_, count, active = narrow.decode(
        narrow.init_cache(), [1] * 6, [0] * 6, [5, 1, 0, 0, 0, 0], keys, min_active=2
    )
    assert np.asarray(count).tolist() == [1, 1, 0, 0, 0, 0] and np.asarray(active).tolist()[0]


def test_sampling_on_8_devices_equals_single_device():
    cfg = CFG.replace(n_heads=8, n_kv_heads=2)
    prompts = _prompts([5, 9, 3, 12, 7, 1, 15, 4], seed=4)
    single = Sampler(
        create_model(cfg, seed=2), batch_size=8, max_length=48, sampling=SamplingConfig(0.0), segment=6
    )
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = Sampler(
        create_model(cfg, mesh, seed=2), 8, 48, sampling=SamplingConfig(0.0), segment=6, mesh=mesh
    )
    out_a, lp_a = single.generate(prompts, 10)
    out_b, lp_b = sharded.generate(prompts, 10)
    assert out_a == out_b
    np.testing.assert_allclose(np.concatenate(lp_a), np.concatenate(lp_b), atol=1e-4)
    # Fewer rows than the batch: the prefill computes a row bucket narrower than the mesh's batch axes.
    few_a, _ = single.generate(prompts[:3], 10)
    few_b, _ = sharded.generate(prompts[:3], 10)
    assert few_a == few_b == out_a[:3]
    cache = sharded.init_cache()
    assert cache.k.sharding.spec[:3] == (None, ("data", "fsdp"), "tensor")  # [layers, batch, kv_heads, ..]


def test_sampler_with_scaled_rope_equals_the_full_forward():
    """YaRN with q/k norms (Qwen3's long-context form), far beyond its pretraining length of 16: the cached
    prefill and decode give the full forward's greedy tokens and log-probabilities."""
    yarn = RopeScaling("yarn", factor=4.0, original_max_position_embeddings=16)
    model = create_model(CFG.replace(rope_scaling=yarn, qk_norm=True, init_std=0.1), seed=4)
    sampler = Sampler(model, batch_size=3, max_length=96, sampling=SamplingConfig(temperature=0), segment=5)
    prompts = _prompts([20, 33, 9], seed=7)
    outputs, logps = sampler.generate(prompts, 24)
    # One full forward over the right-padded sequences (padding cannot reach back: attention is causal).
    batch = np.zeros((len(prompts), 64), np.int32)
    for row, (prompt, out) in enumerate(zip(prompts, outputs)):
        batch[row, : len(prompt) + len(out)] = prompt + out
    full = jax.nn.log_softmax(jax.jit(lambda tokens: model(tokens))(jnp.asarray(batch)), axis=-1)
    for row, (prompt, out, lp) in enumerate(zip(prompts, outputs, logps)):
        logp = np.asarray(full[row, len(prompt) - 1 : len(prompt) + len(out) - 1])
        assert out == np.argmax(logp, axis=-1).tolist()  # each token: the argmax given the ones before
        np.testing.assert_allclose(lp, logp[np.arange(len(out)), out], atol=1e-4)


# ------------------------------------------------------------------------------------------------------
# The scheduler


class CountingEnv:
    """Three turns; each step sleeps a seeded random latency; optionally crashes."""

    tools: list = []
    system_prompt = "Count with me."
    crashes: dict = {}  # seed -> number of resets that still crash (shared, so re-samples can succeed)

    def __init__(self, latency=(0.005, 0.05), turns=3):
        self.latency, self.turns = latency, turns

    def reset(self, seed):
        self.rng, self.t, self.seed = random.Random(seed), 0, seed
        return f"task {seed}: say anything", {}

    def step(self, action):
        if CountingEnv.crashes.get(self.seed, 0) > 0:
            CountingEnv.crashes[self.seed] -= 1
            raise RuntimeError("worker crashed")
        time.sleep(self.rng.uniform(*self.latency))
        self.t += 1
        done = self.t >= self.turns
        return f"observation {self.t}", float(self.t == self.turns), done, False, {"success": done}


def _scheduler(
    tokenizer,
    batch_size=4,
    env=CountingEnv,
    max_turns=6,
    max_new=10,
    max_length=512,
    seed=0,
    step_timeout_s=None,
    **rollout,
):
    cfg = CFG.replace(vocab_size=tokenizer.vocab_size)
    sampler = Sampler(
        create_model(cfg, seed=3),
        batch_size,
        max_length,
        SamplingConfig(1.0),
        stop_ids=[tokenizer.eos_id],
        segment=6,
        decode_rows=rollout.get("decode_rows"),
    )
    pool = ThreadEnvPool(env, max_concurrency=8, step_timeout_s=step_timeout_s)
    config = RolloutConfig(max_turns=max_turns, max_new_tokens_per_turn=max_new, **rollout)
    return RolloutScheduler(
        sampler, tokenizer, pool, system_prompt=env.system_prompt, config=config, seed=seed
    ), pool


def test_multi_turn_trajectory_is_the_chat_rendering_and_logps_match(tokenizer):
    scheduler, pool = _scheduler(tokenizer)
    trajectories, stats = scheduler.collect([EpisodeRequest(task_seed=s, group_id=s // 2) for s in range(6)])
    pool.close()
    assert sorted(t.task_seed for t in trajectories) == list(range(6))
    model = scheduler.sampler
    for traj in trajectories:
        assert traj.terminated and not traj.truncated and traj.n_turns == 3 and traj.reward == 1.0
        rendered = tokenizer.apply_chat_template(traj.messages)
        assert tokenizer.decode(traj.tokens) == rendered
        # The model's tokens are each turn's content and end-of-turn token; chunks are turns 1..3.
        mask = np.asarray(traj.loss_mask, bool)
        chunks = np.asarray(traj.chunk_id)
        assert set(chunks[mask]) == {1, 2, 3} and not chunks[~mask].any()
        assistant = [m["content"] for m in traj.messages if m["role"] == "assistant"]
        for k, content in enumerate(assistant, start=1):
            turn = [tok for tok, c in zip(traj.tokens, chunks) if c == k]
            text = tokenizer.decode(turn)
            assert text.startswith(content) and len(turn) <= 10
        # μ from the sampler equals the teacher-forced log-probs of the spliced sequence.
        graph_model = nnx.merge(model.graphdef, model.params)
        logp, _ = token_logprobs(graph_model, {"tokens": jnp.asarray([traj.tokens])})
        np.testing.assert_allclose(
            np.asarray(logp[0])[mask], np.asarray(traj.behaviour_logp)[mask], atol=1e-4
        )
    batch = collate(trajectories)
    assert batch.tokens.shape[0] == 6 and batch.loss_mask.sum() == sum(sum(t.loss_mask) for t in trajectories)
    assert batch.success.all() and set(batch.group_id.tolist()) == {0, 1, 2}


class LongPromptEnv(CountingEnv):
    system_prompt = "Count with me, slowly and carefully, one number per turn, and never skip a number."

    def reset(self, seed):
        super().reset(seed)
        return f"task {seed}: " + " ".join(f"item {k}" for k in range(12)), {}


def test_a_kv_pool_with_fewer_decode_rows_plays_the_same_episodes(tokenizer):
    """8 episodes in flight on 3 decode rows: episodes take turns on the rows (KV kept in their cache rows
    while they wait or queue) and every trajectory is what 8 decode rows sample (keys follow the episode and
    position, not the row)."""
    requests = [EpisodeRequest(task_seed=s, group_id=s) for s in range(10)]
    runs = {}
    for rows in (None, 3):
        scheduler, pool = _scheduler(tokenizer, batch_size=8, decode_rows=rows)
        runs[rows] = scheduler.collect(requests)
        pool.close()
        assert scheduler.sampler.decode_rows == (rows or 8)
    (full, full_stats), (narrow, narrow_stats) = runs[None], runs[3]
    assert narrow_stats.episodes == 10 and not narrow_stats.aborted_episodes
    for a, b in zip(full, narrow):
        assert a.task_seed == b.task_seed and a.tokens == b.tokens and a.n_turns == b.n_turns == 3
        np.testing.assert_allclose(a.behaviour_logp, b.behaviour_logp, atol=1e-5)
    # Row-steps count the 3 rows the decode computes, so a full narrow decode reads as utilization ~1. How
    # full depends on when the envs answer (threads: 0.49-0.6 seen under load), so it is compared with the 8
    # rows' in the same run, which idle while 10 episodes drain through them.
    assert narrow_stats.generated_tokens == full_stats.generated_tokens
    assert narrow_stats.decode_row_steps % 3 == 0
    assert narrow_stats.decode_row_utilization > full_stats.decode_row_utilization + 0.1, (
        narrow_stats.decode_row_utilization,
        full_stats.decode_row_utilization,
    )


def test_chunked_prefill_interleaves_and_changes_nothing(tokenizer):
    """Long prompts prefilled 8 tokens a call (decode segments of other rows in between) sample exactly what
    one call per prompt samples, and each turn's time to first token is recorded."""
    requests = [EpisodeRequest(task_seed=s, group_id=s) for s in range(6)]
    runs = {}
    for chunk in (None, 8):
        scheduler, pool = _scheduler(tokenizer, env=LongPromptEnv, prefill_chunk=chunk, share_prefixes=False)
        calls = []
        prefill = scheduler.sampler.prefill
        scheduler.sampler.prefill = lambda *a, calls=calls, prefill=prefill, **k: (
            calls.append(1) or prefill(*a, **k)
        )
        runs[chunk] = scheduler.collect(requests), len(calls)
        pool.close()
    ((whole, whole_stats), whole_calls), ((chunked, chunked_stats), chunked_calls) = runs[None], runs[8]
    assert chunked_calls > whole_calls and chunked_stats.prefill_tokens == whole_stats.prefill_tokens
    for a, b in zip(whole, chunked):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.behaviour_logp, b.behaviour_logp, atol=1e-5)
    assert len(chunked_stats.time_to_first_token_s) == sum(t.n_turns for t in chunked) == 18
    summary = chunked_stats.as_dict()
    assert 0 < summary["time_to_first_token_p50_s"] <= summary["time_to_first_token_p95_s"]


def test_shared_prefixes_are_prefilled_once_and_change_nothing(tokenizer):
    """A group's rows (same task seed, so the same prompt) copy the KV of a row holding the prompt — in the
    same prefill call or from a live row — and sample exactly what each would have sampled alone."""
    requests = [EpisodeRequest(task_seed=7, group_id=0)] * 5 + [EpisodeRequest(task_seed=8, group_id=1)] * 3
    runs = {}
    for share in (False, True):
        scheduler, pool = _scheduler(tokenizer, env=LongPromptEnv, share_prefixes=share, min_shared_prefix=4)
        runs[share] = scheduler.collect(requests)
        pool.close()
    (plain, plain_stats), (shared, shared_stats) = runs[False], runs[True]
    prompt = len(tokenizer.encode(LongPromptEnv.system_prompt))
    assert shared_stats.prefill_tokens_shared >= 6 * prompt  # at least the system prompt, for 6 of 8 rows
    assert plain_stats.prefill_tokens_shared == 0
    assert shared_stats.prefill_tokens + shared_stats.prefill_tokens_shared == plain_stats.prefill_tokens
    model = nnx.merge(scheduler.sampler.graphdef, scheduler.sampler.params)
    for a, b in zip(plain, shared):
        assert a.tokens == b.tokens and a.loss_mask == b.loss_mask
        np.testing.assert_allclose(a.behaviour_logp, b.behaviour_logp, atol=1e-5)
        mask = np.asarray(b.loss_mask, bool)
        logp, _ = token_logprobs(model, {"tokens": jnp.asarray([b.tokens])})
        np.testing.assert_allclose(np.asarray(logp[0])[mask], np.asarray(b.behaviour_logp)[mask], atol=1e-4)


def test_slots_stay_busy_with_random_env_latency(tokenizer):
    scheduler, pool = _scheduler(tokenizer, batch_size=4)
    trajectories, stats = scheduler.collect([EpisodeRequest(task_seed=s) for s in range(16)])
    pool.close()
    assert len(trajectories) == 16 and stats.episodes == 16
    assert stats.slot_utilization > 0.9, stats.as_dict()


def test_same_seed_same_episodes_whatever_the_env_timing_and_slot_count(tokenizer):
    """Batches follow env timing; per-episode keys make the sampled episodes independent of it."""

    class Jittery(CountingEnv):
        salt = 0  # changes every step's latency, so episodes share prefill/decode calls differently

        def reset(self, seed):
            observation, info = super().reset(seed)
            self.rng = random.Random(seed * 1000 + Jittery.salt)
            return observation, info

    requests = [EpisodeRequest(task_seed=s % 5, group_id=s // 2) for s in range(10)]  # seeds repeat
    runs = []
    for salt, slots in ((0, 4), (1, 3), (2, 6)):
        Jittery.salt = salt
        scheduler, pool = _scheduler(tokenizer, batch_size=slots, env=Jittery, seed=7)
        runs.append(scheduler.collect(requests)[0])
        pool.close()
    first = runs[0]
    assert [t.task_seed for t in first] == [r.task_seed for r in requests]  # returned in request order
    assert len({tuple(t.tokens) for t in first}) > 5  # the repeated seeds sampled different episodes
    for other in runs[1:]:
        for a, b in zip(first, other, strict=True):
            assert a.tokens == b.tokens and a.loss_mask == b.loss_mask
            np.testing.assert_allclose(a.behaviour_logp, b.behaviour_logp, atol=1e-5)
    # A different scheduler seed samples different episodes.
    Jittery.salt = 0
    scheduler, pool = _scheduler(tokenizer, batch_size=4, env=Jittery, seed=8)
    other_seed = scheduler.collect(requests)[0]
    pool.close()
    assert [t.tokens for t in other_seed] != [t.tokens for t in first]


def test_aborted_episodes_are_resampled_from_the_same_seed_then_reported(tokenizer):
    CountingEnv.crashes = {1: 1, 2: 99}
    try:
        scheduler, pool = _scheduler(tokenizer, batch_size=2)
        trajectories, stats = scheduler.collect([EpisodeRequest(task_seed=s) for s in range(3)])
        pool.close()
    finally:
        CountingEnv.crashes = {}
    by_seed = {t.task_seed: t for t in trajectories}
    assert sorted(by_seed) == [0, 1, 2]  # nothing dropped
    assert not by_seed[1].aborted and by_seed[1].terminated and by_seed[1].info["attempts"] == 2
    assert by_seed[2].aborted and "worker crashed" in by_seed[2].info["error"]
    assert stats.aborted_resamples == 1 + 2  # seed 1 once, seed 2 until max_attempts=3


def test_a_hung_env_step_times_out_and_is_resampled(tokenizer):
    release = threading.Event()

    class HangsOnce(CountingEnv):
        hangs = {1: 1}  # seed -> steps that still hang

        def step(self, action):
            if HangsOnce.hangs.get(self.seed, 0) > 0:
                HangsOnce.hangs[self.seed] -= 1
                release.wait(60)  # a hung env: the pool's step timeout walks away from it
            return super().step(action)

    try:
        scheduler, pool = _scheduler(tokenizer, batch_size=2, env=HangsOnce, step_timeout_s=0.5)
        trajectories, stats = scheduler.collect([EpisodeRequest(task_seed=s) for s in range(3)])
        pool.close()
    finally:
        release.set()
    assert [t.task_seed for t in trajectories] == [0, 1, 2] and all(t.terminated for t in trajectories)
    assert trajectories[1].info["attempts"] == 2 and stats.aborted_resamples == 1


def test_turn_and_context_limits_truncate_and_keep_tokens(tokenizer):
    class Endless(CountingEnv):
        def __init__(self):
            super().__init__(latency=(0, 0), turns=10**9)

    scheduler, pool = _scheduler(tokenizer, env=Endless, max_turns=2)
    (traj,), _ = scheduler.collect([EpisodeRequest(task_seed=0)])
    assert traj.truncated and not traj.terminated and traj.n_turns == 2
    assert traj.info["truncated_by"] == "turn_limit"
    assert tokenizer.decode(traj.tokens) == tokenizer.apply_chat_template(traj.messages)
    pool.close()

    scheduler, pool = _scheduler(tokenizer, env=Endless, max_turns=100, max_length=96)
    (traj,), _ = scheduler.collect([EpisodeRequest(task_seed=0)])
    assert traj.truncated and traj.info["truncated_by"] == "context_limit" and traj.n_turns >= 1
    assert len(traj.tokens) <= 96 + 2 and sum(traj.loss_mask) > 0
    pool.close()


@pytest.mark.parametrize(
    "sampling, expected",
    [
        (SamplingConfig(1.0), [0.5, 0.3, 0.15, 0.05]),
        (SamplingConfig(1.0, top_p=0.7), [0.625, 0.375, 0, 0]),  # smallest prefix with mass >= 0.7
        (
            SamplingConfig(1.0, top_k=3, top_p=0.9),
            [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0],
        ),  # p renormalized in top-k
        (SamplingConfig(1.0, top_k=3, top_p=0.8), [0.625, 0.375, 0, 0]),
        (SamplingConfig(1.0, top_k=1), [1, 0, 0, 0]),
        (
            SamplingConfig(0.5),
            np.array([0.5, 0.3, 0.15, 0.05]) ** 2 / np.sum(np.array([0.5, 0.3, 0.15, 0.05]) ** 2),
        ),
    ],
)
def test_sampling_frequencies_follow_the_truncated_distribution(sampling, expected):
    from alejax.rollout.sampler import sample_logits

    logits = jnp.log(jnp.tile(jnp.array([[0.5, 0.3, 0.15, 0.05]]), (20000, 1)))
    keys = jax.random.split(jax.random.key(0), 20000)  # one key per row, as the sampler draws
    tokens, logp = jax.jit(lambda x, k: sample_logits(x, k, sampling))(logits, keys)
    frequencies = np.bincount(np.asarray(tokens), minlength=4) / 20000
    np.testing.assert_allclose(frequencies, expected, atol=0.015)
    # μ is the log-probability of the drawn token under the distribution that drew it (enumerated above) ...
    drawn = np.asarray(tokens)
    np.testing.assert_allclose(np.exp(np.asarray(logp)), np.asarray(expected)[drawn], atol=1e-5)
    # ... and, by option, under the tempered, untruncated distribution.
    full = dataclasses.replace(sampling, logprob="full")
    tokens_full, logp_full = jax.jit(lambda x, k: sample_logits(x, k, full))(logits, keys)
    np.testing.assert_array_equal(np.asarray(tokens_full), drawn)  # the option changes μ, not the draw
    tempered = jax.nn.log_softmax(logits[0] / sampling.temperature)
    np.testing.assert_allclose(np.asarray(logp_full), np.asarray(tempered)[drawn], atol=1e-6)
