"""Reward-model robustness on the Tier A frozen-feature world (spec/causal_rm.md): CPU, a few minutes.

  python bench/rm_robustness.py [--seeds 5] [--steps 1500] [--methods bt,causal_rm,...] [--out runs/rm_robustness]

Each method trains its head on the same worlds (one per seed, all seeds vmapped in one jit), keeps the
checkpoint with the best accuracy on the IID validation split (observed labels) and is then measured on
gold-labelled IID / balanced / reversed splits, counterfactual artifact flips, reward-length correlation,
best-of-N selection and fresh linear probes on its factors. Prints a Markdown table, writes a PNG, and ends
with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alejax.models.config import ModelConfig  # noqa: E402
from alejax.reward import toy  # noqa: E402
from alejax.reward.grl import grl_lambda  # noqa: E402
from alejax.reward.heads import HeadConfig, RewardHead, head_param_labels  # noqa: E402
from alejax.reward.losses import LossConfig, head_pair_loss  # noqa: E402
from alejax.reward.model import RewardModel, pair_loss  # noqa: E402
from alejax.reward.world import World, WorldConfig  # noqa: E402

# Smaller than the released 1024/128/512 head: the features are 64-d and 5 seeds x 14 methods run on 2 cores.
HEAD = dict(enc_hidden=128, d_c=16, d_n=32, dec_hidden=128, adv_hidden=64)
# name -> (head overrides, loss overrides, training split). Penalty weights were fixed by hand during
# development (a fair protocol has no reversed split to tune on; IID validation prefers weight 0).
METHODS: dict[str, tuple[dict, dict, str]] = {
    "bt": (dict(kind="bt"), dict(), "train"),
    "bt_vib": (dict(kind="vib"), dict(beta_c=0.01), "train"),
    "causal_rm": (dict(), dict(), "train"),
    "causal_rm_no_adv": (dict(), dict(adv=0.0), "train"),
    "causal_rm_no_rec": (dict(), dict(rec=0.0), "train"),
    "causal_rm_beta0": (dict(), dict(beta_c=0.0, beta_n=0.0), "train"),
    "causal_rm_dann": (dict(), dict(grl_schedule="dann"), "train"),
    "causal_rm_confusion": (dict(adv_objective="confusion"), dict(), "train"),
    "causal_rm_mlp_adv": (dict(adversary="mlp"), dict(), "train"),
    "causal_rm_attr": (dict(n_attrs=2), dict(attr_sup=1.0, attr_adv=1.0), "train"),
    "causal_rm_hsic": (dict(), dict(indep="hsic", indep_weight=10.0), "train"),
    "causal_rm_cond_mmd": (dict(), dict(indep="mmd_conditional", indep_weight=10.0), "train"),
    # Tier B: on tokens the penalty also reshapes the backbone, and weight 10 stops it learning the task; a
    # per-response penalty is also dodged by prompt-dependent reward offsets, which the pair form cancels.
    "causal_rm_cond_mmd_w1": (dict(), dict(indep="mmd_conditional", indep_weight=1.0), "train"),
    "causal_rm_cond_mmd_pair": (dict(), dict(indep="mmd_conditional_pair", indep_weight=1.0), "train"),
    "causal_rm_cond_decorr": (dict(), dict(indep="decorrelation_conditional", indep_weight=1.0), "train"),
    "causal_rm_marginal_decorr": (dict(), dict(indep="decorrelation", indep_weight=1.0), "train"),
    "oracle": (dict(kind="bt"), dict(), "balanced"),
}
ATTRIBUTE_AWARE = (
    "causal_rm_attr",
    "causal_rm_hsic",
    "causal_rm_cond_mmd",
    "causal_rm_cond_mmd_w1",
    "causal_rm_cond_mmd_pair",
    "causal_rm_cond_decorr",
    "causal_rm_marginal_decorr",
)
# name -> (base method, penalty-weight grid). Each seed trains the whole grid (one vmap) and keeps the weight
# that select_weight picks from IID validation alone.
AUTO_METHODS: dict[str, tuple[str, tuple[float, ...]]] = {
    "causal_rm_cond_mmd_auto": ("causal_rm_cond_mmd", (2.0, 4.0, 6.0, 8.0, 12.0)),
}
ATTRIBUTE_AWARE += tuple(AUTO_METHODS)
# Annotator-bias control: artifacts drawn independently of quality, the annotators' label itself leans toward
# the longer / sycophantic response (label noise correlated with the artifacts); gold stays the utility.
CONTROL_METHODS = (
    "bt",
    "causal_rm",
    "causal_rm_cond_mmd",
    "causal_rm_cond_mmd_auto",
    "causal_rm_marginal_decorr",
)
# Tier B: the rm job's tiny backbone (configs/rm_causal.py) on the toy token task.
TIER_B_MODEL = ModelConfig(
    vocab_size=toy.VOCAB_SIZE, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128
)
TIER_B_METHODS = ("bt", "causal_rm_cond_mmd_pair", "causal_rm_cond_mmd_w1", "oracle")
BON_N = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# ---- data ------------------------------------------------------------------------------------------------


def make_data(
    seed: int, n_train: int, n_eval: int, n_bon: int, annotator_bias: float = 0.0
) -> dict[str, np.ndarray]:
    """One world's splits as flat arrays (stackable over seeds)."""
    world = World(WorldConfig(), seed=seed)
    rng = np.random.default_rng(10_000 + seed)
    data = {}

    def put(prefix, pairs):
        for k, v in pairs.items():
            data[f"{prefix}/{k}"] = v

    put("train", world.pairs(n_train, "train", rng)[0])
    put("oracle_train", world.pairs(n_train, "balanced", rng)[0])  # decorrelated, observed labels
    put("val", world.pairs(n_eval, "iid", rng)[0])  # model selection: IID, observed labels
    put("oracle_val", world.pairs(n_eval, "balanced", rng)[0])
    if annotator_bias:
        put("ab_train", world.pairs(n_train, "train", rng, annotator_bias=annotator_bias)[0])
        put("ab_val", world.pairs(n_eval, "iid", rng, annotator_bias=annotator_bias)[0])
    for split in ("iid", "balanced", "reversed"):
        put(f"test_{split}", world.pairs(n_eval, split, rng, gold=True)[0])
    # Counterfactual flips of single responses: mirror the length, flip sycophancy.
    resp = world.responses(n_eval, rng)
    data["cf/h"] = world.features(resp)
    data["cf/h_len"] = world.features(dict(resp, length=-resp["length"]))
    data["cf/h_syco"] = world.features(dict(resp, syco=1.0 - resp["syco"]))
    data["cf/u"] = world.utility(resp["q"]).astype(np.float32)
    data["cf/length"] = resp["length"].astype(np.float32)
    # Best-of-N pools: n_bon prompts x max(BON_N) independent responses.
    pool = world.responses(n_bon * BON_N[-1], rng)
    data["bon/h"] = world.features(pool).reshape(n_bon, BON_N[-1], -1)
    data["bon/u"] = world.utility(pool["q"]).astype(np.float32).reshape(n_bon, -1)
    data["bon/syco"] = pool["syco"].astype(np.float32).reshape(n_bon, -1)
    data["bon/length"] = pool["length"].astype(np.float32).reshape(n_bon, -1)
    return data


