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

from alejax.reward.grl import grl_lambda  # noqa: E402
from alejax.reward.heads import HeadConfig, RewardHead, head_param_labels  # noqa: E402
from alejax.reward.losses import LossConfig, head_pair_loss  # noqa: E402
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
    "causal_rm_cond_decorr": (dict(), dict(indep="decorrelation_conditional", indep_weight=1.0), "train"),
    "causal_rm_marginal_decorr": (dict(), dict(indep="decorrelation", indep_weight=1.0), "train"),
    "oracle": (dict(kind="bt"), dict(), "balanced"),
}
ATTRIBUTE_AWARE = (
    "causal_rm_attr",
    "causal_rm_hsic",
    "causal_rm_cond_mmd",
    "causal_rm_cond_decorr",
    "causal_rm_marginal_decorr",
)
BON_N = (1, 4, 16, 64, 256)


# ---- data ------------------------------------------------------------------------------------------------


def make_data(seed: int, n_train: int, n_eval: int, n_bon: int) -> dict[str, np.ndarray]:
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
    return {k: data[f"{prefix}/{k}"] for k in ("h_w", "h_l", "attrs_w", "attrs_l")}


# ---- training (one method, all seeds vmapped) ------------------------------------------------------------


def train_method(
    name: str, data: dict, seeds: np.ndarray, steps: int, batch: int, lr: float, eval_every: int
):
    head_kw, loss_kw, split = METHODS[name]
    head_cfg = HeadConfig(**{**HEAD, **head_kw})
    loss_cfg = LossConfig(**loss_kw)
    d_in = data["train/h_w"].shape[-1]
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: RewardHead(d_in, head_cfg, rngs=nnx.Rngs(0))))
    tx = optax.multi_transform({"main": optax.adam(lr), "adversary": optax.adam(lr)}, head_param_labels)
    train_prefix, val_prefix = ("train", "val") if split == "train" else ("oracle_train", "oracle_val")

    def loss_fn(params, pairs, lam, key):
        return head_pair_loss(nnx.merge(graphdef, params), pairs, loss_cfg, lam, key)

    def val_accuracy(params, pairs):
        out = nnx.merge(graphdef, params)(jnp.concatenate([pairs["h_w"], pairs["h_l"]]))
        n = pairs["h_w"].shape[0]
        return jnp.mean(out["reward"][:n] > out["reward"][n:])

    def one_seed(seed, d):
        key = jax.random.key(seed)
        params = nnx.split(RewardHead(d_in, head_cfg, rngs=nnx.Rngs(jax.random.fold_in(key, 1))))[1]
        train, val = pairs_of(d, train_prefix), pairs_of(d, val_prefix)
        n_train = train["h_w"].shape[0]

        def step(carry, i):
            params, opt_state = carry
            k_batch, k_noise = jax.random.split(jax.random.fold_in(key, i))
            idx = jax.random.randint(k_batch, (batch,), 0, n_train)
            pairs = jax.tree.map(lambda x: x[idx], train)
            lam = grl_lambda(loss_cfg.grl_schedule, i, steps, loss_cfg.lam_max)
            grads, metrics = jax.grad(loss_fn, has_aux=True)(params, pairs, lam, k_noise)
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

    run = jax.jit(jax.vmap(one_seed))
    return graphdef, run(jnp.asarray(seeds), data)


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


def head_outputs(graphdef, params, d: dict) -> dict:
    """The jit'd part: rewards (and factors) on every evaluation set of one world. Metrics are numpy: LAPACK
    calls (solve / lstsq) inside this vmapped program deadlocked XLA's CPU runtime."""
    head = nnx.merge(graphdef, params)
    o = {}
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


def metrics_of(o: dict, d: dict) -> dict[str, float]:
    """Every metric of one trained head on one world, from its outputs (numpy)."""
    m = {}
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
]


def markdown_table(results: dict[str, dict[str, np.ndarray]]) -> str:
    head = "| method | " + " | ".join(label for _, label in TABLE_COLS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_COLS) + 1)]
    for name, m in results.items():
        cells = []
        for key, _ in TABLE_COLS:
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
        gold = [np.mean(results[name][f"bon{n}_gold"]) for n in BON_N]
        axes[1].plot(
            BON_N, gold, marker="o", label=name, lw=2 if name in ("bt", "causal_rm", "oracle") else 1
        )
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("N (best-of-N)")
    axes[1].set_ylabel("gold utility of the selected response")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=16_000)
    parser.add_argument("--n-eval", type=int, default=2_000)
    parser.add_argument("--n-bon", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="runs/rm_robustness")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    seeds = np.arange(args.seeds)
    per_seed = [make_data(int(s), args.n_train, args.n_eval, args.n_bon) for s in seeds]
    data_np = {k: np.stack([d[k] for d in per_seed]) for k in per_seed[0]}
    data = {k: jnp.asarray(v) for k, v in data_np.items()}
    print(f"data: {args.seeds} worlds in {time.time() - t0:.1f}s", flush=True)

    results: dict[str, dict[str, np.ndarray]] = {}
    for name in args.methods.split(","):
        t = time.time()
        graphdef, (best, best_val, _) = train_method(
            name, data, seeds, args.steps, args.batch, args.lr, args.eval_every
        )
        outputs = jax.device_get(
            jax.jit(jax.vmap(lambda p, d, g=graphdef: head_outputs(g, p, d)))(best, data)
        )
        per_world = [
            metrics_of({k: v[i] for k, v in outputs.items()}, {k: v[i] for k, v in data_np.items()})
            for i in range(len(seeds))
        ]
        results[name] = {k: np.array([m[k] for m in per_world]) for k in per_world[0]}
        results[name]["val_iid"] = np.asarray(best_val)
        m = results[name]
        print(
            f"{name:28s} val {m['val_iid'].mean():.3f} iid {m['acc_iid'].mean():.3f} "
            f"bal {m['acc_balanced'].mean():.3f} rev {m['acc_reversed'].mean():.3f} ({time.time() - t:.1f}s)",
            flush=True,
        )

    table = markdown_table(results)
    print("\n" + table + "\n")
    png = os.path.join(args.out, "rm_robustness.png")
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
        "seeds": n,
        "seconds": round(time.time() - t0, 1),
        "png": png,
        "best_attribute_aware": best_aware,
    }
    for key in (
        "acc_iid",
        "acc_balanced",
        "acc_reversed",
        "cf_len",
        "cf_syco",
        "bon256_gold",
        "probe_pref_z_n",
    ):
        summary[key] = {k: round(float(v[key].mean()), 4) for k, v in results.items() if key in v}
        summary[key + "_se"] = {k: round(se(v[key]), 4) for k, v in results.items() if key in v}
    print(f"PNG {png}; total {time.time() - t0:.0f}s", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
