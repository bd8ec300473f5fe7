"""Reward-model robustness on the Tier A frozen-feature world (spec/causal_rm.md): CPU, a few minutes.

  python bench/rm_robustness.py [--seeds 5] [--steps 1500] [--methods bt,causal_rm,...] [--out runs/rm_robustness]

Each method trains its head on the same worlds (one per seed, all seeds vmapped in one jit), keeps the
checkpoint with the best accuracy on the IID validation split (observed labels) and is then measured on
gold-labelled IID / balanced / reversed splits, counterfactual artifact flips, reward-length correlation,
best-of-N selection and fresh linear probes on its factors. Prints a Markdown table, writes a PNG, and ends
with one JSON line. The protocol (methods, data, training, metrics) is `alejax.reward.robustness`; this file
runs it and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alejax.reward.robustness import (  # noqa: E402
    ATTRIBUTE_AWARE,
    AUTO_METHODS,
    BON_N,
    CONTROL_METHODS,
    METHODS,
    TIER_B_METHODS,
    make_data,
    make_token_data,
    run_method,
)

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
        m, sweep = run_method(
            name,
            data,
            data_np,
            seeds,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            eval_every=args.eval_every,
            clip=args.clip,
            control=is_control,
        )
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
