"""The one model graph: masks, packing, padding, the KV cache path, RoPE scaling, dtypes and logical names."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alejax.models import ModelConfig, RopeScaling, create_model, get_preset, init_cache
from alejax.parallel.rules import LOGICAL_AXIS_RULES

CFG = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64)
# Scaled RoPE whose pretraining length (8) the tests' 12 positions outgrow; q/k norms ride along. Weights
# of std 0.1 make attention depend on position (at 0.02 the scores are nearly flat and RoPE barely shows).
SHARP = CFG.replace(init_std=0.1)
SCALED = {
    "llama3": SHARP.replace(
        rope_scaling=RopeScaling("llama3", factor=4.0, original_max_position_embeddings=8)
    ),
    "yarn": SHARP.replace(
        rope_scaling=RopeScaling("yarn", factor=4.0, original_max_position_embeddings=8), qk_norm=True
    ),
    "dynamic": SHARP.replace(rope_scaling=RopeScaling("dynamic", factor=4.0), max_position_embeddings=4),
}


def _tokens(shape, seed=0, vocab=97):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


@pytest.fixture(scope="module")
def model():
    return create_model(CFG, seed=1)


def test_logits_shape_and_causality(model):
    tokens = _tokens((2, 11))
    logits = model(tokens)
    assert logits.shape == (2, 11, CFG.vocab_size) and logits.dtype == jnp.float32
    changed = tokens.at[:, 7:].set((tokens[:, 7:] + 1) % CFG.vocab_size)
    np.testing.assert_allclose(model(changed)[:, :7], logits[:, :7], atol=1e-6)
    assert np.abs(model(changed)[:, 7:] - logits[:, 7:]).max() > 1e-3


def test_packed_segments_equal_separate_documents(model):
    a, b = _tokens((1, 5), 1), _tokens((1, 6), 2)
    packed = jnp.concatenate([a, b], axis=1)
    segment_ids = jnp.array([[1] * 5 + [2] * 6])
    positions = jnp.array([list(range(5)) + list(range(6))])
    logits = model(packed, positions, segment_ids)
    np.testing.assert_allclose(logits[:, :5], model(a), atol=1e-5)
    np.testing.assert_allclose(logits[:, 5:], model(b), atol=1e-5)


def test_right_padding_does_not_change_real_tokens(model):
    tokens = _tokens((1, 6), 3)
    padded = jnp.concatenate([tokens, jnp.zeros((1, 4), jnp.int32)], axis=1)
    segment_ids = jnp.array([[1] * 6 + [0] * 4])
    np.testing.assert_allclose(model(padded, segment_ids=segment_ids)[:, :6], model(tokens), atol=1e-5)


def _check_prefill_then_decode(model, config):
    """Rows of different prompt lengths share one cache; each decode step writes at its own position."""
    full = _tokens((2, 12), 4)
    reference = model(full)
    prompt_lens = np.array([5, 8])
    cache = init_cache(config, batch_size=2, max_length=16)
    # Right-padded prefill: row 0 has 5 real tokens, row 1 has 8.
    prompt = full[:, :8]
    positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
    logits, cache = model(prompt, positions=positions, cache=cache)
    for row, n in enumerate(prompt_lens):
        np.testing.assert_allclose(logits[row, :n], reference[row, :n], atol=1e-5)
    # Decode the true continuation one token at a time from each row's own length.
    pos = jnp.asarray(prompt_lens)
    for _ in range(4):
        step_tokens = jnp.take_along_axis(full, pos[:, None], axis=1)
        logits, cache = model(step_tokens, positions=pos[:, None], cache=cache)
        expected = jnp.take_along_axis(reference, pos[:, None, None], axis=1)
        np.testing.assert_allclose(logits, expected, atol=1e-5)
        pos = pos + 1


def test_prefill_then_decode_matches_full_forward(model):
    _check_prefill_then_decode(model, CFG)


@pytest.mark.parametrize("name", ["llama3", "yarn"])
def test_scaled_rope_prefill_then_decode_matches_full_forward(name):
    """Static scalings rotate a position the same way whatever the length: the cache path stays exact,
    up to position 11 of a pretraining length of 8."""
    config = SCALED[name]
    model = create_model(config, seed=1)
    _check_prefill_then_decode(model, config)
    unscaled = create_model(SHARP.replace(qk_norm=config.qk_norm), seed=1)
    tokens = _tokens((1, 12), 4)
    assert float(jnp.abs(model(tokens) - unscaled(tokens)).max()) > 0.05  # the scaling is in the graph


def test_dynamic_rope_reads_each_documents_length():
    """Dynamic NTK scales by the sequence's own length: of each packed document, and never of padding."""
    model = create_model(SCALED["dynamic"], seed=1)
    a, b = _tokens((1, 5), 1), _tokens((1, 7), 2)  # both beyond max_position_embeddings=4, differently
    packed = jnp.concatenate([a, b], axis=1)
    segment_ids = jnp.array([[1] * 5 + [2] * 7])
    positions = jnp.array([list(range(5)) + list(range(7))])
    logits = model(packed, positions, segment_ids)
    np.testing.assert_allclose(logits[:, :5], model(a), atol=1e-5)
    np.testing.assert_allclose(logits[:, 5:], model(b), atol=1e-5)
    padded = jnp.concatenate([a, jnp.zeros((1, 6), jnp.int32)], axis=1)
    padded_logits = model(padded, segment_ids=jnp.array([[1] * 5 + [0] * 6]))
    np.testing.assert_allclose(padded_logits[:, :5], model(a), atol=1e-5)
    # A longer sequence changes every position's rotation (unlike the static scalings).
    assert float(jnp.abs(model(packed)[:, :5] - model(a)).max()) > 1e-3  # 100x the tolerance above


def test_decode_under_jit_with_donated_cache(model):
    graphdef, state = nnx.split(model)

    @jax.jit
    def decode(state, tokens, positions, cache):
        return nnx.merge(graphdef, state)(tokens, positions=positions, cache=cache)

    cache = init_cache(CFG, 2, 8)
    tokens = _tokens((2, 3), 5)
    logits, cache = decode(state, tokens, jnp.broadcast_to(jnp.arange(3), (2, 3)), cache)
    np.testing.assert_allclose(logits, model(tokens), atol=1e-5)
    assert cache.k.shape == (CFG.n_layers, 2, CFG.n_kv_heads, 8, CFG.head_dim)  # stacked like the layers


@pytest.mark.parametrize(
    "changes",
    [
        dict(qkv_bias=True),
        dict(tie_embeddings=True),
        dict(dtype="bfloat16", param_dtype="bfloat16"),
        dict(remat="full"),
        dict(qk_norm=True),
    ],
)
def test_variants_run_and_stay_close_to_f32(changes):
    cfg = CFG.replace(**changes)
    model = create_model(cfg, seed=1)
    tokens = _tokens((2, 9), 6)
    logits = model(tokens)
    assert logits.shape == (2, 9, CFG.vocab_size) and bool(jnp.isfinite(logits).all())
    if "qkv_bias" in changes:
        assert model.layers.attn.q_bias[...].shape == (CFG.n_layers, CFG.n_heads, CFG.head_dim)
    if "tie_embeddings" in changes:
        assert not hasattr(model, "lm_head")
    if "qk_norm" in changes:
        assert model.layers.attn.k_norm.scale[...].shape == (CFG.n_layers, CFG.head_dim)
    if "dtype" in changes:
        # The f32 model's weights rounded to bf16, computed in bf16: within bf16 noise of the f32 model.
        f32 = create_model(cfg.replace(dtype="float32", param_dtype="float32"), seed=1)
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(f32)))
        error = float(jnp.abs(model(tokens) - f32(tokens)).max())
        assert error < 0.05, error
        assert model.layers.mlp.up[...].dtype == jnp.bfloat16