def pairs_of(data: dict, prefix: str) -> dict:
    keys = ("chosen", "rejected") if f"{prefix}/chosen" in data else ("h_w", "h_l")
    return {k: data[f"{prefix}/{k}"] for k in keys + ("attrs_w", "attrs_l")}


def _rows(pairs: dict) -> jax.Array:
    """[chosen; rejected] rows: token sequences (Tier B) or feature vectors (Tier A)."""
    if "chosen" in pairs:
        return jnp.concatenate([pairs["chosen"], pairs["rejected"]])
    return jnp.concatenate([pairs["h_w"], pairs["h_l"]])


def make_token_data(seed: int, n_train: int, n_eval: int, task: str, label_noise: float) -> dict:
    """Tier B: one seed's toy token splits (alejax.reward.toy), same layout as make_data's pair splits."""
    data = {}
    splits = (
        ("train", "train", n_train, False),
        ("oracle_train", "balanced", n_train, False),
        ("val", "iid", n_eval, False),
        ("oracle_val", "balanced", n_eval, False),
        ("test_iid", "iid", n_eval, True),
        ("test_balanced", "balanced", n_eval, True),
        ("test_reversed", "reversed", n_eval, True),
    )
    for i, (prefix, split, n, gold) in enumerate(splits):
        rows = toy.preference_pairs(n, split, 1000 * seed + i, label_noise=label_noise, gold=gold, task=task)
        for k in ("chosen", "rejected", "attrs_w", "attrs_l"):
            data[f"{prefix}/{k}"] = rows[k]
    return data


