"""The RL job (`job = "rl"`): config -> tokenizer -> model (optionally SFT-warm-started on the env's scripted
expert) -> RLPipeline -> N RL steps with progress lines, metrics (JSONL + TensorBoard + PNG) and orbax
checkpoints every K steps; a re-run with the same workdir resumes from the last checkpoint and ends at the
same step count.

Pieces are plain functions so other jobs (e.g. the ShopSimulator quickstart) can reuse them:
  build_tokenizer(config, workdir)            the tokenizer (saved in the workdir, reused on resume)
  sft_warm_start(config, tokenizer, ...)      params after SFT on expert episodes
  build_pipeline(config, tokenizer, ...)      (pipeline, env_pool)
  task_seeds(config, step)                    the tasks of an RL step: a function of (seed, step) only
  train_loop(pipeline, config, workdir)       steps, metrics, checkpoints, resume -> last metrics
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from ml_collections import ConfigDict

from alejax.data.synthetic import generate_corpus
from alejax.data.tokenizer import DEFAULT_CHAT_TEMPLATE, Tokenizer, render_chat_template, train_bpe
from alejax.envs.base import ThreadEnvPool, make
from alejax.models.config import ModelConfig
from alejax.parallel.placement import place_roles, reshard
from alejax.rl.advantages import AdvantageConfig
from alejax.rl.critic import Critic, CriticConfig
from alejax.rl.losses import LossConfig
from alejax.rl.pipeline import RLConfig, RLPipeline
from alejax.rl.resample import ResampleConfig, env_teacher
from alejax.rollout.sampler import SamplingConfig
from alejax.rollout.scheduler import RolloutConfig
from alejax.train.checkpoint import Checkpointer
from alejax.train.metrics import MetricsWriter, Progress, last_logged, plot_metrics, read_metrics
from alejax.train.sft import expert_episodes, sft_rows
from alejax.train.state import init_train_state, make_optimizer, train_state_shardings
from alejax.train.step import make_train_step, next_token_loss

SHOWN = ("reward", "success", "kept_fraction", "loss", "staleness")
PLOTTED = ["reward", "success", "kept_fraction", "loss", "grad_norm", "time_rollout_s", "time_train_s"]


def dataclass_from(cls, section: ConfigDict | dict | None, **overrides):
    """`cls(**section)`, naming any key that is not a field of `cls`."""
    values = dict(section.to_dict() if isinstance(section, ConfigDict) else (section or {}))
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown keys {unknown} for {cls.__name__}; fields: {sorted(fields)}")
    return cls(**{**values, **overrides})


# Keys of the `resample` section that belong to the job, not to ResampleConfig.
RESAMPLE_JOB_KEYS = ("enabled", "teacher_policy")


def rl_config_from(config: ConfigDict) -> RLConfig:
    section = config.get("resample")
    resample = None
    if section is not None and section.get("enabled", False):  # IPA's chunk-initialized resampling
        resample = dataclass_from(
            ResampleConfig, {k: v for k, v in section.items() if k not in RESAMPLE_JOB_KEYS}
        )
    return dataclass_from(
        RLConfig,
        config.rl,
        advantage_config=dataclass_from(AdvantageConfig, config.advantage),
        loss=dataclass_from(LossConfig, config.loss),
        resample=resample,
    )


def teacher_from(config: ConfigDict):
    """The expert whose prefixes resampling replays: the env's scripted policy (None without resampling)."""
    if rl_config_from(config).resample is None:
        return None
    return env_teacher(
        config.env.name,
        env_kwargs=config.env.kwargs.to_dict(),
        policy_kwargs=config.resample.get("teacher_policy", ConfigDict()).to_dict() or None,
    )


def env_tools(config: ConfigDict, env) -> list[dict] | None:
    return list(env.tools) if config.env.render_tools else None


def expert_chats(config: ConfigDict, n: int) -> list[list[dict]]:
    """Scripted-expert episodes (successful ones unless sft.successful_only is False), on seeds from a range
    the RL tasks' seeds rarely reach."""
    seeds = range(10_000_000 + config.seed * n, 10_000_000 + config.seed * n + n)
    policy_kwargs = {**({"compact": True} if config.sft.compact else {}), **config.sft.expert.to_dict()}
    return expert_episodes(
        config.env.name,
        seeds,
        env_kwargs=config.env.kwargs.to_dict(),
        successful_only=config.sft.successful_only,
        policy_kwargs=policy_kwargs or None,
    )


def build_tokenizer(config: ConfigDict, workdir: str | None = None) -> Tokenizer:
    """The configured tokenizer directory, else the one an earlier run saved in `workdir`, else a byte-level
    BPE trained on generated text plus the env's rendered expert episodes (saved to `workdir`)."""
    if config.tokenizer.dir:
        return Tokenizer.from_dir(config.tokenizer.dir)
    saved = os.path.join(workdir, "tokenizer") if workdir else None
    if saved and os.path.exists(os.path.join(saved, "tokenizer.json")):
        return Tokenizer.from_dir(saved)
    env = make(config.env.name, **config.env.kwargs.to_dict())
    chats = expert_chats(config, max(config.sft.episodes, 50))
    texts = [render_chat_template(DEFAULT_CHAT_TEMPLATE, c, tools=env_tools(config, env)) for c in chats]
    tokenizer = train_bpe(
        generate_corpus(config.tokenizer.corpus_docs, seed=config.seed) + texts, config.tokenizer.vocab_size
    )
    if saved:
        tokenizer.save(saved)
    return tokenizer