def test_remat_gives_same_gradients():
    tokens = _tokens((2, 9), 7)

    def grads(cfg):
        model = create_model(cfg, seed=1)
        return nnx.grad(lambda m: m(tokens).mean())(model)

    for a, b in zip(jax.tree.leaves(grads(CFG)), jax.tree.leaves(grads(CFG.replace(remat="dots_saveable")))):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_parameter_has_logical_names_in_the_rule_table():
    model = create_model(CFG.replace(qkv_bias=True, qk_norm=True))
    known = {name for name, _ in LOGICAL_AXIS_RULES}
    params = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert len(leaves) == 3 + 14  # embedding, final norm, lm_head + the layers' (each stacked over layers)
    for path, var in nnx.to_flat_state(params):
        names = var.get_metadata()["out_sharding"]
        assert len(names) == var[...].ndim and set(names) <= known, names
        if path[0] == "layers":
            assert names[0] == "layers" and var[...].shape[0] == CFG.n_layers, (path, names)


def test_one_layer_body_whatever_the_depth():
    """The layers run under one lax.scan: the traced program is the same size at 2 and at 12 layers (an
    unrolled stack grows linearly), for the full forward, a cached prefill and the remat'd gradient."""

    def program(n_layers, remat="none", cached=False):
        cfg = CFG.replace(n_layers=n_layers, remat=remat)
        graphdef, state = nnx.split(nnx.eval_shape(lambda: create_model(cfg)))
        tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)

        def loss(state, tokens):
            model = nnx.merge(graphdef, state)
            if cached:
                return model(tokens, cache=init_cache(cfg, 2, 16))[0].sum()
            return model(tokens).sum()

        fn = jax.grad(loss) if not cached else loss
        return str(jax.make_jaxpr(fn)(state, tokens))

    for remat, cached in [("none", False), ("full", False), ("dots_saveable", False), ("none", True)]:
        small, deep = program(2, remat, cached), program(12, remat, cached)
        assert small.count("scan[") >= 1 and deep.count("dot_general") == small.count("dot_general")
        if remat != "none":
            assert "checkpoint[" in deep or "remat" in deep  # the policy wraps the scanned body


def test_param_count_matches_config_formula():
    for cfg in [get_preset(name) for name in ("tiny", "25m", "100m", "smollm2_135m")] + [
        CFG.replace(qk_norm=True)
    ]:
        abstract = nnx.eval_shape(lambda cfg=cfg: create_model(cfg))
        counted = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
        assert counted == cfg.num_params(), cfg


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_kv_heads"):
        CFG.replace(n_kv_heads=3)
    with pytest.raises(ValueError, match="remat"):
        CFG.replace(remat="sometimes")
    with pytest.raises(KeyError, match="unknown model preset"):
        get_preset("giant")
    with pytest.raises(ValueError, match="rope_scaling.type='longrope'"):
        RopeScaling("longrope")
    with pytest.raises(ValueError, match="needs original_max_position_embeddings"):
        RopeScaling("yarn", factor=4.0)


def test_config_survives_a_config_file_round_trip():
    """configs/ hold ModelConfig as a dict (dataclasses.asdict); the nested RoPE scaling comes back."""
    config = SCALED["yarn"]
    again = ModelConfig(**dataclasses.asdict(config))
    assert again == config and isinstance(again.rope_scaling, RopeScaling) and hash(again) == hash(config)


def test_weight_decay_skips_stacked_norms():
    """Norm scales stacked over layers are [n_layers, d] (2-D) but are not matrices: AdamW leaves them alone."""
    from alejax.train.state import make_optimizer

    tx = make_optimizer(learning_rate=1e-2, warmup_steps=1, weight_decay=0.5)
    params = nnx.state(create_model(CFG), nnx.Param)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert float(jnp.abs(updates["layers"]["attn_norm"]["scale"][...]).max()) == 0.0
    assert float(jnp.abs(updates["layers"]["mlp"]["up"][...]).max()) > 0.0  # matrices decay
