"""Evaluation statistics (pass@k, pass^k, intervals, paired differences) and the evaluator on a tiny policy."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
from flax import nnx

from alejax.data.episodes import episodes_tokenizer, expert_episodes
from alejax.envs.base import make
from alejax.models import ModelConfig, create_model
from alejax.rollout.evaluate import compare, evaluate, evaluate_policy, write_report
from alejax.rollout.sampler import SamplingConfig
from alejax.rollout.scheduler import RolloutConfig
from alejax.stats import bootstrap_ci, paired_difference, pass_at_k, pass_hat_k


@pytest.mark.parametrize("n,c", [(5, 0), (5, 2), (6, 3), (4, 4)])
def test_pass_at_k_and_pass_hat_k_equal_enumeration_over_subsets(n, c):
    trials = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(trials, k))
        assert pass_at_k(n, c, k) == pytest.approx(np.mean([any(s) for s in subsets]))
        assert pass_hat_k(n, c, k) == pytest.approx(np.mean([all(s) for s in subsets]))
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)


def test_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    small, large = rng.random(20), rng.random(2000)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo_large, hi_large = bootstrap_ci(large)
    assert hi_large - lo_large < (hi - lo) / 5  # ~1/sqrt(100) of the width
    a = np.array([0, 0, 1, 1, 0, 1.0])
    b = np.array([1, 0, 1, 1, 1, 0.0])
    d = paired_difference(a, b)
    assert d["mean_difference"] == pytest.approx(1 / 6)
    assert d["se"] == pytest.approx(np.std(b - a, ddof=1) / np.sqrt(6))
    assert (d["better"], d["worse"], d["tied"]) == (2, 1, 3)
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference(a, b[:4])


@pytest.fixture(scope="module")
def policy():
    tokenizer = episodes_tokenizer(expert_episodes("arithmetic/easy", range(20)), 400)
    cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
    )
    graphdef, params = nnx.split(create_model(cfg, seed=0))
    return graphdef, params, tokenizer


def test_evaluate_keeps_k_sampled_episodes_per_task_and_writes_a_report(policy, tmp_path):
    graphdef, params, tokenizer = policy
    env = make("arithmetic/easy")
    kwargs = dict(
        system_prompt=env.system_prompt,
        rollout=RolloutConfig(max_turns=2, max_new_tokens_per_turn=8),
        max_length=256,
        batch_size=8,
    )
    seeds = [3, 5, 9, 11]
    sampled = evaluate(
        graphdef, params, tokenizer, lambda: make("arithmetic/easy"), seeds, k=3, sampling=SamplingConfig(1.0),
        name="sampled", group_of=lambda t: "even" if t.task_seed % 2 == 0 else "odd", **kwargs,
    )  # fmt: skip
    assert sampled.metrics["success"].shape == (4, 3)
    assert [[t.task_seed for t in task] for task in sampled.trajectories] == [[s] * 3 for s in seeds]
    # The three episodes of a task differ: each has its own key.
    assert len({tuple(t.tokens) for t in sampled.trajectories[0]}) > 1
    summary = sampled.summary()
    assert summary["tasks"] == 4 and summary["episodes"] == 12
    assert summary["pass@1"] == pytest.approx(summary["success"])
    assert summary["pass@3"] >= summary["pass@1"] >= summary["pass^3"]
    assert set(sampled.by_group()) == {"odd"}  # all four seeds are odd
    greedy_summary, trajectories = evaluate_policy(
        graphdef, params, tokenizer, lambda: make("arithmetic/easy"), seeds, **kwargs
    )
    assert len(trajectories) == 4 and greedy_summary["episodes"] == 4
    with pytest.raises(ValueError, match="greedy wants k=1"):
        evaluate(graphdef, params, tokenizer, lambda: make("arithmetic/easy"), seeds, k=2, **kwargs)
    flipped = dataclasses.replace(sampled, name="flipped", metrics={**sampled.metrics})
    flipped.metrics["success"] = 1.0 - sampled.metrics["success"]
    report = write_report([sampled, flipped], str(tmp_path / "eval"), comparisons=[(sampled, flipped)])
    gain = 1.0 - 2 * sampled.per_task().mean()
    assert report["comparisons"][0]["mean_difference"] == pytest.approx(gain)
    assert json.load(open(tmp_path / "eval.json"))["policies"]["sampled"]["k"] == 3
    markdown = (tmp_path / "eval.md").read_text()
    assert "| sampled | 4 | 3 |" in markdown and "paired comparisons" in markdown
    assert (tmp_path / "eval.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="different tasks"):
        compare(sampled, dataclasses.replace(sampled, task_seeds=[1, 2, 3, 4]))
