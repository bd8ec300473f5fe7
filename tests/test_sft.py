"""SFT episodes render exactly as rollout does, with the loss on the model's turns only, and teach."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from alejax.data.episodes import episode_tokens, expert_episodes
from alejax.data.packing import pack_documents
from alejax.data.synthetic import generate_corpus
from alejax.data.tokenizer import train_bpe
from alejax.envs import make
from alejax.models import ModelConfig
from alejax.parallel import make_mesh
from alejax.train.state import init_train_state, make_optimizer
from alejax.train.step import make_train_step, next_token_loss


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(generate_corpus(300, seed=0), vocab_size=500)


def test_episode_tokens_are_the_chat_rendering_with_loss_on_assistant_turns(tokenizer):
    env = make("arithmetic/easy")
    chats = expert_episodes("arithmetic/easy", range(6))
    assert len(chats) == 6  # the scripted policy always succeeds
    for chat in chats:
        tokens, mask = episode_tokens(tokenizer, chat, env.tools)
        trimmed = chat[: max(i for i, m in enumerate(chat) if m["role"] == "assistant") + 1]
        assert tokenizer.decode(tokens) == tokenizer.apply_chat_template(trimmed, tools=env.tools)
        learned = tokenizer.decode([t for t, m in zip(tokens, mask) if m])
        expected = "".join(m["content"] + "<|im_end|>" for m in trimmed if m["role"] == "assistant")
        assert learned == expected


def test_rejects_an_episode_without_an_observation_first(tokenizer):
    with pytest.raises(ValueError, match="starts with an observation"):
        episode_tokens(tokenizer, [{"role": "assistant", "content": "hi"}])


def test_sft_on_expert_episodes_lowers_the_loss_on_held_out_tasks(tokenizer):
    env = make("arithmetic/easy")

    def rows(seeds):
        pairs = [episode_tokens(tokenizer, c, env.tools) for c in expert_episodes("arithmetic/easy", seeds)]
        return pack_documents([t for t, _ in pairs], 256, loss_masks=[m for _, m in pairs])

    train, held_out = rows(range(200)), rows(range(1000, 1016))
    cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
    )
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])  # about learning, not layout: one device
    tx = make_optimizer(3e-3, warmup_steps=5, total_steps=60)
    graphdef, state, shardings = init_train_state(cfg, tx, mesh)
    step = make_train_step(graphdef, tx, shardings, mesh)

    def held_out_loss(state):
        with jax.set_mesh(mesh):
            return float(
                next_token_loss(nnx.merge(graphdef, state.params), {k: v[:8] for k, v in held_out.items()})[0]
            )

    before = held_out_loss(state)
    rng = np.random.default_rng(0)
    for _ in range(60):
        idx = rng.choice(len(train["tokens"]), 8, replace=False)
        state, _ = step(state, {k: v[idx] for k, v in train.items()})
    after = held_out_loss(state)
    assert after < 0.5 * before, (before, after)


def test_sft_stage_starts_from_a_pretrained_model_directory(tmp_path, tokenizer):
    """`pretrained` = a saved model: SFT loads its weights, architecture and tokenizer, and trains from them."""
    from alejax.config import load_config_file
    from alejax.models import create_model, save_pretrained
    from alejax.train.sft import train_sft

    saved = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=48,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        head_dim=24,
        mlp_dim=96,
    )
    model_dir = str(tmp_path / "pretrained")
    original = create_model(saved, seed=7)
    save_pretrained(original, model_dir, eos_token_id=tokenizer.eos_id)
    tokenizer.save(model_dir)

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = load_config_file(os.path.join(root, "configs", "sft.py:arithmetic"))
    c.workdir, c.pretrained, c.steps = str(tmp_path / "sft"), model_dir, 0  # 0 steps: the loaded weights
    c.data.n_episodes, c.data.batch_size = 8, 2
    graphdef, params, loaded_tokenizer, _ = train_sft(c)
    assert loaded_tokenizer.encode("calc 3 + 4") == tokenizer.encode("calc 3 + 4")
    model = nnx.merge(graphdef, params)
    assert model.config.d_model == 48 and model.config.n_layers == 1  # the `model` section was not used
    for a, b in zip(jax.tree.leaves(nnx.state(original)), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c.steps, c.log_every, c.eval_every, c.checkpoint_every = 2, 1, 2, 2
    _, trained, _, last = train_sft(c)
    assert np.isfinite(last["loss"])
    moved = [
        np.abs(np.asarray(a) - np.asarray(b)).max()
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained))
    ]
    assert max(moved) > 0  # the two steps trained the loaded weights
