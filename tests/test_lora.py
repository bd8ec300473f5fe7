"""LoRA on the one graph: B = 0 is the base model exactly, only adapters train, adapter-only checkpoints
resume, merging folds adapters into the weights, dropout only while training, syncs move adapters only."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alejax.models import ModelConfig, create_model
from alejax.models.config import LoRAConfig
from alejax.models.lora import merged_model, merged_params, tree_bytes, without_adapters
from alejax.parallel import make_mesh
from alejax.train.checkpoint import Checkpointer
from alejax.train.state import init_train_state, make_optimizer
from alejax.train.step import DROPOUT_KEY, make_train_step

BASE = ModelConfig(
    vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64, qkv_bias=True
)
LORA = BASE.replace(lora=LoRAConfig(rank=4, alpha=8.0))
TOKENS = (jnp.arange(2 * 12).reshape(2, 12) * 7) % 96


def batch(seed=0, rows=8, length=16):
    rng = np.random.default_rng(seed)  # progressions: learnable from context
    start, stride = rng.integers(1, 96, (rows, 1)), rng.integers(1, 4, (rows, 1))
    tokens = ((start + stride * np.arange(length)) % 95 + 1).astype(np.int32)
    return {"tokens": tokens, "loss_mask": np.ones_like(tokens, np.float32)}


def lora_state(mesh, config=LORA, lr=3e-2, seed=0):
    tx = make_optimizer(lr, warmup_steps=1, total_steps=100, weight_decay=0.0)
    graphdef, state, shardings = init_train_state(config, tx, mesh)
    base = create_model(BASE, mesh, seed=seed)
    state = state.with_model_params(nnx.state(base), shardings)
    return graphdef, state, shardings, tx, base


def test_config_validates_targets_rank_and_dropout():
    with pytest.raises(ValueError, match="lora.targets"):
        LoRAConfig(rank=4, targets=("q", "attn"))
    with pytest.raises(ValueError, match="lora.rank"):
        LoRAConfig(rank=-1)
    with pytest.raises(ValueError, match="lora.dropout"):
        LoRAConfig(rank=4, dropout=1.0)
    assert LoRAConfig(rank=8, alpha=16).scale == 2.0


def test_adapters_only_on_the_named_projections_with_the_counted_size():
    config = BASE.replace(lora=LoRAConfig(rank=3, targets=["q", "v", "down"]))
    state = nnx.state(create_model(config), nnx.LoRAParam)
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(state)}
    assert names == {
        f"layers/{m}/{n}_lora_{ab}" for m, n in [("attn", "q"), ("attn", "v"), ("mlp", "down")] for ab in "ab"
    }
    assert sum(x.size for x in jax.tree.leaves(state)) == config.lora_params()
    assert not jax.tree.leaves(nnx.state(create_model(BASE), nnx.LoRAParam))  # rank 0: none


def test_b_zero_gives_the_base_models_logits_exactly_on_a_mesh():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    graphdef, state, _, _, base = lora_state(mesh)
    forward = jax.jit(lambda graphdef, params: nnx.merge(graphdef, params)(TOKENS), static_argnums=0)
    with jax.set_mesh(mesh):
        adapted = forward(graphdef, state.model_params())
        expected = forward(*nnx.split(base))
    np.testing.assert_array_equal(np.asarray(adapted), np.asarray(expected))


def test_only_adapters_train_and_their_optimizer_state_is_all_there_is():
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    graphdef, state, shardings, tx, base = lora_state(mesh)
    frozen_before = [np.asarray(x) for x in jax.tree.leaves(state.frozen)]
    adapters = sum(x.size for x in jax.tree.leaves(state.params))
    assert adapters == LORA.lora_params()
    # Adam: two moments per adapter entry (plus scalar counts), nothing for the frozen weights.
    moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
    assert moments == 2 * adapters
    step = make_train_step(graphdef, tx, shardings, mesh)
    losses = []
    for _ in range(12):  # one batch, memorised: a frozen random base learns slowly through rank-4 adapters
        state, metrics = step(state, batch(0))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.15, losses
    for a, b in zip(frozen_before, jax.tree.leaves(state.frozen)):
        np.testing.assert_array_equal(a, np.asarray(b))
    moved = max(float(jnp.abs(x).max()) for p, x in nnx.to_flat_state(state.params) if p[-1].endswith("_b"))
    assert moved > 0


def test_merge_folds_the_adapters_into_the_weights():
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    graphdef, state, shardings, tx, _ = lora_state(mesh)
    step = make_train_step(graphdef, tx, shardings, mesh)
    state, _ = step(state, batch(0))  # one Adam step moves every B off zero
    adapted = nnx.merge(graphdef, state.model_params())
    merged = merged_model(adapted)
    assert merged.config.lora.rank == 0
    assert not jax.tree.leaves(nnx.state(merged, nnx.LoRAParam))
    np.testing.assert_allclose(np.asarray(merged(TOKENS)), np.asarray(adapted(TOKENS)), atol=2e-5)
    base_tree = jax.tree.structure(nnx.state(create_model(BASE)))
    assert jax.tree.structure(merged_params(state.model_params(), LORA)) == base_tree


def test_without_adapters_is_the_base_model_again_in_the_same_tree():
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    graphdef, state, shardings, tx, base = lora_state(mesh)
    step = make_train_step(graphdef, tx, shardings, mesh)
    state, _ = step(state, batch(0))  # B off zero: the adapted model differs from the base
    trained = state.model_params()
    reset = without_adapters(trained)
    assert jax.tree.structure(reset) == jax.tree.structure(trained)
    adapted, again = nnx.merge(graphdef, trained)(TOKENS), nnx.merge(graphdef, reset)(TOKENS)
    assert float(jnp.abs(adapted - base(TOKENS)).max()) > 1e-4
    np.testing.assert_array_equal(np.asarray(again), np.asarray(base(TOKENS)))


def test_dropout_acts_in_training_only():
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    config = LORA.replace(lora=LoRAConfig(rank=4, alpha=8.0, dropout=0.5))
    graphdef, state, shardings, tx, base = lora_state(mesh, config)
    step = make_train_step(graphdef, tx, shardings, mesh)
    state, _ = step(state, batch(0))  # B != 0 now: the adapters change the output
    model = nnx.merge(graphdef, state.model_params())
    eval_a, eval_b = model(TOKENS), model(TOKENS)
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    key_data = lambda k: jax.random.key_data(jax.random.key(k))  # noqa: E731
    drop_1 = model(TOKENS, dropout_key=key_data(1))
    drop_2 = model(TOKENS, dropout_key=key_data(2))
    assert float(jnp.abs(drop_1 - drop_2).max()) > 1e-6
    assert float(jnp.abs(drop_1 - eval_a).max()) > 1e-6
    # The base path is untouched by dropout: with B = 0 a dropout key changes nothing.
    _, fresh, _, _, _ = lora_state(mesh, config)
    fresh_model = nnx.merge(graphdef, fresh.model_params())
    np.testing.assert_array_equal(
        np.asarray(fresh_model(TOKENS, dropout_key=key_data(3))), np.asarray(base(TOKENS))
    )
    assert DROPOUT_KEY == "dropout_key"


def test_adapter_only_checkpoints_resume_the_same_run(tmp_path):
    mesh = make_mesh({"data": 2, "fsdp": 4})
    graphdef, state, shardings, tx, _ = lora_state(mesh)
    step = make_train_step(graphdef, tx, shardings, mesh)
    for i in range(2):
        state, _ = step(state, batch(i))
    checkpointer = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    checkpointer.save(2, state)
    saved = json.loads((tmp_path / "ckpt" / "2" / "state" / "_METADATA").read_text())["tree_metadata"]
    assert any("q_lora_b" in k for k in saved) and any("opt_state" in k for k in saved)
    # The base is not in it (orbax records `frozen` as an empty node).
    assert not [k for k in saved if k.startswith("('frozen', ") or "embedding" in k]
    uninterrupted, _ = step(state, batch(2))

    _, fresh, _, _, _ = lora_state(mesh)  # a rerun: the base from its source, adapters from the checkpoint
    restored, _, at = checkpointer.restore(fresh)
    checkpointer.close()
    assert at == 2 and int(restored.step) == 2
    resumed, _ = step(restored, batch(2))
    for a, b in zip(jax.tree.leaves(uninterrupted.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_with_model_params_names_what_does_not_fit():
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx = make_optimizer(1e-3)
    _, state, shardings = init_train_state(LORA, tx, mesh)
    other = create_model(BASE.replace(d_model=48, head_dim=12))
    with pytest.raises(ValueError, match="has shape"):
        state.with_model_params(nnx.state(other), shardings)
    _, full_state, full_shardings = init_train_state(BASE, tx, mesh)
    adapted = nnx.merge(init_train_state(LORA, tx, mesh)[0], state.model_params())
    with pytest.raises(ValueError, match="is not a parameter of this model"):
        full_state.with_model_params(nnx.state(adapted), full_shardings)  # merge the adapters first
    partial = dict(nnx.to_flat_state(nnx.state(create_model(BASE))))
    partial.pop(("final_norm", "scale"))
    with pytest.raises(ValueError, match="final_norm/scale is missing"):
        full_state.with_model_params(nnx.from_flat_state(partial), full_shardings)


def test_sampler_sync_moves_only_the_adapters():
    from alejax.rollout.sampler import Sampler, SamplingConfig

    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    graphdef, state, shardings, tx, _ = lora_state(mesh)
    own_copy = jax.tree.map(jnp.copy, state.model_params())  # as RLPipeline's: the trainer donates its state
    sampler = Sampler(
        nnx.merge(graphdef, own_copy), batch_size=2, max_length=32, sampling=SamplingConfig(0.0)
    )
    step = make_train_step(graphdef, tx, shardings, mesh)
    state, _ = step(state, batch(0))
    sampler.update_params(jax.tree.map(jnp.copy, state.params))  # what RLPipeline.sync sends
    assert tree_bytes(state.params) < 0.2 * tree_bytes(state.model_params())
    prompt = [int(t) for t in np.asarray(TOKENS[0, :6])]
    expected = nnx.merge(graphdef, state.model_params())
    tokens, _ = sampler.generate([prompt], 4)
    ids = list(prompt)
    for _ in range(4):
        ids.append(int(jnp.argmax(expected(jnp.asarray([ids]))[0, -1])))
    assert tokens[0] == ids[len(prompt) :]


def test_sft_job_with_lora_exports_a_merged_model(tmp_path):
    """configs/sft.py with lora.rank > 0: adapters train on expert episodes, the export loads as a plain model."""
    from alejax.config import load_config_file
    from alejax.jobs import sft
    from alejax.models import from_pretrained

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = load_config_file(os.path.join(root, "configs", "sft.py:arithmetic"))
    c.workdir, c.steps, c.log_every, c.eval_every, c.checkpoint_every = str(tmp_path / "sft"), 3, 1, 3, 3
    c.data.n_episodes, c.data.batch_size = 16, 2
    c.model.d_model, c.model.n_layers, c.model.mlp_dim = 32, 1, 64
    c.lora.rank, c.lora.targets = 2, ["q", "v"]
    out = sft.run(c)
    loaded = from_pretrained(out["model_dir"])
    assert loaded.config.lora.rank == 0
    from alejax.train.sft import train_sft

    graphdef, params, _, _ = train_sft(c)  # the finished run loads its adapters back
    adapted = nnx.merge(graphdef, params)
    assert adapted.config.lora.rank == 2
    np.testing.assert_allclose(np.asarray(loaded(TOKENS)), np.asarray(adapted(TOKENS)), atol=2e-5)


def test_rl_pipeline_with_lora_trains_adapters_and_syncs_only_them():
    """configs/rl.py with lora.rank > 0: the actor's adapters train, the reference is the base (B = 0), each
    sync moves the adapters' bytes only, and the sampler then holds the trainer's model."""
    from alejax.config import load_config_file
    from alejax.data.episodes import episodes_tokenizer, expert_episodes
    from alejax.rl.build import build_pipeline, task_seeds

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = load_config_file(os.path.join(root, "configs", "rl.py:tiny"))
    c.lora.rank, c.lora.dropout = 4, 0.1
    c.rl.groups_per_step, c.rl.group_size, c.rl.minibatch_size = 2, 4, 8
    c.rl.filter_zero_variance_groups, c.rl.loss.kl_coef = False, 0.05
    c.rollout.max_turns, c.rollout.max_new_tokens_per_turn = 1, 4
    c.env_pool.workers = 2
    tokenizer = episodes_tokenizer(
        expert_episodes(c.env.name, range(20), policy_kwargs={"compact": True}), 512
    )
    pipeline = build_pipeline(c, tokenizer)
    try:
        adapters, everything = tree_bytes(pipeline.state.params), tree_bytes(pipeline.state.model_params())
        frozen = [np.asarray(x) for x in jax.tree.leaves(pipeline.state.frozen)]
        metrics = pipeline.step(task_seeds(c, 1))
        assert metrics["sync_bytes"] == adapters < 0.2 * everything
        assert np.isfinite(metrics["loss"])
        for a, b in zip(frozen, jax.tree.leaves(pipeline.state.frozen)):
            np.testing.assert_array_equal(a, np.asarray(b))
        for a, b in zip(
            jax.tree.leaves(pipeline.state.model_params()), jax.tree.leaves(pipeline.sampler.params)
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    finally:
        pipeline.close()


def test_rm_job_with_lora_trains_the_head_and_adapters(tmp_path):
    from alejax.config import load_config_file
    from alejax.jobs.rm import run
    from alejax.reward.training import init_rm_from_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config_file(os.path.join(root, "configs", "rm_causal.py"))
    config.workdir, config.lora.rank = str(tmp_path), 4
    config.steps, config.log_every, config.eval_every, config.checkpoint_every = 4, 2, 4, 4
    config.data.n_train, config.data.n_eval, config.data.batch_size = 64, 32, 16
    _, state, *_ = init_rm_from_config(config)
    trained = {str(p[0]) for p, _ in nnx.to_flat_state(state.params)}
    assert trained == {"backbone", "head"}
    assert not [
        p
        for p, v in nnx.to_flat_state(state.params)
        if p[0] == "backbone" and not isinstance(v, nnx.LoRAParam)
    ]
    last = run(config)
    assert np.isfinite(last["loss"]) and "eval/acc_iid" in last
