"""Context compression inside RL rollouts: a rewrite of the history forks the episode into segments, each
consistent with what the sampler saw (μ equals the teacher-forced log-probs), and every segment trains."""

import numpy as np
import pytest
from test_rl_pipeline import pipeline_config  # the 32-wide test model over a small BPE

from alejax.agent.context import ContextConfig
from alejax.data.synthetic import generate_corpus
from alejax.data.tokenizer import train_bpe
from alejax.envs.base import register
from alejax.rl.build import build_pipeline
from alejax.rl.pipeline import RLConfig, group_requests
from alejax.rl.resample import ResampleConfig
from alejax.rollout import RolloutConfig, collate
from alejax.rollout.trajectory import with_segments

WORDS = "the red box sits on a small table near the green door and a blue lamp".split()


class LongObservationEnv:
    """Four turns; each observation is ~60 words, so a small token budget forces compression; reward 1 when
    the last answer starts with a letter a-m."""

    tools: list = []
    system_prompt = "Answer."

    def reset(self, seed):
        self.seed, self.turn = seed, 0
        return f"task {seed}: read and answer", {}

    def step(self, action):
        self.turn += 1
        if self.turn == 4:
            reward = float(action[:1].lower() in "abcdefghijklm")
            return "", reward, True, False, {"success": bool(reward)}
        rng = np.random.default_rng([self.seed, self.turn])
        return " ".join(rng.choice(WORDS, 60)), 0.0, False, False, {}


register("test/long_observations", LongObservationEnv)
CONTEXT = ContextConfig(token_budget=160, compress_at=0.75, keep_recent=1, compressed_chars=24)
ROLLOUT = RolloutConfig(max_turns=4, max_new_tokens_per_turn=4, compress_context=True, context=CONTEXT)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(generate_corpus(300, seed=0) + [" ".join(WORDS)] * 20, vocab_size=400)


def _pipeline(tokenizer, rl, rollout=ROLLOUT):
    config = pipeline_config(tokenizer, rl, env="test/long_observations", rollout=rollout, max_length=512)
    return build_pipeline(config, tokenizer)


def test_a_rewritten_history_forks_into_segments_that_match_what_the_sampler_saw(tokenizer):
    rl = RLConfig(groups_per_step=2, group_size=4, minibatch_size=8, filter_zero_variance_groups=False)
    pipeline = _pipeline(tokenizer, rl)
    try:
        episodes, stats = pipeline.scheduler.collect(group_requests(range(2), 4))
    finally:
        pipeline.env_pool.close()
    assert len(episodes) == 8 and stats.context_forks > 0
    forked = [t for t in episodes if t.segments]
    assert forked and stats.context_forks == sum(len(t.segments) for t in episodes)
    for episode in forked:
        parts = [*episode.segments, episode]
        assert [p.info["segment"] for p in parts] == list(range(len(parts)))
        # Turn numbering carries across the fork; every segment has the episode's return and ending.
        assert max(parts[-1].chunk_id) == episode.n_turns == 4 and min(c for c in parts[-1].chunk_id if c) > 1
        assert all(p.reward == episode.reward and p.terminated == episode.terminated for p in parts)
        # The later segment starts from the rewritten (shorter) history, not from the whole transcript.
        assert "characters omitted" in tokenizer.decode(parts[-1].tokens)
        assert "characters omitted" not in tokenizer.decode(parts[0].tokens)
    segments = with_segments(episodes)
    assert len(segments) == 8 + stats.context_forks
    # Each segment's tokens are what the sampler saw: the trainer's teacher-forced log-probs on them equal μ.
    batch = collate(segments, pad_to=512)
    old = pipeline._logprobs(pipeline.state.params, batch)
    mask = batch.loss_mask.astype(bool)
    assert mask.sum() > 0 and np.abs(old[mask] - batch.behaviour_logp[mask]).max() < 1e-4


def test_an_rl_step_trains_every_segment(tokenizer):
    rl = RLConfig(groups_per_step=2, group_size=4, minibatch_size=4, filter_zero_variance_groups=False)
    pipeline = _pipeline(tokenizer, rl)
    try:
        metrics = pipeline.step(range(2))
    finally:
        pipeline.env_pool.close()
    assert metrics["context_forks"] > 0 and metrics["policy_version"] == 1 and np.isfinite(metrics["loss"])
    # Every segment of every episode goes to the update (no group is filtered here).
    assert metrics["trajectories"] == 8 + metrics["context_forks"] and metrics["kept_fraction"] == 1.0


def test_compression_with_chunk_initialized_resampling_is_refused(tokenizer):
    rl = RLConfig(groups_per_step=1, group_size=2, minibatch_size=2, resample=ResampleConfig(enabled=True))
    with pytest.raises(ValueError, match="compress_context"):
        _pipeline(tokenizer, rl)
