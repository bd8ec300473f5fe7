"""Model hyper-parameters and named presets.

One dataclass covers the Llama / Qwen2 / Qwen3 family; `arch` only decides the names used when exporting
to Hugging Face format. The differences between the families are fields of their own (`qkv_bias`,
`qk_norm`, `rope_scaling`), so a graph is described by what it computes, not by its family's name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # the projections an adapter can wrap, by name


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling, as Hugging Face's `rope_parameters` (`rope_scaling` in 4.x) express it.

    `type` picks the rule; a field the rule does not read is ignored. Defaults are Hugging Face's.
    """

    type: str = "default"  # default (unscaled) | linear | dynamic (NTK, by sequence length) | llama3 | yarn
    factor: float = 1.0  # context extension: every rule except default reads it
    original_max_position_embeddings: int = 0  # llama3 / yarn: the pretraining context length
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn: the ramp between extrapolated and interpolated dims
    beta_slow: float = 1.0  # yarn
    attention_factor: float = 0.0  # yarn: scale of cos/sin; 0 derives it from factor (and the mscales)
    mscale: float = 0.0  # yarn, DeepSeek style: both mscales nonzero -> attention_factor from their ratio
    mscale_all_dim: float = 0.0
    truncate: bool = True  # yarn: round the ramp's ends to whole dims

    def __post_init__(self):
        if self.type not in ROPE_TYPES:
            raise ValueError(f"rope_scaling.type={self.type!r}: expected one of {list(ROPE_TYPES)}")
        if self.type in ("llama3", "yarn") and self.original_max_position_embeddings <= 0:
            raise ValueError(f"rope_scaling.type={self.type!r} needs original_max_position_embeddings > 0")
        if self.type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"rope_scaling: high_freq_factor={self.high_freq_factor} must exceed "
                f"low_freq_factor={self.low_freq_factor}"
            )


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters (Hu et al. 2021) on the named projections: W x + (alpha / rank) B A dropout(x).

    rank 0 is off (the plain graph). A starts like PEFT's (uniform +-1/sqrt(fan_in)), B at zero, so the
    adapted model starts as the base model exactly. Only the adapters train (`alejax.models.lora`).
    """

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0  # on the adapter's input only, while training
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))  # a config file's list
        if self.rank < 0:
            raise ValueError(f"lora.rank={self.rank}: expected 0 (off) or a positive rank")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout={self.dropout}: expected a rate in [0, 1)")
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if unknown or (self.rank and not self.targets):
            raise ValueError(
                f"lora.targets={list(self.targets)}: expected a non-empty subset of {list(LORA_TARGETS)}"
            )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.rank else 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 512
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 32
    mlp_dim: int = 384
    rope_theta: float = 10_000.0
    rope_scaling: RopeScaling = RopeScaling()
    norm_eps: float = 1e-6
    qkv_bias: bool = False  # Qwen2 has a bias on q, k and v (not on o).
    qk_norm: bool = False  # Qwen3: an RMSNorm over head_dim on each q and k head, before RoPE.
    tie_embeddings: bool = False
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype; norms, softmax and logits stay f32.
    remat: str = "none"  # none | full | dots_saveable: what a layer keeps for the backward pass.
    # Layers per iteration of the layer scan: 1 compiles one layer body whatever the depth; n_layers unrolls
    # it (the 4-layer tiny model's train step runs ~15% faster on CPU, but compile time grows with depth).
    scan_unroll: int = 1
    arch: str = "llama"  # llama | qwen2 | qwen3: the Hugging Face family used for export.
    max_position_embeddings: int = 4096
    init_std: float = 0.02
    lora: LoRAConfig = LoRAConfig()  # adapters on the projections (rank 0: none)

    def __post_init__(self):
        if isinstance(self.rope_scaling, Mapping):  # from dataclasses.asdict / a config file's dict
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        if isinstance(self.lora, Mapping):
            object.__setattr__(self, "lora", LoRAConfig(**self.lora))
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.scan_unroll < 1:
            raise ValueError(f"scan_unroll={self.scan_unroll}: expected >= 1 layers per scan iteration")
        if self.remat not in ("none", "full", "dots_saveable"):
            raise ValueError(f"remat={self.remat!r}: expected none, full or dots_saveable")
        if self.arch not in ("llama", "qwen2", "qwen3"):
            raise ValueError(f"arch={self.arch!r}: expected llama, qwen2 or qwen3")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"{name}={getattr(self, name)!r}: expected float32, bfloat16 or float16")

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def jnp_param_dtype(self):
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self, include_embeddings: bool = True) -> int:
        d, h, kv, hd, m = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.mlp_dim
        attn = d * hd * (h + 2 * kv) + h * hd * d + (hd * (h + 2 * kv) if self.qkv_bias else 0)
        layer = attn + 3 * d * m + self._norm_params_per_layer()
        total = self.n_layers * layer + d
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return total

    def _norm_params_per_layer(self) -> int:
        return 2 * self.d_model + (2 * self.head_dim if self.qk_norm else 0)

    def lora_shapes(self) -> dict[str, tuple[int, int]]:
        """(fan_in, fan_out) of each adapted projection (one layer)."""
        d, h, kv, hd, m = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.mlp_dim
        sizes = {"q": (d, h * hd), "k": (d, kv * hd), "v": (d, kv * hd), "o": (h * hd, d)}
        sizes.update(gate=(d, m), up=(d, m), down=(m, d))
        return {name: sizes[name] for name in self.lora.targets} if self.lora.rank else {}

    def lora_params(self) -> int:
        """Adapter parameters (A and B of every adapted projection, all layers)."""
        return self.n_layers * self.lora.rank * sum(i + o for i, o in self.lora_shapes().values())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, PaLM-style, attention included: forward + backward = 3x forward. With
        LoRA the frozen weights get no weight gradient (forward + input gradient = 2x forward on them) and
        the adapters cost 3x their own forward: the work the step must do, not the full fine-tune's."""
        dense = (
            2 * self.num_params(include_embeddings=False) - 2 * self.n_layers * self._norm_params_per_layer()
        )
        dense += 2 * self.vocab_size * self.d_model  # the output projection (the input embedding is a gather)
        attention = 2 * 2 * self.n_layers * self.n_heads * self.head_dim * seq_len  # scores + weighted sum
        if not self.lora.rank:
            return 3.0 * (dense + attention)
        return 2.0 * dense + 3.0 * attention + 3.0 * 2 * self.lora_params()


