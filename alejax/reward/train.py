"""Reward-model training job (`job = "rm"`): toy preference pairs -> grain batches -> sharded train step ->
metrics (every loss part, both optimizer groups' gradient norms) -> orbax checkpoints; resumes by itself.

The data is Tier B of spec/causal_rm.md (alejax.reward.toy): the train split carries planted artifacts;
evaluation reports gold-label accuracy on IID / balanced / reversed splits.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from alejax.data.pipeline import batched_rows
from alejax.models.config import ModelConfig
from alejax.parallel.mesh import make_mesh
from alejax.parallel.rules import state_shardings
from alejax.reward import toy
from alejax.reward.grl import grl_lambda
from alejax.reward.heads import HeadConfig, head_param_labels
from alejax.reward.losses import LossConfig
from alejax.reward.model import RewardModel, pair_loss, score
from alejax.train.checkpoint import Checkpointer, resume
from alejax.train.metrics import MetricsWriter, Progress, plot_metrics
from alejax.train.state import TrainState, make_optimizer
from alejax.train.step import make_train_step


def _dataclass_from(cls, section: ConfigDict, **overrides):
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section.keys()) - fields)
    if unknown:
        raise ValueError(f"unknown keys {unknown} for {cls.__name__}; fields: {sorted(fields)}")
    return cls(**{**section.to_dict(), **overrides})


def param_labels(params: nnx.State) -> nnx.State:
    return head_param_labels(params)


def make_rm_optimizer(optim: ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Two groups (optax.multi_transform): the adversaries get their own AdamW, so with Adam lambda_adv
    scales only the reversed signal into the encoder, and each group's gradient norm is clipped on its own."""

    def group(lr):
        return make_optimizer(
            lr,
            optim.warmup_steps,
            total_steps,
            optim.weight_decay,
            grad_clip=optim.grad_clip,
            schedule=optim.schedule,
        )

    return optax.multi_transform(
        {"main": group(optim.learning_rate), "adversary": group(optim.adv_learning_rate)}, param_labels
    )


def init_rm_state(build: Callable[[nnx.Rngs], nnx.Module], tx, mesh: Mesh, seed: int = 0):
    """(graphdef, TrainState, shardings) with every array born in its sharded layout (as init_train_state)."""
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(seed))))
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=abstract_params,
        opt_state=jax.eval_shape(tx.init, abstract_params),
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    shardings = state_shardings(abstract, mesh)

    @jax.jit(out_shardings=shardings)
    def init():
        params = nnx.split(build(nnx.Rngs(seed)))[1]
        return TrainState(
            jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.key_data(jax.random.key(seed + 1))
        )

    with jax.set_mesh(mesh):
        return graphdef, init(), shardings


def group_grad_norms(grads: nnx.State) -> dict[str, jax.Array]:
    labels = jax.tree.leaves(param_labels(grads))
    norms: dict[str, jax.Array] = {}
    for label, g in zip(labels, jax.tree.leaves(grads)):
        norms[label] = norms.get(label, 0.0) + jnp.sum(jnp.square(g.astype(jnp.float32)))
    return {f"grad_norm/{k}": jnp.sqrt(v) for k, v in norms.items()}


def make_rm_train_step(
    graphdef, tx, shardings: TrainState, mesh: Mesh, loss_config: LossConfig, total_steps: int
):
    """`step(state, batch) -> (state, metrics)`, jit'd with in/out shardings and donated state. lam comes from the
    traced step through the GRL schedule (no recompilation as it changes)."""

    def loss_fn(model, batch, state: TrainState):
        lam = grl_lambda(loss_config.grl_schedule, state.step, total_steps, loss_config.lam_max)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        loss, metrics = pair_loss(model, batch, loss_config, lam, key)
        return loss, dict(metrics, lam=lam)

    return make_train_step(
        graphdef, tx, shardings, mesh, loss_fn, loss_needs_state=True, grad_metrics=group_grad_norms
    )


