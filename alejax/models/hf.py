"""Hugging Face checkpoints (Llama / Qwen2 / Qwen3, safetensors) <-> the alejax Transformer.

`from_pretrained` streams: it never materialises the whole model on the host. Each parameter is
created with `jax.make_array_from_callback`, whose callback receives one device's shard index (in
alejax's layout), maps it to the block of rows/columns of the Hugging Face tensor that holds it, reads
only that block through `safe_open(...).get_slice(name)` (memory-mapped), and transposes/reshapes it
into place. A host therefore holds at most one parameter's distinct shards at a time.

bf16: `safetensors`' numpy backend returns bf16 slices as `ml_dtypes.bfloat16` arrays once
`ml_dtypes` is imported (it registers the dtype name with numpy), so bf16 checkpoints are read and
written on the same torch-free numpy path as f32/f16 ones.

`save_pretrained` writes `config.json` plus weights under Hugging Face names and layouts, gathering
one parameter at a time (`jax.device_get`) and at most one output shard's worth of tensors at once.
It expects fully addressable arrays (single-process export).

The one name/layout table (`_MODEL_TABLE`, `_LAYER_TABLE`) drives both directions. The layers' parameters
are stacked on a leading `layers` axis (the layer scan's); Hugging Face's per-layer tensors
`model.layers.{i}.*` are the slices [i] of one stacked parameter, and a device's shard of it is read layer by
layer, each layer's block alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import ml_dtypes  # noqa: F401  (registers "bfloat16" with numpy: safetensors' numpy backend needs it)
import numpy as np
from flax import nnx
from jax.sharding import SingleDeviceSharding
from safetensors import safe_open
from safetensors.numpy import save_file

from alejax.models.config import ModelConfig, RopeScaling
from alejax.models.init import abstract_model, model_shardings
from alejax.models.transformer import Transformer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}

# ---------------------------------------------------------------------------------------------------
# The name / layout table.
#
# A layout says, for each dim of the Hugging Face tensor, which of our dims are merged into it
# (row-major). So HF = ours.transpose(concat(layout)).reshape(merged sizes), and back. HF `nn.Linear`
# stores weight [out, in] while we store [in, out], hence the transposes; HF flattens heads into one
# feature dim (head-major, then head_dim) while we keep [heads, head_dim] separate, hence the merges.
# ---------------------------------------------------------------------------------------------------
Layout = tuple[tuple[int, ...], ...]

_SAME1: Layout = ((0,),)  # norms: [D] both sides
_SAME2: Layout = ((0,), (1,))  # embedding: [V, D] both sides
_LINEAR: Layout = ((1,), (0,))  # ours [in, out] <-> HF Linear [out, in]
_IN_HEADS: Layout = ((1, 2), (0,))  # q/k/v: ours [D, H, hd] <-> HF [H*hd, D]
_OUT_HEADS: Layout = ((2,), (0, 1))  # o:     ours [H, hd, D] <-> HF [D, H*hd]
_HEAD_BIAS: Layout = ((0, 1),)  # q/k/v bias: ours [H, hd] <-> HF [H*hd]

# (our path, HF name, layout). Entries whose path the model lacks (biases without qkv_bias, lm_head
# when tied) are skipped.
_MODEL_TABLE: tuple[tuple[tuple[str, ...], str, Layout], ...] = (
    (("embedding",), "model.embed_tokens.weight", _SAME2),
    (("final_norm", "scale"), "model.norm.weight", _SAME1),
    (("lm_head",), "lm_head.weight", _LINEAR),  # ours [D, V]; HF [V, D]
)
_LAYER_TABLE: tuple[tuple[tuple[str, ...], str, Layout], ...] = (  # HF names under model.layers.{i}.
    (("attn_norm", "scale"), "input_layernorm.weight", _SAME1),
    (("attn", "q"), "self_attn.q_proj.weight", _IN_HEADS),
    (("attn", "k"), "self_attn.k_proj.weight", _IN_HEADS),
    (("attn", "v"), "self_attn.v_proj.weight", _IN_HEADS),
    (("attn", "q_bias"), "self_attn.q_proj.bias", _HEAD_BIAS),
    (("attn", "k_bias"), "self_attn.k_proj.bias", _HEAD_BIAS),
    (("attn", "v_bias"), "self_attn.v_proj.bias", _HEAD_BIAS),
    (("attn", "o"), "self_attn.o_proj.weight", _OUT_HEADS),
    (("attn", "q_norm", "scale"), "self_attn.q_norm.weight", _SAME1),  # Qwen3: [head_dim] both sides
    (("attn", "k_norm", "scale"), "self_attn.k_norm.weight", _SAME1),
    (("mlp_norm", "scale"), "post_attention_layernorm.weight", _SAME1),
    (("mlp", "gate"), "mlp.gate_proj.weight", _LINEAR),
    (("mlp", "up"), "mlp.up_proj.weight", _LINEAR),
    (("mlp", "down"), "mlp.down_proj.weight", _LINEAR),
)
# Llama's and Qwen3's `attention_bias` also put a bias on o_proj, which our attention lacks: export writes
# it as zeros (exact), import accepts it only if it is all zeros.
_O_BIAS = "self_attn.o_proj.bias"


class Entry(NamedTuple):
    """One Hugging Face tensor: our parameter `path`, and for a layer's tensor the slice `layer` of it."""

    path: tuple  # our nnx state path, e.g. ("layers", "attn", "q") (stacked over layers)
    hf_name: str
    layout: Layout
    shape: tuple[int, ...]  # ours, of this tensor (one layer's slice of a stacked parameter)
    layer: int | None = None  # index on the stacked `layers` axis; None for embedding, final norm, lm_head

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return tuple(math.prod(self.shape[d] for d in group) for group in self.layout)


