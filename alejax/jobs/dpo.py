"""The dpo job (`job = "dpo"`, configs/dpo.py): DPO (or a variant by name) on preference pairs, top to bottom.

1. pairs: a preference JSONL (`data.source = "jsonl"`: prompt, chosen, rejected) or trajectory records
   (`"trajectories"`: success vs failure of the same env task, `alejax.rl.dpo.pairs_from_records`); a seeded
   `data.eval_fraction` is held out
2. the starting policy: `init = "fresh"` (the `model` section at its init, a BPE on the pairs), `"sft"` (the
   `sft` section's stage: a finished SFT just loads) or `"pretrained"` (`pretrained`: a model directory, a
   .gguf file or smollm2); the reference is this policy, frozen, its log-probs computed once
3. DPO steps through the shared train step (`make_train_step`), with progress lines (rate, ETA), metrics
   (loss, reward margin, accuracy; JSONL + TensorBoard + PNG), held-out pair metrics every `eval_every`
   steps, orbax checkpoints that carry the data iterator (a rerun resumes exactly)
4. the model in Hugging Face format under `workdir/model` with its tokenizer (LoRA: adapters merged)
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from alejax.config import from_section, lora_config_of, model_config_from
from alejax.data.batches import batched_rows
from alejax.data.records import read_records
from alejax.data.tokenizer import load_or_train_tokenizer
from alejax.models.hf import save_pretrained
from alejax.models.lora import merged_model, with_lora
from alejax.parallel.mesh import make_mesh
from alejax.rl.dpo import (
    DPOConfig,
    make_dpo_loss,
    pad_rows,
    pairs_from_records,
    pairs_tokenizer,
    preference_arrays,
    read_preference_jsonl,
    with_reference_logprobs,
)
from alejax.train.checkpoint import Checkpointer, resume
from alejax.train.metrics import MetricsWriter, Progress, last_logged, plot_metrics
from alejax.train.state import init_train_state, optimizer_from
from alejax.train.step import LOSS_WEIGHT, make_logprob_fn, make_train_step

SHOWN = ("loss", "reward_margin", "accuracy", "eval_accuracy")
PLOTTED = ["loss", "reward_margin", "accuracy", "eval_reward_margin", "eval_accuracy", "grad_norm"]


def load_pairs(data: ConfigDict, seed: int):
    """The configured preference pairs and a line saying what they are."""
    if data.source == "jsonl":
        pairs = read_preference_jsonl(data.path)
        return pairs, f"{len(pairs)} pairs of {data.path}"
    if data.source == "trajectories":
        records = read_records(data.path)
        pairs = pairs_from_records(records, max_pairs_per_task=data.max_pairs_per_task, seed=seed)
        if not pairs:
            raise ValueError(f"{data.path}: no task has both a success and a failure to pair")
        return pairs, f"{len(pairs)} success/failure pairs from {len(records)} trajectories of {data.path}"
    raise ValueError(f"data.source={data.source!r}: expected jsonl or trajectories")


def split_pairs(pairs, eval_fraction: float, seed: int):
    """(train, eval): a seeded `eval_fraction` held out (none when 0)."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_eval = min(len(pairs) - 1, int(round(len(pairs) * eval_fraction)))
    held_out = set(order[:n_eval].tolist())
    return [p for i, p in enumerate(pairs) if i not in held_out], [pairs[i] for i in sorted(held_out)]


def starting_policy(config: ConfigDict, pairs, mesh):
    """(model_config, params or None, tokenizer) of the policy DPO starts from (and keeps as its reference)."""
    if config.init == "sft":
        from alejax.train.sft import train_sft

        graphdef, params, tokenizer, _ = train_sft(config.sft)
        return nnx.merge(graphdef, params).config, params, tokenizer
    if config.init == "pretrained":
        from alejax.rollout.model_policy import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(config.pretrained, mesh)
        return with_lora(model.config, lora_config_of(config)), nnx.state(model), tokenizer
    if config.init != "fresh":
        raise ValueError(f"init={config.init!r}: expected fresh, sft or pretrained")
    tokenizer = load_or_train_tokenizer(
        config.tokenizer.dir, config.workdir, lambda: pairs_tokenizer(pairs, config.model.vocab_size)
    )
    model_config = with_lora(model_config_from(config.model, tokenizer), lora_config_of(config))
    return model_config, None, tokenizer


def pair_metrics_fn(graphdef, mesh, dpo: DPOConfig, batch_size: int):
    """`run(params, frozen, arrays) -> metrics`: the DPO loss's metrics over all pairs of `arrays` (e.g. the
    held-out ones), each batch weighed by its pairs; one jit'd program for every batch."""
    loss_fn = make_dpo_loss(dpo)

    @jax.jit
    def metrics_of(params, frozen, batch):
        return loss_fn(nnx.merge(graphdef, params, frozen), batch)[1]

    def run(params, frozen, arrays) -> dict[str, float]:
        n = len(arrays["chosen_tokens"])
        totals: dict[str, float] = {}
        weight = 0.0
        with jax.set_mesh(mesh):
            for i in range(0, n, batch_size):
                batch = {
                    k: jnp.asarray(pad_rows(v[i : i + batch_size], batch_size)) for k, v in arrays.items()
                }
                m = jax.device_get(metrics_of(params, frozen, batch))
                w = float(m[LOSS_WEIGHT])
                for k, v in m.items():
                    totals[k] = totals.get(k, 0.0) + w * float(v)
                weight += w
        return {k: v / max(weight, 1.0) for k, v in totals.items() if k != LOSS_WEIGHT}

    return run