def make_scorer(graphdef, mesh: Mesh):
    """`scorer(params, tokens) -> np.ndarray [B]` deterministic rewards (the reward worker's core)."""
    scored = jax.jit(lambda params, tokens: score(nnx.merge(graphdef, params), tokens))

    def run(params, tokens):
        with jax.set_mesh(mesh):
            return np.asarray(scored(params, jnp.asarray(tokens)))

    return run


def evaluate(scorer, params, splits: dict[str, dict], batch_size: int) -> dict[str, float]:
    """Gold-label pairwise accuracy per split (rows batched with a fixed shape: one compilation)."""
    out = {}
    for name, rows in splits.items():
        n = (len(rows["chosen"]) // batch_size) * batch_size
        wins = []
        for i in range(0, n, batch_size):
            tokens = np.concatenate(
                [rows["chosen"][i : i + batch_size], rows["rejected"][i : i + batch_size]]
            )
            r = scorer(params, tokens)
            wins.append(r[:batch_size] > r[batch_size:])
        out[f"eval/acc_{name}"] = float(np.mean(np.concatenate(wins)))
    return out


def run(config: ConfigDict) -> dict[str, float]:
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    model_config = _dataclass_from(
        ModelConfig, config.model, vocab_size=max(config.model.vocab_size, toy.VOCAB_SIZE)
    )
    head_config = _dataclass_from(HeadConfig, config.head)
    loss_config = _dataclass_from(LossConfig, config.loss)
    d = config.data
    task = d.get("task", "sum")
    train_rows = toy.preference_pairs(
        d.n_train, d.train_split, seed=config.seed, label_noise=d.label_noise, task=task
    )
    if not config.data.attrs:
        train_rows = {k: v for k, v in train_rows.items() if not k.startswith("attrs")}
    train_rows.pop("correct_w")
    eval_splits = {
        s: toy.preference_pairs(d.n_eval, s, seed=config.seed + 1 + i, gold=True, task=task)
        for i, s in enumerate(("iid", "balanced", "reversed"))
    }

    mesh = make_mesh(config.mesh.to_dict())
    tx = make_rm_optimizer(config.optim, config.steps)

    def build(rngs):
        return RewardModel(model_config, head_config, pad_id=toy.PAD, rngs=rngs)

    graphdef, state, shardings = init_rm_state(build, tx, mesh, seed=config.seed)
    train_step = make_rm_train_step(graphdef, tx, shardings, mesh, loss_config, config.steps)
    scorer = make_scorer(graphdef, mesh)
    print(
        f"rm: {head_config.kind} head on a {model_config.num_params() / 1e6:.2f}M backbone; {d.n_train} train pairs "
        f"({d.train_split}); loss {loss_config}",
        flush=True,
    )

    data_iter = iter(batched_rows(train_rows, d.batch_size, seed=config.seed))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    state = resume(checkpointer, state, data_iter)

    first_step = int(state.step)
    progress = Progress(config.steps, start=first_step, every_s=config.progress_every_s, label="rm")
    last: dict[str, float] = {}
    with MetricsWriter(
        workdir, wandb_project=config.wandb_project or None, config=config.to_dict()
    ) as writer:
        for step in range(first_step + 1, config.steps + 1):
            state, metrics = train_step(state, next(data_iter))
            if step % config.log_every == 0 or step == config.steps:
                metrics = jax.device_get(metrics)
                if step % config.eval_every == 0 or step == config.steps:
                    metrics.update(evaluate(scorer, state.params, eval_splits, d.batch_size))
                last = writer.write(step, metrics)
                shown = ("loss", "loss/pred", "accuracy", "eval/acc_iid", "eval/acc_reversed")
                progress.update(step, {k: last[k] for k in shown if k in last})
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpointer.save(step, state, extra={"data_iter": data_iter.get_state()})
    checkpointer.close()
    png = plot_metrics(
        os.path.join(workdir, "metrics.jsonl"),
        ["loss", "loss/pred", "loss/adv", "accuracy", "eval/acc_balanced", "eval/acc_reversed"],
        title=f"reward model ({head_config.kind})",
    )
    print(
        f"done: {config.steps} steps in {time.time() - t_start:.0f}s; metrics {writer.path}, plot {png}",
        flush=True,
    )
    return last
