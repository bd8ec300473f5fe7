"""Gradient accumulation: one step over k microbatches equals one step over the whole batch (issue 16, item 7).

The optimizer here is plain SGD with learning rate 1, so the parameter change IS the gradient: Adam's first
step (≈ lr·sign(g)) would hide a mis-weighted gradient. A naive equal-weight average runs beside it, to show
that the rows' uneven loss masks make the weighting matter (so the tests would catch it).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import alejax.train.loop
from alejax.config import load_config_file
from alejax.main import run_job
from alejax.models import ModelConfig
from alejax.parallel import make_mesh
from alejax.rl.losses import AGGREGATIONS, LossConfig, aggregation_weight
from alejax.rl.objective import make_rl_loss
from alejax.train.state import init_train_state
from alejax.train.step import (
    LOSS_WEIGHT,
    batch_shardings,
    make_train_step,
    next_token_loss,
    split_microbatches,
    token_logprobs,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = ModelConfig(vocab_size=128, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64)
ROWS, LENGTH, MICROBATCHES = 16, 24, 4
MESH = {"data": 2, "fsdp": 2, "tensor": 2}  # the batch splits over data x fsdp = 4 ways
TX = optax.sgd(1.0)


def uneven_batch(seed=0):
    """Rows whose loss masks hold from 0 to LENGTH - 1 tokens, so microbatches carry very different counts
    (microbatch 0, rows 0, 4, 8, 12, has two empty rows: different counts of rows with tokens too)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG.vocab_size, (ROWS, LENGTH)).astype(np.int32)
    n_loss = rng.permutation(np.linspace(1, LENGTH - 1, ROWS).astype(int))
    n_loss[[0, 4]] = 0
    loss_mask = (np.arange(LENGTH)[None] >= LENGTH - n_loss[:, None]).astype(np.float32)
    return {"tokens": tokens, "loss_mask": loss_mask}


def without_weight(loss_fn):
    """loss_fn reporting no LOSS_WEIGHT: microbatches then weigh equally (the naive average)."""

    def naive(model, batch):
        loss, metrics = loss_fn(model, batch)
        return loss, {k: v for k, v in metrics.items() if k != LOSS_WEIGHT}

    return naive


def one_step(initial, loss_fn, batch, microbatches):
    graphdef, state, shardings, mesh = initial
    before = nnx.to_pure_dict(jax.device_get(state.params))
    step = make_train_step(graphdef, TX, shardings, mesh, loss_fn, microbatches=microbatches)
    state, metrics = step(jax.tree.map(lambda x: x.copy(), state), batch)  # the step donates its input
    after = nnx.to_pure_dict(jax.device_get(state.params))
    delta = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), after, before)
    return delta, jax.device_get(metrics)


def max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def max_abs(a) -> float:
    return max(float(np.max(np.abs(x))) for x in jax.tree.leaves(a))


def assert_accumulation_exact(initial, loss_fn, batch, *, check_naive=True):
    """k microbatches vs the whole batch; returns (max abs gradient difference, the naive average's)."""
    full, full_metrics = one_step(initial, loss_fn, batch, 1)
    accumulated, metrics = one_step(initial, loss_fn, batch, MICROBATCHES)
    scale = max_abs(full)
    error, naive_error = max_abs_diff(accumulated, full), float("nan")
    assert error <= 2e-6 * scale, (error, scale)
    if check_naive:  # the test would catch an equal-weight average
        naive, _ = one_step(initial, without_weight(loss_fn), batch, MICROBATCHES)
        naive_error = max_abs_diff(naive, full)
        assert naive_error > 1e-2 * scale, (naive_error, scale)
    np.testing.assert_allclose(metrics["loss"], full_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"], full_metrics["grad_norm"], rtol=1e-5)
    assert metrics[LOSS_WEIGHT] == full_metrics[LOSS_WEIGHT]
    naive_note = f"; naive equal weights {naive_error:.2e}" if check_naive else ""
    print(f"max abs param diff {error:.2e} = {error / scale:.1e} of the largest entry{naive_note}")
    return error, naive_error


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MESH)