def param_table(config: ModelConfig, shapes: Mapping[tuple, Sequence[int]]) -> list[Entry]:
    """The table expanded for `config`: one Entry per Hugging Face tensor of the parameters in `shapes`
    (path -> shape; a layer parameter's shape has the leading `layers` axis)."""
    _check_family(config)
    entries = [
        Entry(path, name, layout, tuple(shapes[path]))
        for path, name, layout in _MODEL_TABLE
        if path in shapes
    ]
    for path, name, layout in _LAYER_TABLE:
        path = ("layers",) + path
        if path in shapes:
            entries += [
                Entry(path, f"model.layers.{i}.{name}", layout, tuple(shapes[path][1:]), i)
                for i in range(config.n_layers)
            ]
    missing = set(shapes) - {e.path for e in entries}
    if missing:  # a parameter the table does not know would silently be left out of exports
        raise KeyError(f"parameters without a Hugging Face name: {sorted(missing)}")
    return entries


def _zero_bias_names(config: ModelConfig) -> list[str]:
    if config.arch in ("llama", "qwen3") and config.qkv_bias:
        return [f"model.layers.{i}.{_O_BIAS}" for i in range(config.n_layers)]
    return []


def _to_hf(x: np.ndarray, layout: Layout) -> np.ndarray:
    order = [d for group in layout for d in group]
    return x.transpose(order).reshape([math.prod(x.shape[d] for d in group) for group in layout])


def _hf_index(entry: Entry, index: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    """The HF block holding our block `index` ((start, stop) per our dim).

    A merged HF dim is read over the leading dim's range with the trailing dims whole (that is what is
    contiguous); trailing dims that are themselves sharded (head_dim never is) are cut after reading.
    """
    out = []
    for group in entry.layout:
        inner = math.prod(entry.shape[d] for d in group[1:])
        start, stop = index[group[0]]
        out.append(slice(start * inner, stop * inner))
    return tuple(out)


def _from_hf_block(block: np.ndarray, entry: Entry, index: Sequence[tuple[int, int]]) -> np.ndarray:
    """Inverse of `_to_hf` on the block read by `_hf_index`, cut to exactly `index`."""
    shape, order = [], []
    for group in entry.layout:
        shape.append(index[group[0]][1] - index[group[0]][0])
        shape += [entry.shape[d] for d in group[1:]]
        order += list(group)
    x = block.reshape(shape).transpose(np.argsort(order))
    leading = {group[0] for group in entry.layout}
    return x[tuple(slice(None) if d in leading else slice(*index[d]) for d in range(x.ndim))]


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
def _dtype_name(value: Any, field: str) -> str:
    if value is None or value == "auto":
        return "float32"
    if not isinstance(value, str):  # np / jnp dtypes and scalar types
        value = np.dtype(value).name
    name = value.removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(
            f"{field}={value!r}: unsupported dtype; expected one of {sorted(set(_DTYPES.values()))}"
        )
    return _DTYPES[name]


# RoPE scaling keys per rope_type: all that transformers reads (RopeScaling's fields), and those it requires.
_ROPE_KEYS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": (
        "factor",
        "original_max_position_embeddings",
        "beta_fast",
        "beta_slow",
        "attention_factor",
        "mscale",
        "mscale_all_dim",
        "truncate",
    ),
}
_ROPE_REQUIRED = {"linear": ("factor",), "dynamic": ("factor",), "yarn": ("factor",)}
_ROPE_REQUIRED["llama3"] = ("factor", "low_freq_factor", "high_freq_factor")
_ZERO_MEANS_DERIVED = ("attention_factor", "mscale", "mscale_all_dim")  # to transformers, 0 is a value


