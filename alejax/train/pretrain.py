"""Language-model training on packed text: the foundation's end-to-end job.

generated corpus (or the user's text files) -> BPE tokenizer -> packed rows -> grain batches ->
sharded, donated train step -> metrics (JSONL, TensorBoard, PNG) + orbax checkpoints with the data
iterator's state, resuming automatically from the latest good checkpoint.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from alejax.data import synthetic
from alejax.data.packing import pack_documents
from alejax.data.pipeline import batched_rows
from alejax.data.tokenizer import Tokenizer, train_bpe
from alejax.models.config import ModelConfig
from alejax.parallel.mesh import make_mesh
from alejax.train.checkpoint import Checkpointer, resume
from alejax.train.metrics import MetricsWriter, Progress, last_logged, plot_metrics
from alejax.train.state import init_train_state, make_optimizer, train_state_shardings
from alejax.train.step import make_train_step, next_token_loss


def model_config_from(config: ConfigDict, **overrides) -> ModelConfig:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(config.model.keys()) - fields)
    if unknown:
        raise ValueError(f"config.model has unknown keys {unknown}; ModelConfig fields: {sorted(fields)}")
    return ModelConfig(**{**config.model.to_dict(), **overrides})


def load_texts(config: ConfigDict) -> list[str]:
    if config.data.text_glob:
        paths = sorted(glob.glob(config.data.text_glob))
        if not paths:
            raise FileNotFoundError(f"config.data.text_glob={config.data.text_glob!r} matches no file")
        return [open(p, encoding="utf-8").read() for p in paths]
    return synthetic.generate_corpus(config.data.n_docs, seed=config.seed)


def build_tokenizer(config: ConfigDict, texts: list[str], workdir: str) -> Tokenizer:
    """The user's tokenizer directory, else the one saved by an earlier run, else a BPE trained here."""
    saved = os.path.join(workdir, "tokenizer")
    if config.data.tokenizer_dir:
        return Tokenizer.from_dir(config.data.tokenizer_dir)
    if os.path.exists(os.path.join(saved, "tokenizer.json")):
        return Tokenizer.from_dir(saved)
    tokenizer = train_bpe(texts, vocab_size=config.model.vocab_size)
    tokenizer.save(saved)
    return tokenizer


def run(config: ConfigDict) -> dict[str, float]:
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()

    texts = load_texts(config)
    tokenizer = build_tokenizer(config, texts, workdir)
    model_config = model_config_from(config, vocab_size=max(config.model.vocab_size, tokenizer.vocab_size))
    n_eval = max(1, int(len(texts) * config.data.eval_fraction))
    encoded = [tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]
    train_rows = pack_documents(encoded[n_eval:], config.data.seq_len)
    eval_rows = pack_documents(encoded[:n_eval], config.data.seq_len)
    print(
        f"data: {len(texts)} docs -> {len(train_rows['tokens'])} train rows, {len(eval_rows['tokens'])} eval rows "
        f"of {config.data.seq_len} tokens; vocab {tokenizer.vocab_size}; model "
        f"{model_config.num_params() / 1e6:.2f}M params",
        flush=True,
    )

    _, _, last = fit_packed_rows(
        config,
        workdir,
        model_config,
        train_rows,
        eval_rows,
        title=f"LM training ({model_config.num_params() / 1e6:.1f}M params)",
    )
    print(f"done in {time.time() - t_start:.0f}s", flush=True)
    return last


def fit_packed_rows(
    config: ConfigDict,
    workdir: str,
    model_config: ModelConfig,
    train_rows: dict[str, np.ndarray],
    eval_rows: dict[str, np.ndarray],
    *,
    title: str,
):
    """The next-token training loop shared by pretraining and SFT (rows carry their loss masks).

    `config` holds seed, mesh, optim.*, steps, data.batch_size and the log / eval / checkpoint cadence.
    Checkpoints under `workdir/checkpoints` carry the grain iterator's state, so a rerun resumes mid-epoch
    exactly where the last checkpoint stopped. Returns (graphdef, state, last metrics).
    """
    mesh = make_mesh(config.mesh.to_dict())
    tx = make_optimizer(
        config.optim.learning_rate,
        config.optim.warmup_steps,
        config.steps,
        config.optim.weight_decay,
        grad_clip=config.optim.grad_clip,
        schedule=config.optim.schedule,
    )
    graphdef, state = init_train_state(model_config, tx, mesh, seed=config.seed)
    _, shardings = train_state_shardings(model_config, tx, mesh)
    train_step = make_train_step(graphdef, tx, shardings, mesh, next_token_loss)

    batch_size = config.data.batch_size
    data_iter = iter(batched_rows(train_rows, batch_size, seed=config.seed))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    state = resume(checkpointer, state, data_iter)

    eval_step = _make_eval(graphdef, mesh)
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
                    metrics["eval_loss"] = float(np.mean([eval_step(state.params, b) for b in eval_batches]))
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


def _make_eval(graphdef, mesh):
    from flax import nnx

    @jax.jit
    def eval_loss(params, batch):
        return next_token_loss(nnx.merge(graphdef, params), batch)[0]

    def run_eval(params, batch):
        with jax.set_mesh(mesh):
            return float(eval_loss(params, {k: jnp.asarray(v) for k, v in batch.items()}))

    return run_eval
