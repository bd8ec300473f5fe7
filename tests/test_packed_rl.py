"""Packed RL batches: trajectories packed into rows for the model, log-probs, gradients and an RL step equal
to the unpacked ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alejax.data.packing import first_fit_decreasing, packed_model_inputs
from alejax.models import ModelConfig, create_model
from alejax.parallel.mesh import make_mesh
from alejax.parallel.rules import batch_parallelism
from alejax.rl.pipeline import RLConfig
from alejax.train.step import split_microbatches, token_logprobs

CFG = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64)


def ragged_batch(seed: int, batch: int = 16, width: int = 64):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, width + 1, batch)
    lengths[0] = width  # one full row
    tokens = np.zeros((batch, width), np.int32)
    for b, n in enumerate(lengths):
        tokens[b, :n] = rng.integers(1, CFG.vocab_size, n)
    segment_ids = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
    return tokens, lengths, segment_ids


def test_first_fit_decreasing_places_every_sequence_once_without_overlap():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 101, 200)
    row, offset, rows = first_fit_decreasing(lengths, 100)
    used = np.zeros((rows, 100), int)
    for r, start, n in zip(row, offset, lengths):
        used[r, start : start + n] += 1
    assert used.max() == 1 and used.sum() == lengths.sum()
    assert rows <= -(-lengths.sum() // 100) + 10  # near the lower bound, far below one row each (200)
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_decreasing([101], 100)


@pytest.mark.parametrize("groups", [1, 2])
def test_packed_layout_restores_every_sequence(groups):
    tokens, lengths, _ = ragged_batch(1, batch=32)
    packed = packed_model_inputs(tokens, lengths, row_multiple=4, groups=groups)
    rows, width = packed["packed_tokens"].shape
    assert rows % (4 * groups) == 0 and rows < len(tokens)
    for j in range(groups):  # each microbatch's index points into that microbatch's packed rows
        members = np.arange(j, len(tokens), groups)
        mine = packed["packed_tokens"][j::groups].reshape(-1)
        for b in members:
            index = packed["pack_index"][b]
            assert (index[0] == -1) and (index[lengths[b] :] == -1).all()
            np.testing.assert_array_equal(mine[index[1 : lengths[b]]], tokens[b, 1 : lengths[b]])
    assert packed["packed_segment_ids"].max() > 1  # rows hold several sequences


@pytest.mark.parametrize("microbatches", [1, 2])
def test_packed_logprobs_entropy_and_gradients_equal_unpacked(microbatches):
    mesh = make_mesh({"fsdp": -1})
    graphdef, params = nnx.split(create_model(CFG, mesh, seed=0))
    tokens, lengths, segment_ids = ragged_batch(2)
    weights = jnp.asarray((np.arange(64)[None] < lengths[:, None]) & (np.arange(64)[None] >= 1), jnp.float32)
    unpacked = {"tokens": jnp.asarray(tokens), "segment_ids": jnp.asarray(segment_ids)}
    packed = {
        k: jnp.asarray(v)
        for k, v in packed_model_inputs(
            tokens, lengths, row_multiple=batch_parallelism(mesh), groups=microbatches
        ).items()
    }

    def objective(params, batch):
        """Σ over microbatches (as the train step splits them) of the weighted log-probs and entropies."""
        parts = split_microbatches({**batch, "weights": weights}, microbatches, mesh)
        total = 0.0
        for i in range(microbatches):
            part = {k: v[i] for k, v in parts.items()}
            logp, entropy = token_logprobs(nnx.merge(graphdef, params), part)
            total = total + jnp.sum((logp + 0.1 * entropy) * part["weights"])
        return total

    logprobs = jax.jit(lambda params, batch: token_logprobs(nnx.merge(graphdef, params), batch))
    with jax.set_mesh(mesh):
        logp_u, ent_u = logprobs(params, unpacked)
        # the log-prob passes pack the whole batch as one group
        logp_p, ent_p = logprobs(params, {**unpacked, **packed_whole(tokens, lengths, mesh)})
        grad_u = jax.jit(jax.grad(objective))(params, unpacked)
        grad_p = jax.jit(jax.grad(objective))(params, {**unpacked, **packed})
    valid = np.asarray(weights) > 0
    np.testing.assert_allclose(np.asarray(logp_p)[valid], np.asarray(logp_u)[valid], atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent_p)[valid], np.asarray(ent_u)[valid], atol=2e-5)
    assert (np.asarray(logp_p)[~valid] == 0).all()  # no token there: nothing from another sequence
    for a, b in zip(jax.tree.leaves(grad_p), jax.tree.leaves(grad_u)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4)


def packed_whole(tokens, lengths, mesh):
    return {
        k: jnp.asarray(v)
        for k, v in packed_model_inputs(tokens, lengths, row_multiple=batch_parallelism(mesh)).items()
    }


@pytest.mark.parametrize("microbatches", [1, 2])
def test_an_rl_step_on_packed_rows_equals_the_unpacked_step(microbatches):
    from test_rl_pipeline import pipeline_config  # registers the test env as well

    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe
    from alejax.rl.build import build_pipeline

    tokenizer = train_bpe(generate_corpus(300, seed=0), vocab_size=400)
    results = {}
    for pack in (False, True):
        rl = RLConfig(
            groups_per_step=2,
            group_size=8,
            minibatch_size=8,
            filter_zero_variance_groups=False,
            pack_sequences=pack,
        )
        config = pipeline_config(tokenizer, rl, lr=1e-3, mesh_shape={"fsdp": -1})
        config.optim.microbatches = microbatches
        pipeline = build_pipeline(config, tokenizer)
        metrics = pipeline.step(range(2))
        pipeline.env_pool.close()
        results[pack] = (metrics, jax.tree.map(np.asarray, pipeline.state.params))
    (m_u, p_u), (m_p, p_p) = results[False], results[True]
    assert m_u["reward"] == m_p["reward"] and m_u["generated_tokens"] == m_p["generated_tokens"]
    np.testing.assert_allclose(m_p["loss"], m_u["loss"], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(p_p), jax.tree.leaves(p_u)):
        np.testing.assert_allclose(a, b, atol=2e-5)
