"""The one decoder-only transformer (Llama / Qwen2 / Qwen3 family) used for training, scoring and sampling.

Training calls it on full sequences (causal mask, padding and packed-sequence segment ids). Sampling
calls the same module with a preallocated KV cache: a prefill writes a chunk of tokens at per-row
positions, a decode step writes one token per row. Every parameter carries logical axis names
(`out_sharding` metadata) and every large activation is constrained by logical names, so the rule
table in `alejax.parallel.rules` alone decides the layout.

The layers are one Block whose parameters are stacked on a leading `layers` axis (built with `nnx.vmap`),
run under one `jax.lax.scan` (MaxText's `scan_layers`): one layer body is compiled whatever the depth, and
`ModelConfig.remat` wraps that body. The KV cache is stacked the same way ([n_layers, ...]) and carried by
the scan, each layer writing its own slice in place.

With `config.lora.rank > 0` each targeted projection also holds a low-rank adapter (`nnx.LoRAParam` A and
B, stacked like the rest) applied beside it: W x + s B A dropout(x). B starts at zero, so the adapted graph
starts as the base one; `alejax.models.lora` splits adapters from the frozen weights and merges them.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alejax.models.config import LORA_TARGETS, ModelConfig, RopeScaling
from alejax.parallel.rules import constrain


def _param(rngs: nnx.Rngs, init, shape, names, dtype) -> nnx.Param:
    # eager_sharding=False: the module can be built with or without a mesh; `create_model` places the
    # parameters by jitting the init with shardings computed from these names.
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=names, eager_sharding=False)


def dense(x: jax.Array, kernel: jax.Array, n_contract: int = 1) -> jax.Array:
    """Contract x's last `n_contract` dims with the kernel's first ones, as ONE 2-D matmul.

    [tokens, in] @ [in, out] keeps XLA's CPU matmul on its fast path: with 3-D einsums the 100M train
    step was 1.27x slower on CPU (transposed gradients got fused into slow, unvectorised loops).
    """
    lead, contract = x.shape[: x.ndim - n_contract], x.shape[x.ndim - n_contract :]
    out = kernel.shape[n_contract:]
    k = math.prod(contract)
    y = x.reshape(-1, k) @ kernel.reshape(k, -1)
    return y.reshape(*lead, *out)


def _add_adapters(module: nnx.Module, rngs: nnx.Rngs, projections: dict) -> None:
    """`<name>_lora_a` [*fan_in, r] (PEFT's init: uniform +-1/sqrt(fan_in)) and `<name>_lora_b` [r, *fan_out]
    (zeros) on `module` for each of its projections (name -> ((fan_in, names), (fan_out, names))) that
    `config.lora.targets` names."""
    c = module.config
    r, pd = c.lora.rank, c.jnp_param_dtype
    for name in c.lora_shapes():
        if name not in projections:
            continue
        (fan_in, in_names), (fan_out, out_names) = projections[name]
        bound = 1.0 / math.sqrt(math.prod(fan_in))
        a = jax.random.uniform(rngs.params(), (*fan_in, r), pd, -bound, bound)
        b = jnp.zeros((r, *fan_out), pd)
        a_names, b_names = (*in_names, "lora_rank"), ("lora_rank", *out_names)
        setattr(module, name + "_lora_a", nnx.LoRAParam(a, out_sharding=a_names, eager_sharding=False))
        setattr(module, name + "_lora_b", nnx.LoRAParam(b, out_sharding=b_names, eager_sharding=False))


def _adapted(module: nnx.Module, name: str, x: jax.Array, n_contract: int, dropout_key) -> jax.Array:
    """The projection `name` of x, plus its adapter's s B A dropout(x) when the module has one."""
    c = module.config
    y = dense(x, getattr(module, name)[...].astype(c.jnp_dtype), n_contract)
    if not hasattr(module, name + "_lora_a"):
        return y
    a = getattr(module, name + "_lora_a")[...].astype(c.jnp_dtype)
    b = getattr(module, name + "_lora_b")[...].astype(c.jnp_dtype)
    if dropout_key is not None and c.lora.dropout > 0:
        index = LORA_TARGETS.index(name)  # one independent mask per projection
        keep = jax.random.bernoulli(jax.random.fold_in(dropout_key, index), 1 - c.lora.dropout, x.shape)
        x = jnp.where(keep, x / (1 - c.lora.dropout), 0).astype(x.dtype)
    return y + c.lora.scale * dense(dense(x, a, n_contract), b)


class KVCache(NamedTuple):
    """Keys and values of every layer, stacked like the layers' parameters; index along `cache_length` is
    the token's absolute position. The layer scan carries the whole cache and writes layer i's slice in place."""

    k: jax.Array  # [n_layers, B, n_kv_heads, S, head_dim]: head-major, as attention reads it
    v: jax.Array


LAYER_CACHE_NAMES = ("batch", "kv_heads", "cache_length", "head_dim")  # one layer's slice
CACHE_NAMES = ("layers",) + LAYER_CACHE_NAMES


def init_cache(config: ModelConfig, batch_size: int, max_length: int, dtype=None) -> KVCache:
    """A zero KV cache for `batch_size` rows of up to `max_length` positions."""
    shape = (config.n_layers, batch_size, config.n_kv_heads, max_length, config.head_dim)
    dtype = config.jnp_dtype if dtype is None else dtype

    def zeros():
        return constrain(jnp.zeros(shape, dtype), CACHE_NAMES)

    return KVCache(zeros(), zeros())


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, param_dtype, rngs: nnx.Rngs):
        self.scale = _param(rngs, nnx.initializers.ones, (dim,), ("norm",), param_dtype)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        # Multiply in the input dtype after normalising in f32, as Hugging Face's Llama/Qwen2 do.
        return self.scale[...].astype(dtype) * x.astype(dtype)


