"""Sharded training on 8 fake CPU devices equals the single-device result, and layouts follow the rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from alejax.models import ModelConfig, create_model
from alejax.parallel import logical_to_spec, make_mesh, resolve_mesh_shape
from alejax.parallel.rules import axis_rules, state_shardings
from alejax.train.state import init_train_state, make_optimizer
from alejax.train.step import make_train_step, next_token_loss

# Every sharded dimension divisible by 8, so each layout really splits every weight it names.
CFG = ModelConfig(
    vocab_size=256, d_model=64, n_layers=2, n_heads=16, n_kv_heads=8, head_dim=8, mlp_dim=128, qkv_bias=True
)
LAYOUTS = {
    "data8": {"data": 8},
    "fsdp8": {"fsdp": 8},
    "tensor8": {"tensor": 8},
    "mix2x2x2": {"data": 2, "fsdp": 2, "tensor": 2},
}
# What the rule table must give, written out by hand for a few parameters. Layer parameters are stacked on a
# leading `layers` axis (the layer scan's), replicated by default.
EXPECTED = {
    "data8": {"q": P(None, None, None, None), "gate": P(None, None, None), "embedding": P(None, None)},
    "fsdp8": {"q": P(None, "fsdp", None, None), "gate": P(None, "fsdp", None), "embedding": P(None, "fsdp")},
    "tensor8": {
        "q": P(None, None, "tensor", None),
        "gate": P(None, None, "tensor"),
        "embedding": P("tensor", None),
    },
    "mix2x2x2": {
        "q": P(None, "fsdp", "tensor", None),
        "gate": P(None, "fsdp", "tensor"),
        "embedding": P("tensor", "fsdp"),
    },
}


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG.vocab_size, (8, 32)).astype(np.int32)
    loss_mask = (rng.random((8, 32)) < 0.8).astype(np.float32)
    return {"tokens": tokens, "loss_mask": loss_mask}


@pytest.fixture(scope="module")
def reference():
    """Loss and gradients on one device, no mesh."""
    model = create_model(CFG, seed=3)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    (loss, _), grads = nnx.value_and_grad(next_token_loss, has_aux=True)(model, batch)
    return float(loss), nnx.to_pure_dict(grads)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sharded_loss_and_grads_equal_single_device(layout, reference):
    mesh = make_mesh(LAYOUTS[layout])
    model = create_model(CFG, mesh, seed=3)
    graphdef, params = nnx.split(model)

    @jax.jit
    def loss_and_grads(params, batch):
        return jax.value_and_grad(lambda p: next_token_loss(nnx.merge(graphdef, p), batch)[0])(params)

    with jax.set_mesh(mesh):
        loss, grads = loss_and_grads(params, _batch())
    np.testing.assert_allclose(float(loss), reference[0], rtol=1e-5)
    flat_ref = dict(jax.tree_util.tree_flatten_with_path(reference[1])[0])
    for path, g in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grads))[0]:
        np.testing.assert_allclose(
            np.asarray(g),
            np.asarray(flat_ref[path]),
            atol=2e-6,
            rtol=1e-4,
            err_msg=f"{layout} {jax.tree_util.keystr(path)}",
        )

    # Every parameter lives where the rule table says, and the hand-written expectations hold.
    for path, var in jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )[0]:
        names = var.get_metadata()["out_sharding"]
        want = logical_to_spec(names, var.shape, mesh)
        assert var[...].sharding.spec == want, (layout, jax.tree_util.keystr(path))
    assert model.layers.attn.q[...].shape[0] == CFG.n_layers
    assert model.layers.attn.q[...].sharding.spec == EXPECTED[layout]["q"]
    assert model.layers.mlp.gate[...].sharding.spec == EXPECTED[layout]["gate"]
    assert model.embedding[...].sharding.spec == EXPECTED[layout]["embedding"]
    # Born sharded: each device holds only its block.
    n_split = np.prod([mesh.shape[a] for a in jax.tree.leaves(tuple(EXPECTED[layout]["q"])) if a])
    assert (
        model.layers.attn.q[...].addressable_shards[0].data.size == model.layers.attn.q[...].size // n_split
    )


def test_train_step_matches_single_device_and_donates_state():
    tx = make_optimizer(1e-3, warmup_steps=1, total_steps=10)
    results = {}
    for layout in ("single", "mix2x2x2"):
        mesh = make_mesh(
            LAYOUTS.get(layout, {"data": 1}), devices=jax.devices()[:1] if layout == "single" else None
        )
        graphdef, state, shardings = init_train_state(CFG, tx, mesh, seed=5)
        step = make_train_step(graphdef, tx, shardings, mesh)
        losses = []
        for _ in range(3):
            old_leaf = jax.tree.leaves(state.params)[0]
            state, metrics = step(state, _batch(0))  # one batch: the loss must fall
            assert old_leaf.is_deleted()  # the state was donated: no second copy of params and moments
            losses.append(float(metrics["loss"]))
        results[layout] = (losses, nnx.to_pure_dict(state.params))
        # Adam moments follow their parameter's layout.
        mu = state.opt_state[1][0].mu
        assert (
            mu["layers"]["attn"]["q"][...].sharding.spec
            == state.params["layers"]["attn"]["q"][...].sharding.spec
        )
    np.testing.assert_allclose(results["single"][0], results["mix2x2x2"][0], rtol=1e-5)
    assert results["single"][0][2] < results["single"][0][0]  # it learns
    # Adam divides by sqrt(v): on near-zero gradients, reduction-order noise becomes lr-sized noise, so the
    # parameters agree to a fraction of lr after three steps (the losses above agree to 1e-5 relative).
    for a, b in zip(jax.tree.leaves(results["single"][1]), jax.tree.leaves(results["mix2x2x2"][1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_rules_drop_axes_that_do_not_divide_and_never_reuse_an_axis():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert logical_to_spec(("batch", "length"), (8, 3), mesh) == P(("data", "fsdp"), None)
    assert logical_to_spec(("batch", "length"), (2, 3), mesh) == P("data", None)  # 2 rows: fsdp can't split
    assert logical_to_spec(("batch", "length"), (1, 3), mesh) == P(None, None)
    assert logical_to_spec(("embed", "embed"), (4, 4), mesh) == P("fsdp", None)
    with axis_rules((("batch", "tensor"), ("length", None))):
        assert logical_to_spec(("batch", "length"), (8, 3), mesh) == P("tensor", None)
    with pytest.raises(KeyError, match="no rule"):
        logical_to_spec(("colour",), (4,), mesh)


def test_mesh_shape_resolution():
    assert resolve_mesh_shape({"data": 2, "tensor": -1}, 8) == {"data": 2, "fsdp": 1, "tensor": 4}
    with pytest.raises(ValueError, match="at most one"):
        resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="not divisible"):
        resolve_mesh_shape({"data": 3, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        resolve_mesh_shape({"pipeline": 2}, 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        resolve_mesh_shape({"data": 4}, 8)


def test_train_state_checkpoint_restores_onto_another_mesh(tmp_path):
    """The whole TrainState (nnx params, optax moments, step, rng) saved under fsdp=8, restored under
    data=4 x tensor=2: same values, the new layout, and training continues identically."""
    from alejax.train.checkpoint import Checkpointer

    tx = make_optimizer(1e-2, warmup_steps=1, total_steps=10)
    fsdp = make_mesh({"fsdp": 8})
    graphdef, state, fsdp_shardings = init_train_state(CFG, tx, fsdp, seed=7)
    state, _ = make_train_step(graphdef, tx, fsdp_shardings, fsdp)(state, _batch(0))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, extra={"note": "fsdp"})
    saved = jax.tree.map(np.asarray, state)

    other = make_mesh({"data": 4, "tensor": 2})
    other_shardings = state_shardings(state, other)  # the same logical names, laid out on the other mesh
    template = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        jax.tree.map(np.asarray, state),
        other_shardings,
    )
    with Checkpointer(tmp_path) as ckpt:
        restored, extra, step = ckpt.restore(template)
    assert step == 1 and extra == {"note": "fsdp"}
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(a, np.asarray(b))
    q = restored.params["layers"]["attn"]["q"][...]
    assert q.sharding.spec == P(None, None, "tensor", None) and q.sharding.mesh.shape["data"] == 4
    # One more step on each layout gives the same parameters.
    a, _ = make_train_step(graphdef, tx, fsdp_shardings, fsdp)(state, _batch(1))
    b, _ = make_train_step(graphdef, tx, other_shardings, other)(restored, _batch(1))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_reshard_never_shares_buffers_even_onto_a_device_subset():
    """A replicated array moved from 8 devices to 1 must not keep the source's buffer: the trainer donates
    its copy, and the source (e.g. the SFT weights kept for evaluation) must survive that."""
    from jax.sharding import NamedSharding, PartitionSpec

    from alejax.parallel.placement import reshard

    wide = make_mesh({"fsdp": -1})
    one = make_mesh({"data": 1}, devices=jax.devices()[:1])
    source = jax.device_put(np.arange(32.0, dtype=np.float32), NamedSharding(wide, PartitionSpec()))
    moved = reshard({"w": source}, {"w": NamedSharding(one, PartitionSpec())})["w"]
    jax.jit(lambda x: x * 2, donate_argnums=0)(moved)  # the trainer donates its copy
    assert not source.is_deleted()
    np.testing.assert_array_equal(np.asarray(source), np.arange(32.0))
