"""DPO from SFT against SFT continuation at equal compute: held-out ShopSimulator success over seeds.

  python bench/dpo.py                                   # seeds 0 1 2 -> runs/bench_dpo
  python bench/dpo.py --seeds 5 --sft-steps 800 --eval-tasks 200      # the quickstart's SFT stage in full

Per seed (the seed changes the world, the model's init and every sample):
  1. SFT: the quickstart's SFT stage (configs/quickstart.py `rl.sft`; `--sft-steps` of it), on the world's
     "sft" products -> the starting policy (a finished SFT stage just loads)
  2. pairs: the SFT policy samples `--samples` episodes (`--temperature`, 0.7) of each of `--train-tasks` tasks on
     the "rl" products (never seen by SFT); success vs failure of the same task -> preference pairs
     (`alejax.rl.dpo.pairs_from_records`), at most one per task
  3. DPO (`--loss`, beta) from SFT: `--steps` updates of `--pairs-per-step` pairs (2 sequences each)
  4. the baseline in the same run, SFT continuation: the same `--steps` updates of the next-token loss on
     as many rows per step (2 x pairs-per-step), drawn from the same pairs' chosen (successful) episodes, the
     same optimizer; equal train compute (DPO also pays one reference forward over its pairs, reported)
  5. greedy held-out success ("eval" products, `--eval-tasks` tasks) of SFT, SFT continuation and DPO

Prints a table (mean ± SE over seeds, and DPO − SFT-continuation paired over each seed's tasks) and ends with
one JSON line: sft_success (the SFT-continuation baseline), dpo_success, dpo_over_sft (their difference,
mean and SE over seeds), start_success (SFT before either), seeds, and per-seed numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import jax
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from alejax.config import from_section, load_config_file, system_prompt_of  # noqa: E402
from alejax.data.batches import batched_rows  # noqa: E402
from alejax.data.datasets import chat_tokens  # noqa: E402
from alejax.data.records import read_records, record_from_trajectory, write_records  # noqa: E402
from alejax.envs.base import make  # noqa: E402
from alejax.envs.pools import env_pool_from_config  # noqa: E402
from alejax.parallel.mesh import make_mesh  # noqa: E402
from alejax.parallel.placement import reshard  # noqa: E402
from alejax.parallel.rules import state_shardings  # noqa: E402
from alejax.rl.dpo import (  # noqa: E402
    DPOConfig,
    make_dpo_loss,
    pairs_from_records,
    preference_arrays,
    with_reference_logprobs,
)
from alejax.rollout.evaluate import evaluate  # noqa: E402
from alejax.rollout.sampler import SamplingConfig  # noqa: E402
from alejax.rollout.scheduler import RolloutConfig  # noqa: E402
from alejax.stats import paired_difference, standard_error  # noqa: E402
from alejax.train.sft import train_sft  # noqa: E402
from alejax.train.state import init_train_state, make_optimizer  # noqa: E402
from alejax.train.step import make_logprob_fn, make_train_step, next_token_loss  # noqa: E402


def train(model_config, params, mesh, loss_fn, arrays, *, rows_per_step, steps, lr, seed):
    """`steps` updates of `loss_fn` from `params` on batches of `rows_per_step` rows of `arrays` (the one
    loop both arms run); returns (graphdef, state, seconds, last metrics)."""
    tx = make_optimizer(lr, warmup_steps=1, total_steps=steps, weight_decay=0.0, schedule="constant")
    graphdef, state, shardings = init_train_state(model_config, tx, mesh, seed=seed)
    state = state.with_model_params(params, shardings)
    step = make_train_step(graphdef, tx, shardings, mesh, loss_fn)
    batches = iter(batched_rows(arrays, rows_per_step, seed=seed))
    t0, metrics = time.time(), {}
    for _ in range(steps):
        state, metrics = step(state, next(batches))
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return graphdef, state, time.time() - t0, metrics


def chosen_rows(tokenizer, pairs, width: int) -> dict[str, np.ndarray]:
    """Next-token rows of the pairs' chosen sides (loss on their response turns), padded to `width`."""
    tokens = np.zeros((len(pairs), width), np.int32)
    mask = np.zeros((len(pairs), width), np.float32)
    segments = np.zeros((len(pairs), width), np.int32)
    for i, pair in enumerate(pairs):
        t, w = chat_tokens(tokenizer, pair.side("chosen"), pair.tools)
        t, w = t[:width], w[:width]
        tokens[i, : len(t)], mask[i, : len(t)], segments[i, : len(t)] = t, w, 1
    return {"tokens": tokens, "loss_mask": mask, "segment_ids": segments}