@functools.lru_cache(maxsize=None)
def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling) -> tuple[np.ndarray, float]:
    """Inverse frequencies [head_dim / 2] and the scale of cos/sin, for one config (computed once).

    The rules and their f32 arithmetic are transformers' `_compute_{linear_scaling,llama3,yarn}_parameters`
    (parity, not approximation). `dynamic` depends on the sequence length: this gives its frequencies for
    sequences within `max_position_embeddings` (unscaled); `rotary` rescales them for longer ones.
    """
    s = scaling
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    wavelength_base = np.float32(theta) ** exponent
    inv_freq = 1.0 / wavelength_base
    if s.type == "linear":  # positions / factor, folded into the frequencies
        return inv_freq / np.float32(s.factor), 1.0
    if s.type == "llama3":
        # Long wavelengths (beyond the old context / low_freq_factor) are interpolated by `factor`, short
        # ones (below the old context / high_freq_factor) kept, the band in between blended smoothly.
        old_context = s.original_max_position_embeddings
        wavelength = np.float32(2 * math.pi) / inv_freq
        scaled = np.where(
            wavelength > old_context / s.low_freq_factor, inv_freq / np.float32(s.factor), inv_freq
        )
        smooth = (old_context / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        smoothed = (1 - smooth) * scaled / np.float32(s.factor) + smooth * scaled
        medium = (wavelength >= old_context / s.high_freq_factor) & (
            wavelength <= old_context / s.low_freq_factor
        )
        return np.where(medium, smoothed, scaled).astype(np.float32), 1.0
    if s.type == "yarn":
        return _yarn_frequencies(head_dim, theta, s, wavelength_base)
    return inv_freq, 1.0


def _yarn_frequencies(head_dim: int, theta: float, s: RopeScaling, wavelength_base: np.ndarray):
    """YaRN (arXiv 2309.00071): dims that turn fewer than beta_slow times over the old context are
    interpolated by `factor`, those turning more than beta_fast times kept, a linear ramp in between;
    cos/sin are scaled by the attention factor (0.1 ln(factor) + 1 unless given)."""

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if s.attention_factor:
        attention_factor = s.attention_factor
    elif s.mscale and s.mscale_all_dim:
        attention_factor = mscale(s.factor, s.mscale) / mscale(s.factor, s.mscale_all_dim)
    else:
        attention_factor = mscale(s.factor)

    def correction_dim(rotations):  # the dim whose wavelength fits `rotations` times in the old context
        old_context = s.original_max_position_embeddings
        return head_dim * math.log(old_context / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(s.beta_fast or 32), correction_dim(s.beta_slow or 1)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # as HF: keeps the ramp finite
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # per dim: 1 keeps the trained frequency (extrapolation), 0 divides it by factor
    interpolated, extrapolated = 1.0 / (np.float32(s.factor) * wavelength_base), 1.0 / wavelength_base
    inv_freq = interpolated * (1 - keep) + extrapolated * keep
    return inv_freq.astype(np.float32), float(attention_factor)


def rotary(config: ModelConfig, positions: jax.Array, lengths: jax.Array | None = None):
    """cos and sin [B, T, head_dim / 2] of each position's rotation (times yarn's attention factor).

    `lengths` [B, T]: the length of the sequence each token belongs to; only `dynamic` reads it. Like HF,
    dynamic NTK raises the base once a sequence outgrows `max_position_embeddings`, from that length. So
    beyond it a cached decode (each chunk rotated at the length reached so far, keys kept as cached) differs
    from the full forward, as HF's generate does. HF takes one length per batch; here each sequence has its
    own, so a row's logits do not depend on its neighbours (the same for one sequence or an unpadded batch).
    """
    c = config
    inv_freq, scale = rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
    inv_freq = jnp.asarray(inv_freq)
    if c.rope_scaling.type == "dynamic":
        dim, factor, trained = c.head_dim, c.rope_scaling.factor, c.max_position_embeddings
        length = jnp.maximum(lengths, trained).astype(jnp.float32)
        base = c.rope_theta * (factor * length / trained - (factor - 1)) ** (dim / (dim - 2))
        inv_freq = 1.0 / (base[..., None] ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
    return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def _sequence_lengths(positions, segment_ids, cache: KVCache | None) -> jax.Array:
    """Per token [B, T], the length its sequence reaches in this call: HF's max(position_ids) + 1, taken
    per packed document of a full sequence and per row's chunk when writing to a cache."""
    if cache is None:
        same_document = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
        last = jnp.max(jnp.where(same_document, positions[:, None, :], -1), axis=-1)
    else:
        real = positions < cache.k.shape[-2]  # padding writes at an out-of-range position
        last = jnp.max(jnp.where(real, positions, -1), axis=-1, keepdims=True)
    return jnp.broadcast_to(last + 1, positions.shape)


def rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotary embedding, half-split ("rotate_half") layout as in Llama / Qwen. x: [B, T, H, D]."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        c = config
        init = nnx.initializers.normal(c.init_std)
        pd = c.jnp_param_dtype
        self.config = c
        self.q = _param(rngs, init, (c.d_model, c.n_heads, c.head_dim), ("embed", "heads", "head_dim"), pd)
        self.k = _param(
            rngs, init, (c.d_model, c.n_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), pd
        )
        self.v = _param(
            rngs, init, (c.d_model, c.n_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), pd
        )
        self.o = _param(rngs, init, (c.n_heads, c.head_dim, c.d_model), ("heads", "head_dim", "embed"), pd)
        if c.qkv_bias:
            zeros = nnx.initializers.zeros
            self.q_bias = _param(rngs, zeros, (c.n_heads, c.head_dim), ("heads", "head_dim"), pd)
            self.k_bias = _param(rngs, zeros, (c.n_kv_heads, c.head_dim), ("kv_heads", "head_dim"), pd)
            self.v_bias = _param(rngs, zeros, (c.n_kv_heads, c.head_dim), ("kv_heads", "head_dim"), pd)
        if c.qk_norm:  # one scale over head_dim, shared by all heads
            self.q_norm = RMSNorm(c.head_dim, c.norm_eps, pd, rngs)
            self.k_norm = RMSNorm(c.head_dim, c.norm_eps, pd, rngs)
        hd = (c.head_dim, "head_dim")
        _add_adapters(
            self,
            rngs,
            {  # name: (fan-in dims, their names), (fan-out dims, their names)
                "q": (((c.d_model,), ("embed",)), ((c.n_heads, hd[0]), ("heads", hd[1]))),
                "k": (((c.d_model,), ("embed",)), ((c.n_kv_heads, hd[0]), ("kv_heads", hd[1]))),
                "v": (((c.d_model,), ("embed",)), ((c.n_kv_heads, hd[0]), ("kv_heads", hd[1]))),
                "o": (((c.n_heads, hd[0]), ("heads", hd[1])), ((c.d_model,), ("embed",))),
            },
        )

    def _project(self, x, name, dropout_key):
        y = _adapted(self, name, x, 1, dropout_key)
        if self.config.qkv_bias:
            y = y + getattr(self, name + "_bias")[...].astype(self.config.jnp_dtype)
        return y

    def __call__(
        self,
        x,
        positions,
        segment_ids,
        cache: KVCache | None,
        layer: jax.Array | None = None,
        dropout_key=None,
        attend_length: int | None = None,
        cache_rows: jax.Array | None = None,
    ):
        """`cache`: the whole stacked cache (all layers); this layer writes and reads its slice `layer`.
        `dropout_key`: the adapters' dropout while training (None: none). `attend_length` (static): read only
        cache positions [0, attend_length) — every query position must be below it; None = the whole cache.
        `cache_rows` [B]: the cache row each input row writes and reads (None: row b is cache row b), so a
        prefill computes only the rows that have a chunk."""
        c = self.config
        q, k = self._project(x, "q", dropout_key), self._project(x, "k", dropout_key)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        dynamic = c.rope_scaling.type == "dynamic"
        cos, sin = rotary(c, positions, _sequence_lengths(positions, segment_ids, cache) if dynamic else None)
        q = constrain(rope(q, cos, sin), ("batch", "length", "heads", "head_dim"))
        k = constrain(rope(k, cos, sin), ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(self._project(x, "v", dropout_key), ("batch", "length", "kv_heads", "head_dim"))

        if cache is None:
            # Full sequence: causal by index (packed documents restart their positions), same segment,
            # and segment 0 is padding.
            t = x.shape[1]
            causal = jnp.tril(jnp.ones((t, t), dtype=bool))
            same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
            mask = causal[None] & same_segment & (segment_ids[:, None, :] > 0)
            keys, values, new_cache = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), None
        else:
            # Write this chunk at its absolute positions, then attend over the whole cache. A row's cache
            # holds one sequence from position 0, so "key position <= query position" is the full mask;
            # entries beyond a row's length are stale and masked. Out-of-range writes (padding) are dropped.
            # The scatter goes into the stacked cache the layer scan carries, so XLA updates it in place.
            rows = (jnp.arange(x.shape[0]) if cache_rows is None else cache_rows)[:, None, None]
            heads = jnp.arange(c.n_kv_heads)[None, :, None]
            at = (layer, rows, heads, positions[:, None, :])
            cache_k = cache.k.at[at].set(k.transpose(0, 2, 1, 3).astype(cache.k.dtype), mode="drop")
            cache_v = cache.v.at[at].set(v.transpose(0, 2, 1, 3).astype(cache.v.dtype), mode="drop")
            new_cache = KVCache(constrain(cache_k, CACHE_NAMES), constrain(cache_v, CACHE_NAMES))
            keys = constrain(cache_k[layer], LAYER_CACHE_NAMES)
            values = constrain(cache_v[layer], LAYER_CACHE_NAMES)
            if attend_length is not None and attend_length < keys.shape[2]:
                # A static view of the filled part: attention then costs what the rows have used, not
                # the preallocated length (the sampler picks a power-of-two bucket per call).
                keys, values = keys[:, :, :attend_length], values[:, :, :attend_length]
            if cache_rows is not None:
                keys, values = keys[cache_rows], values[cache_rows]
            key_positions = jnp.arange(keys.shape[2])
            mask = key_positions[None, None, :] <= positions[:, :, None]
            keys, values = keys.astype(q.dtype), values.astype(q.dtype)

        # Grouped-query attention without repeating k/v. Head-major layout [b, kv, groups*t, d]: the
        # two batched matmuls then need no transposes of the [.., t, s] score tensors in the backward
        # pass, only of q/k/v/out (measured 1.13x faster fwd+bwd at 100M, T=512 on CPU than a grouped 5-D einsum).
        b, t, h, d = q.shape
        kv, groups, s_len = c.n_kv_heads, h // c.n_kv_heads, keys.shape[2]
        q = q.reshape(b, t, kv, groups, d).transpose(0, 2, 3, 1, 4).reshape(b, kv, groups * t, d)
        scores = jnp.einsum("bkqd,bksd->bkqs", q, keys).astype(jnp.float32) * (d**-0.5)
        scores = scores.reshape(b, kv, groups, t, s_len)
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(b, kv, groups * t, s_len)
        out = jnp.einsum("bkqs,bksd->bkqd", probs, values)
        out = out.reshape(b, kv, groups, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
        out = constrain(out, ("batch", "length", "heads", "head_dim"))
        out = _adapted(self, "o", out, 2, dropout_key)
        return constrain(out, ("batch", "length", "act_embed")), new_cache


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        c = config
        init = nnx.initializers.normal(c.init_std)
        pd = c.jnp_param_dtype
        self.config = c
        self.gate = _param(rngs, init, (c.d_model, c.mlp_dim), ("embed", "mlp"), pd)
        self.up = _param(rngs, init, (c.d_model, c.mlp_dim), ("embed", "mlp"), pd)
        self.down = _param(rngs, init, (c.mlp_dim, c.d_model), ("mlp", "embed"), pd)
        d, m = ((c.d_model,), ("embed",)), ((c.mlp_dim,), ("mlp",))
        _add_adapters(self, rngs, {"gate": (d, m), "up": (d, m), "down": (m, d)})

    def __call__(self, x, dropout_key=None):
        gate = _adapted(self, "gate", x, 1, dropout_key)
        up = _adapted(self, "up", x, 1, dropout_key)
        hidden = constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
        out = _adapted(self, "down", hidden, 1, dropout_key)
        return constrain(out, ("batch", "length", "act_embed"))


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        pd = config.jnp_param_dtype
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps, pd, rngs)
        self.attn = Attention(config, rngs)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps, pd, rngs)
        self.mlp = MLP(config, rngs)

    def __call__(
        self, x, positions, segment_ids, cache, layer, dropout_key=None, attend_length=None, cache_rows=None
    ):
        attn_key = mlp_key = None
        if dropout_key is not None:
            attn_key, mlp_key = jax.random.split(jax.random.fold_in(dropout_key, layer))
        attn_out, cache = self.attn(
            self.attn_norm(x), positions, segment_ids, cache, layer, attn_key, attend_length, cache_rows
        )
        x = x + attn_out
        x = x + self.mlp(self.mlp_norm(x), mlp_key)
        return x, cache


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _stacked_blocks(config: ModelConfig, rngs: nnx.Rngs) -> Block:
    """`n_layers` Blocks as ONE Block whose parameters have a leading `layers` axis (logical name "layers")."""

    @nnx.split_rngs(splits=config.n_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> Block:
        return Block(config, rngs)

    return make(rngs)


def unstack_layers(layers: nnx.State) -> list[nnx.State]:
    """A model state's stacked `layers` entry as one state per layer, each slice copied to its own buffers
    (for `Transformer.hidden_states(unstacked_layers=...)`)."""
    n_layers = jax.tree.leaves(layers)[0].shape[0]
    return [jax.tree.map(lambda a, i=i: jnp.array(a[i], copy=True), layers) for i in range(n_layers)]


class Transformer(nnx.Module):
    """Decoder-only LM. `model(tokens)` -> logits [B, T, V]; with `cache=` -> (logits, new cache)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c = config
        pd = c.jnp_param_dtype
        self.config = c
        self.embedding = _param(
            rngs, nnx.initializers.normal(c.init_std), (c.vocab_size, c.d_model), ("vocab", "embed"), pd
        )
        self.layers = _stacked_blocks(c, rngs)
        self.final_norm = RMSNorm(c.d_model, c.norm_eps, pd, rngs)
        if not c.tie_embeddings:
            self.lm_head = _param(
                rngs, nnx.initializers.normal(c.init_std), (c.d_model, c.vocab_size), ("embed", "vocab"), pd
            )

    def hidden_states(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
        dropout_key: jax.Array | None = None,
        attend_length: int | None = None,
        cache_rows: jax.Array | None = None,
        unstacked_layers: Sequence[nnx.State] | None = None,
    ):
        """Final-normed hidden states [B, T, d_model] (what reward and value heads read) and the new cache.
        `dropout_key` (a key, or its raw uint32 data): turns on the LoRA adapters' dropout (training only).
        With `cache`: `attend_length` (static int) — attention reads cache positions below it only;
        `cache_rows` [B] — the cache row each input row uses (None: the same index).
        `unstacked_layers`: the layers' parameters as one state per layer, each in its own buffers
        (`unstack_layers`), used instead of `self.layers`' stacked ones: the layers then run unrolled, each
        matmul reading its weights in place (and `cache` may be a list of per-layer caches, likewise). Under
        the scan, XLA's CPU backend copies each layer's weights out of the stacked arrays before its matmuls
        (a dynamic slice cannot feed its dots in place): in SmolLM2's decode step those copies took ~30% of
        the time (docs/rollout.md, "SmolLM2")."""
        c = self.config
        tokens = constrain(tokens, ("batch", "length"))
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        # Gather from a table split over vocab only: SPMD turns that into a masked lookup + all-reduce,
        # whereas a table also split over embed forces a full rematerialization.
        table = constrain(self.embedding[...], ("vocab", None))
        x = jnp.take(table, tokens, axis=0).astype(c.jnp_dtype)
        x = constrain(x, ("batch", "length", "act_embed"))

        # One compiled layer body, scanned over the parameters stacked on the leading `layers` axis: compile
        # time does not grow with depth. The carry holds the residual stream and (when sampling) the whole
        # stacked KV cache, which each layer updates at its own index.
        graphdef, layer_params = nnx.split(self.layers)
        if dropout_key is not None and not jnp.issubdtype(dropout_key.dtype, jax.dtypes.prng_key):
            dropout_key = jax.random.wrap_key_data(dropout_key)

        def apply_block(carry, layer_input):
            x, layer_cache = carry
            params, layer = layer_input
            block = nnx.merge(graphdef, params)
            x, layer_cache = block(
                x, positions, segment_ids, layer_cache, layer, dropout_key, attend_length, cache_rows
            )
            return (x, layer_cache), None

        if unstacked_layers is not None:
            # Unrolled, no remat (inference). `cache` may be a list of per-layer caches ([1, ...] each): each
            # layer then reads and writes its own buffers in place, where a slice of the stacked cache is
            # copied out for the attention at every call.
            per_layer = isinstance(cache, list)
            new_cache = list(cache) if per_layer else cache
            for layer, params in enumerate(unstacked_layers):
                if per_layer:
                    (x, new_cache[layer]), _ = apply_block((x, new_cache[layer]), (params, 0))
                else:
                    (x, new_cache), _ = apply_block((x, new_cache), (params, layer))
        else:
            # What the backward pass keeps of each layer (the scan stacks it over layers).
            if c.remat != "none":
                apply_block = jax.checkpoint(apply_block, policy=_REMAT_POLICIES[c.remat], prevent_cse=False)
            layer_inputs = (layer_params, jnp.arange(c.n_layers))
            (x, new_cache), _ = jax.lax.scan(apply_block, (x, cache), layer_inputs, unroll=c.scan_unroll)
        x = self.final_norm(x)
        return x, new_cache

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Project hidden states to vocabulary logits (f32)."""
        c = self.config
        if c.tie_embeddings:
            out = dense(hidden, self.embedding[...].astype(c.jnp_dtype).T)
        else:
            out = dense(hidden, self.lm_head[...].astype(c.jnp_dtype))
        return constrain(out.astype(jnp.float32), ("batch", "length", "vocab"))

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
        dropout_key: jax.Array | None = None,
        attend_length: int | None = None,
        cache_rows: jax.Array | None = None,
        unstacked_layers: Sequence[nnx.State] | None = None,
    ):
        hidden, new_cache = self.hidden_states(
            tokens, positions, segment_ids, cache, dropout_key, attend_length, cache_rows, unstacked_layers
        )
        logits = self.logits(hidden)
        return logits if cache is None else (logits, new_cache)
