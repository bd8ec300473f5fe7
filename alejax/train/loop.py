"""The next-token training loop shared by the lm job and SFT (rows carry their loss masks): sharded train
state, grain batches, the jit'd step, eval loss, metrics + PNG, checkpoints that carry the data iterator."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from alejax.data.batches import batched_rows
from alejax.models.config import ModelConfig
from alejax.parallel.mesh import make_mesh
from alejax.train.checkpoint import Checkpointer, resume
from alejax.train.metrics import MetricsWriter, Progress, last_logged, plot_metrics
from alejax.train.state import init_train_state, optimizer_from
from alejax.train.step import make_train_step, next_token_loss


def fit_next_token(
    config: ConfigDict,
    workdir: str,
    model_config: ModelConfig,
    train_rows: dict[str, np.ndarray],
    eval_rows: dict[str, np.ndarray],
    *,
    title: str,
    init_params=None,
):
    """Trains `config.steps` next-token steps on `train_rows`; returns (graphdef, state, last metrics).
    `init_params` (e.g. a pretrained model's) replace the random init; a checkpoint, when there is one, wins.
    With `model_config.lora.rank > 0` only the adapters train (the state's `frozen` holds the base) and
    checkpoints hold the adapters and their optimizer state only.

    `config` holds seed, mesh, optim (optim.microbatches: gradient accumulation over that many parts of each
    batch), steps, data.batch_size and the log / eval / checkpoint cadence.
    Checkpoints under `workdir/checkpoints` carry the grain iterator's state, so a rerun resumes mid-epoch
    exactly where the last checkpoint stopped (a finished run just loads).
    """
    mesh = make_mesh(config.mesh.to_dict())
    tx = optimizer_from(config.optim, config.steps)
    graphdef, state, shardings = init_train_state(model_config, tx, mesh, seed=config.seed)
    if init_params is not None:  # Adam's moments start at zero whatever the params: only the params change
        state = state.with_model_params(init_params, shardings)
    train_step = make_train_step(
        graphdef, tx, shardings, mesh, next_token_loss, microbatches=config.optim.microbatches
    )

    batch_size = config.data.batch_size
    data_iter = iter(batched_rows(train_rows, batch_size, seed=config.seed))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    state, _, _ = resume(checkpointer, state, data_iter)

    eval_loss = eval_loss_fn(graphdef, mesh)
    eval_batches = [
        {k: v[i : i + batch_size] for k, v in eval_rows.items()}
        for i in range(0, len(eval_rows["tokens"]) - batch_size + 1, batch_size)
    ]
    eval_batches = eval_batches[: config.eval_batches] or [{k: v[:1] for k, v in eval_rows.items()}]

    first_step = int(state.step)
    progress = Progress(config.steps, start=first_step, every_s=config.progress_every_s)
    last: dict[str, float] = {}
    with MetricsWriter(
        workdir, wandb_project=config.wandb_project or None, config=config.to_dict()
    ) as writer:
        t_window, tokens_window = time.time(), 0
        for step in range(first_step + 1, config.steps + 1):
            batch = next(data_iter)
            state, metrics = train_step(state, batch)
            tokens_window += batch["tokens"].size
            if step % config.log_every == 0 or step == config.steps:
                metrics = jax.device_get(metrics)
                elapsed = time.time() - t_window
                metrics["tokens_per_s"] = tokens_window / max(elapsed, 1e-9)
                t_window, tokens_window = time.time(), 0
                if step % config.eval_every == 0 or step == config.steps:
                    metrics["eval_loss"] = float(
                        np.mean([eval_loss(state.model_params(), b) for b in eval_batches])
                    )
                last = writer.write(step, metrics)
                progress.update(
                    step, {k: last[k] for k in ("loss", "eval_loss", "tokens_per_s") if k in last}
                )
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpointer.save(step, state, extra={"data_iter": data_iter.get_state()})
    checkpointer.close()
    png = plot_metrics(
        os.path.join(workdir, "metrics.jsonl"),
        ["loss", "eval_loss", "grad_norm", "tokens_per_s"],
        title=title,
    )
    last = last or last_logged(writer.path, ("loss", "eval_loss"))  # resumed at the final step
    print(
        f"{title}: {config.steps} steps; final loss {last.get('loss', float('nan')):.3f}, "
        f"eval loss {last.get('eval_loss', float('nan')):.3f}; metrics {writer.path}, plot {png}",
        flush=True,
    )
    return graphdef, state, last


def eval_loss_fn(graphdef, mesh):
    """`run(params, batch) -> float`: the next-token loss of one batch of rows, jit'd once, on `mesh`."""

    @jax.jit
    def eval_loss(params, batch):
        return next_token_loss(nnx.merge(graphdef, params), batch)[0]

    def run(params, batch) -> float:
        with jax.set_mesh(mesh):
            return float(eval_loss(params, {k: jnp.asarray(v) for k, v in batch.items()}))

    return run
