"""The critic for GAE: value alignment, a backbone from another model, a GAE step, and the value loss falls."""

import jax
import numpy as np
import pytest
from test_rl_pipeline import _pipeline

from alejax.models import ModelConfig
from alejax.parallel import make_mesh
from alejax.rl.critic import Critic, CriticConfig
from alejax.rl.objective import compute_advantages
from alejax.rl.pipeline import RLConfig, group_requests
from alejax.rollout import collate
from alejax.rollout.trajectory import TrajectoryBatch
from alejax.train.state import init_train_state, make_optimizer

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64)


@pytest.fixture(scope="module")
def tokenizer():
    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe

    return train_bpe(generate_corpus(300, seed=0), vocab_size=400)


def _batch(tokens: np.ndarray) -> TrajectoryBatch:
    n, t = tokens.shape
    z = np.zeros((n, t), np.float32)
    return TrajectoryBatch(
        tokens=tokens.astype(np.int32),
        loss_mask=z + 1,
        chunk_id=np.ones((n, t), np.int32),
        behaviour_logp=z,
        segment_ids=np.ones((n, t), np.int32),
        turn_rewards=np.zeros((n, 1), np.float32),
        reward=np.zeros(n, np.float32),
        success=np.zeros(n, bool),
        truncated=np.zeros(n, bool),
        group_id=np.arange(n, dtype=np.int32),
        task_seed=np.arange(n),
        info=[{}] * n,
    )


def _mesh():
    return make_mesh({"data": 1}, devices=jax.devices()[:1])


def test_values_are_causal_and_aligned_like_logprobs():
    critic = Critic.create(CFG, _mesh(), CriticConfig(minibatch_size=4))
    # A non-zero head, so values depend on the context.
    critic.state.params["value_head"].value = critic.state.params["value_head"].value + 0.5
    tokens = np.random.default_rng(0).integers(1, 64, (4, 16))
    v = critic.values(_batch(tokens))
    assert v.shape == (4, 16) and np.all(v[:, 0] == 0)
    changed = tokens.copy()
    changed[:, 8] = (changed[:, 8] % 63) + 1
    v2 = critic.values(_batch(changed))
    # values[:, t] reads the context before tokens[t]: changing tokens[8] moves values from t = 9 on only.
    np.testing.assert_allclose(v[:, :9], v2[:, :9], atol=1e-6)
    assert np.abs(v[:, 9:] - v2[:, 9:]).max() > 1e-4


def test_critic_starts_from_given_backbone_params_and_rejects_a_mismatch():
    mesh = _mesh()
    tx = make_optimizer(1e-3, warmup_steps=1, total_steps=10)
    _, policy, _ = init_train_state(CFG, tx, mesh, seed=3)
    critic = Critic.create(CFG, mesh, backbone_params=policy.params)
    for a, b in zip(jax.tree.leaves(critic.state.params["backbone"]), jax.tree.leaves(policy.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    random_init = Critic.create(CFG, mesh, seed=4)
    assert any(
        np.abs(np.asarray(a) - np.asarray(b)).max() > 0
        for a, b in zip(jax.tree.leaves(random_init.state.params["backbone"]), jax.tree.leaves(policy.params))
    )
    with pytest.raises(ValueError, match="backbone_params do not match"):
        Critic.create(CFG.replace(d_model=64, head_dim=16), mesh, backbone_params=policy.params)


def test_gae_step_with_critic_and_value_loss_falls_on_a_fixed_batch(tokenizer):
    rl = RLConfig(
        groups_per_step=2, group_size=8, minibatch_size=8, advantage="gae", filter_zero_variance_groups=False
    )
    pipeline, pool = _pipeline(tokenizer, rl, critic=CriticConfig(learning_rate=3e-3, minibatch_size=8))
    metrics = pipeline.step(range(2))
    for phase in ("values", "advantages", "critic"):
        assert metrics[f"time_{phase}_s"] > 0, phase
    assert np.isfinite(metrics["critic/value_loss"]) and metrics["policy_version"] == 1

    trajectories, _ = pipeline.scheduler.collect(group_requests(range(2, 4), 8))
    pool.close()
    batch = collate(trajectories, pad_to=64)
    critic = pipeline.critic
    values = critic.values(batch)
    advantages, returns = compute_advantages("gae", rl.advantage_config, batch, values)
    mask = batch.loss_mask > 0
    assert np.all(advantages[~mask] == 0)
    np.testing.assert_allclose(returns[mask], (advantages + values)[mask], atol=1e-5)
    losses = [critic.update(batch, returns, critic.values(batch))["critic/value_loss"] for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses
