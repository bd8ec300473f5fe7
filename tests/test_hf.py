"""Hugging Face checkpoint import/export against transformers' own Llama / Qwen2 / Qwen3 (tiny, random, CPU)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="HF parity tests need torch (test-only dependency)")
transformers = pytest.importorskip("transformers", reason="HF parity tests need transformers (test-only)")

from alejax.models import (  # noqa: E402
    ModelConfig,
    RopeScaling,
    create_model,
    hf,  # noqa: E402
    init_cache,
    model_shardings,
)
from alejax.parallel import make_mesh  # noqa: E402

torch.set_num_threads(2)

TOL = 1e-4
BASE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    intermediate_size=128,
    rms_norm_eps=1e-6,
    initializer_range=0.05,
)
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**BASE, rope_theta=10_000.0, tie_word_embeddings=False),
    "qwen2": lambda: transformers.Qwen2Config(**BASE, rope_theta=1_000_000.0, tie_word_embeddings=True),
    # head_dim 24, not hidden_size / heads = 16: Qwen3 states it explicitly (and q/k norms are over it)
    "qwen3": lambda: transformers.Qwen3Config(
        **BASE, head_dim=24, rope_theta=1_000_000.0, tie_word_embeddings=False
    ),
}


def hf_model(arch, seed=0, config=None):
    torch.manual_seed(seed)
    config = CONFIGS[arch]() if config is None else config
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    with torch.no_grad():  # random nonzero norms and biases, so their mapping is tested too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model


def hf_logits(model, tokens, mask=None):
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.tensor(mask)}
        return (
            model(input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long), **kwargs)
            .logits.float()
            .numpy()
        )


@nnx.jit
def our_logits(model, tokens, segment_ids):
    return model(tokens, segment_ids=segment_ids)


def ours(model, tokens, segment_ids=None, mesh=None):
    tokens = jnp.asarray(tokens, jnp.int32)
    segment_ids = jnp.ones_like(tokens) if segment_ids is None else jnp.asarray(segment_ids, jnp.int32)
    if mesh is None:
        return np.asarray(our_logits(model, tokens, segment_ids))
    with jax.set_mesh(mesh):
        return np.asarray(our_logits(model, tokens, segment_ids))


def tokens(seed=0, shape=(2, 17)):
    return np.random.default_rng(seed).integers(0, 256, size=shape)


def max_err(a, b):
    return float(np.max(np.abs(a - b)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Each arch saved by transformers twice: one file, and small shards + index."""
    out = {}
    for arch in CONFIGS:
        model = hf_model(arch)
        single = tmp_path_factory.mktemp(f"{arch}_single")
        sharded = tmp_path_factory.mktemp(f"{arch}_sharded")
        model.save_pretrained(single)
        model.save_pretrained(sharded, max_shard_size="100KB")
        assert os.path.isfile(single / "model.safetensors")
        assert os.path.isfile(sharded / "model.safetensors.index.json")
        assert (
            len(
                set(json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"].values())
            )
            > 2
        )
        out[arch] = (model, single, sharded)
    return out


@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_logits_match_transformers(checkpoints, arch, layout):
    model, single, sharded = checkpoints[arch]
    ours_model = hf.from_pretrained(single if layout == "single" else sharded)
    c = ours_model.config
    assert c.arch == arch and c.n_kv_heads == 2 and c.qkv_bias == (arch == "qwen2")
    assert c.tie_embeddings == (arch == "qwen2") and hasattr(ours_model, "lm_head") == (arch != "qwen2")
    assert c.rope_theta == (1e4 if arch == "llama" else 1e6) and c.rope_scaling.type == "default"
    assert c.qk_norm == (arch == "qwen3") and c.head_dim == (24 if arch == "qwen3" else 16)
    t = tokens()
    want = hf_logits(model, t)
    err = max_err(ours(ours_model, t), want)
    print(f"{arch} ({layout}): max |logit err| = {err:.2e} (max |logit| {np.abs(want).max():.2f})")
    assert err < TOL, f"{arch} {layout}: max abs logit error {err:.3e} >= {TOL}"


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_sharded_load_on_mesh(checkpoints, arch):
    model, _, sharded = checkpoints[arch]
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    ours_model = hf.from_pretrained(sharded, mesh)
    expected = model_shardings(ours_model.config, mesh)
    got_state = dict(nnx.to_flat_state(nnx.state(ours_model)))
    want_state = dict(nnx.to_flat_state(expected))
    for path in [
        ("embedding",),
        ("layers", "attn", "q"),
        ("layers", "mlp", "down"),
        ("final_norm", "scale"),
    ]:
        got = got_state[path].get_value().sharding
        want = want_state[path].get_value()
        assert got.spec == want.spec and got.mesh == want.mesh, (path, got.spec, want.spec)
    q = ours_model.layers.attn.q.get_value()
    assert q.addressable_shards[0].data.shape == (
        ours_model.config.n_layers,  # the stacked layers axis: replicated
        32,
        2,
        ours_model.config.head_dim,
    )  # split over fsdp, tensor
    t = tokens(1)
    err = max_err(ours(ours_model, t, mesh=mesh), hf_logits(model, t))
    print(f"{arch} on mesh: max |logit err| = {err:.2e}")
    assert err < TOL, f"{arch} on mesh: max abs logit error {err:.3e}"


def test_padding_matches_transformers(checkpoints):
    model, single, _ = checkpoints["llama"]
    ours_model = hf.from_pretrained(single)
    t = tokens(2)
    mask = np.ones_like(t)
    mask[0, 11:] = 0  # right padding on the first row
    t[0, 11:] = 0
    want = hf_logits(model, t, mask)
    got = ours(ours_model, t, segment_ids=mask)
    err = max_err(got[mask == 1], want[mask == 1])
    print(f"padded batch: max |logit err| = {err:.2e}")
    assert err < TOL, f"padded batch: max abs logit error on non-pad positions {err:.3e}"


# RoPE scaling as released checkpoints state it. The pretraining length is 64 (for dynamic, which has no
# other, max_position_embeddings) and the tests run 160 positions, most of them beyond it.
ROPE_SCALINGS = {
    "linear": dict(rope_type="linear", factor=4.0),
    "dynamic": dict(rope_type="dynamic", factor=4.0),
    "llama3": dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=64,
    ),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64),
    # DeepSeek-style attention factor (a ratio of two mscales), a narrower ramp, not rounded to whole dims
    "yarn_mscale": dict(
        rope_type="yarn",
        factor=4.0,
        original_max_position_embeddings=64,
        beta_fast=16.0,
        mscale=1.0,
        mscale_all_dim=0.5,
        truncate=False,
    ),
}
LONG = 160


def scaled_config(arch, rope):
    make = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}[arch]
    head_dim = dict(head_dim=24) if arch == "qwen3" else {}
    return make(
        **BASE,
        **head_dim,
        max_position_embeddings=64 if rope == "dynamic" else 256,
        rope_parameters={**ROPE_SCALINGS[rope], "rope_theta": 10_000.0},
    )


@pytest.mark.parametrize(
    "arch, rope", [("llama", rope) for rope in ROPE_SCALINGS] + [("qwen3", "yarn"), ("qwen3", "dynamic")]
)
def test_rope_scaling_matches_transformers(tmp_path, arch, rope):
    model = hf_model(arch, config=scaled_config(arch, rope))
    model.save_pretrained(tmp_path / "hf")
    ours_model = hf.from_pretrained(tmp_path / "hf")
    assert ours_model.config.rope_scaling.type == ROPE_SCALINGS[rope]["rope_type"]
    t = tokens(5, shape=(2, LONG))
    want = hf_logits(model, t)
    err = max_err(ours(ours_model, t), want)
    # The same weights without the scaling: how far off a loader that ignored it would be.
    unscaled = max_err(ours(hf.from_pretrained(tmp_path / "hf", rope_scaling=RopeScaling()), t), want)
    print(f"{arch} {rope} at {LONG} positions: max |logit err| = {err:.2e} (unscaled RoPE: {unscaled:.2e})")
    assert err < TOL, f"{arch} {rope}: max abs logit error {err:.3e} >= {TOL}"
    assert unscaled > 100 * TOL, f"{arch} {rope}: scaling changes logits by only {unscaled:.3e}"

    # Export: transformers reads the scaling back from our config.json and computes the same logits.
    hf.save_pretrained(ours_model, tmp_path / "export")
    theirs = (
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export", attn_implementation="eager")
        .float()
        .eval()
    )
    original = model.config.rope_parameters
    assert {k: theirs.config.rope_parameters.get(k) for k in original} == original
    export_err = max_err(hf_logits(theirs, t), want)
    print(f"{arch} {rope} exported, reloaded by transformers: max |logit err| = {export_err:.2e}")
    assert export_err < TOL, f"{arch} {rope} export: max abs logit error {export_err:.3e}"
    assert hf.from_pretrained(tmp_path / "export").config == ours_model.config


def test_dynamic_rope_with_a_cache_matches_transformers_decoding(tmp_path):
    """Dynamic NTK rotates each new chunk by the frequencies of the length reached so far, as transformers'
    cached decoding does; cached keys keep theirs, so beyond max_position_embeddings cached decoding and
    the full forward differ (in both libraries)."""
    model = hf_model("llama", config=scaled_config("llama", "dynamic"))
    model.save_pretrained(tmp_path)
    ours_model = hf.from_pretrained(tmp_path)
    t = tokens(6, shape=(1, 80))
    prompt = 70  # beyond the 64 positions: the prefill itself is scaled
    with torch.no_grad():
        out = model(input_ids=torch.tensor(t[:, :prompt]), use_cache=True)
        want, past = [out.logits.numpy()], out.past_key_values
        for i in range(prompt, t.shape[1]):
            out = model(input_ids=torch.tensor(t[:, i : i + 1]), past_key_values=past, use_cache=True)
            want.append(out.logits.numpy())
            past = out.past_key_values
    step = nnx.jit(lambda model, chunk, positions, cache: model(chunk, positions=positions, cache=cache))
    cache = init_cache(ours_model.config, batch_size=1, max_length=96)
    logits, cache = step(ours_model, jnp.asarray(t[:, :prompt]), jnp.arange(prompt)[None], cache)
    got = [np.asarray(logits)]
    for i in range(prompt, t.shape[1]):
        logits, cache = step(ours_model, jnp.asarray(t[:, i : i + 1]), jnp.asarray([[i]]), cache)
        got.append(np.asarray(logits))
    err = max(max_err(a, b) for a, b in zip(got, want))
    print(f"dynamic RoPE, prefill {prompt} + {t.shape[1] - prompt} cached steps: max |logit err| = {err:.2e}")
    assert err < TOL, f"dynamic RoPE with a cache: max abs logit error {err:.3e}"
    full = ours(ours_model, t)
    assert max_err(full[:, -1], got[-1][:, 0]) > 100 * TOL  # the full forward rotates all by length 80


def _randomize(model, seed=0):
    """Random values for every parameter (biases/norms too), keeping shardings."""
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(seed), 100))

    def one(path, var):
        x = var.get_value()
        noise = jax.random.normal(next(keys), x.shape, jnp.float32)
        scale = 0.2 if ("scale" in str(path) or "bias" in str(path)) else 0.1
        value = (1.0 if "scale" in str(path) else 0.0) + scale * noise
        return var.replace(jax.device_put(value.astype(x.dtype), x.sharding))

    nnx.update(model, nnx.from_flat_state([(p, one(p, v)) for p, v in nnx.to_flat_state(state)]))
    return model


EXPORT_CONFIGS = {
    # llama with q/k/v bias exercises the zero o_proj.bias that HF llama's attention_bias implies.
    "llama_bias_untied": ModelConfig(
        vocab_size=256,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        rope_theta=5e5,
        qkv_bias=True,
        arch="llama",
    ),
    "qwen2_tied": ModelConfig(
        vocab_size=256,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=1,
        head_dim=32,
        mlp_dim=96,
        rope_theta=1e6,
        qkv_bias=True,
        tie_embeddings=True,
        arch="qwen2",
    ),
    # Qwen3 with attention_bias (its o_proj bias is written as zeros) and YaRN, as Qwen3 extends context.
    "qwen3_bias_yarn": ModelConfig(
        vocab_size=256,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=24,
        mlp_dim=96,
        rope_theta=1e6,
        rope_scaling=RopeScaling("yarn", factor=4.0, original_max_position_embeddings=32),
        qkv_bias=True,
        qk_norm=True,
        arch="qwen3",
        max_position_embeddings=128,
    ),
}


