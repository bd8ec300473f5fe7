"""IPA (chunk loss + chunk-initialized resampling) against token-level GRPO on the key-and-door env.

  python bench/ipa_vs_grpo.py                      # 3 seeds x 2 methods: ~10 min on 2 idle CPU cores
  python bench/ipa_vs_grpo.py --workers=3          # seeds in parallel processes (a many-core machine)
  python bench/ipa_vs_grpo.py --seeds=1 --steps=4  # a smoke run

Per seed: one tiny policy, briefly SFT'd on a few teacher episodes (it learns the format, not the task),
then two RL runs from the same weights at equal sample budgets (same tasks, same episodes per step, same
per-turn and per-episode token caps; IPA's replayed prefix tokens are not sampled, so IPA generates
fewer tokens): token-level GRPO (grpo advantages, ppo_clip) and IPA (ipa_chunk loss, parallel anchors over
the teacher's expert trajectory, imitation fallback). Both make one optimizer update per step on the
whole step's batch, so the logged grad_norm is per update. Success is measured on held-out task seeds,
sampled (temperature 1) from the reset, before RL (the SFT baseline) and after. The gradient-norm spread
is max/min of the pre-clip gradient norm over the updates with a nonzero gradient (a GRPO batch whose
groups all share one reward has exactly zero gradient; those are counted in `*_zero_grad_updates`);
a run with fewer than two such updates has no spread (null), and the means skip it.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np
from ml_collections import ConfigDict

from alejax.config import load_config_file, section_of
from alejax.rl.build import build_pipeline
from alejax.rl.pipeline import group_requests
from alejax.rollout import RolloutConfig
from alejax.train.sft import train_sft

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "rl.py")

ENV = "keydoor/corridor"
TRAIN_TASKS = range(0, 10_000)  # RL tasks are drawn from here (SFT's teacher episodes too)
HELD_OUT = range(100_000, 100_000 + 10_000)  # evaluation tasks: never trained on


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="RL steps per run")
    p.add_argument("--groups", type=int, default=4, help="tasks per RL step")
    p.add_argument("--group_size", type=int, default=4, help="episodes per task per step")
    p.add_argument("--n_rooms", type=int, default=5)
    p.add_argument("--max_turns", type=int, default=12)
    p.add_argument("--sft_steps", type=int, default=40)
    p.add_argument("--sft_episodes", type=int, default=16)
    p.add_argument("--sft_lr", type=float, default=1e-2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--eval_tasks", type=int, default=32)
    p.add_argument("--anchors", type=int, default=4, help="IPA: anchors per task (parallel initialization)")
    p.add_argument("--lambda_il", type=float, default=0.5)
    p.add_argument("--d_model", type=int, default=32)
    p.add_argument("--methods", default="grpo,ipa", help="comma list; 'grpo,ipa' adds the comparison keys")
    p.add_argument("--workers", type=int, default=1, help="seeds run in parallel processes")
    return p.parse_args(argv)


def bench_config(seed: int, method: str, args, workdir: str) -> ConfigDict:
    """configs/rl.py on the key-and-door corridor with this bench's sizes; `method` grpo or ipa."""
    c = load_config_file(f"{CONFIG}:keydoor")
    c.seed, c.workdir, c.steps = seed, workdir, 100
    c.env.kwargs.n_rooms = args.n_rooms  # update in place: the sft section shares env and model
    d = args.d_model
    c.model.update(
        dict(vocab_size=400, d_model=d, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=d // 4, mlp_dim=2 * d)
    )
    # A brief SFT on a few teacher episodes: the policy learns the action format, not the task.
    c.sft.steps, c.sft.data.n_episodes, c.sft.data.first_seed = args.sft_steps, args.sft_episodes, 1000 * seed
    c.sft.data.batch_size, c.sft.data.seq_len, c.sft.data.eval_fraction = 8, 512, 0.1
    c.sft.optim.learning_rate, c.sft.optim.warmup_steps = args.sft_lr, 2
    c.sft.log_every = c.sft.eval_every = c.sft.checkpoint_every = max(args.sft_steps, 1)
    c.rl.groups_per_step, c.rl.group_size = args.groups, args.group_size
    c.rl.minibatch_size = args.groups * args.group_size  # one update per step: grad_norm is per update
    c.rl.filter_zero_variance_groups = False  # same batch for both; a flat GRPO group has zero advantage
    if method == "ipa":
        c.rl.advantage, c.rl.loss.policy_loss = "chunk_discounted", "ipa_chunk"
        c.rl.resample.enabled, c.rl.resample.anchors_per_task = True, args.anchors
        c.rl.resample.lambda_il = args.lambda_il
    c.rollout = section_of(RolloutConfig, max_turns=args.max_turns, max_new_tokens_per_turn=3)
    c.max_length = 768
    c.optim.learning_rate, c.optim.weight_decay = args.lr, 0.1
    return c


def evaluate(pipeline, seed, args) -> float:
    """Success rate on held-out tasks, sampled from the reset (no prefix), one episode per task."""
    tasks = [HELD_OUT[(seed * 7919 + i) % len(HELD_OUT)] for i in range(args.eval_tasks)]
    trajectories, _ = pipeline.scheduler.collect(group_requests(tasks, 1))
    return float(np.mean([bool(t.info.get("success", False)) for t in trajectories]))


def run(method, params, tokenizer, seed, args, t0, workdir):
    pipeline = build_pipeline(bench_config(seed, method, args, workdir), tokenizer, params=params)
    before = evaluate(pipeline, seed, args)
    start = time.perf_counter()
    task_rng = np.random.default_rng(1000 + seed)  # same task sequence for both methods
    grad_norms, train_success, generated = [], [], []
    try:
        for step in range(args.steps):
            tasks = task_rng.choice(len(TRAIN_TASKS), args.groups, replace=False).tolist()
            metrics = pipeline.step(tasks)
            grad_norms.append(metrics.get("grad_norm", float("nan")))
            # IPA: success of the episodes that sampled something (full expert replays always succeed).
            train_success.append(metrics.get("resample_success_sampled", metrics["success"]))
            generated.append(metrics["generated_tokens"])
            if step % 3 == 2 or step == args.steps - 1:
                rate = (step + 1) / (time.perf_counter() - start)
                print(
                    f"  seed {seed} {method:4s} step {step + 1}/{args.steps}: train success "
                    f"{metrics['success']:.2f} grad_norm {grad_norms[-1]:.3g} ({rate:.2f} steps/s, "
                    f"ETA {(args.steps - step - 1) / rate:.0f}s, {time.perf_counter() - t0:.0f}s elapsed)",
                    flush=True,
                )
        after = evaluate(pipeline, seed, args)
    finally:
        pipeline.close()
    g = np.array(grad_norms, np.float64)
    nonzero = g[np.isfinite(g) & (g > 0)]
    return {
        "success_before": before,
        "success": after,
        "train_success": float(np.nanmean(train_success)),
        "grad_norm_max": float(nonzero.max()) if len(nonzero) else 0.0,
        "grad_norm_min": float(nonzero.min()) if len(nonzero) else 0.0,
        # A spread needs two updates that moved the weights; with fewer it is undefined (null), not 1.
        "gradnorm_spread": float(nonzero.max() / nonzero.min()) if len(nonzero) > 1 else float("nan"),
        "gradnorm_cv": float(nonzero.std() / nonzero.mean()) if len(nonzero) > 1 else float("nan"),
        "zero_grad_updates": int(len(g) - len(nonzero)),
        "generated_tokens_per_episode": float(np.mean(generated)),
    }


def run_seed(seed: int, args) -> dict:
    """SFT once, then each method from the SFT'd weights. Runs in its own process with --workers > 1."""
    t0 = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix=f"ipa_vs_grpo_{seed}_")
    c = bench_config(seed, "grpo", args, workdir)
    _, params, tokenizer, sft_last = train_sft(c.sft)  # the rl job's SFT stage, on one device
    params = jax.tree.map(np.asarray, params)
    sft_loss = float(sft_last.get("loss", float("nan")))
    print(f"seed {seed}: SFT loss {sft_loss:.3f} after {args.sft_steps} steps", flush=True)
    row = {"seed": seed, "sft_loss": sft_loss}
    for method in [m for m in args.methods.split(",") if m]:
        result = run(method, params, tokenizer, seed, args, t0, os.path.join(workdir, method))
        print(
            f"seed {seed} {method}: held-out success {result['success_before']:.2f} -> "
            f"{result['success']:.2f}, gradnorm max/min {result['gradnorm_spread']:.3g} "
            f"({result['grad_norm_min']:.3g}..{result['grad_norm_max']:.3g}), zero-grad updates "
            f"{result['zero_grad_updates']}",
            flush=True,
        )
        row[method] = result
    print("seed_result " + json.dumps(_finite(row)), flush=True)  # survives a run cut short later on
    return row


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    seeds = list(range(args.seeds))
    if args.workers > 1:
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a fresh JAX runtime per worker
        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            per_seed = list(pool.map(run_seed, seeds, [args] * len(seeds)))
    else:
        per_seed = [run_seed(seed, args) for seed in seeds]

    def mean(method, key):
        values = [r[method][key] for r in per_seed if r[method][key] is not None]
        return float(np.nanmean(values)) if values and not np.all(np.isnan(values)) else float("nan")

    summary = {
        "env": f"{ENV} n_rooms={args.n_rooms} max_turns={args.max_turns}",
        "seeds": args.seeds,
        "steps": args.steps,
        "episodes_per_step": args.groups * args.group_size,
        "sft_steps": args.sft_steps,
    }
    methods = args.methods.split(",")
    if methods == ["grpo", "ipa"]:
        summary.update(
            sft_success=mean("grpo", "success_before"),
            ipa_success=mean("ipa", "success"),
            grpo_success=mean("grpo", "success"),
            ipa_success_gain=mean("ipa", "success") - mean("ipa", "success_before"),
            grpo_success_gain=mean("grpo", "success") - mean("grpo", "success_before"),
            ipa_train_success=mean("ipa", "train_success"),
            grpo_train_success=mean("grpo", "train_success"),
            ipa_gradnorm_spread=mean("ipa", "gradnorm_spread"),
            grpo_gradnorm_spread=mean("grpo", "gradnorm_spread"),
            ipa_gradnorm_cv=mean("ipa", "gradnorm_cv"),
            grpo_gradnorm_cv=mean("grpo", "gradnorm_cv"),
            ipa_generated_tokens_per_episode=mean("ipa", "generated_tokens_per_episode"),
            grpo_generated_tokens_per_episode=mean("grpo", "generated_tokens_per_episode"),
            success_ratio_ipa_over_grpo=mean("ipa", "success") / max(mean("grpo", "success"), 1e-9),
        )
    summary.update(wall_s=time.perf_counter() - t0, per_seed=per_seed)
    print(json.dumps(_finite(summary)))


def _finite(x):
    """NaN (e.g. a spread with no nonzero update) becomes null, so the last line is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not np.isfinite(x) else x


if __name__ == "__main__":
    main()
