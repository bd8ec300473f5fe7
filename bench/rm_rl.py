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
filler length). Last line: one JSON object.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import rm_robustness as rmb  # noqa: E402

from alejax.models.transformer import Transformer  # noqa: E402
from alejax.reward import toy  # noqa: E402
from alejax.rl.advantages import AdvantageConfig, get_advantage  # noqa: E402
from alejax.rl.losses import LossConfig as RLLossConfig  # noqa: E402
from alejax.rl.losses import LossInputs, rl_loss  # noqa: E402

PROMPT_LEN = 8  # BOS a + b = USER c ANS
RESP_LEN = toy.SEQ_LEN - PROMPT_LEN  # [SURE] d FILL*<=MAX_FILL EOS
DIGITS = jnp.arange(toy.DIGIT0, toy.DIGIT0 + 10)


def prompts(key: jax.Array, n: int) -> jax.Array:
    """[n, PROMPT_LEN] prompts a + b = USER c with a random belief c."""
    abc = jax.random.randint(key, (n, 3), 0, 10) + toy.DIGIT0
    col = lambda v: jnp.full((n,), v, jnp.int32)  # noqa: E731
    return jnp.stack(
        [
            col(toy.BOS),
            abc[:, 0],
            col(toy.PLUS),
            abc[:, 1],
            col(toy.EQ),
            col(toy.USER),
            abc[:, 2],
            col(toy.ANS),
        ],
        1,
    ).astype(jnp.int32)


def allowed_tokens(has_sure, has_digit, n_fill, done) -> jax.Array:
    """[B, V] grammar mask of the next response token."""
    v = jnp.arange(toy.VOCAB_SIZE)
    is_digit = (v >= toy.DIGIT0) & (v < toy.DIGIT0 + 10)
    first = (v == toy.SURE)[None] & ~has_sure[:, None] | is_digit[None]
    after_digit = (v == toy.EOS)[None] | ((v == toy.FILL)[None] & (n_fill < toy.MAX_FILL)[:, None])
    mask = jnp.where(has_digit[:, None], after_digit, first)
    return jnp.where(done[:, None], (v == toy.PAD)[None], mask)


def sample(model: Transformer, prompt: jax.Array, key: jax.Array):
    """(tokens [B, SEQ_LEN], masks [B, RESP_LEN, V], loss_mask [B, RESP_LEN]): grammar-constrained sampling."""
    b = prompt.shape[0]
    tokens = jnp.concatenate([prompt, jnp.full((b, RESP_LEN), toy.PAD, jnp.int32)], 1)
    has_sure = has_digit = done = jnp.zeros((b,), bool)
    n_fill = jnp.zeros((b,), jnp.int32)
    masks, live = [], []
    for t in range(RESP_LEN):  # 10 full forwards of an 18-token sequence: cheaper than a cache at this size
        logits = model(tokens)[:, PROMPT_LEN + t - 1]
        allowed = allowed_tokens(has_sure, has_digit, n_fill, done)
        tok = jax.random.categorical(jax.random.fold_in(key, t), jnp.where(allowed, logits, -1e9))
        masks.append(allowed)
        live.append(~done)
        tokens = tokens.at[:, PROMPT_LEN + t].set(tok)
        has_sure |= tok == toy.SURE
        has_digit |= (tok >= toy.DIGIT0) & (tok < toy.DIGIT0 + 10)
        n_fill += (tok == toy.FILL).astype(jnp.int32)
        done |= tok == toy.EOS
    return tokens, jnp.stack(masks, 1), jnp.stack(live, 1).astype(jnp.float32)


def response_logp(model: Transformer, tokens: jax.Array, masks: jax.Array) -> jax.Array:
    """[B, RESP_LEN] log-probs of the response tokens under the grammar-masked policy."""
    logits = model(tokens)[:, PROMPT_LEN - 1 : -1]
    logp = jax.nn.log_softmax(jnp.where(masks, logits, -1e9), axis=-1)
    return jnp.take_along_axis(logp, tokens[:, PROMPT_LEN:, None], axis=-1)[..., 0]


def describe(tokens: jax.Array, task: str) -> dict[str, jax.Array]:
    """Per sample: gold (correct answer), sure, agree (answer = the user's belief), fill length."""
    a, b, belief = tokens[:, 1] - toy.DIGIT0, tokens[:, 3] - toy.DIGIT0, tokens[:, 6] - toy.DIGIT0
    resp = tokens[:, PROMPT_LEN:]
    is_digit = (resp >= toy.DIGIT0) & (resp < toy.DIGIT0 + 10)
    answer = jnp.sum(jnp.where(is_digit, resp - toy.DIGIT0, 0), 1)
    target = {"sum": (a + b) % 10, "max": jnp.maximum(a, b), "copy": a}[task]
    return {
        "gold": (answer == target).astype(jnp.float32),
        "sure": (resp[:, 0] == toy.SURE).astype(jnp.float32),
        "agree": (answer == belief).astype(jnp.float32),
        "fill": jnp.sum(resp == toy.FILL, 1).astype(jnp.float32),
    }


