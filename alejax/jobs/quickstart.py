"""The quickstart job (`job = "quickstart"`, configs/quickstart.py): one command from nothing to a trained
shopping agent, readable top to bottom.

  1. a ShopSimulator world (generated from the seed)
  2. scripted-expert episodes on its training tasks
  3. a BPE tokenizer trained on them
  4. SFT of a tiny policy (loss on its own turns)                  -> workdir/sft
  5. RL with IPA from the SFT weights                              -> workdir/rl
  6. greedy evaluation on held-out tasks of the untrained, SFT and SFT+RL policies, per scenario when the env
     mixes them (`shop/mix`, the `four_scenarios` preset), with the paper's failure tags
     -> workdir/results.{md,json}, workdir/quickstart.png

Each stage checkpoints; rerunning the same command loads finished stages and resumes RL where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import numpy as np
from ml_collections import ConfigDict

from alejax.config import from_section, model_config_from, system_prompt_of
from alejax.envs.base import make
from alejax.envs.pools import env_pool_from_config
from alejax.envs.shop.metrics import FAILURE_TAGS, failure_rates
from alejax.envs.shop.pages import SCENARIOS
from alejax.jobs.rl import train_loop
from alejax.parallel.mesh import make_mesh
from alejax.parallel.placement import reshard
from alejax.parallel.rules import state_shardings
from alejax.rl.build import build_pipeline
from alejax.rollout.evaluate import evaluate
from alejax.rollout.scheduler import RolloutConfig
from alejax.stats import linear_trend, paired_difference
from alejax.train.metrics import read_metrics
from alejax.train.sft import train_sft
from alejax.train.state import init_train_state, make_optimizer

POLICIES = ("untrained", "sft", "sft_rl")
COLUMNS = (("success", "full success"), ("score/strict", "R_strict"), ("score/loose", "R_loose"))
TAG_LABELS = {
    "bought_without_checking_details": "no details",
    "bought_after_refusal": "after refusal",
    "persona_under_use": "persona under-use",
    "persona_over_reading": "persona over-reading",
}


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
        with contextlib.closing(env_pool_from_config(rl.env_pool, sft.env.name, eval_kwargs)) as pool:
            ev = evaluate(
                graphdef,
                reshard(params[name], state_shardings(params[name], mesh)),
                tokenizer,
                None,
                range(config.eval.n_tasks),
                system_prompt=system_prompt,
                rollout=from_section(RolloutConfig, rl.rollout),
                max_length=rl.max_length,
                batch_size=config.eval.batch_size,
                mesh=mesh,
                seed=config.seed,
                env_pool=pool,  # the RL stage's env_pool section: the same kind of pool as training
                name=name,
            )
        summary = ev.summary()
        # Per-task values (task i = held-out seed i) for the paired comparison; a metric no episode reported
        # (nothing bought, e.g. the untrained policy) is 0 everywhere.
        summary["per_task"] = {
            key: (ev.per_task(key) if key in ev.metrics else np.zeros(len(ev.task_seeds))).tolist()
            for key, _ in COLUMNS
        }
        for key, _ in COLUMNS:
            summary.setdefault(key, 0.0)
        # Per scenario (info["scenario"]; one group for a single-scenario env): the same means, and each
        # failure tag's share of the wrong purchases.
        summary["scenario_per_task"] = list(ev.groups)
        summary["failures"] = failure_rates([t.info for t in ev.all_trajectories()])
        summary["by_scenario"] = {
            group: {
                **{key: 0.0 for key, _ in COLUMNS},
                **stats,
                "failures": failure_rates(
                    [t.info for g, task in zip(ev.groups, ev.trajectories) if g == group for t in task]
                ),
            }
            for group, stats in ev.by_group().items()
        }
        results[name] = summary
        json.dump(summary, open(cached, "w"), indent=1)
        print(f"  {name}: success {summary['success']:.3f} ({time.time() - t0:.0f}s)", flush=True)

    gains = {  # SFT+RL over SFT on the same tasks
        key: paired_difference(results["sft"]["per_task"][key], results["sft_rl"]["per_task"][key])
        for key, _ in COLUMNS
        if "sft" in results and "sft_rl" in results
    }
    scenario_gains = scenario_paired_gains(results)
    rl_rows = [r for r in _rows(os.path.join(rl.workdir, "metrics.jsonl")) if "reward" in r]
    trend = (
        linear_trend([r["step"] for r in rl_rows], [r["reward"] for r in rl_rows])
        if len(rl_rows) >= 3
        else None
    )
    table = results_table(results, config, gains, trend, scenario_gains)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    wall = time.time() - t_start
    out = {
        "results": results,
        "wall_s": wall,
        "seed": config.seed,
        "rl_gain": gains,
        "rl_gain_by_scenario": scenario_gains,
        "rl_reward_trend": trend,
    }
    json.dump(out, open(os.path.join(workdir, "results.json"), "w"), indent=1)
    png = plot_quickstart(config, results, os.path.join(workdir, "quickstart.png"))
    print("\n" + table, flush=True)
    print(f"\ndone in {wall / 60:.1f} min; results {workdir}/results.md, plot {png}", flush=True)
    return out


def _stage(i: int, what: str, where: str) -> None:
    print(f"\n== [{i}/3] {what}  ({where})", flush=True)


def scenarios_of(results: dict[str, dict]) -> list[str]:
    """The scenarios the evaluation covered, in SCENARIOS order (others, e.g. "all", after)."""
    seen = {g for summary in results.values() for g in summary.get("by_scenario", {})}
    return [s for s in SCENARIOS if s in seen] + sorted(seen - set(SCENARIOS))


def scenario_paired_gains(results: dict[str, dict]) -> dict[str, dict]:
    """SFT+RL - SFT full success paired over each scenario's own held-out tasks ({} for one scenario)."""
    if "sft" not in results or "sft_rl" not in results or len(scenarios_of(results)) < 2:
        return {}
    groups = np.asarray(results["sft"].get("scenario_per_task", []))
    a, b = (np.asarray(results[n]["per_task"]["success"]) for n in ("sft", "sft_rl"))
    if groups.shape != a.shape:  # an evaluation cached by an older version of this job
        return {}
    return {s: paired_difference(a[groups == s], b[groups == s]) for s in scenarios_of(results)}