def run_seed(seed: int, args, out: str) -> dict:
    done = os.path.join(out, f"seed{seed}", "result.json")
    if os.path.exists(done):
        print(f"seed {seed}: finished earlier, reading {done}", flush=True)
        return json.load(open(done))
    t_seed = time.time()
    config = load_config_file(os.path.join(ROOT, "configs", "quickstart.py"))
    config.seed = seed
    config.workdir = os.path.join(out, f"seed{seed}")
    sft, rl = config.rl.sft, config.rl
    sft.steps = args.sft_steps
    sft.checkpoint_every = max(sft.steps // 2, 1)
    graphdef, params, tokenizer, _ = train_sft(sft)
    model_config = nnx.merge(graphdef, params).config
    mesh = make_mesh(sft.mesh.to_dict())
    env_name = sft.env.name
    system_prompt = system_prompt_of(sft.env, make(env_name, **sft.env.kwargs.to_dict()))
    rollout = from_section(RolloutConfig, rl.rollout)

    def play(policy_params, split: str, seeds, k: int, sampling: SamplingConfig, name: str):
        kwargs = {**rl.env.kwargs.to_dict(), "split": split}
        with contextlib.closing(env_pool_from_config(rl.env_pool, env_name, kwargs)) as pool:
            return evaluate(
                graphdef,
                reshard(policy_params, state_shardings(policy_params, mesh)),
                tokenizer,
                None,
                seeds,
                k=k,
                sampling=sampling,
                system_prompt=system_prompt,
                rollout=rollout,
                max_length=rl.max_length,
                batch_size=args.batch_size,
                mesh=mesh,
                seed=seed,
                env_pool=pool,
                name=name,
            ), kwargs

    # 2. The SFT policy's own samples on unseen train tasks -> success/failure pairs.
    t0 = time.time()
    train_seeds = list(range(args.train_tasks))
    samples_path = os.path.join(config.workdir, "samples.jsonl")  # kept: a rerun pairs the same episodes
    if os.path.exists(samples_path):
        records = read_records(samples_path)
    else:
        sampled, kwargs = play(
            params, "rl", train_seeds, args.samples, SamplingConfig(temperature=args.temperature), "samples"
        )
        records = [
            record_from_trajectory(t, env=env_name, policy="sft", env_kwargs=kwargs, id=f"{t.task_seed}:{i}")
            for i, t in enumerate(sampled.all_trajectories())
        ]
        write_records(samples_path, records)
    pairs = pairs_from_records(records, max_pairs_per_task=1, seed=seed)
    sample_s = time.time() - t0
    sample_success = float(np.mean([r.is_success for r in records]))
    print(
        f"seed {seed}: {len(records)} sampled episodes (success {sample_success:.3f}) -> "
        f"{len(pairs)} pairs ({sample_s:.0f}s)",
        flush=True,
    )
    if len(pairs) < args.pairs_per_step:
        raise RuntimeError(
            f"seed {seed}: {len(pairs)} pairs, fewer than --pairs-per-step={args.pairs_per_step}"
        )

    # 3. DPO from SFT (the reference = the SFT policy).
    dpo = DPOConfig(loss=args.loss, beta=args.beta, nll_coef=args.nll_coef)
    arrays, stats = preference_arrays(tokenizer, pairs, rl.max_length)
    width = arrays["chosen_tokens"].shape[1]
    t0 = time.time()
    reference = reshard(params, state_shardings(params, mesh))  # the SFT policy, frozen
    arrays = with_reference_logprobs(
        make_logprob_fn(graphdef), reference, nnx.State({}), arrays, mesh, args.pairs_per_step
    )
    reference_s = time.time() - t0
    common = dict(steps=args.steps, lr=args.lr, seed=seed)
    _, dpo_state, dpo_s, dpo_last = train(
        model_config, params, mesh, make_dpo_loss(dpo), arrays, rows_per_step=args.pairs_per_step, **common
    )
    # 4. The baseline: SFT continuation on the chosen episodes, 2 rows per DPO pair, the same steps.
    rows = chosen_rows(tokenizer, pairs, width)
    repeats = -(-2 * args.pairs_per_step // len(pairs))  # fewer chosen episodes than one batch: repeat them
    rows = {k: np.concatenate([v] * repeats) for k, v in rows.items()}
    _, cont_state, cont_s, _ = train(
        model_config, params, mesh, next_token_loss, rows, rows_per_step=2 * args.pairs_per_step, **common
    )

    # 5. Greedy held-out success of the three policies on the same tasks.
    eval_seeds = list(range(args.eval_tasks))
    greedy = SamplingConfig(temperature=0.0)
    per_task = {}
    for name, policy in (
        ("start", params),
        ("sft_cont", cont_state.model_params()),
        ("dpo", dpo_state.model_params()),
    ):
        ev, _ = play(policy, "eval", eval_seeds, 1, greedy, name)
        per_task[name] = ev.per_task("success").tolist()
    result = {
        "seed": seed,
        "pairs": len(pairs),
        "sample_success": sample_success,
        "width": width,
        "truncated_sides": stats["truncated"],
        "dpo_train_accuracy": dpo_last.get("accuracy"),
        "dpo_train_margin": dpo_last.get("reward_margin"),
        "success": {k: float(np.mean(v)) for k, v in per_task.items()},
        "dpo_over_sft_cont": paired_difference(per_task["sft_cont"], per_task["dpo"]),
        "dpo_over_start": paired_difference(per_task["start"], per_task["dpo"]),
        "seconds": {
            "sample": sample_s,
            "reference": reference_s,
            "dpo_train": dpo_s,
            "sft_cont_train": cont_s,
        },
        "seed_wall_s": time.time() - t_seed,
        "per_task": per_task,
    }
    os.makedirs(os.path.dirname(done), exist_ok=True)
    json.dump(result, open(done, "w"), indent=1)
    s, g = result["success"], result["dpo_over_sft_cont"]
    print(
        f"seed {seed}: held-out success start {s['start']:.3f}, sft_cont {s['sft_cont']:.3f}, dpo {s['dpo']:.3f}; "
        f"dpo - sft_cont {g['mean_difference']:+.3f} (SE {g['se']:.3f}); train s: dpo {dpo_s:.0f} "
        f"sft_cont {cont_s:.0f} (+ reference {reference_s:.0f}); seed {result['seed_wall_s']:.0f}s",
        flush=True,
    )
    return result


def mean_se(values) -> tuple[float, float | None]:
    """Mean and standard error over seeds (None with one seed: the JSON line stays strict JSON)."""
    values = [float(v) for v in values]
    return float(np.mean(values)), standard_error(values) if len(values) > 1 else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_dpo"))
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--train-tasks", type=int, default=96)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.7, help="of the samples pairs are built from")
    p.add_argument("--eval-tasks", type=int, default=100)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--pairs-per-step", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--loss", default="dpo")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--nll-coef", type=float, default=1.0, help="α of --loss dpo_nll")
    p.add_argument("--batch-size", type=int, default=64, help="episodes decoded at once")
    args = p.parse_args(argv)
    t0 = time.time()
    results = [run_seed(seed, args, args.out) for seed in range(args.seeds)]
    table = {name: mean_se([r["success"][name] for r in results]) for name in ("start", "sft_cont", "dpo")}
    diffs = mean_se([r["dpo_over_sft_cont"]["mean_difference"] for r in results])
    print(f"\nheld-out greedy success, {args.eval_tasks} tasks x {args.seeds} seeds (mean ± SE over seeds):")
    for name, (m, se) in table.items():
        print(f"  {name:9s} {100 * m:5.1f}%" + (f" ± {100 * se:.1f}" if se is not None else ""))
    spread = f" ± {100 * diffs[1]:.1f}" if diffs[1] is not None else ""
    print(f"  dpo - sft_cont: {100 * diffs[0]:+.1f}{spread} points (paired per seed:", end="")
    print(
        " ".join(
            f"{100 * r['dpo_over_sft_cont']['mean_difference']:+.1f}±{100 * r['dpo_over_sft_cont']['se']:.1f}"
            for r in results
        )
        + ")"
    )
    summary = {
        "sft_success": table["sft_cont"][0],
        "sft_success_se": table["sft_cont"][1],
        "dpo_success": table["dpo"][0],
        "dpo_success_se": table["dpo"][1],
        "dpo_over_sft": diffs[0],
        "dpo_over_sft_se": diffs[1],
        "start_success": table["start"][0],
        "seeds": args.seeds,
        "baseline": "sft continuation on the chosen episodes, equal steps and rows per step",
        "per_seed": [
            {"seed": r["seed"], "pairs": r["pairs"], **{f"{k}_success": v for k, v in r["success"].items()}}
            for r in results
        ],
        "config": vars(args),
        "wall_s": time.time() - t0,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