def make_rl_step(reward_fn, args):
    """The jit'd GRPO step for one reward source; reward_fn(reward_params, tokens [N, SEQ_LEN]) -> [N]. Compiled
    once per source: the seeds' policies and reward models are arguments."""
    graphdef = nnx.graphdef(Transformer(rmb.TIER_B_MODEL, rngs=nnx.Rngs(0)))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.rl_lr))
    adv_fn, adv_cfg = get_advantage("grpo"), AdvantageConfig()
    loss_cfg = RLLossConfig(policy_loss="ppo_clip", aggregation="token_mean")
    group_id = jnp.repeat(jnp.arange(args.prompts), args.group)

    @jax.jit
    def step(params, opt_state, key, scale, reward_params):
        k_prompt, k_sample = jax.random.split(key)
        prompt = jnp.repeat(prompts(k_prompt, args.prompts), args.group, axis=0)
        tokens, masks, live = sample(nnx.merge(graphdef, params), prompt, k_sample)
        stats = describe(tokens, args.task)
        raw = reward_fn(reward_params, tokens)
        reward = (raw - scale[0]) / scale[1]
        batch = {
            "reward": reward,
            "group_id": group_id,
            "loss_mask": live,
            "chunk_id": live.astype(jnp.int32),
        }
        advantages, _ = adv_fn(batch, adv_cfg)

        def loss(params):
            logp = response_logp(nnx.merge(graphdef, params), tokens, masks)
            old = jax.lax.stop_gradient(logp)  # one on-policy update: pi_old = mu = pi_theta
            inputs = LossInputs(logp, old, old, advantages, live, batch["chunk_id"], reward)
            return rl_loss(inputs, loss_cfg)[0]

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, stats, raw

    return step, tx


def rl_run(step, tx, seed: int, args, reward_params) -> dict[str, np.ndarray]:
    """One GRPO run of a fresh policy; per-step means of the sample stats."""
    params = nnx.state(Transformer(rmb.TIER_B_MODEL, rngs=nnx.Rngs(100 + seed)))
    opt_state = tx.init(params)
    key = jax.random.key(seed)
    # Normalise the source's scale once, on samples of the initial policy (as the reward worker does).
    _, _, _, raw = step(
        params, opt_state, jax.random.fold_in(key, 1_000_000), jnp.array([0.0, 1.0]), reward_params
    )
    scale = jnp.array([float(raw.mean()), float(raw.std()) + 1e-6])
    history = {k: [] for k in ("gold", "sure", "agree", "fill")}
    for i in range(args.rl_steps):
        params, opt_state, stats, _ = step(
            params, opt_state, jax.random.fold_in(key, i), scale, reward_params
        )
        for k in history:
            history[k].append(float(stats[k].mean()))
        if (i + 1) % 50 == 0:
            print(f"  step {i + 1}/{args.rl_steps}: gold {history['gold'][-1]:.3f}", flush=True)
    return {k: np.array(v) for k, v in history.items()}


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
    if args.best not in rmb.METHODS:
        raise SystemExit(f"--best {args.best!r}: not one of {list(rmb.METHODS)}")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    seeds = np.arange(args.seeds)
    per_seed = [rmb.make_token_data(int(s), args.n_train, 1000, args.task, args.label_noise) for s in seeds]
    data_np = {k: np.stack([d[k] for d in per_seed]) for k in per_seed[0]}
    data = {k: jnp.asarray(v) for k, v in data_np.items()}

    sources: dict[str, object] = {}
    rm_acc: dict[str, dict[str, float]] = {}
    for name in ("bt", args.best):
        t = time.time()
        graphdef, (best, _, _) = rmb.train_method(name, data, seeds, args.rm_steps, 64, 2e-3, 100, clip=1.0)
        m = rmb._evaluate(graphdef, best, data, data_np, len(seeds), "val")
        rm_acc[name] = {k: round(float(m[f"acc_{k}"].mean()), 4) for k in ("iid", "balanced", "reversed")}
        sources[name] = (graphdef, best)
        print(f"rm {name}: gold-label accuracy {rm_acc[name]} ({time.time() - t:.0f}s)", flush=True)

    results: dict[str, dict[str, np.ndarray]] = {}
    for source in ("bt", args.best, "gold"):
        finals = {k: [] for k in ("gold", "sure", "agree", "fill")}
        curves = []
        if source == "gold":
            step, tx = make_rl_step(lambda _, tok: describe(tok, args.task)["gold"], args)
        else:
            graphdef, best = sources[source]
            step, tx = make_rl_step(lambda p, tok, g=graphdef: nnx.merge(g, p)(tok)["reward"], args)
        for s in seeds:
            t = time.time()
            reward_params = jnp.zeros(()) if source == "gold" else jax.tree.map(lambda x, s=s: x[s], best)
            hist = rl_run(step, tx, int(s), args, reward_params)
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
