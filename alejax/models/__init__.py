"""The model: one Flax NNX decoder graph for training, scoring and sampling."""

from alejax.models.config import PRESETS, ModelConfig, RopeScaling, get_preset
from alejax.models.gguf import config_from_gguf, from_gguf
from alejax.models.hf import config_from_hf, from_pretrained, save_pretrained
from alejax.models.init import abstract_model, create_model, model_shardings
from alejax.models.transformer import KVCache, Transformer, init_cache

__all__ = [
    "PRESETS",
    "ModelConfig",
    "RopeScaling",
    "get_preset",
    "abstract_model",
    "create_model",
    "model_shardings",
    "KVCache",
    "Transformer",
    "init_cache",
    "from_pretrained",
    "save_pretrained",
    "config_from_hf",
    "from_gguf",
    "config_from_gguf",
]
