"""Evaluate trained policies on held-out env tasks, any env: greedy or k sampled episodes per task through the
same scheduler as rollout, with intervals, pass@k / pass^k, per-group tables and paired comparisons.

    ev = evaluate(graphdef, params, tokenizer, env_factory, seeds, name="sft")            # greedy, 1 per task
    ev = evaluate(..., k=8, sampling=SamplingConfig(1.0), name="sft")                     # pass@k, pass^k
    ev.summary()        # means (+ success's 95% bootstrap interval, pass@j / pass^j for j <= k)
    ev.by_group()       # the same per group: info["scenario"] by default (ShopSimulator's four)
    compare(sft, rl)    # paired by task: mean gain, SE, interval, better / worse / tied tasks
    write_report([sft, rl], "workdir/eval", comparisons=[(sft, rl)])   # eval.json, eval.md, eval.png

Every episode's numbers are kept per task and trial ([tasks, k] arrays): reward, success, turns, truncation,
abortion, and each numeric field of a final `info["score"]` dict when the env scores episodes (ShopSimulator:
success, strict, loose). `evaluate_policy` is the one-call form the jobs use: (summary, trajectories).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import numpy as np
from flax import nnx

from alejax.data.tokenizer import Tokenizer
from alejax.envs.pools import EnvPool, ThreadEnvPool
from alejax.rollout.sampler import SamplingConfig
from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, build_rollout
from alejax.rollout.trajectory import Trajectory
from alejax.stats import bootstrap_ci, paired_difference, pass_at_k, pass_hat_k

GREEDY = SamplingConfig(temperature=0.0)


def episode_success(t: Trajectory) -> bool:
    """The env's own verdict (info["success"] or a score's success), else a positive reward."""
    if "success" in t.info:
        return bool(t.info["success"])
    score = t.info.get("score")
    if isinstance(score, dict) and "success" in score:
        return bool(score["success"])
    return t.reward > 0


def scenario_of(t: Trajectory) -> str:
    """The default grouping of tasks: the env's `info["scenario"]` when it reports one, else "all"."""
    return str(t.info.get("scenario", "all"))


@dataclasses.dataclass
class Evaluation:
    """One policy's episodes on a task set: `metrics[name]` is [tasks, k] (task i = task_seeds[i])."""

    name: str
    task_seeds: list[int]
    k: int
    sampling: SamplingConfig
    metrics: dict[str, np.ndarray]
    groups: list[str]  # per task
    trajectories: list[list[Trajectory]]  # [tasks][k]

    def per_task(self, metric: str = "success") -> np.ndarray:
        """The metric's mean over each task's k episodes: what paired comparisons and intervals run over."""
        return self.metrics[metric].mean(axis=1)

    def summary(self, tasks: Sequence[int] | None = None) -> dict[str, float]:
        """Means over episodes, success's 95% bootstrap interval over tasks, and pass@j / pass^j (j <= k)."""
        rows = np.arange(len(self.task_seeds)) if tasks is None else np.asarray(tasks, int)
        out = {"tasks": float(len(rows)), "episodes": float(len(rows) * self.k)}
        out.update({name: float(values[rows].mean()) for name, values in self.metrics.items()})
        _, out["success_ci_low"], out["success_ci_high"] = bootstrap_ci(self.per_task()[rows])
        successes = self.metrics["success"][rows].sum(axis=1).astype(int)
        for j in range(1, self.k + 1) if self.k > 1 else ():
            out[f"pass@{j}"] = float(np.mean([pass_at_k(self.k, int(c), j) for c in successes]))
            out[f"pass^{j}"] = float(np.mean([pass_hat_k(self.k, int(c), j) for c in successes]))
        return out

    def by_group(self) -> dict[str, dict[str, float]]:
        names = sorted(set(self.groups))
        return {g: self.summary([i for i, x in enumerate(self.groups) if x == g]) for g in names}

    def all_trajectories(self) -> list[Trajectory]:
        return [t for task in self.trajectories for t in task]