def _rope_from_hf(c: Mapping[str, Any], max_position_embeddings: int) -> tuple[float, RopeScaling]:
    """(theta, scaling) from a config.json, read as transformers 5.x does: `rope_scaling` (4.x) wins over
    `rope_parameters` (5.x), theta from inside them or top-level, and llama3 / yarn fall back to
    `max_position_embeddings` as the pretraining length (a top-level original_max_position_embeddings wins)."""
    field = "rope_scaling" if c.get("rope_scaling") else "rope_parameters"
    params = c.get(field) or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{field}={params!r}: expected a dict")
    theta = next((t for t in (params.get("rope_theta"), c.get("rope_theta")) if t is not None), 10_000.0)
    rope_type = params.get("rope_type", params.get("type")) or "default"
    if rope_type not in _ROPE_KEYS:
        raise ValueError(
            f"{field}: rope_type={rope_type!r} is not supported; expected one of {list(_ROPE_KEYS)}"
        )
    partial = params.get("partial_rotary_factor", c.get("partial_rotary_factor"))
    if partial not in (None, 1, 1.0):
        raise ValueError(f"partial_rotary_factor={partial} is not supported (RoPE rotates the whole head)")
    missing = [k for k in _ROPE_REQUIRED.get(rope_type, ()) if k not in params]
    if missing:
        raise ValueError(f"{field}: rope_type={rope_type!r} needs {missing}")
    fields = {k: params[k] for k in _ROPE_KEYS[rope_type] if params.get(k) is not None}
    if rope_type in ("llama3", "yarn"):
        original = c.get("original_max_position_embeddings") or fields.get("original_max_position_embeddings")
        fields["original_max_position_embeddings"] = int(original or max_position_embeddings)
    if rope_type == "yarn" and "factor" not in fields:  # factor: None means the context ratio
        fields["factor"] = max_position_embeddings / fields["original_max_position_embeddings"]
    return float(theta), RopeScaling(type=rope_type, **fields)


def _rope_to_hf(config: ModelConfig) -> dict[str, Any]:
    """The scaling keys of `rope_parameters` (without theta) for `config.rope_scaling`."""
    s = config.rope_scaling
    out = {"rope_type": s.type}
    for key in _ROPE_KEYS[s.type]:
        value = getattr(s, key)
        if not (key in _ZERO_MEANS_DERIVED and value == 0):
            out[key] = value
    return out