# ---- training (one method, all seeds vmapped) ------------------------------------------------------------


def train_method(
    name: str,
    data: dict,
    seeds: np.ndarray,
    steps: int,
    batch: int,
    lr: float,
    eval_every: int,
    weights: tuple[float, ...] | None = None,
    control: bool = False,
    clip: float = 0.0,
):
    """Train `name` on every seed's world (vmapped). weights: a grid of independence-penalty weights, trained
    side by side (a second vmap, same init and batches): results gain a leading grid axis after the seeds.
    control: train on the annotator-bias world's data instead."""
    head_kw, loss_kw, split = METHODS[name]
    head_cfg = HeadConfig(**{**HEAD, **head_kw})
    if weights is not None:
        if loss_kw.get("indep", "none") == "none":
            raise ValueError(f"a weight grid needs a method with an independence penalty, not {name!r}")
        loss_kw = dict(loss_kw, indep_weight=0.0)  # the part is still computed; the grid weight scales it
    loss_cfg = LossConfig(**loss_kw)
    if "train/chosen" in data:  # Tier B: the tiny backbone + head on tokens

        def build(rngs):
            return RewardModel(TIER_B_MODEL, head_cfg, pad_id=toy.PAD, rngs=rngs)

        def pair_loss_of(model, pairs, lam, key):
            return pair_loss(model, pairs, loss_cfg, lam, key)
    else:
        d_in = data["train/h_w"].shape[-1]

        def build(rngs):
            return RewardHead(d_in, head_cfg, rngs=rngs)

        def pair_loss_of(head, pairs, lam, key):
            return head_pair_loss(head, pairs, loss_cfg, lam, key)

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))

    def adam():
        return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr)) if clip else optax.adam(lr)

    tx = optax.multi_transform({"main": adam(), "adversary": adam()}, head_param_labels)
    if control:
        if split != "train":
            raise ValueError(f"the annotator-bias control has no {split!r}-trained variant ({name})")
        train_prefix, val_prefix = "ab_train", "ab_val"
    else:
        train_prefix, val_prefix = ("train", "val") if split == "train" else ("oracle_train", "oracle_val")

    def loss_fn(params, pairs, lam, key, weight):
        total, metrics = pair_loss_of(nnx.merge(graphdef, params), pairs, lam, key)
        return (total if weights is None else total + weight * metrics["loss/indep"]), metrics

    def val_accuracy(params, pairs):
        r = nnx.merge(graphdef, params)(_rows(pairs))["reward"]
        n = r.shape[0] // 2
        return jnp.mean(r[:n] > r[n:])

    def one_run(seed, d, weight):
        key = jax.random.key(seed)
        params = nnx.split(build(nnx.Rngs(jax.random.fold_in(key, 1))))[1]
        train, val = pairs_of(d, train_prefix), pairs_of(d, val_prefix)
        n_train = train["attrs_w"].shape[0]

        def step(carry, i):
            params, opt_state = carry
            k_batch, k_noise = jax.random.split(jax.random.fold_in(key, i))
            idx = jax.random.randint(k_batch, (batch,), 0, n_train)
            pairs = jax.tree.map(lambda x: x[idx], train)
            lam = grl_lambda(loss_cfg.grl_schedule, i, steps, loss_cfg.lam_max)
            grads, metrics = jax.grad(loss_fn, has_aux=True)(params, pairs, lam, k_noise, weight)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        def chunk(carry, c):
            (params, opt_state), metrics = jax.lax.scan(
                step, carry[:2], c * eval_every + jnp.arange(eval_every)
            )
            acc = val_accuracy(params, val)
            better = acc > carry[3]
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, carry[2])
            return (params, opt_state, best, jnp.where(better, acc, carry[3])), jax.tree.map(
                jnp.mean, metrics
            )

        init = (params, tx.init(params), params, jnp.array(-1.0))
        (_, _, best, best_acc), history = jax.lax.scan(chunk, init, jnp.arange(steps // eval_every))
        return best, best_acc, history

    if weights is None:
        run = jax.jit(jax.vmap(lambda seed, d: one_run(seed, d, 0.0)))
        return graphdef, run(jnp.asarray(seeds), data)
    grid = jax.vmap(one_run, in_axes=(None, None, 0))
    run = jax.jit(jax.vmap(grid, in_axes=(0, 0, None)))
    return graphdef, run(jnp.asarray(seeds), data, jnp.asarray(weights, jnp.float32))


# ---- penalty-weight selection without the reversed split ---------------------------------------------------


def pair_dependence(r: np.ndarray, attrs_w: np.ndarray, attrs_l: np.ndarray) -> float:
    """conditional_dependence on pairs: squared correlation of the margin r_w - r_l with each attribute's
    difference, summed; blind to prompt-level reward offsets (which cancel in every pair)."""
    n = len(r) // 2
    return float(
        sum(_corr(r[:n] - r[n:], attrs_w[:, j] - attrs_l[:, j]) ** 2 for j in range(attrs_w.shape[1]))
    )


def conditional_dependence(r: np.ndarray, attrs_w: np.ndarray, attrs_l: np.ndarray) -> float:
    """Label-conditional dependence of a reward on the known artifacts, from IID validation pairs (observed
    labels): the squared correlation of reward and each attribute within the chosen and within the rejected
    responses, summed. Artifacts attached given the label are independent of quality within each group, so a
    reward that reads only quality scores ~0 (noise floor ~ 2 x n_attrs / n)."""
    n = len(r) // 2
    total = 0.0
    for rr, aa in ((r[:n], attrs_w), (r[n:], attrs_l)):
        for j in range(aa.shape[1]):
            total += _corr(rr, aa[:, j]) ** 2
    return total


def dependence_se(r: np.ndarray, attrs_w: np.ndarray, attrs_l: np.ndarray, n_boot: int = 100) -> float:
    """Bootstrap standard error of conditional_dependence over validation pairs."""
    rng = np.random.default_rng(0)
    n = len(r) // 2
    stats = []
    for _ in range(n_boot):
        i = rng.integers(n, size=n)
        stats.append(conditional_dependence(np.concatenate([r[:n][i], r[n:][i]]), attrs_w[i], attrs_l[i]))
    return float(np.std(stats))


# The dependence a practitioner accepts: the four squared within-label correlations (2 artifacts x chosen /
# rejected) sum to at most 0.02, i.e. each artifact explains ~0.5% of the reward's variance given the label.
DEPENDENCE_TARGET = 0.02


def select_weight(val_dep: np.ndarray, dep_se: np.ndarray, target: float = DEPENDENCE_TARGET) -> int:
    """The index of the penalty weight a practitioner can pick from IID validation alone (grid ascending): the
    smallest weight whose label-conditional dependence meets `target`, or, where none does, is within one
    bootstrap SE of the lowest on the grid (a larger weight buys no measurable independence for the accuracy
    it costs). Validation accuracy is no guide here: observed labels reward artifact use, so it prefers
    weight 0."""
    best = int(np.argmin(val_dep))
    return int(np.flatnonzero(val_dep <= max(target, val_dep[best] + dep_se[best]))[0])


# ---- metrics --------------------------------------------------------------------------------------------


def _ridge_probe_accuracy(x_train, y_train, x_test, y_test, alpha: float = 1.0) -> float:
    mean, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xs, xt = (x_train - mean) / sd, (x_test - mean) / sd
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(xs.shape[1]), xs.T @ y_train)
    return float(np.mean(np.sign(xt @ w) == y_test))


def _corr(a, b) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b) + 1e-12))


def _residual(y, x):
    x = np.stack([np.ones_like(x), x], 1)
    return y - x @ np.linalg.lstsq(x, y, rcond=None)[0]


def head_outputs(graphdef, params, d: dict, val_prefix: str = "val") -> dict:
    """The jit'd part: rewards (and factors) on every evaluation set of one world. Metrics are numpy: LAPACK
    calls (solve / lstsq) inside this vmapped program deadlocked XLA's CPU runtime."""
    head = nnx.merge(graphdef, params)
    o = {"val/reward": head(jnp.concatenate([d[f"{val_prefix}/h_w"], d[f"{val_prefix}/h_l"]]))["reward"]}
    for split in ("iid", "balanced", "reversed"):
        out = head(jnp.concatenate([d[f"test_{split}/h_w"], d[f"test_{split}/h_l"]]))
        o[f"{split}/reward"] = out["reward"]
        if "adv" in out:
            o[f"{split}/adv"] = out["adv"]
        if split == "balanced":
            o["balanced/z_c"] = out.get("mu_c", out["z_c"])
            if "mu_n" in out:
                o["balanced/z_n"] = out["mu_n"]
    for k in ("h", "h_len", "h_syco"):
        o[f"cf/{k}"] = head(d[f"cf/{k}"])["reward"]
    prompts, n_max, dim = d["bon/h"].shape
    o["bon"] = head(d["bon/h"].reshape(-1, dim))["reward"].reshape(prompts, n_max)
    return o