def evaluate(
    graphdef: nnx.GraphDef,
    params: Any,
    tokenizer: Tokenizer,
    env_factory: Callable[[], Any] | None,
    task_seeds: Sequence[int],
    *,
    k: int = 1,
    sampling: SamplingConfig = GREEDY,
    name: str = "policy",
    group_of: Callable[[Trajectory], str] = scenario_of,
    system_prompt: str = "",
    tools: list[dict] | None = None,
    rollout: RolloutConfig | None = None,
    max_length: int = 1024,
    batch_size: int = 32,
    mesh=None,
    seed: int = 0,
    pool_size: int = 8,
    env_pool: EnvPool | None = None,
) -> Evaluation:
    """Plays k episodes of every task seed with `params` and keeps them per task. Greedy (the default) wants
    k = 1 (its episodes would repeat); sampled episodes of one task differ by their keys only. The episodes
    run in `env_pool` (a job's configured pool; the caller closes it), else in a ThreadEnvPool of `pool_size`
    threads over `env_factory`."""
    if k < 1 or (k > 1 and sampling.temperature == 0):
        raise ValueError(f"k={k} episodes per task with temperature {sampling.temperature}: greedy wants k=1")
    if not len(task_seeds):
        raise ValueError("no task seeds to evaluate")
    owned = env_pool is None
    pool = ThreadEnvPool(env_factory, pool_size) if owned else env_pool
    requests = [EpisodeRequest(int(s), i) for i, s in enumerate(task_seeds) for _ in range(k)]
    try:
        scheduler = build_rollout(
            nnx.merge(graphdef, params),
            tokenizer,
            pool,
            batch_size=min(batch_size, len(requests)),
            max_length=max_length,
            sampling=sampling,
            rollout=rollout,
            system_prompt=system_prompt,
            tools=tools,
            mesh=mesh,
            seed=seed,
        )
        flat, _ = scheduler.collect(requests)
    finally:
        if owned:
            pool.close()
    per_task = [flat[i * k : (i + 1) * k] for i in range(len(task_seeds))]
    return Evaluation(
        name=name,
        task_seeds=[int(s) for s in task_seeds],
        k=k,
        sampling=sampling,
        metrics=_episode_metrics(per_task),
        groups=[group_of(task[0]) for task in per_task],
        trajectories=per_task,
    )


def _episode_metrics(per_task: list[list[Trajectory]]) -> dict[str, np.ndarray]:
    def grid(fn):
        return np.array([[float(fn(t)) for t in task] for task in per_task], np.float64)

    metrics = {
        "reward": grid(lambda t: t.reward),
        "success": grid(episode_success),
        "turns": grid(lambda t: t.n_turns),
        "truncated": grid(lambda t: t.truncated),
        "aborted": grid(lambda t: t.aborted),
    }
    scores = [t.info.get("score") for task in per_task for t in task]
    keys = {k for s in scores if isinstance(s, dict) for k, v in s.items() if isinstance(v, (int, float))}
    for key in sorted(keys):
        # An episode that never bought (step cap, context limit) scores 0 on every part.
        metrics[f"score/{key}"] = grid(lambda t, key=key: (t.info.get("score") or {}).get(key, 0.0))
    return metrics


def compare(a: Evaluation, b: Evaluation, metric: str = "success") -> dict[str, float]:
    """b against a, paired by task (both must have played the same task seeds)."""
    if a.task_seeds != b.task_seeds:
        raise ValueError(
            f"{a.name} and {b.name} played different tasks: a paired comparison needs the same seeds"
        )
    return {
        "a": a.name,
        "b": b.name,
        "metric": metric,
        **paired_difference(a.per_task(metric), b.per_task(metric)),
    }