def _tag_applies(tag: str, scenario: str) -> bool:
    """Refusals happen only with a shopper, persona errors only with a persona."""
    kind = SCENARIOS.get(scenario)
    if kind is None or tag == "bought_without_checking_details":
        return True
    return kind.multi_turn if tag == "bought_after_refusal" else kind.persona


def results_table(
    results: dict[str, dict], config: ConfigDict, gains=None, trend=None, scenario_gains=None
) -> str:
    n = config.eval.n_tasks
    lines = [
        f"Held-out ShopSimulator tasks ({config.env.name}, world seed {config.seed}, {n} tasks, greedy; "
        "success with its 95% bootstrap interval over tasks):",
        "",
        "| policy | " + " | ".join(label for _, label in COLUMNS) + " | turns |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, summary in results.items():
        cells = [f"{100 * summary.get(key, 0.0):.1f}%" for key, _ in COLUMNS]
        if "success_ci_low" in summary:
            cells[0] += f" [{100 * summary['success_ci_low']:.1f}, {100 * summary['success_ci_high']:.1f}]"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary['turns']:.1f} |")
    if gains:
        lines += [
            "",
            f"SFT+RL - SFT, paired over the same {n} tasks (points; SE; 95% CI; tasks better/worse/tied):",
        ]
        for key, label in COLUMNS:
            g = gains[key]
            lines.append(
                f"- {label}: {100 * g['mean_difference']:+.1f} (SE {100 * g['se']:.1f}; "
                f"[{100 * g['ci_low']:+.1f}, {100 * g['ci_high']:+.1f}]; "
                f"{int(g['better'])}/{int(g['worse'])}/{int(g['tied'])})"
            )
    if trend:
        lines.append(
            f"\nRL training reward trend: {1e2 * trend['slope']:+.3f} per 100 steps "
            f"(95% CI [{1e2 * trend['ci_low']:+.3f}, {1e2 * trend['ci_high']:+.3f}], {int(trend['points'])} steps)"
        )
    return "\n".join(lines + scenario_lines(results, scenario_gains or {}))


