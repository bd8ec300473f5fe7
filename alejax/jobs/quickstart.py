"""The quickstart job (`job = "quickstart"`, configs/quickstart.py): one command from nothing to a trained
shopping agent, readable top to bottom.

  1. a ShopSimulator world (generated from the seed)
  2. scripted-expert episodes on its training tasks
  3. a BPE tokenizer trained on them
  4. SFT of a tiny policy (loss on its own turns)                  -> workdir/sft
  5. RL with IPA from the SFT weights                              -> workdir/rl
  6. greedy evaluation on held-out tasks of the untrained, SFT and SFT+RL policies
     -> workdir/results.{md,json}, workdir/quickstart.png

Each stage checkpoints; rerunning the same command loads finished stages and resumes RL where it stopped.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from ml_collections import ConfigDict

from alejax.config import from_section, model_config_from, system_prompt_of
from alejax.envs.base import make
from alejax.jobs.rl import train_loop
from alejax.parallel.mesh import make_mesh
from alejax.parallel.placement import reshard
from alejax.parallel.rules import state_shardings
from alejax.rl.build import build_pipeline
from alejax.rollout.evaluate import evaluate_policy
from alejax.rollout.scheduler import RolloutConfig
from alejax.train.metrics import read_metrics
from alejax.train.sft import train_sft
from alejax.train.state import init_train_state, make_optimizer

POLICIES = ("untrained", "sft", "sft_rl")
COLUMNS = (("success", "full success"), ("score/strict", "R_strict"), ("score/loose", "R_loose"))


def run(config: ConfigDict) -> dict:
    t_start = time.time()
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    wanted = [p.strip() for p in config.eval.policies.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(POLICIES))
    if unknown:
        raise ValueError(f"config.eval.policies names {unknown}; known: {', '.join(POLICIES)}")

    # 1-4. World, expert episodes, tokenizer and SFT (the sft job's stage; a finished SFT just loads).
    sft, rl = config.rl.sft, config.rl
    _stage(1, "ShopSimulator world + expert episodes + tokenizer + SFT", sft.workdir)
    graphdef, sft_params, tokenizer, _ = train_sft(sft)

    # 5. RL with IPA, starting from the SFT weights (or from its own last checkpoint on a rerun).
    _stage(2, f"RL ({rl.rl.loss.policy_loss}, {rl.steps} steps)", rl.workdir)
    pipeline = build_pipeline(rl, tokenizer, params=sft_params)
    train_loop(pipeline, rl, rl.workdir)  # closes the pipeline
    rl_params = pipeline.state.params

    # 6. Greedy episodes on held-out tasks, one per task, for each policy.
    _stage(3, f"evaluation on {config.eval.n_tasks} held-out tasks", workdir)
    mesh = make_mesh(sft.mesh.to_dict())
    params = {"sft": sft_params, "sft_rl": rl_params}
    if "untrained" in wanted:  # the same architecture at its initialization
        model_config = model_config_from(sft.model, tokenizer)
        params["untrained"] = init_train_state(model_config, make_optimizer(1e-3), mesh, seed=config.seed)[
            1
        ].params
    env = make(sft.env.name, **sft.env.kwargs.to_dict())
    system_prompt = system_prompt_of(sft.env, env)
    eval_kwargs = {**sft.env.kwargs.to_dict(), "split": "eval"}
    results = {}
    for name in wanted:
        cached = os.path.join(workdir, f"eval_{name}.json")
        if os.path.exists(cached) and name != "sft_rl":  # SFT+RL changes when RL resumes with more steps
            results[name] = json.load(open(cached))
            continue
        t0 = time.time()
        summary, _ = evaluate_policy(
            graphdef,
            reshard(params[name], state_shardings(params[name], mesh)),
            tokenizer,
            lambda: make(sft.env.name, **eval_kwargs),
            range(config.eval.n_tasks),
            system_prompt=system_prompt,
            rollout=from_section(RolloutConfig, rl.rollout),
            max_length=rl.max_length,
            batch_size=config.eval.batch_size,
            mesh=mesh,
            seed=config.seed,
        )
        for key, _ in COLUMNS:  # no episode bought anything (e.g. the untrained policy): every score is 0
            summary.setdefault(key, 0.0)
        results[name] = summary
        json.dump(summary, open(cached, "w"), indent=1)
        print(f"  {name}: success {summary['success']:.3f} ({time.time() - t0:.0f}s)", flush=True)

    table = results_table(results, config)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    wall = time.time() - t_start
    out = {"results": results, "wall_s": wall, "seed": config.seed}
    json.dump(out, open(os.path.join(workdir, "results.json"), "w"), indent=1)
    png = plot_quickstart(config, results, os.path.join(workdir, "quickstart.png"))
    print("\n" + table, flush=True)
    print(f"\ndone in {wall / 60:.1f} min; results {workdir}/results.md, plot {png}", flush=True)
    return out


def _stage(i: int, what: str, where: str) -> None:
    print(f"\n== [{i}/3] {what}  ({where})", flush=True)


def results_table(results: dict[str, dict], config: ConfigDict) -> str:
    n = config.eval.n_tasks
    lines = [
        f"Held-out ShopSimulator tasks ({config.env.name}, world seed {config.seed}, {n} tasks, greedy):",
        "",
        "| policy | " + " | ".join(label for _, label in COLUMNS) + " | turns |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, summary in results.items():
        cells = [f"{100 * summary.get(key, 0.0):.1f}%" for key, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary['turns']:.1f} |")
    return "\n".join(lines)


def plot_quickstart(config: ConfigDict, results: dict[str, dict], path: str) -> str:
    """SFT loss, RL reward and success per step, and the evaluation bars, in one PNG."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    sft_rows = _rows(os.path.join(config.rl.sft.workdir, "metrics.jsonl"))
    axes[0].plot([r["step"] for r in sft_rows if "loss" in r], [r["loss"] for r in sft_rows if "loss" in r])
    axes[0].set(title="SFT loss", xlabel="step", yscale="log")
    rl_rows = _rows(os.path.join(config.rl.workdir, "metrics.jsonl"))
    for key in ("reward", "success"):
        xs = [r["step"] for r in rl_rows if key in r]
        axes[1].plot(xs, [r[key] for r in rl_rows if key in r], label=key)
    axes[1].set(title="RL (training episodes)", xlabel="RL step")
    axes[1].legend()
    names = list(results)
    width = 0.8 / len(COLUMNS)
    for j, (key, label) in enumerate(COLUMNS):
        axes[2].bar(
            np.arange(len(names)) + j * width, [results[n].get(key, 0.0) for n in names], width, label=label
        )
    axes[2].set_xticks(np.arange(len(names)) + width, names)
    axes[2].set(title="held-out tasks", ylim=(0, 1))
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _rows(path: str) -> list[dict]:
    return read_metrics(path) if os.path.exists(path) else []