def write_report(
    evaluations: Sequence[Evaluation],
    path_prefix: str,
    comparisons: Sequence[tuple[Evaluation, Evaluation]] = (),
    metrics: Sequence[str] = ("success",),
) -> dict:
    """`<prefix>.json` (everything), `<prefix>.md` (a table per group + the paired comparisons) and
    `<prefix>.png` (success per group and policy with 95% intervals). Returns the JSON object."""
    report = {
        "policies": {
            ev.name: {
                "k": ev.k,
                "temperature": ev.sampling.temperature,
                "task_seeds": ev.task_seeds,
                "summary": ev.summary(),
                "by_group": ev.by_group(),
            }
            for ev in evaluations
        },
        "comparisons": [compare(a, b, m) for a, b in comparisons for m in metrics],
    }
    os.makedirs(os.path.dirname(path_prefix) or ".", exist_ok=True)
    with open(path_prefix + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(path_prefix + ".md", "w") as f:
        f.write(_markdown(evaluations, report, metrics))
    _plot(evaluations, path_prefix + ".png")
    return report


def _markdown(evaluations, report, metrics) -> str:
    groups = sorted({g for ev in evaluations for g in ev.groups})
    shown = [m for m in metrics if all(m in ev.metrics for ev in evaluations)]
    passes = sorted({key for ev in evaluations for key in ev.summary() if key.startswith("pass")})
    lines = []
    for group in ["all"] if len(groups) == 1 else ["all", *groups]:
        lines += [f"### {group}", "", "| policy | tasks | k | " + " | ".join(shown + passes) + " |"]
        lines.append("|---" * (3 + len(shown) + len(passes)) + "|")
        for ev in evaluations:
            s = ev.summary() if group == "all" else ev.by_group().get(group)
            if s is None:
                continue
            cells = [
                f"{100 * s[m]:.1f}% [{100 * s['success_ci_low']:.1f}, {100 * s['success_ci_high']:.1f}]"
                if m == "success"
                else f"{s[m]:.3f}"
                for m in shown
            ]
            cells += [f"{100 * s[p]:.1f}%" if p in s else "" for p in passes]
            lines.append(f"| {ev.name} | {int(s['tasks'])} | {ev.k} | " + " | ".join(cells) + " |")
        lines.append("")
    if report["comparisons"]:
        lines += ["### paired comparisons (b - a, same tasks)", ""]
        lines += [
            "| a | b | metric | gain | SE | 95% CI | gain / SE | better / worse / tied |",
            "|---" * 8 + "|",
        ]
        for c in report["comparisons"]:
            lines.append(
                f"| {c['a']} | {c['b']} | {c['metric']} | {c['mean_difference']:+.3f} | {c['se']:.3f} | "
                f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {c['gain_over_se']:.2f} | "
                f"{int(c['better'])} / {int(c['worse'])} / {int(c['tied'])} |"
            )
    lines.append("")
    lines.append(
        "Success intervals: 95% percentile bootstrap over tasks; pass@j unbiased from k trials per task."
    )
    return "\n".join(lines) + "\n"


def _plot(evaluations, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ["all", *sorted({g for ev in evaluations for g in ev.groups} - {"all"})]
    width = 0.8 / len(evaluations)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(groups) * len(evaluations) ** 0.5), 3.2))
    for n, ev in enumerate(evaluations):
        stats = [ev.summary() if g == "all" else ev.by_group().get(g) for g in groups]
        x = np.arange(len(groups)) + (n - (len(evaluations) - 1) / 2) * width
        mean = [100 * s["success"] if s else 0.0 for s in stats]
        err = [
            [100 * (s["success"] - s["success_ci_low"]) if s else 0.0 for s in stats],
            [100 * (s["success_ci_high"] - s["success"]) if s else 0.0 for s in stats],
        ]
        ax.bar(x, mean, width, yerr=err, capsize=3, label=ev.name)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("success % (95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_policy(graphdef, params, tokenizer, env_factory, task_seeds, **kwargs):
    """(summary, trajectories) of `evaluate` (greedy by default): the one-call form the jobs use."""
    ev = evaluate(graphdef, params, tokenizer, env_factory, task_seeds, **kwargs)
    return ev.summary(), ev.all_trajectories()