@pytest.mark.parametrize("name", list(EXPORT_CONFIGS))
def test_export_round_trip(tmp_path, name):
    config = EXPORT_CONFIGS[name]
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    model = _randomize(create_model(config, mesh))
    hf.save_pretrained(model, tmp_path, max_shard_bytes=40_000, bos_token_id=1, eos_token_id=2)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == config.arch and saved["eos_token_id"] == 2

    theirs = (
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
        .float()
        .eval()
    )
    assert theirs.config.head_dim == config.head_dim
    t = tokens(3)
    err = max_err(ours(model, t, mesh=mesh), hf_logits(theirs, t))
    print(f"export {name}: max |logit err| vs transformers = {err:.2e}")
    assert err < TOL, f"export {name}: max abs logit error {err:.3e}"

    back = hf.from_pretrained(tmp_path)
    assert back.config == config
    mine = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    again = dict(nnx.to_flat_state(nnx.state(back, nnx.Param)))
    assert mine.keys() == again.keys()
    for path in mine:
        np.testing.assert_array_equal(
            np.asarray(again[path].get_value()), np.asarray(mine[path].get_value()), err_msg=str(path)
        )


def test_bf16_checkpoint(tmp_path):
    model = hf_model("qwen2", seed=1).to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="60KB")
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    D, H, hd = 64, 4, 16

    loaded = hf.from_pretrained(tmp_path)
    assert loaded.config.param_dtype == "bfloat16"
    q = loaded.layers.attn.q.get_value()[1]
    assert q.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(q, np.float32), sd["model.layers.1.self_attn.q_proj.weight"].T.reshape(D, H, hd)
    )

    f32 = hf.from_pretrained(tmp_path, make_mesh({"fsdp": 8}), param_dtype="float32")
    assert f32.embedding.get_value().dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(f32.embedding.get_value()), sd["model.embed_tokens.weight"])
    np.testing.assert_array_equal(
        np.asarray(f32.layers.attn.k_bias.get_value()[0]),
        sd["model.layers.0.self_attn.k_proj.bias"].reshape(2, hd),
    )
    np.testing.assert_array_equal(
        np.asarray(f32.layers.mlp.down.get_value()[0]), sd["model.layers.0.mlp.down_proj.weight"].T
    )

    # bf16 export (from f32 params) is read by transformers as the same bf16 values.
    out = tmp_path / "export"
    hf.save_pretrained(f32, out, dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert theirs.model.embed_tokens.weight.dtype == torch.bfloat16
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(v.float().numpy(), sd[k], err_msg=k)


def test_streaming_reads_only_shard_blocks(checkpoints, monkeypatch):
    _, _, sharded = checkpoints["llama"]
    reads = []
    original = hf._read_block

    def recording(handle, name, index):
        block = original(handle, name, index)
        reads.append((name, block.shape))
        return block

    monkeypatch.setattr(hf, "_read_block", recording)
    model = hf.from_pretrained(sharded, make_mesh({"fsdp": 8}))
    full = {
        e.hf_name: e.hf_shape
        for e in hf.param_table(
            model.config, {p: v.get_value().shape for p, v in nnx.to_flat_state(nnx.state(model))}
        )
    }
    sharded_names = [n for n in full if "norm" not in n]  # norms are replicated (read whole, once)
    assert {n for n, _ in reads} == set(full)
    for name in sharded_names:
        sizes = [int(np.prod(shape)) for n, shape in reads if n == name]
        total = int(np.prod(full[name]))
        assert len(sizes) == 8 and all(s == total // 8 for s in sizes), (name, sizes, total)
    for name in set(full) - set(sharded_names):
        assert sum(n == name for n, _ in reads) == 1, name  # replicated: read once, not per device


def test_errors(tmp_path, checkpoints):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.from_pretrained(tmp_path)

    model, single, _ = checkpoints["llama"]
    (tmp_path / "config.json").write_text((single / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors and model\.safetensors\.index\.json"):
        hf.from_pretrained(tmp_path)

    from safetensors.numpy import save_file

    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*model\.safetensors"):
        hf.from_pretrained(tmp_path)

    sd["model.layers.1.mlp.up_proj.weight"] = np.zeros((128, 32), np.float32)
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"up_proj\.weight.*shape \(128, 32\).*\(128, 64\)"):
        hf.from_pretrained(tmp_path)

    base = json.loads((single / "config.json").read_text())
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        hf.config_from_hf({**base, "model_type": "gpt2"})
    with pytest.raises(ValueError, match=r"rope_scaling: rope_type='llama3' needs \['low_freq_factor'"):
        hf.config_from_hf({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(ValueError, match=r"rope_parameters: rope_type='yarn' needs \['factor'\]"):
        hf.config_from_hf({**base, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}})
    with pytest.raises(ValueError, match="rope_type='longrope' is not supported"):
        hf.config_from_hf({**base, "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}})
    with pytest.raises(ValueError, match="partial_rotary_factor=0.5"):
        hf.config_from_hf({**base, "partial_rotary_factor": 0.5})
    with pytest.raises(ValueError, match="only qwen3 has q/k norms"):
        hf.config_to_hf(ModelConfig(qk_norm=True))  # llama would drop them silently
    with pytest.raises(ValueError, match="only qwen3 has q/k norms"):
        hf.save_pretrained(create_model(ModelConfig(arch="qwen3")), tmp_path / "no_norms")
    assert not (tmp_path / "no_norms").exists()  # refused before writing anything
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        hf.config_from_hf({**base, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="use_sliding_window"):
        hf.config_from_hf({**base, "model_type": "qwen2", "use_sliding_window": True})


def test_config_from_hf_variants():
    legacy = {
        "model_type": "llama",
        "vocab_size": 100,
        "hidden_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "rope_theta": 5e5,
        "rope_scaling": None,
        "torch_dtype": "bfloat16",
    }
    c = hf.config_from_hf(legacy)
    assert (c.n_kv_heads, c.head_dim, c.rope_theta, c.param_dtype, c.qkv_bias, c.tie_embeddings) == (
        4,
        16,
        5e5,
        "bfloat16",
        False,
        False,
    )
    v5 = {
        **legacy,
        "rope_theta": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": 2e6},
        "dtype": "float16",
        "num_key_value_heads": 2,
        "head_dim": 32,
        "attention_bias": True,
    }
    del v5["torch_dtype"]
    c = hf.config_from_hf(v5, dtype="bfloat16", remat="full")
    assert (c.n_kv_heads, c.head_dim, c.rope_theta, c.param_dtype, c.dtype, c.qkv_bias, c.remat) == (
        2,
        32,
        2e6,
        "float16",
        "bfloat16",
        True,
        "full",
    )
    assert hf.config_from_hf({**legacy, "torch_dtype": None}).param_dtype == "float32"

    # Llama-3.2-1B's config.json (rejected before RoPE scaling was read).
    llama32 = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    c = hf.config_from_hf(llama32)
    assert (c.rope_theta, c.rope_scaling) == (5e5, RopeScaling("llama3", 32.0, 8192, 1.0, 4.0))
    assert (c.head_dim, c.n_kv_heads, c.tie_embeddings, c.max_position_embeddings) == (64, 8, True, 131072)
    # 4.x spelling ("type"), yarn's factor left to the context ratio, a top-level pretraining length (Phi-3)
    yarn = {**legacy, "max_position_embeddings": 4096, "rope_scaling": {"type": "yarn", "factor": None}}
    assert hf.config_from_hf(yarn).rope_scaling == RopeScaling("yarn", 1.0, 4096)
    yarn["original_max_position_embeddings"] = 1024
    assert hf.config_from_hf(yarn).rope_scaling == RopeScaling("yarn", 4.0, 1024)
    qwen3 = {**legacy, "model_type": "qwen3", "attention_bias": True}
    c = hf.config_from_hf(qwen3)
    assert (c.head_dim, c.qk_norm, c.qkv_bias, c.arch) == (128, True, True, "qwen3")  # Qwen3Config's default
    # export -> import is the identity on configs
    for config in EXPORT_CONFIGS.values():
        assert hf.config_from_hf(hf.config_to_hf(config)) == config


def test_tied_checkpoint_loaded_untied(checkpoints):
    model, single, _ = checkpoints["qwen2"]
    untied = hf.from_pretrained(single, tie_embeddings=False)  # no lm_head.weight on disk: the embedding
    np.testing.assert_array_equal(
        np.asarray(untied.lm_head.get_value()), np.asarray(untied.embedding.get_value()).T
    )
    t = tokens(4)
    err = max_err(ours(untied, t), hf_logits(model, t))
    assert err < TOL, f"tied checkpoint loaded untied: max abs logit error {err:.3e}"


def test_llama_output_bias_must_be_zero(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**BASE, attention_bias=True)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.bias.fill_(0.5)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.o_proj\.bias is nonzero"):
        hf.from_pretrained(tmp_path)