@pytest.fixture(scope="module")
def initial(mesh):
    """(graphdef, state, shardings, mesh) on the sharded mesh; each step runs on a copy of the state."""
    return (*init_train_state(CFG, TX, mesh, seed=0), mesh)


def test_next_token_loss_over_microbatches_equals_the_full_batch_on_a_sharded_mesh(initial):
    batch = uneven_batch()
    assert_accumulation_exact(initial, next_token_loss, batch)


def test_microbatches_stay_on_the_full_batchs_devices(mesh):
    """The split is a local reshape: every microbatch is spread over data x fsdp, no bytes move."""
    batch = {k: jnp.asarray(v) for k, v in uneven_batch().items()}
    shardings = batch_shardings(mesh, batch)
    split = jax.jit(lambda b: split_microbatches(b, MICROBATCHES, mesh), in_shardings=(shardings,))
    with jax.set_mesh(mesh):
        out = split(batch)
        hlo = split.lower(batch).compile().as_text()
    assert out["tokens"].shape == (MICROBATCHES, ROWS // MICROBATCHES, LENGTH)
    assert out["tokens"].sharding.spec[:2] == (None, ("data", "fsdp"))
    assert not any(op in hlo for op in ("all-to-all", "all-gather", "collective-permute")), hlo
    # Microbatch i holds rows i, i + k, ...
    np.testing.assert_array_equal(np.asarray(out["tokens"][1]), np.asarray(batch["tokens"][1::MICROBATCHES]))


def rl_batch(initial, seed=0):
    """A trajectory minibatch as the pipeline feeds it: π_old / μ near the model's own log-probs."""
    graphdef, state, _, mesh = initial
    batch = uneven_batch(seed)
    rng = np.random.default_rng(seed + 1)
    mask = batch["loss_mask"]
    with jax.set_mesh(mesh):
        logp = np.asarray(
            jax.jit(lambda p, b: token_logprobs(nnx.merge(graphdef, p), b)[0])(state.params, batch)
        )
    old_logp = (logp + rng.normal(0, 0.2, logp.shape)) * mask
    chunk_id = (mask * (1 + (np.arange(LENGTH)[None] >= LENGTH - 4))).astype(np.int32)
    reward = rng.choice([0.0, 1.0], ROWS).astype(np.float32)
    return dict(
        batch,
        old_logp=old_logp.astype(np.float32),
        behaviour_logp=(old_logp + rng.normal(0, 0.1, logp.shape) * mask).astype(np.float32),
        ref_logp=((logp - 0.1) * mask).astype(np.float32),
        advantages=(rng.normal(size=(ROWS, 1)) * mask).astype(np.float32),
        chunk_id=chunk_id,
        reward=np.broadcast_to(reward[:, None], (ROWS, LENGTH)).copy(),
    )


@pytest.fixture(scope="module")
def trajectories(initial):
    return rl_batch(initial)


@pytest.mark.parametrize(
    "loss_config",
    [
        LossConfig(),  # ppo_clip, token_mean
        LossConfig(aggregation="seq_mean_token_mean", kl_coef=0.1, entropy_coef=0.01, mis_high=1.2),
    ],
    ids=["token_mean", "seq_mean_token_mean+kl+entropy+mis"],
)
def test_rl_loss_over_microbatches_equals_the_full_batch(initial, trajectories, loss_config):
    # One naive run is enough here: the aggregation test below shows each weight matters.
    check_naive = loss_config.aggregation == "token_mean"
    loss_fn = make_rl_loss(loss_config)
    assert_accumulation_exact(initial, loss_fn, trajectories, check_naive=check_naive)


def test_loss_needs_state_and_grad_metrics_work_over_microbatches(initial):
    """A loss that reads the state (as the RM's GRL schedule and noise do) and metrics read off the gradients:
    the same gradient, and each microbatch draws from its own key (state.rng folded with its index)."""

    def loss_with_state(model, batch, state):
        loss, metrics = next_token_loss(model, batch)
        draw = jax.random.uniform(jax.random.wrap_key_data(state.rng))
        return loss, dict(metrics, draw=draw)

    def squared_grad(grads):
        return {"grad_sq": sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))}

    graphdef, state, shardings, mesh = initial
    results = {}
    for k in (1, MICROBATCHES):
        step = make_train_step(
            graphdef,
            TX,
            shardings,
            mesh,
            loss_with_state,
            loss_needs_state=True,
            grad_metrics=squared_grad,
            microbatches=k,
        )
        results[k] = jax.device_get(step(jax.tree.map(lambda x: x.copy(), state), uneven_batch())[1])
    full, accumulated = results[1], results[MICROBATCHES]
    np.testing.assert_allclose(accumulated["grad_sq"], full["grad_sq"], rtol=1e-5)
    np.testing.assert_allclose(accumulated["loss"], full["loss"], rtol=1e-5)
    assert abs(accumulated["draw"] - full["draw"]) > 1e-3, (accumulated["draw"], full["draw"])


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_every_aggregation_is_its_microbatches_mean_weighted_by_its_weight(name):
    """What makes the RL step exact: aggregate(batch) = Σ_i w_i·aggregate(microbatch i) / Σ_i w_i, w_i the
    aggregation's weight on microbatch i (an aggregation registered without a weight fails here)."""
    config = LossConfig(aggregation=name)
    batch = uneven_batch()
    mask = jnp.asarray(batch["loss_mask"])
    loss = jnp.asarray(np.random.default_rng(0).normal(size=mask.shape), jnp.float32) * mask
    parts = [(loss[i::MICROBATCHES], mask[i::MICROBATCHES]) for i in range(MICROBATCHES)]
    weights = [aggregation_weight(m, config) for _, m in parts]
    values = [AGGREGATIONS[name](x, m, config) for x, m in parts]
    whole = float(AGGREGATIONS[name](loss, mask, config))
    np.testing.assert_allclose(sum(w * v for w, v in zip(weights, values)) / sum(weights), whole, rtol=1e-5)
    if len({float(w) for w in weights}) > 1:  # the weights matter: an equal-weight mean is off
        assert abs(float(np.mean(values)) - whole) > 1e-3 * abs(whole), (values, whole)