def model_config_from(config: ConfigDict, tokenizer: Tokenizer) -> ModelConfig:
    model = config.model.to_dict()
    model["vocab_size"] = max(model.get("vocab_size", 0), tokenizer.vocab_size)
    return dataclass_from(ModelConfig, model)


def make_meshes(config: ConfigDict) -> dict[str, jax.sharding.Mesh]:
    devices = jax.devices() if config.num_devices == -1 else jax.devices()[: config.num_devices]
    placement = config.placement.to_dict() or {"actor_train": {"mesh": config.mesh.to_dict()}}
    return place_roles(placement, devices=devices)


def sft_warm_start(
    config: ConfigDict, tokenizer: Tokenizer, model_config: ModelConfig, mesh, *, log: Callable = print
):
    """Params after `config.sft.steps` next-token steps on expert episodes (loss on the model's turns only),
    rendered exactly as rollout renders them. Returns None when sft.steps is 0."""
    s = config.sft
    if s.steps <= 0:
        return None
    env = make(config.env.name, **config.env.kwargs.to_dict())
    chats = expert_chats(config, s.episodes)
    if not chats:
        raise ValueError(f"the scripted expert of {config.env.name} played no usable episode of {s.episodes}")
    rows, _ = sft_rows(tokenizer, chats, s.seq_len, env_tools(config, env))
    tx = make_optimizer(s.learning_rate, warmup_steps=max(s.steps // 10, 1), total_steps=s.steps)
    graphdef, state = init_train_state(model_config, tx, mesh, seed=config.seed)
    _, shardings = train_state_shardings(model_config, tx, mesh)
    step = make_train_step(graphdef, tx, shardings, mesh, next_token_loss)
    rng = np.random.default_rng(config.seed)
    progress = Progress(s.steps, every_s=config.progress_every_s, label="sft")
    n = len(rows["tokens"])
    log(f"sft: {len(chats)} expert episodes -> {n} rows of {s.seq_len} tokens; {s.steps} steps")
    for i in range(1, s.steps + 1):
        idx = rng.choice(n, s.batch_size, replace=n < s.batch_size)
        state, metrics = step(state, {k: v[idx] for k, v in rows.items()})
        if i % 10 == 0 or i == s.steps:  # reading the loss waits for the step: not every step
            progress.update(i, {"loss": float(metrics["loss"])}, force=i == s.steps)
    return state.params


def build_pipeline(
    config: ConfigDict,
    tokenizer: Tokenizer,
    *,
    params: Any = None,
    env_factory: Callable | None = None,
    reward_worker: Callable | None = None,
    system_prompt: str | None = None,
    tools: list[dict] | None = None,
) -> tuple[RLPipeline, ThreadEnvPool]:
    """The RL pipeline on the configured role meshes, its env pool (close it when done) and, for GAE, a
    critic whose backbone starts from the actor's. `params`: initial actor params (e.g. from SFT)."""
    rl = rl_config_from(config)
    model_config = model_config_from(config, tokenizer)
    meshes = make_meshes(config)
    mesh = meshes["actor_train"]
    updates_per_step = max(1, rl.epochs * rl.groups_per_step * rl.group_size // rl.minibatch_size)
    o = config.optim
    tx = make_optimizer(
        o.learning_rate,
        o.warmup_steps,
        config.steps * updates_per_step,
        o.weight_decay,
        grad_clip=o.grad_clip,
        schedule="constant",
    )
    graphdef, state = init_train_state(model_config, tx, mesh, seed=config.seed)
    _, shardings = train_state_shardings(model_config, tx, mesh)
    if params is not None:  # Adam's moments start at zero whatever the params: only the params change
        state = state.replace(params=reshard(params, shardings.params))
    critic = None
    if rl.advantage == "gae":
        critic_config = dataclass_from(
            CriticConfig, config.critic, total_steps=config.steps * updates_per_step
        )
        critic = Critic.create(
            model_config, meshes["critic"], critic_config, seed=config.seed, backbone_params=state.params
        )
    env = make(config.env.name, **config.env.kwargs.to_dict())
    factory = env_factory or (lambda: make(config.env.name, **config.env.kwargs.to_dict()))
    pool = ThreadEnvPool(factory, config.env.pool_size)
    pipeline = RLPipeline.build(
        rl,
        graphdef,
        state,
        shardings,
        tx,
        mesh,
        tokenizer,
        pool,
        system_prompt=env.system_prompt if system_prompt is None else system_prompt,
        tools=env_tools(config, env) if tools is None else tools,
        rollout=dataclass_from(RolloutConfig, config.rollout),
        sampling=SamplingConfig(config.temperature),
        max_length=config.max_length,
        seed=config.seed,
        infer_mesh=meshes["actor_infer"],
        critic=critic,
        teacher=teacher_from(config),
    )
    pipeline.reward_worker = reward_worker
    return pipeline, pool


def task_seeds(config: ConfigDict, step: int) -> list[int]:
    """The tasks of RL step `step` (1-based): a function of (seed, step) only, so a resumed run trains on
    the same tasks as an uninterrupted one, whatever the sampler's random state."""
    rng = np.random.default_rng([config.seed, step])
    return [int(s) for s in rng.integers(0, 2**31 - 1, config.rl.groups_per_step)]


def _checkpoint_tree(pipeline: RLPipeline) -> dict:
    tree = {"actor": pipeline.state}
    if pipeline.critic is not None:
        tree["critic"] = pipeline.critic.state
    if pipeline.reference_params is not None:
        tree["reference"] = pipeline.reference_params
    return tree


def restore(pipeline: RLPipeline, checkpointer: Checkpointer) -> int:
    """Puts the latest good checkpoint into the pipeline (weights synced to the sampler); returns its RL
    step, 0 on a fresh run."""
    restored = checkpointer.restore(_checkpoint_tree(pipeline))
    if restored is None:
        return 0
    tree, extra, step = restored
    pipeline.state = tree["actor"]
    if "critic" in tree:
        pipeline.critic.state = tree["critic"]
    if "reference" in tree:
        pipeline.reference_params = tree["reference"]
    pipeline.policy_version = int(extra["policy_version"])
    pipeline.scheduler.rng = jax.random.wrap_key_data(np.asarray(extra["sampler_key"], np.uint32))
    pipeline._sync()
    print(f"resumed from checkpoint step {step}", flush=True)
    return int(step)


def drop_metrics_after(path: str, step: int) -> None:
    """A run killed between checkpoints logged steps it will redo: keep only rows up to `step`."""
    if not os.path.exists(path):
        return
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def train_loop(pipeline: RLPipeline, config: ConfigDict, workdir: str) -> dict[str, float]:
    """RL steps `start + 1 .. config.steps` (start = the last checkpoint's step), with metrics, progress
    lines and checkpoints every `config.checkpoint_every` steps and at the end. Returns the last metrics."""
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    first = restore(pipeline, checkpointer)
    drop_metrics_after(os.path.join(workdir, "metrics.jsonl"), first)
    progress = Progress(config.steps, start=first, every_s=config.progress_every_s, label="rl")
    last: dict[str, float] = {}
    try:
        with MetricsWriter(
            workdir, wandb_project=config.wandb_project or None, config=config.to_dict()
        ) as writer:
            for step in range(first + 1, config.steps + 1):
                following = task_seeds(config, step + 1) if step < config.steps else None
                metrics = pipeline.step(task_seeds(config, step), following)
                metrics["rl_step"] = step
                last = writer.write(step, metrics)
                progress.update(step, {k: last[k] for k in SHOWN if k in last}, force=step == config.steps)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    extra = {
                        "policy_version": pipeline.policy_version,
                        "sampler_key": np.asarray(jax.random.key_data(pipeline.scheduler.rng)).tolist(),
                    }
                    checkpointer.save(step, _checkpoint_tree(pipeline), extra=extra)
    finally:
        pipeline.close()
        checkpointer.close()
    last.setdefault("rl_step", first)
    return last


def run(config: ConfigDict) -> dict[str, float]:
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    tokenizer = build_tokenizer(config, workdir)
    model_config = model_config_from(config, tokenizer)
    with Checkpointer(os.path.join(workdir, "checkpoints")) as probe:
        has_checkpoint = probe.latest_step() is not None
    print(
        f"rl: {config.env.name}, {model_config.num_params() / 1e6:.2f}M params, vocab {tokenizer.vocab_size}, "
        f"{config.rl.advantage} + {config.loss.get('policy_loss', 'ppo_clip')}, "
        f"{config.rl.groups_per_step}x{config.rl.group_size} episodes/step, gap {config.rl.max_policy_version_gap}",
        flush=True,
    )
    # A resumed run restores trained weights, so the warm start would be thrown away: skip it.
    params = (
        None
        if has_checkpoint
        else sft_warm_start(config, tokenizer, model_config, make_meshes(config)["actor_train"])
    )
    pipeline, pool = build_pipeline(config, tokenizer, params=params)
    try:
        last = train_loop(pipeline, config, workdir)
    finally:
        pool.close()
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if "reward" not in last:  # resumed at the final step
        last = {**last_logged(metrics_path, ("reward", "success")), **last}
    png = plot_metrics(metrics_path, PLOTTED, title=f"RL on {config.env.name}")
    print(
        f"done: step {int(last['rl_step'])}/{config.steps} in {time.time() - t_start:.0f}s; reward "
        f"{last.get('reward', float('nan')):.3f}, success {last.get('success', float('nan')):.3f}; "
        f"metrics {os.path.join(workdir, 'metrics.jsonl')}, plot {png}",
        flush=True,
    )
    return last
