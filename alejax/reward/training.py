"""Training a reward model: the two optimizer groups (model and adversaries), the jit'd pair-loss step with the
GRL schedule, the scorer (the reward worker's core) and gold-label evaluation. The rm job
(`alejax/jobs/rm.py`) and the critic's warm start from an RM (`reward/critic_init.py`) build on these."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from alejax.config import from_section, lora_config_of
from alejax.models.config import ModelConfig
from alejax.models.lora import with_lora
from alejax.parallel.mesh import make_mesh
from alejax.reward import toy
from alejax.reward.grl import grl_lambda
from alejax.reward.heads import HeadConfig, head_param_labels
from alejax.reward.losses import RMLossConfig
from alejax.reward.model import RewardModel, pair_loss, score
from alejax.train.state import TrainState, create_train_state, make_optimizer
from alejax.train.step import make_train_step


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


def group_grad_norms(grads: nnx.State) -> dict[str, jax.Array]:
    labels = jax.tree.leaves(param_labels(grads))
    norms: dict[str, jax.Array] = {}
    for label, g in zip(labels, jax.tree.leaves(grads)):
        norms[label] = norms.get(label, 0.0) + jnp.sum(jnp.square(g.astype(jnp.float32)))
    return {f"grad_norm/{k}": jnp.sqrt(v) for k, v in norms.items()}


def make_rm_train_step(
    graphdef,
    tx,
    shardings: TrainState,
    mesh: Mesh,
    loss_config: RMLossConfig,
    total_steps: int,
    microbatches: int = 1,
):
    """`step(state, batch) -> (state, metrics)`, jit'd with in/out shardings and donated state. lam comes from the
    traced step through the GRL schedule (no recompilation as it changes).

    `microbatches` > 1 accumulates gradients over that many equal parts of the pairs (`make_train_step`); the
    per-pair means weigh the parts equally, which is the full batch's gradient up to the sampled z noise and
    the independence penalties (batch statistics, so only approximated per part)."""

    def loss_fn(model, batch, state: TrainState):
        lam = grl_lambda(loss_config.grl_schedule, state.step, total_steps, loss_config.lam_max)
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        loss, metrics = pair_loss(model, batch, loss_config, lam, key)
        return loss, dict(metrics, lam=lam)

    return make_train_step(
        graphdef,
        tx,
        shardings,
        mesh,
        loss_fn,
        loss_needs_state=True,
        grad_metrics=group_grad_norms,
        microbatches=microbatches,
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


def init_rm_from_config(config: ConfigDict):
    """The rm job's reward model and train state from its config (configs/rm_causal.py):
    (graphdef, state, shardings, tx, mesh, model_config, head_config), every array born sharded. The job
    and `critic_init_from_rm` (which restores a checkpoint into the same tree) both build it here."""
    model_config = from_section(
        ModelConfig, config.model, vocab_size=max(config.model.vocab_size, toy.VOCAB_SIZE)
    )
    model_config = with_lora(model_config, lora_config_of(config))
    head_config = from_section(HeadConfig, config.head)
    mesh = make_mesh(config.mesh.to_dict())
    tx = make_rm_optimizer(config.optim, config.steps)
    # LoRA: the backbone's adapters and the whole head train; the backbone's weights stay frozen.
    trains = nnx.Any(nnx.LoRAParam, nnx.PathContains("head")) if model_config.lora.rank else nnx.Param
    graphdef, state, shardings = create_train_state(
        lambda rngs: RewardModel(model_config, head_config, pad_id=toy.PAD, rngs=rngs),
        tx,
        mesh,
        config.seed,
        trains=trains,
    )
    return graphdef, state, shardings, tx, mesh, model_config, head_config