def scenario_lines(results: dict[str, dict], scenario_gains: dict[str, dict]) -> list[str]:
    """The per-scenario block (when the env mixes scenarios) and the failure-tag table (always)."""
    scenarios = scenarios_of(results)
    lines = []
    if len(scenarios) > 1:
        lines += [
            "",
            "By scenario (the same episodes; success with its 95% bootstrap interval over the scenario's tasks):",
            "",
            "| scenario | policy | tasks | " + " | ".join(label for _, label in COLUMNS) + " | turns |",
            "|---|---|---|" + "---|" * (len(COLUMNS) + 1),
        ]
        for scenario in scenarios:
            for name, summary in results.items():
                s = summary.get("by_scenario", {}).get(scenario)
                if s is None:
                    continue
                cells = [f"{100 * s.get(key, 0.0):.1f}%" for key, _ in COLUMNS]
                cells[0] += f" [{100 * s['success_ci_low']:.1f}, {100 * s['success_ci_high']:.1f}]"
                lines.append(
                    f"| {scenario} | {name} | {int(s['tasks'])} | "
                    + " | ".join(cells)
                    + f" | {s['turns']:.1f} |"
                )
        if scenario_gains:
            lines += [
                "",
                "SFT+RL - SFT full success by scenario, paired over its tasks (points; SE; better/worse/tied):",
            ]
            for scenario, g in scenario_gains.items():
                lines.append(
                    f"- {scenario}: {100 * g['mean_difference']:+.1f} (SE {100 * g['se']:.1f}; "
                    f"{int(g['better'])}/{int(g['worse'])}/{int(g['tied'])} of {int(g['tasks'])} tasks)"
                )
    if not any("by_scenario" in summary for summary in results.values()):
        return lines
    lines += [
        "",
        "Failure tags, as a share of the wrong purchases (bought, not a full success; docs/shop.md defines them;"
        " -: cannot occur in the scenario, n/a: no wrong purchase):",
        "",
        "| scenario | policy | wrong purchases / episodes | "
        + " | ".join(TAG_LABELS[t] for t in FAILURE_TAGS)
        + " |",
        "|---|---|---|" + "---|" * len(FAILURE_TAGS),
    ]
    for scenario in scenarios:
        for name, summary in results.items():
            s = summary.get("by_scenario", {}).get(scenario)
            if s is None:
                continue
            f = s["failures"]
            cells = [
                "-"
                if not _tag_applies(t, scenario)
                else f"{100 * f[t]:.0f}%"
                if f["wrong_purchases"]
                else "n/a"
                for t in FAILURE_TAGS
            ]
            lines.append(
                f"| {scenario} | {name} | {int(f['wrong_purchases'])} / {int(f['episodes'])} | "
                + " | ".join(cells)
                + " |"
            )
    return lines


def plot_quickstart(config: ConfigDict, results: dict[str, dict], path: str) -> str:
    """SFT loss, RL reward and success per step, and the evaluation bars, in one PNG."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    scenarios = scenarios_of(results)
    mixed = len(scenarios) > 1
    fig = Figure(figsize=(20 if mixed else 15, 4))
    axes = fig.subplots(1, 4 if mixed else 3)
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
    if mixed:  # full success per scenario and policy, with its 95% interval
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            stats = [results[name].get("by_scenario", {}).get(s) for s in scenarios]
            mean = [s["success"] if s else 0.0 for s in stats]
            err = [
                [s["success"] - s["success_ci_low"] if s else 0.0 for s in stats],
                [s["success_ci_high"] - s["success"] if s else 0.0 for s in stats],
            ]
            axes[3].bar(np.arange(len(scenarios)) + j * width, mean, width, yerr=err, capsize=3, label=name)
        axes[3].set_xticks(np.arange(len(scenarios)) + width * (len(names) - 1) / 2, scenarios, fontsize=8)
        axes[3].set(title="full success by scenario (95% CI)", ylim=(0, 1))
        axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _rows(path: str) -> list[dict]:
    return read_metrics(path) if os.path.exists(path) else []