def metrics_of(o: dict, d: dict, val_prefix: str = "val") -> dict[str, float]:
    """Every metric of one trained head on one world, from its outputs (numpy)."""
    val = (o["val/reward"], d[f"{val_prefix}/attrs_w"], d[f"{val_prefix}/attrs_l"])
    m = {"val_dep": conditional_dependence(*val), "val_dep_se": dependence_se(*val)}
    for split in ("iid", "balanced", "reversed"):
        r = o[f"{split}/reward"]
        n = len(r) // 2
        m[f"acc_{split}"] = float(np.mean(r[:n] > r[n:]))
        if split == "iid" and f"{split}/adv" in o:
            a = o[f"{split}/adv"]
            m["adv_acc_iid"] = float(np.mean(a[:n] > a[n:]))
    # Fresh linear probes on the factors (mu) of the balanced split, fit on one half, scored on the other:
    # the preference from z differences (random order), sycophancy from single responses.
    syco = np.concatenate([d["test_balanced/attrs_w"][:, 1], d["test_balanced/attrs_l"][:, 1]]) * 2 - 1
    for name in ("z_c", "z_n"):
        if f"balanced/{name}" not in o:
            continue
        z = o[f"balanced/{name}"]
        n = len(z) // 2
        half = n // 2
        sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
        diff = (z[:n] - z[n:]) * sign[:, None]
        m[f"probe_pref_{name}"] = _ridge_probe_accuracy(diff[:half], sign[:half], diff[half:], sign[half:])
        fit = np.r_[0:half, n : n + half]
        held = np.r_[half:n, n + half : 2 * n]
        m[f"probe_syco_{name}"] = _ridge_probe_accuracy(z[fit], syco[fit], z[held], syco[held])
    r = o["cf/h"]
    sd = r.std() + 1e-9
    m["cf_len"] = float(np.mean(np.abs(o["cf/h_len"] - r)) / sd)
    m["cf_syco"] = float(np.mean(np.abs(o["cf/h_syco"] - r)) / sd)
    m["corr_len"] = _corr(r, d["cf/length"])
    m["pcorr_len"] = _corr(_residual(r, d["cf/u"]), _residual(d["cf/length"], d["cf/u"]))
    for n in BON_N:
        pick = np.argmax(o["bon"][:, :n], axis=1)[:, None]
        m[f"bon{n}_gold"] = float(np.mean(np.take_along_axis(d["bon/u"], pick, 1)))
        m[f"bon{n}_syco"] = float(np.mean(np.take_along_axis(d["bon/syco"], pick, 1)))
    m["bon256_gold_max"] = float(np.mean(d["bon/u"].max(1)))
    return m


def token_outputs(graphdef, params, d: dict, val_prefix: str = "val") -> dict:
    """Tier B: rewards on the validation and gold test splits of one seed's token data."""
    model = nnx.merge(graphdef, params)
    prefixes = [val_prefix] + [f"test_{s}" for s in ("iid", "balanced", "reversed")]
    return {p: model(_rows(pairs_of(d, p)))["reward"] for p in prefixes}