# Presets: names a config file can ask for. Sizes count all parameters (embeddings included).
PRESETS: dict[str, ModelConfig] = {
    # ~1M: the CPU quickstart and the tests (4 layers, unrolled: the scan's per-layer cost shows at this size).
    "tiny": ModelConfig(scan_unroll=4),
    # ~25M and ~100M: the train-step benchmark sizes (vocab as a small BPE would give).
    "25m": ModelConfig(
        vocab_size=8192,
        d_model=384,
        n_layers=10,
        n_heads=6,
        n_kv_heads=2,
        head_dim=64,
        mlp_dim=1536,
        tie_embeddings=True,
    ),
    "100m": ModelConfig(
        vocab_size=16384,
        d_model=768,
        n_layers=12,
        n_heads=12,
        n_kv_heads=4,
        head_dim=64,
        mlp_dim=2560,
        tie_embeddings=True,
    ),
    # Shape of SmolLM2-135M(-Instruct) (weights: `from_gguf(gguf.smollm2_path())` or a safetensors directory).
    "smollm2_135m": ModelConfig(
        vocab_size=49152,
        d_model=576,
        n_layers=30,
        n_heads=9,
        n_kv_heads=3,
        head_dim=64,
        mlp_dim=1536,
        rope_theta=100_000.0,
        norm_eps=1e-5,
        tie_embeddings=True,
        max_position_embeddings=8192,
    ),
    # Shape of Qwen2.5-0.5B (weights come from a user's directory via from_pretrained).
    "qwen2_0_5b": ModelConfig(
        vocab_size=151936,
        d_model=896,
        n_layers=24,
        n_heads=14,
        n_kv_heads=2,
        head_dim=64,
        mlp_dim=4864,
        rope_theta=1_000_000.0,
        qkv_bias=True,
        tie_embeddings=True,
        arch="qwen2",
        max_position_embeddings=32768,
    ),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