def _check_family(config: ModelConfig) -> None:
    """The Hugging Face class of `config.arch` computes what `config` says (export would be silently wrong)."""
    if config.qk_norm != (config.arch == "qwen3"):
        raise ValueError(
            f"arch={config.arch!r} with qk_norm={config.qk_norm}: of the Hugging Face families only qwen3 "
            "has q/k norms, and it always has them"
        )
    if config.arch == "qwen2" and not config.qkv_bias:
        raise ValueError("arch='qwen2' with qkv_bias=False: Qwen2 always has q/k/v biases (export as llama)")


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """A ModelConfig from a Hugging Face `config.json` dict (llama, qwen2 or qwen3); `overrides` win."""
    c = hf_config
    model_type = c.get("model_type")
    if model_type not in _ARCHITECTURES:
        raise ValueError(
            f"model_type={model_type!r} is not supported; expected one of {sorted(_ARCHITECTURES)}"
        )
    act = c.get("hidden_act", "silu")
    if act not in ("silu", "swish"):  # HF treats both names as SiLU
        raise ValueError(f"hidden_act={act!r} is not supported; the MLP is SwiGLU (silu)")

    if model_type == "llama":
        if c.get("mlp_bias"):
            raise ValueError("mlp_bias=True is not supported (the MLP has no biases)")
        qkv_bias = bool(c.get("attention_bias", False))
        default_max_pos = 2048
    else:  # qwen2: q/k/v always carry a bias; qwen3: `attention_bias` (default none) and q/k norms
        if c.get("use_sliding_window"):
            raise ValueError("use_sliding_window=True is not supported (only full attention)")
        layer_types = c.get("layer_types") or []
        if any(t != "full_attention" for t in layer_types):
            raise ValueError(f"layer_types={layer_types!r} is not supported (only full_attention)")
        qkv_bias = model_type == "qwen2" or bool(c.get("attention_bias", False))
        default_max_pos = 32768
    max_pos = int(c.get("max_position_embeddings") or default_max_pos)
    rope_theta, rope_scaling = _rope_from_hf(c, max_pos)

    heads = int(c["num_attention_heads"])
    # Qwen3's class defaults head_dim to 128 rather than hidden_size / heads.
    default_head_dim = 128 if model_type == "qwen3" else c["hidden_size"] // heads
    kwargs: dict[str, Any] = dict(
        vocab_size=int(c["vocab_size"]),
        d_model=int(c["hidden_size"]),
        n_layers=int(c["num_hidden_layers"]),
        n_heads=heads,
        n_kv_heads=int(c.get("num_key_value_heads") or heads),
        head_dim=int(c.get("head_dim") or default_head_dim),
        mlp_dim=int(c["intermediate_size"]),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        qkv_bias=qkv_bias,
        qk_norm=model_type == "qwen3",
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),  # the three classes default False
        param_dtype=_dtype_name(c.get("dtype", c.get("torch_dtype")), "torch_dtype"),
        arch=model_type,
        max_position_embeddings=max_pos,
    )
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def config_to_hf(config: ModelConfig, dtype: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Hugging Face `config.json` dict for `config.arch` (readable by transformers 4.x and 5.x)."""
    c = config
    _check_family(c)
    scaling = _rope_to_hf(c)
    out: dict[str, Any] = {
        "architectures": [_ARCHITECTURES[c.arch]],
        "model_type": c.arch,
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.mlp_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,  # 4.x name; 5.x folds it into rope_parameters
        "rope_parameters": {**scaling, "rope_theta": c.rope_theta},
        "rope_scaling": scaling if c.rope_scaling.type != "default" else None,  # 4.x name (5.x reads it too)
        "tie_word_embeddings": c.tie_embeddings,
        "torch_dtype": dtype or c.param_dtype,
        "attention_dropout": 0.0,
        "use_cache": True,
    }
    if c.arch == "llama":
        out.update(attention_bias=c.qkv_bias, mlp_bias=False)
    else:
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=c.n_layers)
    if c.arch == "qwen3":
        out.update(attention_bias=c.qkv_bias)
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def _read_block(handle, name: str, index: tuple[slice, ...]) -> np.ndarray:
    """Read one block of a tensor from an open safetensors file (only those bytes are touched)."""
    return handle.get_slice(name)[index]


class _Checkpoint:
    """The tensors of a (possibly sharded) safetensors checkpoint; each file is opened once."""

    def __init__(self, path: str, stack: contextlib.ExitStack):
        self.path = path
        self._stack = stack
        self._handles: dict[str, Any] = {}
        single, index = os.path.join(path, WEIGHTS_NAME), os.path.join(path, INDEX_NAME)
        if os.path.isfile(single):
            self.files = [WEIGHTS_NAME]
            self.weight_map = {name: WEIGHTS_NAME for name in self.handle(WEIGHTS_NAME).keys()}
        elif os.path.isfile(index):
            with open(index) as f:
                self.weight_map = dict(json.load(f)["weight_map"])
            self.files = sorted(set(self.weight_map.values()))
            absent = [f for f in self.files if not os.path.isfile(os.path.join(path, f))]
            if absent:
                raise FileNotFoundError(f"{index} lists shard files missing from {path}: {absent}")
        else:
            raise FileNotFoundError(
                f"no safetensors weights in {path}: looked for {WEIGHTS_NAME} and {INDEX_NAME}"
            )

    def handle(self, file: str):
        if file not in self._handles:
            self._handles[file] = self._stack.enter_context(
                safe_open(os.path.join(self.path, file), framework="numpy")
            )
        return self._handles[file]

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def tensor_handle(self, name: str, expected_shape: tuple[int, ...]):
        if name not in self.weight_map:
            raise KeyError(f"tensor {name!r} not found in checkpoint {self.path} (searched {self.files})")
        handle = self.handle(self.weight_map[name])
        shape = tuple(handle.get_slice(name).get_shape())
        if shape != tuple(expected_shape):
            raise ValueError(
                f"tensor {name!r} in {self.weight_map[name]} has shape {shape}, "
                f"expected {tuple(expected_shape)} from config.json"
            )
        return handle


BlockReader = Callable[[tuple[slice, ...]], np.ndarray]  # an HF-layout index -> that block of the tensor


def _load_param(readers: Sequence[BlockReader], entries: Sequence[Entry], sharding, dtype) -> jax.Array:
    """One parameter from its Hugging Face tensor (one entry) or, stacked over layers, from one per layer."""
    stacked = entries[0].layer is not None
    shape = ((len(entries),) if stacked else ()) + entries[0].shape
    blocks: dict[tuple, np.ndarray] = {}  # replicated shards are read once, not once per device

    def read(reader, entry, bounds):
        block = _from_hf_block(reader(_hf_index(entry, bounds)), entry, bounds)
        return np.ascontiguousarray(block.astype(dtype))

    def callback(index):
        bounds = tuple(s.indices(n)[:2] for s, n in zip(index, shape))
        if bounds not in blocks:
            if stacked:  # this shard's layers, each read as its own block of its own tensor
                layers = range(*bounds[0])
                blocks[bounds] = np.stack([read(readers[i], entries[i], bounds[1:]) for i in layers])
            else:
                blocks[bounds] = read(readers[0], entries[0], bounds)
        return blocks[bounds]

    return jax.make_array_from_callback(shape, sharding, callback)


def place_model(
    config: ModelConfig,
    open_tensor: Callable[[Entry], BlockReader],
    mesh: jax.sharding.Mesh | None = None,
    rules=None,
) -> Transformer:
    """`config`'s Transformer with every parameter created shard by shard from a checkpoint.

    `open_tensor(entry)` returns the reader of the Hugging Face-layout tensor behind `entry`; each device's
    shard reads only its block. Parameters land on the devices of `mesh` (placed by the logical-axis
    `rules`), or on the first device when `mesh` is None. Every weight format (safetensors, GGUF) loads here.
    """
    graphdef, abstract_state = nnx.split(abstract_model(config))
    if mesh is None:
        single = SingleDeviceSharding(jax.devices()[0])
        shardings = {path: single for path, _ in nnx.to_flat_state(abstract_state)}
    else:
        shardings = {
            path: var.get_value() for path, var in nnx.to_flat_state(model_shardings(config, mesh, rules))
        }
    variables = dict(nnx.to_flat_state(abstract_state))
    by_path: dict[tuple, list[Entry]] = {}
    for entry in param_table(config, {path: var.shape for path, var in variables.items()}):
        by_path.setdefault(entry.path, []).append(entry)
    flat = []
    for path, entries in by_path.items():  # one parameter at a time (a stacked one: all its layers)
        readers = [open_tensor(entry) for entry in entries]
        array = _load_param(readers, entries, shardings[path], config.jnp_param_dtype)
        flat.append((path, variables[path].replace(array)))
    state = nnx.from_flat_state(flat)
    if mesh is None:
        return nnx.merge(graphdef, state)
    with jax.set_mesh(mesh):
        return nnx.merge(graphdef, state)


def from_pretrained(
    path: str | os.PathLike,
    mesh: jax.sharding.Mesh | None = None,
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    rules=None,
    **overrides: Any,
) -> Transformer:
    """Load a Hugging Face Llama/Qwen2 safetensors checkpoint directory as a Transformer.

    Parameters are created shard by shard on the devices of `mesh` (placed by the logical-axis `rules`),
    or on the first device when `mesh` is None. `param_dtype` defaults to the checkpoint's dtype, `dtype`
    (compute) to ModelConfig's default; other ModelConfig fields may be overridden (e.g. remat="full").
    """
    path = os.fspath(path)
    config_file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}")
    with open(config_file) as f:
        hf_config = json.load(f)
    if dtype is not None:
        overrides["dtype"] = _dtype_name(dtype, "dtype")
    if param_dtype is not None:
        overrides["param_dtype"] = _dtype_name(param_dtype, "param_dtype")
    config = config_from_hf(hf_config, **overrides)

    with contextlib.ExitStack() as stack:
        ckpt = _Checkpoint(path, stack)

        def open_tensor(entry: Entry) -> BlockReader:
            name = entry.hf_name
            if name not in ckpt and name == "lm_head.weight" and hf_config.get("tie_word_embeddings"):
                name = "model.embed_tokens.weight"  # tied checkpoint loaded untied: same [V, D] tensor
            handle = ckpt.tensor_handle(name, entry.hf_shape)
            return lambda index: _read_block(handle, name, index)

        model = place_model(config, open_tensor, mesh, rules)
        for name in _zero_bias_names(config):
            if name in ckpt:
                bias = ckpt.tensor_handle(name, (config.d_model,)).get_tensor(name)
                if np.any(bias != 0):
                    raise ValueError(f"{name} is nonzero: alejax's attention has no output-projection bias")
    return model


# ---------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------
_OWN_FILES = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$")


def save_pretrained(
    model: Transformer,
    path: str | os.PathLike,
    *,
    max_shard_bytes: int = 2**31,
    dtype: str | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
) -> None:
    """Write `model` as a Hugging Face checkpoint directory (config.json + safetensors, sharded with an
    index when larger than `max_shard_bytes`). `dtype` (default: the param dtype) is the stored dtype.
    Earlier `model*.safetensors` files and index in `path` are replaced."""
    config: ModelConfig = model.config
    out_dtype = np.dtype(_dtype_name(dtype or config.param_dtype, "dtype"))
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    entries = param_table(config, {p: v.get_value().shape for p, v in params.items()})

    # (HF name, byte size, producer) in table order; producers gather one parameter when called.
    def from_param(entry):
        def produce():
            value = params[entry.path].get_value()
            value = value if entry.layer is None else value[entry.layer]  # one layer's slice on device
            return _to_hf(np.asarray(jax.device_get(value)).astype(out_dtype), entry.layout)

        return produce

    entries = sorted(entries, key=lambda e: -1 if e.layer is None else e.layer)  # HF's order: layer by layer
    items = [(e.hf_name, math.prod(e.hf_shape) * out_dtype.itemsize, from_param(e)) for e in entries]
    items += [
        (name, config.d_model * out_dtype.itemsize, lambda: np.zeros((config.d_model,), out_dtype))
        for name in _zero_bias_names(config)
    ]

    # Plan shards from sizes alone (file names carry the shard count), then write them one at a time.
    shards: list[list] = [[]]
    size = 0
    for item in items:
        if shards[-1] and size + item[1] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item[1]

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    for old in os.listdir(path):
        if _OWN_FILES.match(old):
            os.remove(os.path.join(path, old))
    names = (
        [WEIGHTS_NAME]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for file, shard in zip(names, shards):
        tensors = {name: np.ascontiguousarray(produce()) for name, _, produce in shard}
        save_file(
            tensors, os.path.join(path, file), metadata={"format": "pt"}
        )  # transformers checks "format"
        weight_map.update({name: file for name in tensors})
        del tensors
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(item[1] for item in items)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        with open(os.path.join(path, INDEX_NAME), "w") as f:
            json.dump(index, f, indent=2)
    hf_config = config_to_hf(
        config, dtype=out_dtype.name, bos_token_id=bos_token_id, eos_token_id=eos_token_id
    )
    with open(os.path.join(path, CONFIG_NAME), "w") as f:
        json.dump(hf_config, f, indent=2)