def token_metrics(o: dict, d: dict, val_prefix: str = "val") -> dict[str, float]:
    val = (o[val_prefix], d[f"{val_prefix}/attrs_w"], d[f"{val_prefix}/attrs_l"])
    m = {"val_dep": conditional_dependence(*val), "val_pair_dep": pair_dependence(*val)}
    for split in ("iid", "balanced", "reversed"):
        r = o[f"test_{split}"]
        m[f"acc_{split}"] = float(np.mean(r[: len(r) // 2] > r[len(r) // 2 :]))
    return m


def _evaluate(graphdef, params, data, data_np, n_seeds: int, val_prefix: str) -> dict[str, np.ndarray]:
    tokens = "train/chosen" in data_np
    outputs_fn, metrics_fn = (token_outputs, token_metrics) if tokens else (head_outputs, metrics_of)
    outputs = jax.device_get(
        jax.jit(jax.vmap(lambda p, d: outputs_fn(graphdef, p, d, val_prefix)))(params, data)
    )
    per_world = [
        metrics_fn({k: v[i] for k, v in outputs.items()}, {k: v[i] for k, v in data_np.items()}, val_prefix)
        for i in range(n_seeds)
    ]
    return {k: np.array([m[k] for m in per_world]) for k in per_world[0]}


def run_method(name: str, data, data_np, seeds, args, control: bool = False):
    """(per-seed metrics, weight sweep or None) of one method; auto methods train their grid and pick."""
    val_prefix = "ab_val" if control else "val"
    if name not in AUTO_METHODS:
        graphdef, (best, best_val, _) = train_method(
            name,
            data,
            seeds,
            args.steps,
            args.batch,
            args.lr,
            args.eval_every,
            control=control,
            clip=args.clip,
        )
        m = _evaluate(graphdef, best, data, data_np, len(seeds), val_prefix)
        m["val_iid"] = np.asarray(best_val)
        return m, None
    base, grid = AUTO_METHODS[name]
    if list(grid) != sorted(grid):
        raise ValueError(f"{name}: the weight grid must be ascending, got {grid}")
    graphdef, (best, best_val, _) = train_method(
        base,
        data,
        seeds,
        args.steps,
        args.batch,
        args.lr,
        args.eval_every,
        weights=grid,
        control=control,
        clip=args.clip,
    )
    best_val = np.asarray(best_val)  # [seeds, grid]
    per_weight = [
        _evaluate(graphdef, jax.tree.map(lambda x, j=j: x[:, j], best), data, data_np, len(seeds), val_prefix)
        for j in range(len(grid))
    ]
    val_dep = np.stack([pw["val_dep"] for pw in per_weight], 1)
    dep_se = np.stack([pw["val_dep_se"] for pw in per_weight], 1)
    pick = np.array([select_weight(val_dep[s], dep_se[s]) for s in range(len(seeds))])
    m = {k: np.array([per_weight[j][k][s] for s, j in enumerate(pick)]) for k in per_weight[0]}
    m["val_iid"] = best_val[np.arange(len(seeds)), pick]
    m["weight"] = np.asarray(grid)[pick]
    sweep = {
        "weights": list(grid),
        "picked": m["weight"].tolist(),
        **{
            key: [round(float(pw[key].mean()), 4) for pw in per_weight]
            for key in ("acc_iid", "acc_balanced", "acc_reversed", "val_dep", "cf_len")
            if key in per_weight[0]
        },
        "val_iid": [round(float(v), 4) for v in best_val.mean(0)],
        # per seed x weight, to study selection rules offline
        "per_seed": {
            "val_iid": best_val.round(4).tolist(),
            **{
                k: np.stack([pw[k] for pw in per_weight], 1).round(4).tolist()
                for k in ("val_dep", "val_dep_se", "acc_iid", "acc_reversed")
            },
        },
    }
    return m, sweep


# ---- report ---------------------------------------------------------------------------------------------

TABLE_COLS = [
    ("acc_iid", "IID"),
    ("acc_balanced", "balanced"),
    ("acc_reversed", "reversed"),
    ("cf_len", "cf len (sd)"),
    ("cf_syco", "cf syco (sd)"),
    ("pcorr_len", "pcorr(r,len|u)"),
    ("bon256_gold", "BoN256 gold"),
    ("bon256_syco", "BoN256 syco"),
    ("probe_pref_z_n", "probe pref z_n"),
    ("probe_syco_z_c", "probe syco z_c"),
    ("adv_acc_iid", "adv acc"),
    ("val_dep", "val cond dep"),
    ("val_pair_dep", "val pair dep"),
    ("weight", "weight"),
    ("ab_acc_balanced", "AB balanced"),
    ("ab_acc_reversed", "AB reversed"),
    ("ab_cf_len", "AB cf len"),
]


def sweep_table(sweeps: dict[str, dict]) -> str:
    """What the auto rule sees (validation) against what each weight gets (gold test splits), seed means."""
    lines = []
    for name, sw in sweeps.items():
        lines += [
            f"{name} (picked per seed: {sw['picked']})",
            "| weight | val IID (obs.) | val cond dep | IID | balanced | reversed | cf len |",
            "|---|---|---|---|---|---|---|",
        ]
        for j, w in enumerate(sw["weights"]):
            keys = ("val_iid", "val_dep", "acc_iid", "acc_balanced", "acc_reversed", "cf_len")
            cells = [sw[k][j] if k in sw else float("nan") for k in keys]
            lines.append(f"| {w:g} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def markdown_table(results: dict[str, dict[str, np.ndarray]]) -> str:
    cols = [(k, label) for k, label in TABLE_COLS if any(k in m for m in results.values())]
    head = "| method | " + " | ".join(label for _, label in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for name, m in results.items():
        cells = []
        for key, _ in cols:
            if key not in m:
                cells.append("–")
                continue
            v = np.asarray(m[key])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(results)
    x = np.arange(len(names))
    for i, (split, color) in enumerate((("iid", "C0"), ("balanced", "C1"), ("reversed", "C3"))):
        vals = np.array([np.mean(results[n][f"acc_{split}"]) for n in names])
        ses = np.array(
            [np.std(results[n][f"acc_{split}"], ddof=1) / np.sqrt(len(results[n]["acc_iid"])) for n in names]
        )
        axes[0].bar(x + (i - 1) * 0.27, vals, 0.27, yerr=ses, color=color, label=split)
    axes[0].set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    axes[0].set_ylim(0.4, 1.0)
    axes[0].axhline(0.5, color="k", lw=0.5)
    axes[0].set_ylabel("pairwise accuracy (gold labels)")
    axes[0].legend()
    for name in names:
        if "bon1_gold" not in results[name]:
            continue
        gold = [np.mean(results[name][f"bon{n}_gold"]) for n in BON_N]
        axes[1].plot(
            BON_N, gold, marker="o", label=name, lw=2 if name in ("bt", "causal_rm", "oracle") else 1
        )
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("N (best-of-N)")
    axes[1].set_ylabel("gold utility of the selected response")
    if axes[1].lines:
        axes[1].legend(fontsize=6, ncol=2)
    else:
        axes[1].set_visible(False)  # Tier B has no best-of-N pools
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=("a", "b"), default="a", help="a: frozen features | b: tokens")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="A 1500 | B 1200")
    parser.add_argument("--batch", type=int, default=None, help="A 256 | B 64")
    parser.add_argument("--lr", type=float, default=None, help="A 1e-3 | B 2e-3")
    parser.add_argument("--clip", type=float, default=None, help="global-norm clip (A 0: off | B 1)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=None, help="A 16000 | B 8000")
    parser.add_argument("--n-eval", type=int, default=None, help="A 2000 | B 1000")
    parser.add_argument("--n-bon", type=int, default=128)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--task", default="copy", help="Tier B: alejax.reward.toy.TASKS")
    parser.add_argument("--label-noise", type=float, default=0.1, help="Tier B: flipped labels")
    parser.add_argument("--annotator-bias", type=float, default=0.5, help="0: skip the control (Tier A)")
    parser.add_argument("--control-methods", default=",".join(CONTROL_METHODS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    tier_b = args.tier == "b"
    for key, a_value, b_value in (
        ("steps", 1500, 1200),
        ("batch", 256, 64),
        ("lr", 1e-3, 2e-3),
        ("clip", 0.0, 1.0),
        ("n_train", 16_000, 8_000),
        ("n_eval", 2_000, 1_000),
        ("methods", ",".join(list(METHODS) + list(AUTO_METHODS)), ",".join(TIER_B_METHODS)),
        ("out", "runs/rm_robustness", "runs/rm_robustness_b"),
    ):
        if getattr(args, key) is None:
            setattr(args, key, b_value if tier_b else a_value)
    if tier_b:
        args.annotator_bias = 0.0  # the control is a Tier A world
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    seeds = args.first_seed + np.arange(args.seeds)
    if tier_b:
        per_seed = [
            make_token_data(int(s), args.n_train, args.n_eval, args.task, args.label_noise) for s in seeds
        ]
    else:
        per_seed = [
            make_data(int(s), args.n_train, args.n_eval, args.n_bon, args.annotator_bias) for s in seeds
        ]
    data_np = {k: np.stack([d[k] for d in per_seed]) for k in per_seed[0]}
    data = {k: jnp.asarray(v) for k, v in data_np.items()}
    print(f"data: {args.seeds} worlds in {time.time() - t0:.1f}s", flush=True)

    results: dict[str, dict[str, np.ndarray]] = {}
    sweeps: dict[str, dict] = {}
    names = args.methods.split(",")
    unknown = [n for n in names if n not in METHODS and n not in AUTO_METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {list(METHODS) + list(AUTO_METHODS)}")
    control = [n for n in args.control_methods.split(",") if n] if args.annotator_bias else []
    if set(control) - set(names):
        raise SystemExit(f"control methods {sorted(set(control) - set(names))} must also be in --methods")
    for i, (name, is_control) in enumerate([(n, False) for n in names] + [(n, True) for n in control]):
        t = time.time()
        m, sweep = run_method(name, data, data_np, seeds, args, control=is_control)
        if is_control:
            results[name].update({f"ab_{k}": v for k, v in m.items()})
        else:
            results[name] = m
        if sweep is not None:
            sweeps[("ab_" if is_control else "") + name] = sweep
        picked = f" weights {m['weight'].tolist()}" if "weight" in m else ""
        print(
            f"[{i + 1}/{len(names) + len(control)}] {'control ' if is_control else ''}{name:28s} "
            f"val {m['val_iid'].mean():.3f} iid {m['acc_iid'].mean():.3f} bal {m['acc_balanced'].mean():.3f} "
            f"rev {m['acc_reversed'].mean():.3f}{picked} ({time.time() - t:.1f}s, total {time.time() - t0:.0f}s)",
            flush=True,
        )

    table = markdown_table(results)
    if sweeps:
        table += "\n\n" + sweep_table(sweeps)
    print("\n" + table + "\n")
    png = os.path.join(args.out, f"rm_robustness{'_b' if tier_b else ''}.png")
    plot(results, png)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    n = len(seeds)

    def se(v):
        return float(np.std(v, ddof=1) / np.sqrt(n))

    aware = [k for k in ATTRIBUTE_AWARE if k in results]
    # Which option to headline is a reporting choice made on the reversed split (models were selected on IID).
    best_aware = max(aware, key=lambda k: results[k]["acc_reversed"].mean()) if aware else None
    summary = {
        "tier": args.tier,
        "seeds": n,
        "seconds": round(time.time() - t0, 1),
        "png": png,
        "best_attribute_aware": best_aware,
        "annotator_bias": args.annotator_bias,
        **({"task": args.task, "label_noise": args.label_noise, "steps": args.steps} if tier_b else {}),
        "sweeps": sweeps,
    }
    # The bar: reversed >= 0.85 at an IID cost <= 3 points against BT (seed means).
    if "bt" in results:
        bt_iid = results["bt"]["acc_iid"].mean()
        summary["meets_bar"] = sorted(
            k
            for k, v in results.items()
            if k != "oracle" and v["acc_reversed"].mean() >= 0.85 and bt_iid - v["acc_iid"].mean() <= 0.03
        )
    for key in (
        "acc_iid",
        "acc_balanced",
        "acc_reversed",
        "cf_len",
        "cf_syco",
        "bon256_gold",
        "probe_pref_z_n",
        "val_dep",
        "ab_acc_balanced",
        "ab_acc_reversed",
    ):
        summary[key] = {k: round(float(v[key].mean()), 4) for k, v in results.items() if key in v}
        summary[key + "_se"] = {k: round(se(v[key]), 4) for k, v in results.items() if key in v}
    print(f"PNG {png}; total {time.time() - t0:.0f}s", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
