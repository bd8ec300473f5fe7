"""The reward-model robustness protocol's pieces: the toy tasks, the dependence metrics, the validation-only
weight rule, and the toy-task RL sampler (alejax.reward.dependence / robustness / toy_rl)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alejax.models.transformer import Transformer
from alejax.reward import toy, toy_rl
from alejax.reward.dependence import conditional_dependence, dependence_se, select_weight
from alejax.reward.preference_world import World
from alejax.reward.robustness import TIER_B_MODEL


@pytest.mark.parametrize("task", sorted(toy.TASKS))
def test_toy_tasks_label_the_right_answer_and_reject_bad_arguments(task):
    rows = toy.preference_pairs(200, "iid", seed=0, gold=True, task=task)
    a, b = rows["chosen"][:, 1] - toy.DIGIT0, rows["chosen"][:, 3] - toy.DIGIT0
    answer = lambda seq: np.array([r[9] if r[8] == toy.SURE else r[8] for r in seq]) - toy.DIGIT0  # noqa: E731
    target = np.array([toy.TASKS[task](int(x), int(y)) for x, y in zip(a, b)])
    np.testing.assert_array_equal(answer(rows["chosen"]), target)
    assert np.all(answer(rows["rejected"]) != target)
    noisy = toy.preference_pairs(2000, "train", seed=1, label_noise=0.2, task=task)
    assert 0.75 < noisy["correct_w"].mean() < 0.85
    with pytest.raises(ValueError, match="task"):
        toy.preference_pairs(2, "iid", seed=0, task="division")
    with pytest.raises(ValueError, match="split"):
        toy.preference_pairs(2, "test", seed=0)


def test_conditional_dependence_separates_artifact_readers_on_iid_validation():
    world = World(seed=0)
    pairs, _ = world.pairs(3000, "iid", np.random.default_rng(0))
    honest = np.concatenate([pairs["u_w"], pairs["u_l"]])
    attrs = np.concatenate([pairs["attrs_w"], pairs["attrs_l"]])
    reader = honest + 0.5 * attrs[:, 0] + 0.5 * attrs[:, 1]
    low = conditional_dependence(honest, pairs["attrs_w"], pairs["attrs_l"])
    high = conditional_dependence(reader, pairs["attrs_w"], pairs["attrs_l"])
    assert low < 10 * 4 / 3000 < high  # the honest reward sits near the noise floor (~2 x n_attrs / n)
    se = dependence_se(reader, pairs["attrs_w"], pairs["attrs_l"], n_boot=50)
    assert 0 < se < high / 4


def test_select_weight_takes_the_smallest_weight_meeting_the_dependence_target():
    dep = np.array([0.5, 0.05, 0.019, 0.012, 0.011])
    assert select_weight(dep, np.full(5, 0.001)) == 2  # 0.019 meets the 0.02 target
    assert select_weight(dep, np.full(5, 0.001), target=0.015) == 3
    # No weight meets the target: the one-standard-error rule around the lowest dependence.
    dep = np.array([0.5, 0.08, 0.040, 0.032, 0.031])
    assert select_weight(dep, np.full(5, 0.005)) == 3  # 0.032 <= 0.031 + 0.005 < 0.040
    assert select_weight(dep, np.full(5, 0.01)) == 2
    assert select_weight(np.array([0.3, 0.05, 0.06, 0.09]), np.full(4, 0.001)) == 1  # minimum inside


def test_rl_sampler_writes_well_formed_responses_with_normalised_logprobs():
    model = Transformer(TIER_B_MODEL, rngs=nnx.Rngs(0))
    prompt = toy_rl.prompts(jax.random.key(0), 64)
    tokens, masks, live = jax.jit(lambda p, k: toy_rl.sample(model, p, k))(prompt, jax.random.key(1))
    tokens, live = np.asarray(tokens), np.asarray(live)
    for row, alive in zip(tokens, live):
        resp = list(row[toy_rl.PROMPT_LEN :])
        end = resp.index(toy.EOS)
        body = resp[: end + 1]
        if body[0] == toy.SURE:
            body = body[1:]
        assert toy.DIGIT0 <= body[0] < toy.DIGIT0 + 10
        assert all(t == toy.FILL for t in body[1:-1]) and len(body) - 2 <= toy.MAX_FILL
        assert all(t == toy.PAD for t in resp[end + 1 :])
        assert alive.sum() == end + 1  # exactly the sampled tokens carry the loss
    logp = toy_rl.response_logp(model, jnp.asarray(tokens), masks)
    assert np.all(np.asarray(logp)[live > 0] <= 0)  # a forced token (EOS after MAX_FILL) has logp 0
    assert np.any(np.asarray(logp)[live > 0] < 0) and np.all(np.isfinite(np.asarray(logp)))
    stats = toy_rl.describe(jnp.asarray(tokens), "copy")
    assert set(stats) == {"gold", "sure", "agree", "fill"} and 0.0 <= float(stats["gold"].mean()) < 0.5
