"""The critic can start from a reward model: backbone hidden states and the causal factors carry over."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alejax.models import ModelConfig
from alejax.models.transformer import Transformer
from alejax.reward import toy
from alejax.reward.critic_init import causal_features, critic_init_from_rm
from alejax.reward.heads import HeadConfig
from alejax.reward.model import RewardModel

CFG = ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64)
HEAD = HeadConfig(enc_hidden=32, d_c=8, d_n=8, dec_hidden=32, adv_hidden=8)


def _critic_backbone(init) -> Transformer:
    # What a value model does with the init: a fresh backbone (other seed) overwritten by the RM's params.
    critic = Transformer(init.model_config, rngs=nnx.Rngs(123))
    nnx.update(critic, init.backbone)
    return critic


@pytest.mark.parametrize("kind", ["causal", "bt"])
def test_critic_from_rm_reproduces_backbone_hidden_states_and_causal_factors(kind):
    head = HeadConfig(**{**HEAD.__dict__, "kind": kind})
    rm = RewardModel(CFG, head, pad_id=toy.PAD, rngs=nnx.Rngs(7))
    tokens = jnp.asarray(toy.preference_pairs(6, "train", seed=1)["chosen"])
    init = critic_init_from_rm(rm)
    critic = _critic_backbone(init)
    fresh = Transformer(CFG, rngs=nnx.Rngs(123))
    want, _ = rm.backbone.hidden_states(tokens)
    got, _ = critic.hidden_states(tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(fresh.hidden_states(tokens)[0]), np.asarray(want))  # the check can fail
    h = rm.features(tokens)
    out = rm.head(h)
    expected = out["mu_c"] if kind == "causal" else out["z_c"]
    np.testing.assert_allclose(np.asarray(causal_features(init.trunk, h)), np.asarray(expected), rtol=1e-5)
    assert init.d_trunk == (head.d_c if kind == "causal" else head.enc_hidden)
    # The RM's reward is a linear read-out of the trunk: a value head initialised from it starts at the reward.
    reward = causal_features(init.trunk, h) @ nnx.to_pure_dict(nnx.state(rm.head))["reward_head"]["kernel"]
    np.testing.assert_allclose(np.asarray(reward[:, 0]), np.asarray(out["reward"]), rtol=1e-5, atol=1e-6)


def test_rl_critic_built_from_rm_init_reproduces_the_rm_backbone():
    critic_mod = pytest.importorskip("alejax.rl.critic")  # alejax/rl/critic.py: the value model
    from alejax.parallel import make_mesh

    rm = RewardModel(CFG, HEAD, pad_id=toy.PAD, rngs=nnx.Rngs(11))
    init = critic_init_from_rm(rm)
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    critic = critic_mod.Critic.create(init.model_config, mesh, seed=5, backbone_params=init.backbone)
    tokens = jnp.asarray(toy.preference_pairs(6, "balanced", seed=2)["chosen"])
    with jax.set_mesh(mesh):
        value_model = nnx.merge(critic.graphdef, critic.state.params)
        got = jax.jit(lambda t: value_model.backbone.hidden_states(t)[0])(tokens)
    want, _ = rm.backbone.hidden_states(tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_critic_from_rm_bad_sources_raise_clear_errors():
    with pytest.raises(ValueError, match="needs config"):
        critic_init_from_rm("/nonexistent")
    with pytest.raises(TypeError, match="RewardModel"):
        critic_init_from_rm(Transformer(CFG, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="source must be"):
        critic_init_from_rm(3)


def test_critic_from_rm_checkpoint_directory(tmp_path):
    from alejax.config import load_config_file
    from alejax.reward.training import init_rm_from_config
    from alejax.train.checkpoint import Checkpointer

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config_file(os.path.join(root, "configs", "rm_causal.py"))
    # A checkpoint as the rm job writes it (its TrainState, its optimizer tree), with moved parameters.
    _, state, *_ = init_rm_from_config(config)
    state = state.replace(params=jax.tree.map(lambda x: x + 0.01, state.params))
    checkpointer = Checkpointer(str(tmp_path), async_save=False)
    checkpointer.save(3, state, extra={})
    checkpointer.close()

    init = critic_init_from_rm(str(tmp_path), config=config)
    saved = jax.device_get(state.params)
    np.testing.assert_array_equal(
        np.asarray(init.backbone["embedding"][...]), np.asarray(saved["backbone"]["embedding"][...])
    )
    critic = _critic_backbone(init)
    rm = RewardModel(init.model_config, init.head_config, pad_id=toy.PAD, rngs=nnx.Rngs(0))
    nnx.update(rm, saved)
    tokens = jnp.asarray(toy.preference_pairs(4, "iid", seed=3)["chosen"])
    np.testing.assert_allclose(
        np.asarray(critic.hidden_states(tokens)[0]),
        np.asarray(rm.backbone.hidden_states(tokens)[0]),
        rtol=1e-6,
    )
    h = rm.features(tokens)
    np.testing.assert_allclose(
        np.asarray(causal_features(init.trunk, h)), np.asarray(rm.head(h)["mu_c"]), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="no restorable"):
        critic_init_from_rm(str(tmp_path / "empty"), config=config)