def run(config: ConfigDict) -> dict[str, float]:
    t_start, workdir, d = time.time(), config.workdir, config.data
    os.makedirs(workdir, exist_ok=True)
    dpo = from_section(DPOConfig, config.dpo)

    # 1-2. Pairs, the starting policy (= the reference), token arrays.
    pairs, what = load_pairs(d, config.seed)
    devices = jax.devices() if config.num_devices == -1 else jax.devices()[: config.num_devices]
    mesh = make_mesh(config.mesh.to_dict(), devices=devices)
    model_config, init_params, tokenizer = starting_policy(config, pairs, mesh)
    train_pairs, eval_pairs = split_pairs(pairs, d.eval_fraction, config.seed)
    arrays, stats = preference_arrays(tokenizer, train_pairs, d.max_length)
    print(
        f"dpo data: {what}; {stats['pairs']} train pairs ({stats['truncated']} sides cut at {d.max_length} "
        f"tokens, {stats['dropped']} pairs dropped), {len(eval_pairs)} held out; {dpo.loss}, beta {dpo.beta}; "
        f"init {config.init}, model {model_config.num_params() / 1e6:.2f}M params",
        flush=True,
    )
    tx = optimizer_from(config.optim, config.steps)
    graphdef, state, shardings = init_train_state(model_config, tx, mesh, seed=config.seed)
    if init_params is not None:
        state = state.with_model_params(init_params, shardings)
    # The reference is the starting policy; it is rebuilt the same way on a rerun (before the checkpoint
    # restores the trained weights), so its log-probs are the first run's.
    logprob_fn = make_logprob_fn(graphdef)
    ref_batch = d.batch_size  # no gradients here: a whole batch fits where its microbatches do
    arrays = with_reference_logprobs(logprob_fn, state.params, state.frozen, arrays, mesh, ref_batch)
    eval_arrays = None
    if eval_pairs:
        width = arrays["chosen_tokens"].shape[1]  # the train pairs' width: the same compiled programs
        eval_arrays, _ = preference_arrays(tokenizer, eval_pairs, d.max_length, width=width)
        eval_arrays = with_reference_logprobs(
            logprob_fn, state.params, state.frozen, eval_arrays, mesh, ref_batch
        )
    pair_metrics = pair_metrics_fn(graphdef, mesh, dpo, ref_batch)

    # 3. DPO steps through the shared train step.
    train_step = make_train_step(
        graphdef, tx, shardings, mesh, make_dpo_loss(dpo), microbatches=config.optim.microbatches
    )
    data_iter = iter(batched_rows(arrays, d.batch_size, seed=config.seed))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    state, _, first = resume(checkpointer, state, data_iter)
    progress = Progress(config.steps, start=first, every_s=config.progress_every_s, label="dpo")
    last: dict[str, float] = {}
    with MetricsWriter(
        workdir, wandb_project=config.wandb_project or None, config=config.to_dict()
    ) as writer:
        if first == 0 and eval_arrays is not None:  # the starting policy's held-out numbers (margin 0 there)
            writer.write(
                0, {f"eval_{k}": v for k, v in pair_metrics(state.params, state.frozen, eval_arrays).items()}
            )
        t_window, pairs_window = time.time(), 0
        for step in range(first + 1, config.steps + 1):
            state, metrics = train_step(state, next(data_iter))
            pairs_window += d.batch_size
            if step % config.log_every == 0 or step == config.steps:
                metrics = jax.device_get(metrics)
                metrics["pairs_per_s"] = pairs_window / max(time.time() - t_window, 1e-9)
                t_window, pairs_window = time.time(), 0
                if eval_arrays is not None and (step % config.eval_every == 0 or step == config.steps):
                    held_out = pair_metrics(state.params, state.frozen, eval_arrays)
                    metrics.update({f"eval_{k}": v for k, v in held_out.items()})
                last = writer.write(step, metrics)
                progress.update(step, {k: last[k] for k in SHOWN if k in last}, force=step == config.steps)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpointer.save(step, state, extra={"data_iter": data_iter.get_state()})
    checkpointer.close()
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    last = last or last_logged(metrics_path, PLOTTED)  # resumed at the final step
    png = plot_metrics(metrics_path, PLOTTED, title=f"{dpo.loss} on {os.path.basename(d.path)}")

    # 4. The trained policy, exported like the sft job's.
    model_dir = os.path.join(workdir, "model")
    model = nnx.merge(graphdef, state.model_params())
    save_pretrained(merged_model(model), model_dir, eos_token_id=tokenizer.eos_id)
    tokenizer.save(model_dir)
    print(
        f"dpo: {config.steps} steps in {time.time() - t_start:.0f}s; loss {last.get('loss', float('nan')):.4f}, "
        f"reward margin {last.get('reward_margin', float('nan')):.3f}, accuracy {last.get('accuracy', float('nan')):.3f}"
        + (f", held-out accuracy {last['eval_accuracy']:.3f}" if "eval_accuracy" in last else "")
        + f"; metrics {metrics_path}, plot {png}, model {model_dir}",
        flush=True,
    )
    return {**last, "model_dir": model_dir}
