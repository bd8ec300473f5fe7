"""Reward models: the GRL, deterministic eval, loss bookkeeping, ablations, sharding, and the rm job."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from alejax.models import ModelConfig
from alejax.parallel import make_mesh
from alejax.reward import INDEPENDENCE, HeadConfig, RewardHead, RMLossConfig, gradient_reversal, grl_lambda
from alejax.reward.losses import head_pair_loss, loss_weights
from alejax.reward.model import RewardModel, pair_loss, score
from alejax.reward.training import make_rm_optimizer, make_rm_train_step
from alejax.train.state import create_train_state

SMALL = dict(enc_hidden=32, d_c=8, d_n=16, dec_hidden=32, adv_hidden=16)


def _pairs(b=16, d=12, n_attrs=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "h_w": jnp.asarray(rng.normal(size=(b, d)), jnp.float32),
        "h_l": jnp.asarray(rng.normal(size=(b, d)), jnp.float32),
        "attrs_w": jnp.asarray(rng.normal(size=(b, n_attrs)), jnp.float32),
        "attrs_l": jnp.asarray(rng.normal(size=(b, n_attrs)), jnp.float32),
    }


def test_grl_gradient_is_minus_lam_times_plain_gradient_under_jit_with_traced_lam():
    x = jnp.linspace(-1.0, 2.0, 7)

    def f(x):
        return jnp.sum(jnp.sin(x) * x**2)

    traces = []

    @jax.jit
    def reversed_grad(x, lam):
        traces.append(1)
        return jax.grad(lambda x: f(gradient_reversal(x, lam)))(x)

    plain = jax.grad(f)(x)
    for lam in (0.0, 0.3, 1.0, 2.5):
        np.testing.assert_allclose(reversed_grad(x, jnp.float32(lam)), -lam * plain, rtol=1e-6, atol=1e-7)
    assert len(traces) == 1  # lam is traced: one compilation serves every value
    np.testing.assert_array_equal(gradient_reversal(x, 0.7), x)  # identity forward
    assert float(grl_lambda("dann", 0, 100)) == 0.0 and 0.99 < float(grl_lambda("dann", 100, 100)) <= 1.0
    assert float(grl_lambda("const", 3, 100, 0.5)) == 0.5


@pytest.mark.parametrize("kind", ["bt", "vib", "causal"])
def test_eval_is_deterministic_and_uses_the_mean(kind):
    head = RewardHead(12, HeadConfig(kind=kind, **SMALL), rngs=nnx.Rngs(0))
    h = _pairs()["h_w"]
    a, b = head(h), head(h)
    np.testing.assert_array_equal(a["reward"], b["reward"])
    if kind != "bt":
        # z = mu at eval, so the reward is the reward head on mu_c; a training draw differs from it.
        np.testing.assert_allclose(a["reward"], (a["mu_c"] @ head.reward_head.kernel[...])[:, 0], rtol=1e-6)
        noisy = head(h, key=jax.random.key(1))["reward"]
        assert not np.allclose(noisy, a["reward"])


def test_total_loss_is_the_weighted_sum_of_logged_parts():
    config = RMLossConfig(
        attr_sup=0.7, attr_adv=0.3, indep="hsic", indep_weight=2.0, beta_c=0.01, beta_n=0.02
    )
    for objective in ("grl_bt", "confusion"):
        head = RewardHead(12, HeadConfig(n_attrs=2, adv_objective=objective, **SMALL), rngs=nnx.Rngs(1))
        total, metrics = head_pair_loss(head, _pairs(), config, lam=1.0, key=jax.random.key(2))
        parts = {k[len("loss/") :]: float(v) for k, v in metrics.items() if k.startswith("loss/")}
        expected = {"pred", "adv", "rec", "kl_c", "kl_n", "attr_sup", "attr_adv", "indep"}
        assert expected | ({"adv_confusion"} if objective == "confusion" else set()) == set(parts)
        weights = loss_weights(config)
        np.testing.assert_allclose(float(total), sum(weights[k] * v for k, v in parts.items()), rtol=1e-6)
        assert float(metrics["loss"]) == float(total)


def _encoder_grads(head, config, pairs):
    grads = nnx.grad(lambda m: head_pair_loss(m, pairs, config, lam=1.0, key=jax.random.key(0))[0])(head)
    return grads


def test_lambda_adv_zero_leaves_the_encoder_gradient_untouched_by_the_adversary():
    pairs = _pairs()
    config = RMLossConfig(adv=0.0)
    head = RewardHead(12, HeadConfig(adversary="mlp", **SMALL), rngs=nnx.Rngs(3))
    g0 = _encoder_grads(head, config, pairs)
    # Scramble the adversary: with lambda_adv = 0 nothing upstream of it may change.
    head.adversary.out.kernel[...] = 10.0 * jax.random.normal(
        jax.random.key(9), head.adversary.out.kernel.shape
    )
    g1 = _encoder_grads(head, config, pairs)
    for name in ("enc1", "enc2", "mu_n", "logvar_n", "mu_c"):
        np.testing.assert_allclose(getattr(g0, name).kernel[...], getattr(g1, name).kernel[...], rtol=1e-6)
    assert float(jnp.abs(g1.adversary.out.kernel[...]).max()) == 0.0
    # With lambda_adv > 0 the adversary does reach the encoder (so the check above can fail).
    g2 = _encoder_grads(head, RMLossConfig(adv=0.5), pairs)
    assert not np.allclose(g2.mu_n.kernel[...], g1.mu_n.kernel[...])


def test_conditional_penalties_see_artifacts_read_by_the_reward_but_not_the_label():
    rng = np.random.default_rng(0)
    n = 256
    attrs_w, attrs_l = rng.normal(size=(n, 1)) + 1.0, rng.normal(size=(n, 1)) - 1.0  # artifact ~ label
    quality = rng.normal(size=(2 * n, 1))
    honest = quality + np.r_[np.ones((n, 1)), -np.ones((n, 1))]  # depends on the label only
    reads_artifact = np.r_[attrs_w, attrs_l] + 0.1 * quality
    for name in ("hsic", "mmd_conditional", "decorrelation_conditional", "mmd_conditional_pair"):
        fn = INDEPENDENCE[name]
        low = float(
            fn(jnp.asarray(honest[:n]), jnp.asarray(honest[n:]), jnp.asarray(attrs_w), jnp.asarray(attrs_l))
        )
        high = float(
            fn(*(jnp.asarray(x) for x in (reads_artifact[:n], reads_artifact[n:], attrs_w, attrs_l)))
        )
        assert high > 10 * low, name
    # The marginal penalty also charges the honest reward (it correlates with the label, hence the artifact).
    marginal = INDEPENDENCE["decorrelation"]
    assert float(marginal(*(jnp.asarray(x) for x in (honest[:n], honest[n:], attrs_w, attrs_l)))) > 0.3


def test_pair_penalty_is_not_dodged_by_prompt_offsets():
    # A token RM can add a large prompt-dependent offset (shared by both responses of a pair): the
    # per-response statistic is diluted by it, the margin-based one is unchanged.
    rng = np.random.default_rng(1)
    n = 256
    attrs_w, attrs_l = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))
    reads = np.r_[attrs_w, attrs_l] + 0.3 * rng.normal(size=(2 * n, 1))
    offset = 30.0 * np.tile(rng.normal(size=(n, 1)), (2, 1))
    per_response, pair = INDEPENDENCE["mmd_conditional"], INDEPENDENCE["mmd_conditional_pair"]

    def value(fn, r):
        return float(fn(*(jnp.asarray(x) for x in (r[:n], r[n:], attrs_w, attrs_l))))

    assert value(per_response, reads + offset) < 0.2 * value(per_response, reads)
    np.testing.assert_allclose(value(pair, reads + offset), value(pair, reads), rtol=1e-4)
    assert value(pair, reads) > 0.1


# ---- the backbone reward model: sharding and the job ------------------------------------------------------

CFG = ModelConfig(vocab_size=32, d_model=64, n_layers=2, n_heads=8, n_kv_heads=8, head_dim=8, mlp_dim=128)
HEAD = HeadConfig(enc_hidden=64, d_c=8, d_n=16, dec_hidden=64, adv_hidden=16, n_attrs=3)
LOSS = RMLossConfig(attr_sup=1.0, attr_adv=0.5, indep="mmd_conditional", indep_weight=1.0)


def _token_batch():
    from alejax.reward import toy

    rows = toy.preference_pairs(8, "train", seed=0)
    return {k: rows[k] for k in ("chosen", "rejected", "attrs_w", "attrs_l")}


def test_sharded_rm_loss_and_grads_equal_single_device():
    batch = _token_batch()
    key = jax.random.key(5)
    model = RewardModel(CFG, HEAD, rngs=nnx.Rngs(4))
    (ref_loss, _), ref_grads = nnx.value_and_grad(
        lambda m: pair_loss(m, batch, LOSS, 0.7, key), has_aux=True
    )(model)
    ref = dict(jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(ref_grads))[0])

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    tx = optax.sgd(0.0)
    graphdef, state, shardings = create_train_state(
        lambda r: RewardModel(CFG, HEAD, rngs=r), tx, mesh, seed=4
    )
    # The heads' weights are split over the mesh like the backbone's.
    assert any(
        len(v.sharding.spec) and v.sharding.spec[0] is not None for v in jax.tree.leaves(state.params.head)
    )

    @jax.jit
    def loss_and_grads(params, batch):
        return jax.value_and_grad(lambda p: pair_loss(nnx.merge(graphdef, p), batch, LOSS, 0.7, key)[0])(
            params
        )

    with jax.set_mesh(mesh):
        loss, grads = loss_and_grads(state.params, batch)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    for path, g in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grads))[0]:
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(ref[path]), atol=2e-6, rtol=1e-4, err_msg=str(path)
        )


def test_rm_step_uses_separate_optimizer_groups_and_logs_both_grad_norms():
    from ml_collections import ConfigDict

    mesh = make_mesh({"fsdp": -1})
    optim = ConfigDict(
        dict(
            learning_rate=1e-2,
            adv_learning_rate=0.0,
            warmup_steps=1,
            weight_decay=0.0,
            grad_clip=1.0,
            schedule="constant",
        )
    )
    tx = make_rm_optimizer(optim, 10)
    graphdef, state, shardings = create_train_state(lambda r: RewardModel(CFG, HEAD, rngs=r), tx, mesh)
    before = jax.device_get(state.params)
    step = make_rm_train_step(graphdef, tx, shardings, mesh, LOSS, 10)
    for _ in range(2):
        state, metrics = step(state, _token_batch())
    after = jax.device_get(state.params)
    assert metrics["grad_norm/adversary"] > 0 and metrics["grad_norm/main"] > 0
    np.testing.assert_array_equal(after.head.adversary.out.kernel[...], before.head.adversary.out.kernel[...])
    assert not np.allclose(after.head.mu_c.kernel[...], before.head.mu_c.kernel[...])
    model = nnx.merge(graphdef, state.params)
    with jax.set_mesh(mesh):
        tokens = jnp.asarray(_token_batch()["chosen"])
        np.testing.assert_array_equal(score(model, tokens), score(model, tokens))
        assert score(model, tokens).shape == (8,)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_rm_job_trains_logs_every_part_checkpoints_and_resumes(tmp_path):
    from alejax.config import load_config_file
    from alejax.jobs.rm import run

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config_file(os.path.join(root, "configs", "rm_causal.py"))
    config.unlock()
    config.workdir = str(tmp_path)
    config.steps, config.log_every, config.eval_every, config.checkpoint_every = 20, 10, 20, 10
    config.data.n_train, config.data.n_eval = 400, 64
    config.loss.grl_schedule = "dann"
    first = run(config)
    for key in (
        "loss",
        "loss/pred",
        "loss/adv",
        "loss/rec",
        "loss/kl_c",
        "loss/kl_n",
        "grad_norm/adversary",
        "grad_norm/main",
        "lam",
        "eval/acc_reversed",
    ):
        assert key in first, key
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    config.steps = 30
    run(config)
    with open(tmp_path / "metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [10, 20, 30]  # resumed after step 20, not from scratch
    assert dataclasses.is_dataclass(HEAD)