def test_a_batch_not_divisible_by_microbatches_is_a_clear_error(initial):
    graphdef, state, shardings, mesh = initial
    step = make_train_step(graphdef, TX, shardings, mesh, microbatches=3)
    with pytest.raises(ValueError, match="16 rows, not divisible by microbatches=3"):
        step(state, uneven_batch())
    with pytest.raises(ValueError, match="microbatches must be >= 1"):
        make_train_step(graphdef, TX, shardings, mesh, microbatches=0)


def test_lm_job_with_two_microbatches_trains_like_one(tmp_path, monkeypatch):
    """The lm job end to end: optim.microbatches=2 reaches the step, and 2 AdamW steps land where one
    microbatch does."""
    asked = []

    def recording(*args, **kwargs):
        asked.append(kwargs.get("microbatches"))
        return make_train_step(*args, **kwargs)

    monkeypatch.setattr(alejax.train.loop, "make_train_step", recording)

    def tiny(workdir, microbatches):
        config = load_config_file(os.path.join(ROOT, "configs", "lm.py"))
        config.workdir = str(workdir)
        config.steps, config.log_every, config.eval_every, config.checkpoint_every = 2, 2, 2, 2
        config.eval_batches = 1
        config.data.n_docs, config.data.seq_len, config.data.batch_size = 200, 32, 8
        config.model.vocab_size, config.model.n_layers, config.model.d_model = 300, 1, 64
        config.optim.microbatches = microbatches
        return config

    one = run_job(tiny(tmp_path / "one", 1))
    two = run_job(tiny(tmp_path / "two", 2))
    assert abs(two["loss"] - one["loss"]) < 1e-4 * one["loss"], (one["loss"], two["loss"])
    assert abs(two["eval_loss"] - one["eval_loss"]) < 1e-4 * one["eval_loss"]
    assert asked == [1, 2]
    print(
        f"lm job: loss {one['loss']:.6f} vs {two['loss']:.6f}, eval {one['eval_loss']:.6f} vs {two['eval_loss']:.6f}"
    )
