"""Token log-probabilities, the next-token loss, and the jit'd, sharded, donated train step.

A batch is a dict of [B, T] arrays:
  tokens       int32   the sequence (prompt + response, or packed documents)
  loss_mask    float   1 where tokens[t] is a token the model should learn to produce
  segment_ids  int32   optional; packed documents get 1, 2, ...; 0 is padding
  positions    int32   optional; restart at 0 in each packed document
  dropout_key  uint32  [2], optional; the train step adds it (raw key data): LoRA's dropout reads it
The loss at position t predicts tokens[t + 1], weighted by loss_mask[t + 1] and never across a document
boundary.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alejax.models.transformer import Transformer
from alejax.parallel.distributed import global_batch_from_full
from alejax.parallel.rules import logical_to_spec
from alejax.train.state import TrainState

Batch = Mapping[str, jax.Array]


DROPOUT_KEY = "dropout_key"


PACKED_KEYS = ("packed_tokens", "packed_positions", "packed_segment_ids", "pack_index")


def token_logprobs(model: Transformer, batch: Batch, temperature: float = 1.0):
    """log p(tokens[t] | tokens[<t]) for t >= 1, shape [B, T] (position 0 gets 0), and the logits' entropy.

    With packed inputs (`alejax.data.packing.packed_model_inputs`: the batch's sequences packed into fewer
    rows) the model runs on the packed rows and both come back in the [B, T] layout through `pack_index`
    (0 where a sequence has no token), so the losses never see the packing."""
    if "pack_index" in batch:
        packed = _row_logprobs(
            model,
            batch["packed_tokens"],
            batch["packed_positions"],
            batch["packed_segment_ids"],
            batch.get(DROPOUT_KEY),
            temperature,
        )
        index = batch["pack_index"]
        unpack = lambda x: jnp.where(index >= 0, x.reshape(-1)[jnp.maximum(index, 0)], 0.0)  # noqa: E731
        return tuple(unpack(x) for x in packed)
    return _row_logprobs(
        model,
        batch["tokens"],
        batch.get("positions"),
        batch.get("segment_ids"),
        batch.get(DROPOUT_KEY),
        temperature,
    )


def _row_logprobs(model, tokens, positions, segment_ids, dropout_key, temperature):
    logits = model(tokens, positions, segment_ids, dropout_key=dropout_key)[:, :-1]
    if temperature != 1.0:
        logits = logits / temperature
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
    pad = jnp.zeros_like(picked[:, :1])
    return jnp.concatenate([pad, picked], axis=1), jnp.concatenate([pad, entropy], axis=1)


def make_logprob_fn(graphdef: nnx.GraphDef) -> Callable:
    """jit'd `(params, frozen, inputs) -> [B, T]` token log-probs (`token_logprobs`) of the model
    `nnx.merge(graphdef, params, frozen)`: a frozen policy's view of a batch, e.g. DPO's reference."""

    @jax.jit
    def logprob_fn(params, frozen, inputs):
        return token_logprobs(nnx.merge(graphdef, params, frozen), inputs)[0]

    return logprob_fn


def target_weights(batch: Batch) -> jax.Array:
    """Per-position loss weights aligned with `token_logprobs` (position 0 never counts)."""
    weights = batch["loss_mask"].astype(jnp.float32)
    segment_ids = batch.get("segment_ids")
    if segment_ids is not None:
        same_doc = jnp.concatenate(
            [
                jnp.zeros_like(segment_ids[:, :1], bool),
                (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0),
            ],
            axis=1,
        )
        weights = weights * same_doc
    return weights.at[:, 0].set(0.0)


# A loss_fn that is a mean reports its denominator (e.g. its number of loss tokens) under this metric key, so
# `make_train_step` can weigh microbatches to give exactly the full batch's gradient.
LOSS_WEIGHT = "loss_weight"


def next_token_loss(model: Transformer, batch: Batch):
    """Mean negative log-likelihood over weighted target tokens, and metrics (LOSS_WEIGHT: the tokens' weight)."""
    logp, _ = token_logprobs(model, batch)
    weights = target_weights(batch)
    n_tokens = jnp.maximum(weights.sum(), 1.0)
    loss = -(logp * weights).sum() / n_tokens
    return loss, {"loss": loss, LOSS_WEIGHT: weights.sum()}


def batch_shardings(mesh: Mesh, batch: Mapping[str, Any]) -> dict[str, NamedSharding]:
    """[B, T] arrays split over the batch axes of the rule table."""
    return {
        k: NamedSharding(mesh, logical_to_spec(("batch", "length")[: v.ndim], v.shape, mesh))
        for k, v in batch.items()
    }


def split_microbatches(batch: Batch, microbatches: int, mesh: Mesh) -> dict[str, jax.Array]:
    """[B, ...] arrays -> [k, B/k, ...] (inside jit). Microbatch i holds rows i, i + k, i + 2k, ...: each
    device's block of rows then splits in place, and every microbatch stays spread over the batch axes as
    the full batch is (a contiguous split would put a microbatch on a fraction of the devices)."""

    def split(x):
        stacked = jnp.swapaxes(x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]), 0, 1)
        names = ("batch", "length")[: x.ndim]
        spec = logical_to_spec(names, stacked.shape[1:], mesh)
        return jax.lax.with_sharding_constraint(stacked, NamedSharding(mesh, PartitionSpec(None, *spec)))

    return {k: split(v) for k, v in batch.items()}


