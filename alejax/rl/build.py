"""An RL pipeline from a config: what the rl job, the quickstart, the benches and the tests all build.

    pipeline = build_pipeline(config, tokenizer, params=sft_params)   # config: configs/rl.py
    metrics = pipeline.step(task_seeds(config, 1))
    pipeline.close()                                                   # the env pool too

Sections read: env {name, kwargs, system_prompt, render_tools}, env_pool (EnvPoolConfig), expert (IPA's teacher),
model, lora, rl (RLConfig, nested advantage_config / loss / resample), critic, rollout, sampling, optim (with
microbatches: gradient accumulation inside each minibatch update), mesh / placement / num_devices,
max_length, seed, steps.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from ml_collections import ConfigDict

from alejax.config import from_section, lora_config_of, model_config_from, system_prompt_of
from alejax.data.tokenizer import Tokenizer
from alejax.envs.base import make
from alejax.envs.pools import EnvPool, env_pool_from_config
from alejax.models.config import ModelConfig
from alejax.models.lora import with_lora
from alejax.parallel.placement import place_roles
from alejax.rl.critic import Critic, CriticConfig
from alejax.rl.pipeline import RLConfig, RLPipeline
from alejax.rl.resample import env_teacher
from alejax.rollout.sampler import SamplingConfig
from alejax.rollout.scheduler import RolloutConfig
from alejax.train.state import init_train_state, optimizer_from


def rl_config_from(config: ConfigDict) -> RLConfig:
    return from_section(RLConfig, config.rl)


def make_meshes(config: ConfigDict) -> dict[str, jax.sharding.Mesh]:
    """Each role's mesh (actor_train, actor_infer, reference, critic, reward) from `placement`; without one,
    every role shares actor_train's `mesh` on the first `num_devices` devices (-1: all)."""
    devices = jax.devices() if config.num_devices == -1 else jax.devices()[: config.num_devices]
    placement = config.placement.to_dict() or {"actor_train": {"mesh": config.mesh.to_dict()}}
    return place_roles(placement, devices=devices)


def task_seeds(config: ConfigDict, step: int) -> list[int]:
    """The tasks of RL step `step` (1-based): a function of (seed, step) only, so a resumed run trains on
    the same tasks as an uninterrupted one, whatever the sampler's random state."""
    rng = np.random.default_rng([config.seed, step])
    return [int(s) for s in rng.integers(0, 2**31 - 1, config.rl.groups_per_step)]


def build_pipeline(
    config: ConfigDict,
    tokenizer: Tokenizer,
    *,
    params: Any = None,
    model_config: ModelConfig | None = None,
    env_pool: EnvPool | None = None,
    reward_worker: Callable | None = None,
) -> RLPipeline:
    """The RL pipeline on the configured role meshes with its env pool (`config.env_pool`, or `env_pool`)
    and, for GAE, a critic whose backbone starts from the actor's. `params`: initial actor params (e.g. from
    SFT: the whole model's); the optimizer's moments start at zero whatever the params, so only the params
    change. `model_config`: the actor's architecture (e.g. the SFT stage's pretrained model's); by default
    the `model` section's, with the `lora` section's adapters."""
    rl = rl_config_from(config)
    if model_config is None:
        model_config = with_lora(model_config_from(config.model, tokenizer), lora_config_of(config))
    meshes = make_meshes(config)
    mesh = meshes["actor_train"]
    updates_per_step = max(1, rl.epochs * rl.groups_per_step * rl.group_size // rl.minibatch_size)
    total_updates = config.steps * updates_per_step
    tx = optimizer_from(config.optim, total_updates)
    graphdef, state, shardings = init_train_state(model_config, tx, mesh, seed=config.seed)
    if params is not None:
        try:
            state = state.with_model_params(params, shardings)
        except ValueError as e:
            raise ValueError(
                f"initial params do not match the actor's model: {e} (a warm start trained another "
                "architecture? the rl config's `sft.model` must be its `model` section)"
            ) from None
    critic = None
    if rl.advantage == "gae":
        critic_config = from_section(CriticConfig, config.critic, total_steps=total_updates)
        critic = Critic.create(
            model_config,
            meshes["critic"],
            critic_config,
            seed=config.seed,
            backbone_params=state.model_params(),
        )
    env_section = config.env
    env = make(env_section.name, **env_section.kwargs.to_dict())
    if env_pool is None:
        env_pool = env_pool_from_config(config.env_pool, env_section.name, env_section.kwargs.to_dict())
    teacher = None
    if rl.resample.enabled:  # IPA replays the env's scripted expert (with the `expert` kwargs)
        teacher = env_teacher(
            env_section.name, env_kwargs=env_section.kwargs.to_dict(), policy_kwargs=config.expert.to_dict()
        )
    pipeline = RLPipeline.build(
        rl,
        graphdef,
        state,
        shardings,
        tx,
        mesh,
        tokenizer,
        env_pool,
        system_prompt=system_prompt_of(env_section, env),
        tools=list(env.tools) if env_section.render_tools else None,
        rollout=from_section(RolloutConfig, config.rollout),
        sampling=from_section(SamplingConfig, config.sampling),
        max_length=config.max_length,
        seed=config.seed,
        infer_mesh=meshes["actor_infer"],
        critic=critic,
        teacher=teacher,
        microbatches=config.optim.microbatches,
    )
    pipeline.reward_worker = reward_worker
    return pipeline
