"""The one config system: ml_collections ConfigDicts are what users, config files and sweeps see; the typed
internals (ModelConfig, RLConfig, LossConfig, SamplingConfig, ...) are frozen dataclasses built from a config
section by one helper.

    c.rl = section_of(RLConfig, group_size=4)         # every field, nested dataclasses as nested sections
    rl = from_section(RLConfig, c.rl)                  # the dataclass back, nested ones included
    c = load_config_file("configs/rl.py:tiny")         # what --config=configs/rl.py:tiny loads

An unknown key in a section is an error naming the key and the fields the dataclass has.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import os
import types
import typing
from typing import Any

from ml_collections import ConfigDict, config_dict

# What `python -m alejax.main` runs without --config: the lm job's tiny preset.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "lm.py")


def load_config_file(spec: str) -> ConfigDict:
    """`path[:preset]` -> the ConfigDict its get_config(preset) returns (as --config would load it)."""
    path, _, preset = spec.partition(":")
    module = config_module(path)
    return module.get_config(preset) if preset else module.get_config()


def config_module(path: str, what: str = "config file"):
    """The Python file at `path` as a module: a config file (one may build on another's get_config) or a
    sweep file."""
    if not os.path.exists(path):
        raise SystemExit(f"error: {what} {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(
        f"_alejax_config_{os.path.basename(path)[:-3]}", path
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def check_override_keys(argv: list[str]) -> None:
    """Stop before anything runs if an override names a key the config does not have."""
    spec = DEFAULT_CONFIG
    for arg in argv[1:]:
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
    config = load_config_file(spec)
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config.") :].split("=", 1)[0]
        node, walked = config, []
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                known = sorted(node.keys()) if hasattr(node, "keys") else []
                close = difflib.get_close_matches(part, known, n=3)
                where = ".".join(walked) or "the top level"
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SystemExit(
                    f"error: unknown config key {key!r} in {spec}: {part!r} is not a key of {where}{hint}\n"
                    f"keys of {where}: {', '.join(known)}"
                )
            node, walked = node[part], walked + [part]


@functools.cache
def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar_type(annotation) -> type | None:
    """The one non-None type of `X | None` (or X itself), for a typed placeholder."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation if isinstance(annotation, type) else None


def section_of(cls, **overrides: Any) -> ConfigDict:
    """Every field of dataclass `cls` with its default (or override) as a ConfigDict, so any of them can be
    set by name (--config.rl.loss.clip_eps=0.1). A nested dataclass becomes a nested section; a None default
    becomes a placeholder of the field's type, so the command line can still set it."""
    types_ = _field_types(cls)
    values = {}
    for field in dataclasses.fields(cls):
        value = overrides.pop(field.name) if field.name in overrides else _default(field)
        if dataclasses.is_dataclass(value):
            value = section_of(type(value), **dataclasses.asdict(value))
        elif value is None:
            kind = _scalar_type(types_[field.name])
            value = config_dict.placeholder(kind) if kind else None
        values[field.name] = value
    if overrides:
        raise ValueError(f"unknown keys {sorted(overrides)} for {cls.__name__}; fields: {_names(cls)}")
    return ConfigDict(values)


def from_section(cls, section: ConfigDict | dict | None, **overrides: Any):
    """`cls` from a config section (nested dataclass fields from nested sections), naming any key that is
    not a field of `cls`."""
    values = section.to_dict() if isinstance(section, ConfigDict) else dict(section or {})
    values.update(overrides)
    unknown = sorted(set(values) - set(_names(cls)))
    if unknown:
        raise ValueError(f"unknown keys {unknown} for {cls.__name__}; fields: {_names(cls)}")
    types_ = _field_types(cls)
    for name, value in values.items():
        kind = _scalar_type(types_[name])
        if isinstance(value, dict) and kind is not None and dataclasses.is_dataclass(kind):
            values[name] = from_section(kind, value)
    return cls(**values)


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise ValueError(f"field {field.name!r} has no default: pass it to section_of")


def model_section(model_config) -> ConfigDict:
    """A job's `model` section from a ModelConfig: every field but `lora`, which jobs keep in their own
    top-level `lora` section (it applies to a pretrained model's architecture as much as to this one)."""
    values = dataclasses.asdict(model_config)
    values.pop("lora")
    return ConfigDict(values)


def model_config_from(section: ConfigDict, tokenizer=None):
    """The ModelConfig of a job's `model` section; with a tokenizer, the vocabulary grows to hold its ids."""
    from alejax.models.config import ModelConfig

    vocab = max(section.vocab_size, tokenizer.vocab_size) if tokenizer is not None else section.vocab_size
    return from_section(ModelConfig, section, vocab_size=vocab)


def lora_config_of(config: ConfigDict):
    """The LoRAConfig of a job's `lora` section (None when the config has none: no adapters)."""
    from alejax.models.config import LoRAConfig

    return from_section(LoRAConfig, config.lora) if "lora" in config else None


def system_prompt_of(env_section: ConfigDict, env) -> str:
    """A job's `env.system_prompt`: "env" keeps the env's own, anything else replaces it ("" drops it)."""
    return env.system_prompt if env_section.system_prompt == "env" else env_section.system_prompt