def check_microbatches(batch: Mapping[str, Any], microbatches: int) -> None:
    """A ValueError naming the array whose rows do not split into `microbatches` equal parts."""
    for k, v in batch.items():
        if v.shape[0] % microbatches:
            raise ValueError(
                f"batch[{k!r}] has {v.shape[0]} rows, not divisible by microbatches={microbatches}: "
                "pick a batch size that is a multiple of microbatches"
            )


LossFn = Callable[[Transformer, Batch], tuple[jax.Array, dict[str, jax.Array]]]


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    state_shardings: TrainState,
    mesh: Mesh,
    loss_fn: LossFn = next_token_loss,
    *,
    loss_needs_state: bool = False,
    grad_metrics: Callable[[Any], dict[str, jax.Array]] | None = None,
    microbatches: int = 1,
):
    """`step(state, batch) -> (state, metrics)`: jit'd with explicit in/out shardings and donated state.

    The batch's shardings come from the rule table and the batch's shapes; one compilation per shape.
    `loss_needs_state`: loss_fn(model, batch, state) sees the (traced) step and RNG, e.g. for a schedule
    inside the loss. `grad_metrics(grads)` adds metrics read off the gradients (e.g. per-group norms).

    `microbatches = k > 1` accumulates gradients over k equal microbatches of the batch (a `lax.scan`: one
    compiled body, one microbatch's activations in memory) before one optimizer update. Microbatch i's
    gradient and metrics weigh w_i / Σ w, w_i its metrics[LOSS_WEIGHT] (1 when the loss reports none): for a
    loss Σ(per-row terms) / w — token means, sequence means with w = rows — the accumulated gradient is the
    full batch's, up to float rounding; a loss with batch-wide statistics (e.g. independence penalties) is only
    approximated. LOSS_WEIGHT itself is summed (the full batch's count). With `loss_needs_state`, microbatch i
    sees state.rng folded with i, so its random draws differ from the others'.

    Gradients and optimizer updates cover `state.params` only; `state.frozen` (LoRA's base) enters the model
    as a constant. Each (micro)batch gets a fresh `batch[DROPOUT_KEY]` from (rng, step, microbatch), which
    only a model with dropout reads.
    """
    if microbatches < 1:
        raise ValueError(f"microbatches must be >= 1, got {microbatches}")

    def loss_and_grads(state: TrainState, batch: Batch, index=0):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step), index)
        batch = {**batch, DROPOUT_KEY: jax.random.key_data(key)}

        def loss_of(params):
            model = nnx.merge(graphdef, params, state.frozen)
            return loss_fn(model, batch, state) if loss_needs_state else loss_fn(model, batch)

        (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        return grads, metrics

    def accumulated_grads(state: TrainState, batch: Batch):
        def one_microbatch(grad_sum, indexed):
            index, microbatch = indexed
            micro_state = state
            if loss_needs_state:
                key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), index)
                micro_state = state.replace(rng=jax.random.key_data(key))
            grads, metrics = loss_and_grads(micro_state, microbatch, index)
            weight = jnp.asarray(metrics.get(LOSS_WEIGHT, 1.0), jnp.float32)
            # f32 sums, so bf16 parameters do not lose the small microbatch gradients.
            grad_sum = jax.tree.map(lambda s, g: s + weight * g.astype(jnp.float32), grad_sum, grads)
            return grad_sum, (weight, metrics)

        zeros = jax.tree.map(
            lambda p, s: jax.lax.with_sharding_constraint(jnp.zeros(p.shape, jnp.float32), s),
            state.params,
            state_shardings.params,
        )
        stacked = split_microbatches(batch, microbatches, mesh)
        grad_sum, (weights, metrics) = jax.lax.scan(
            one_microbatch, zeros, (jnp.arange(microbatches), stacked)
        )
        total = weights.sum()
        safe_total = jnp.where(total > 0, total, 1.0)  # no weight anywhere: every weighted term is 0 too
        grads = jax.tree.map(lambda s, p: (s / safe_total).astype(p.dtype), grad_sum, state.params)
        share = jnp.where(total > 0, weights / safe_total, 1.0 / microbatches)
        metrics = {k: jnp.tensordot(share, v.astype(jnp.float32), 1) for k, v in metrics.items()}
        if LOSS_WEIGHT in metrics:
            metrics[LOSS_WEIGHT] = total
        return grads, metrics

    def step(state: TrainState, batch: Batch):
        if microbatches == 1:
            grads, metrics = loss_and_grads(state, batch)
        else:
            grads, metrics = accumulated_grads(state, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads), param_norm=optax.global_norm(params))
        if grad_metrics is not None:
            metrics.update(grad_metrics(grads))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    compiled: dict[Any, Any] = {}

    def jitted_for(batch):
        key = tuple((k, v.shape, str(v.dtype)) for k, v in sorted(batch.items()))
        if key not in compiled:
            compiled[key] = jax.jit(
                step,
                in_shardings=(state_shardings, batch_shardings(mesh, batch)),
                out_shardings=(state_shardings, None),
                donate_argnums=(0,),
            )
        return compiled[key]

    def run(state: TrainState, batch: Batch):
        check_microbatches(batch, microbatches)
        if jax.process_count() > 1:  # multi-host: jit takes only global arrays, each host places its pieces
            batch = global_batch_from_full(batch, batch_shardings(mesh, batch))
        with jax.set_mesh(mesh):
            return jitted_for(batch)(state, batch)

    run.jitted_for = jitted_for  # exposed for lowering / cost analysis in benchmarks
    return run


def minibatch_epochs(
    train_step: Callable,
    state,
    arrays: Mapping[str, np.ndarray],
    *,
    epochs: int,
    minibatch_size: int,
    prepare: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
):
    """`epochs` passes of shuffled minibatch updates over the rows of `arrays` (PPO-style); the shuffle is
    seeded by the state's step, so a resumed run repeats it. `prepare(minibatch)` may add arrays computed from
    a minibatch's rows (e.g. their packed layout). Returns (state, metrics averaged over updates)."""
    n = len(next(iter(arrays.values())))
    rng = np.random.default_rng(int(state.step))
    totals: dict[str, list[float]] = {}
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, minibatch_size):
            idx = order[i : i + minibatch_size]
            minibatch = {k: v[idx] for k, v in arrays.items()}
            state, metrics = train_step(state, prepare(minibatch) if prepare else minibatch)
            for k, v in jax.device_get(metrics).items():
                totals.setdefault(k, []).append(float(v))
    return state, {k: float(np.mean(v)) for k, v in totals.items()}
