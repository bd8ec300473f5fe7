"""The reward-model robustness protocol (spec/causal_rm.md): the compared methods, the data of Tier A (a
frozen-feature world, `preference_world.py`) and Tier B (the toy token task, `toy.py`), the training loop (one
method, all seeds vmapped in one jit, keeping the best IID-validation checkpoint) and the evaluation
(gold-labelled IID / balanced / reversed splits, counterfactual artifact flips, best-of-N, fresh linear probes).
Auto methods train a grid of penalty weights and pick one per seed with `dependence.select_weight`.
`bench/rm_robustness.py` runs it and reports; results in docs/reward.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alejax.models.config import ModelConfig
from alejax.reward import toy
from alejax.reward.dependence import (
    conditional_dependence,
    correlation,
    dependence_se,
    pair_dependence,
    select_weight,
)
from alejax.reward.grl import grl_lambda
from alejax.reward.heads import HeadConfig, RewardHead, head_param_labels
from alejax.reward.losses import RMLossConfig, head_pair_loss
from alejax.reward.model import RewardModel, pair_loss
from alejax.reward.preference_world import World, WorldConfig

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
    loss_cfg = RMLossConfig(**loss_kw)
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


# ---- evaluation -----------------------------------------------------------------------------------------


def _ridge_probe_accuracy(x_train, y_train, x_test, y_test, alpha: float = 1.0) -> float:
    mean, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xs, xt = (x_train - mean) / sd, (x_test - mean) / sd
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(xs.shape[1]), xs.T @ y_train)
    return float(np.mean(np.sign(xt @ w) == y_test))


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
    m["corr_len"] = correlation(r, d["cf/length"])
    m["pcorr_len"] = correlation(_residual(r, d["cf/u"]), _residual(d["cf/length"], d["cf/u"]))
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


def evaluate(graphdef, params, data, data_np, n_seeds: int, val_prefix: str) -> dict[str, np.ndarray]:
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


def run_method(
    name: str,
    data,
    data_np,
    seeds,
    *,
    steps: int,
    batch: int,
    lr: float,
    eval_every: int,
    clip: float = 0.0,
    control: bool = False,
):
    """(per-seed metrics, weight sweep or None) of one method; auto methods train their grid and pick."""
    val_prefix = "ab_val" if control else "val"
    if name not in AUTO_METHODS:
        graphdef, (best, best_val, _) = train_method(
            name,
            data,
            seeds,
            steps,
            batch,
            lr,
            eval_every,
            control=control,
            clip=clip,
        )
        m = evaluate(graphdef, best, data, data_np, len(seeds), val_prefix)
        m["val_iid"] = np.asarray(best_val)
        return m, None
    base, grid = AUTO_METHODS[name]
    if list(grid) != sorted(grid):
        raise ValueError(f"{name}: the weight grid must be ascending, got {grid}")
    graphdef, (best, best_val, _) = train_method(
        base,
        data,
        seeds,
        steps,
        batch,
        lr,
        eval_every,
        weights=grid,
        control=control,
        clip=clip,
    )
    best_val = np.asarray(best_val)  # [seeds, grid]
    per_weight = [
        evaluate(graphdef, jax.tree.map(lambda x, j=j: x[:, j], best), data, data_np, len(seeds), val_prefix)
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
