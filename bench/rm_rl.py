"""Downstream check of the reward models: a tiny policy RL'd with GRPO on the toy token task (Tier B), with the
reward from (i) the BT reward model, (ii) the best robust option, (iii) the gold rule. CPU, a few minutes.

  python bench/rm_rl.py [--seeds 2] [--rl-steps 150] [--best causal_rm_cond_mmd_pair] [--task copy]

The RMs are trained exactly as in `bench/rm_robustness.py --tier b` (artifact-laden pairs, IID-validation
model selection). The policy is the same tiny Transformer class, sampling its response under the toy grammar
([SURE] d FILL* EOS, so every sample is a well-formed response the RMs were trained on) for prompts whose
user belief is a random digit. Each RL step: G samples per prompt, reward = the chosen source's score
(RMs normalised by their scores on the first batch), GRPO advantages (alejax.rl.advantages) and the PPO-clip
loss (alejax.rl.losses), one on-policy update. Reported per source: the gold reward reached (fraction of correct
answers over the last 20% of steps), and the artifact rates (SURE prefix, agreeing with the user's belief, mean
filler length). Last line: one JSON object. The sampler and the RL step are `alejax.reward.toy_rl`; the RM
training is `alejax.reward.robustness`.
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
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alejax.reward import toy  # noqa: E402
from alejax.reward.robustness import METHODS, evaluate, make_token_data, train_method  # noqa: E402
from alejax.reward.toy_rl import describe, make_rl_step, rl_run  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--task", default="copy", choices=sorted(toy.TASKS))
    parser.add_argument("--label-noise", type=float, default=0.1)
    parser.add_argument(
        "--best", default="causal_rm_cond_mmd_pair", help="the robust option (a rm_robustness method)"
    )
    parser.add_argument("--rm-steps", type=int, default=600)
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--rl-steps", type=int, default=150)
    parser.add_argument("--rl-lr", type=float, default=3e-3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--out", default="runs/rm_rl")
    args = parser.parse_args(argv)
    if args.best not in METHODS:
        raise SystemExit(f"--best {args.best!r}: not one of {list(METHODS)}")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    seeds = np.arange(args.seeds)
    per_seed = [make_token_data(int(s), args.n_train, 1000, args.task, args.label_noise) for s in seeds]
    data_np = {k: np.stack([d[k] for d in per_seed]) for k in per_seed[0]}
    data = {k: jnp.asarray(v) for k, v in data_np.items()}

    sources: dict[str, object] = {}
    rm_acc: dict[str, dict[str, float]] = {}
    for name in ("bt", args.best):
        t = time.time()
        graphdef, (best, _, _) = train_method(name, data, seeds, args.rm_steps, 64, 2e-3, 100, clip=1.0)
        m = evaluate(graphdef, best, data, data_np, len(seeds), "val")
        rm_acc[name] = {k: round(float(m[f"acc_{k}"].mean()), 4) for k in ("iid", "balanced", "reversed")}
        sources[name] = (graphdef, best)
        print(f"rm {name}: gold-label accuracy {rm_acc[name]} ({time.time() - t:.0f}s)", flush=True)

    results: dict[str, dict[str, np.ndarray]] = {}
    rl_settings = dict(task=args.task, n_prompts=args.prompts, group=args.group, lr=args.rl_lr)
    for source in ("bt", args.best, "gold"):
        finals = {k: [] for k in ("gold", "sure", "agree", "fill")}
        curves = []
        if source == "gold":
            step, tx = make_rl_step(lambda _, tok: describe(tok, args.task)["gold"], **rl_settings)
        else:
            graphdef, best = sources[source]
            step, tx = make_rl_step(lambda p, tok, g=graphdef: nnx.merge(g, p)(tok)["reward"], **rl_settings)
        for s in seeds:
            t = time.time()
            reward_params = jnp.zeros(()) if source == "gold" else jax.tree.map(lambda x, s=s: x[s], best)
            hist = rl_run(step, tx, int(s), args.rl_steps, reward_params)
            tail = max(1, args.rl_steps // 5)
            for k in finals:
                finals[k].append(float(hist[k][-tail:].mean()))
            curves.append(hist["gold"])
            print(
                f"rl with {source:22s} seed {s}: gold {finals['gold'][-1]:.3f} sure {finals['sure'][-1]:.2f} "
                f"agree {finals['agree'][-1]:.2f} fill {finals['fill'][-1]:.1f} ({time.time() - t:.0f}s, "
                f"total {time.time() - t0:.0f}s)",
                flush=True,
            )
        results[source] = {k: np.array(v) for k, v in finals.items()}
        results[source]["curve"] = np.mean(curves, 0)

    def ms(v):
        return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0:.3f}"

    lines = [
        "| reward | gold reached | SURE rate | agrees with user | filler length |",
        "|---|---|---|---|---|",
    ]
    for source, r in results.items():
        lines.append(
            f"| {source} | " + " | ".join(ms(r[k]) for k in ("gold", "sure", "agree", "fill")) + " |"
        )
    print("\n" + "\n".join(lines) + "\n")
    png = os.path.join(args.out, "rm_rl.png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for source, r in results.items():
            ax.plot(r["curve"], label=source)
        ax.set_xlabel("GRPO step")
        ax.set_ylabel("gold reward (fraction correct)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
    except ImportError:
        png = None
    n = len(seeds)
    summary = {
        "seeds": n,
        "task": args.task,
        "rl_steps": args.rl_steps,
        "seconds": round(time.time() - t0, 1),
        "png": png,
        "rm_accuracy": rm_acc,
        # The reference point: what the same policy reaches when its reward is the gold rule itself.
        "gold_reached_ratio_vs_gold_reward": {
            k: round(float(v["gold"].mean() / max(results["gold"]["gold"].mean(), 1e-9)), 4)
            for k, v in results.items()
        },
    }
    for key in ("gold", "sure", "agree", "fill"):
        summary[key] = {k: round(float(v[key].mean()), 4) for k, v in results.items()}
        summary[key + "_se"] = {
            k: round(float(v[key].std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0, 4) for k, v in results.items()
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
