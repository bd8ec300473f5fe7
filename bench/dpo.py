"""DPO from SFT against two baselines at equal compute (more SFT, RFT): held-out success over seeds, any env.

  python bench/dpo.py                                   # ShopSimulator (the quickstart) seeds 0 1 2 -> runs/bench_dpo
  python bench/dpo.py --seeds 5 --sft-steps 800 --eval-tasks 200      # the quickstart's SFT stage in full
  python bench/dpo.py --config configs/rl.py:smollm2 --out runs/bench_dpo_smollm2    # a real model, arithmetic

`--config`: the quickstart (its `rl` section) or any rl config (configs/rl.py:PRESET). Per seed (the seed
changes the world, the model's init and every sample):
  1. SFT: the config's SFT stage (`--sft-steps` of it; 0: the config's) -> the starting policy (a finished SFT
     stage just loads)
  2. pairs: the SFT policy samples `--samples` episodes (`--temperature`, 0.7) of each of `--train-tasks` tasks
     SFT never saw (ShopSimulator: the world's "rl" products; a seeded env: task seeds from 2,000,000); success vs
     failure of the same task -> preference pairs (`alejax.rl.dpo.pairs_from_records`), at most one per task
  3. DPO (`--loss`, beta) from SFT: `--steps` updates of `--pairs-per-step` pairs (2 sequences each)
  4. the baselines in the same run, each the same `--steps` updates of the next-token loss on as many rows per
     step (2 x pairs-per-step, the pairs' width) with the same optimizer: `sft_more`, SFT continued on its own
     expert data, and `rft`, SFT continued on the pairs' chosen (successful) episodes; equal train compute
     (DPO also pays one reference forward over its pairs, reported)
  5. greedy held-out success (ShopSimulator: the "eval" products; a seeded env: task seeds from 1,000,000 as in
     bench/real_rl.py), `--eval-tasks` tasks, of the start, both baselines and DPO

Prints a table (mean ± SE over seeds, and DPO − each arm paired over each seed's tasks) and ends with one JSON
line: sft_success (the `sft_more` baseline), dpo_success, dpo_over_sft (their difference, mean and SE over
seeds), rft_success, dpo_over_rft, start_success (SFT before any), seeds, and per-seed numbers.
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
from alejax.data.episodes import sft_rows  # noqa: E402
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
from alejax.train.metrics import Progress  # noqa: E402
from alejax.train.sft import sft_episodes, train_sft  # noqa: E402
from alejax.train.state import init_train_state, make_optimizer  # noqa: E402
from alejax.train.step import make_logprob_fn, make_train_step, next_token_loss  # noqa: E402


def train(model_config, params, mesh, loss_fn, arrays, *, rows_per_step, steps, lr, seed, label):
    """`steps` updates of `loss_fn` from `params` on batches of `rows_per_step` rows of `arrays` (the one
    loop both arms run); returns (graphdef, state, seconds, last metrics)."""
    tx = make_optimizer(lr, warmup_steps=1, total_steps=steps, weight_decay=0.0, schedule="constant")
    graphdef, state, shardings = init_train_state(model_config, tx, mesh, seed=seed)
    state = state.with_model_params(params, shardings)
    step = make_train_step(graphdef, tx, shardings, mesh, loss_fn)
    batches = iter(batched_rows(arrays, rows_per_step, seed=seed))
    t0, metrics, progress = time.time(), {}, Progress(steps, every_s=30.0, label=label)
    for i in range(steps):
        state, metrics = step(state, next(batches))
        progress.update(i + 1, {"loss": float(metrics["loss"])})  # (float(): waits for the step)
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


ARMS = ("start", "sft_more", "rft", "dpo")  # held-out arms; the baselines are the middle two
TRAIN_TASKS, HELD_OUT = 2_000_000, 1_000_000  # task seeds of a seeded env: SFT plays 0.., these never


def load_rl(config_path: str, seed: int, workdir: str):
    """The rl config of `config_path` (a quickstart's `rl` section, or an rl config itself), its seed and
    workdir set at the top so that every reference to them (the world, the SFT stage) follows."""
    config = load_config_file(config_path if os.path.isabs(config_path) else os.path.join(ROOT, config_path))
    config.seed, config.workdir = seed, workdir
    return config.rl if config.job == "quickstart" else config


def task_sets(rl, n_train: int, n_eval: int) -> dict[str, tuple[dict, list[int]]]:
    """{"train" | "eval": (env kwargs, task seeds)}: a world with product splits (ShopSimulator) holds tasks
    out by split, any other env by task seed ranges SFT never plays."""
    kwargs = rl.env.kwargs.to_dict()
    if "split" in kwargs:
        return {
            "train": ({**kwargs, "split": "rl"}, list(range(n_train))),
            "eval": ({**kwargs, "split": "eval"}, list(range(n_eval))),
        }
    return {
        "train": (kwargs, list(range(TRAIN_TASKS, TRAIN_TASKS + n_train))),
        "eval": (kwargs, list(range(HELD_OUT, HELD_OUT + n_eval))),
    }


def run_seed(seed: int, args, out: str) -> dict:
    done = os.path.join(out, f"seed{seed}", "result.json")
    if os.path.exists(done):
        print(f"seed {seed}: finished earlier, reading {done}", flush=True)
        return json.load(open(done))
    t_seed = time.time()
    workdir = os.path.join(out, f"seed{seed}")
    rl = load_rl(args.config, seed, workdir)
    sft = rl.sft
    if args.sft_steps:
        sft.steps = args.sft_steps
        sft.checkpoint_every = max(sft.steps // 2, 1)
    graphdef, params, tokenizer, _ = train_sft(sft)
    model_config = nnx.merge(graphdef, params).config
    mesh = make_mesh(sft.mesh.to_dict())
    env_name = sft.env.name
    system_prompt = system_prompt_of(sft.env, make(env_name, **sft.env.kwargs.to_dict()))
    rollout = from_section(RolloutConfig, rl.rollout)

    tasks = task_sets(rl, args.train_tasks, args.eval_tasks)

    def play(policy_params, which: str, k: int, sampling: SamplingConfig, name: str):
        kwargs, seeds = tasks[which]
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
                batch_size=min(args.batch_size, len(seeds) * k),
                mesh=mesh,
                seed=seed,
                env_pool=pool,
                name=name,
            ), kwargs

    # 2. The SFT policy's own samples on unseen train tasks -> success/failure pairs.
    t0 = time.time()
    samples_path = os.path.join(workdir, "samples.jsonl")  # kept: a rerun pairs the same episodes
    if os.path.exists(samples_path):
        records = read_records(samples_path)
    else:
        sampled, kwargs = play(
            params, "train", args.samples, SamplingConfig(temperature=args.temperature), "samples"
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
        model_config,
        params,
        mesh,
        make_dpo_loss(dpo),
        arrays,
        rows_per_step=args.pairs_per_step,
        label=f"seed {seed} dpo",
        **common,
    )
    # 4. The baselines, each the same steps and rows per step (2 per DPO pair) of the next-token loss:
    #    SFT continued on its own (expert) data, and RFT: SFT continued on the pairs' chosen episodes.
    chats, tools, _ = sft_episodes(sft, tokenizer)
    sft_data, _ = sft_rows(tokenizer, chats, width, tools)
    rft_data = chosen_rows(tokenizer, pairs, width)
    baselines, train_s = {}, {"dpo": dpo_s}
    for name, rows in (("sft_more", sft_data), ("rft", rft_data)):
        repeats = -(-2 * args.pairs_per_step // len(rows["tokens"]))  # fewer rows than one batch: repeat
        rows = {k: np.concatenate([v] * repeats) for k, v in rows.items()}
        _, state, train_s[name], _ = train(
            model_config,
            params,
            mesh,
            next_token_loss,
            rows,
            rows_per_step=2 * args.pairs_per_step,
            label=f"seed {seed} {name}",
            **common,
        )
        baselines[name] = state.model_params()

    # 5. Greedy held-out success of the four policies on the same tasks.
    greedy = SamplingConfig(temperature=0.0)
    per_task = {}
    for name, policy in (("start", params), *baselines.items(), ("dpo", dpo_state.model_params())):
        ev, _ = play(policy, "eval", 1, greedy, name)
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
        **{f"dpo_over_{name}": paired_difference(per_task[name], per_task["dpo"]) for name in ARMS[:-1]},
        "seconds": {
            "sample": sample_s,
            "reference": reference_s,
            **{f"{k}_train": v for k, v in train_s.items()},
        },
        "seed_wall_s": time.time() - t_seed,
        "per_task": per_task,
    }
    os.makedirs(os.path.dirname(done), exist_ok=True)
    json.dump(result, open(done, "w"), indent=1)
    s = result["success"]
    print(
        f"seed {seed}: held-out success "
        + ", ".join(f"{name} {s[name]:.3f}" for name in ARMS)
        + "; dpo - "
        + ", ".join(
            f"{name} {result[f'dpo_over_{name}']['mean_difference']:+.3f} (SE {result[f'dpo_over_{name}']['se']:.3f})"
            for name in ("sft_more", "rft")
        )
        + "; train s "
        + " ".join(f"{k} {v:.0f}" for k, v in train_s.items())
        + f" (+ reference {reference_s:.0f}); seed {result['seed_wall_s']:.0f}s",
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
    p.add_argument("--config", default="configs/quickstart.py", help="a quickstart or rl config[:preset]")
    p.add_argument("--sft-steps", type=int, default=400, help="0: the config's")
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
    table = {name: mean_se([r["success"][name] for r in results]) for name in ARMS}
    diffs = {name: mean_se([r[f"dpo_over_{name}"]["mean_difference"] for r in results]) for name in ARMS[:-1]}
    print(f"\nheld-out greedy success, {args.eval_tasks} tasks x {args.seeds} seeds (mean ± SE over seeds):")
    for name, (m, se) in table.items():
        print(f"  {name:9s} {100 * m:5.1f}%" + (f" ± {100 * se:.1f}" if se is not None else ""))
    for name, (m, se) in diffs.items():
        per_seed = " ".join(
            f"{100 * r[f'dpo_over_{name}']['mean_difference']:+.1f}±{100 * r[f'dpo_over_{name}']['se']:.1f}"
            for r in results
        )
        spread = f" ± {100 * se:.1f}" if se is not None else ""
        print(f"  dpo - {name}: {100 * m:+.1f}{spread} points (paired per seed: {per_seed})")
    summary = {
        "sft_success": table["sft_more"][0],
        "sft_success_se": table["sft_more"][1],
        "dpo_success": table["dpo"][0],
        "dpo_success_se": table["dpo"][1],
        "dpo_over_sft": diffs["sft_more"][0],
        "dpo_over_sft_se": diffs["sft_more"][1],
        "rft_success": table["rft"][0],
        "dpo_over_rft": diffs["rft"][0],
        "dpo_over_rft_se": diffs["rft"][1],
        "start_success": table["start"][0],
        "seeds": args.seeds,
        "baseline": "sft_success: SFT continued on its own data, equal steps and rows per step "
        "(rft_success: on the pairs' chosen episodes)",
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
