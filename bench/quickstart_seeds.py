"""The quickstart over several seeds: held-out success of the untrained, SFT and SFT+RL policies, mean ± SE.

  python bench/quickstart_seeds.py                        # seeds 0, 1, 2 -> runs/quickstart_seeds
  python bench/quickstart_seeds.py --seeds 5 --out DIR -- --config.rl.steps=40   # overrides after --
  python bench/quickstart_seeds.py --preset four_scenarios   # the four scenarios (bench/shop_rl.py runs this)

Each seed is the README's first command (`python -m alejax.main --config=configs/quickstart.py`) with
`--config.seed=S --config.workdir=OUT/seedS`, run as its own process (its wall time is the job's own). A seed
whose workdir already holds results.json is read, not rerun (rerun a seed by deleting its folder; an
interrupted seed resumes). The seed changes the world (products, tasks, held-out split), the model's init
and every sample, so the spread is across worlds.

The baseline in the same run is the SFT policy: the ratio printed is SFT+RL / SFT full success (and SFT /
untrained is reported as a difference, the untrained policy scoring 0). Writes OUT/results.{md,json} and
OUT/quickstart_seeds.png; the last line is one JSON object. When the runs cover several scenarios (the
`four_scenarios` preset), the table and the JSON (`by_scenario`) add each scenario's full success, R_strict,
R_loose and failure tags (shares of wrong purchases), mean ± SE over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ("untrained", "sft", "sft_rl")
METRICS = (("success", "full success"), ("score/strict", "R_strict"), ("score/loose", "R_loose"))
FAILURE_TAGS = (
    "bought_without_checking_details",
    "bought_after_refusal",
    "persona_under_use",
    "persona_over_reading",
)


def mean_se(values) -> tuple[float, float, list[float]]:
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se), values.tolist()


def run_seed(
    seed: int,
    workdir: str,
    overrides: list[str],
    preset: str = "default",
    config_file: str = "configs/quickstart.py",
) -> dict:
    """One seed of `config_file:preset` as its own process (its log in workdir/job.log); a seed whose workdir
    holds results.json is read, not rerun. bench/depth.py and bench/shop_rl.py run their seeds through it."""
    done = os.path.join(workdir, "results.json")
    if os.path.exists(done):
        print(f"seed {seed}: finished earlier, reading {done}", flush=True)
        return json.load(open(done))
    config = config_file + ("" if preset == "default" else f":{preset}")
    cmd = [sys.executable, "-m", "alejax.main", f"--config={config}", f"--config.seed={seed}"]
    cmd += [f"--config.workdir={workdir}", *overrides]
    print(f"seed {seed}: {' '.join(cmd[1:])}", flush=True)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(workdir, "job.log"), "a", encoding="utf-8") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"seed {seed} failed (rc {rc}); its log: {workdir}/job.log")
    print(f"seed {seed}: done in {(time.time() - t0) / 60:.1f} min", flush=True)
    return json.load(open(done))


def summarize(per_seed: dict[int, dict]) -> dict:
    out = {}
    for policy in POLICIES:
        for key, _ in METRICS:
            out[f"{policy}/{key}"] = mean_se([r["results"][policy].get(key, 0.0) for r in per_seed.values()])
    return out


def scenarios_of(per_seed: dict[int, dict]) -> list[str]:
    """The scenarios every seed's evaluation reported, in ShopSimulator's order."""
    from alejax.envs.shop.pages import SCENARIOS

    names = [set(r["results"][p].get("by_scenario", {})) for r in per_seed.values() for p in POLICIES]
    common = set.intersection(*names) if names else set()
    return [s for s in SCENARIOS if s in common] + sorted(common - set(SCENARIOS))


def summarize_scenarios(per_seed: dict[int, dict]) -> dict:
    """{scenario: {policy: {metric or tag: (mean, se, per seed)}}}, and SFT+RL - SFT paired by seed; {} for
    runs of one scenario."""
    scenarios = scenarios_of(per_seed)
    if len(scenarios) < 2:
        return {}
    out = {}
    for scenario in scenarios:
        block = {}
        for policy in POLICIES:
            rows = [r["results"][policy]["by_scenario"][scenario] for r in per_seed.values()]
            block[policy] = {key: mean_se([row.get(key, 0.0) for row in rows]) for key, _ in METRICS}
            block[policy].update(
                {tag: mean_se([row["failures"][tag] for row in rows]) for tag in FAILURE_TAGS}
            )
            block[policy]["wrong_purchases"] = mean_se([row["failures"]["wrong_purchases"] for row in rows])
        gain = np.array(block["sft_rl"]["success"][2]) - np.array(block["sft"]["success"][2])
        block["sft_rl_minus_sft"] = mean_se(gain)
        out[scenario] = block
    return out


def table(summary: dict, per_seed: dict[int, dict], by_scenario: dict | None = None) -> str:
    seeds = list(per_seed)
    lines = [
        f"Held-out ShopSimulator tasks, {len(seeds)} seeds ({', '.join(map(str, seeds))}), greedy; mean ± SE:",
        "",
        "| policy | " + " | ".join(label for _, label in METRICS) + " | full success per seed |",
        "|---|" + "---|" * (len(METRICS) + 1),
    ]
    for policy in POLICIES:
        cells = [
            f"{100 * summary[f'{policy}/{k}'][0]:.1f} ± {100 * summary[f'{policy}/{k}'][1]:.1f}%"
            for k, _ in METRICS
        ]
        each = ", ".join(f"{100 * v:.1f}" for v in summary[f"{policy}/success"][2])
        lines.append(f"| {policy} | " + " | ".join(cells) + f" | {each} |")
    gain = 100 * np.array(summary["sft_rl/success"][2]) - 100 * np.array(summary["sft/success"][2])
    se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else float("nan")
    lines += [
        "",
        f"SFT+RL - SFT full success, paired by seed: {gain.mean():+.1f} ± {se:.1f} points "
        f"(per seed {', '.join(f'{g:+.1f}' for g in gain)}).",
    ]
    walls = [r["wall_s"] / 60 for r in per_seed.values()]
    lines += ["", f"Wall time per seed (one process each): {', '.join(f'{w:.1f}' for w in walls)} min."]
    if by_scenario:
        lines += [
            "",
            "By scenario (mean ± SE over seeds; failure tags as shares of the wrong purchases):",
            "",
            "| scenario | policy | "
            + " | ".join(label for _, label in METRICS)
            + " | "
            + " | ".join(FAILURE_TAGS)
            + " |",
            "|---|---|" + "---|" * (len(METRICS) + len(FAILURE_TAGS)),
        ]
        for scenario, block in by_scenario.items():
            for policy in POLICIES:
                b = block[policy]
                cells = [f"{100 * b[k][0]:.1f} ± {100 * b[k][1]:.1f}%" for k, _ in METRICS]
                cells += [f"{100 * b[t][0]:.0f}%" for t in FAILURE_TAGS]
                lines.append(f"| {scenario} | {policy} | " + " | ".join(cells) + " |")
        lines.append("")
        for scenario, block in by_scenario.items():
            mean, se, each = block["sft_rl_minus_sft"]
            lines.append(
                f"- {scenario}: SFT+RL - SFT full success {100 * mean:+.1f} ± {100 * se:.1f} points "
                f"(per seed {', '.join(f'{100 * g:+.1f}' for g in each)})"
            )
    return "\n".join(lines)


def plot(summary: dict, path: str) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    width = 0.8 / len(METRICS)
    x = np.arange(len(POLICIES))
    for j, (key, label) in enumerate(METRICS):
        means = [summary[f"{p}/{key}"][0] for p in POLICIES]
        ses = [summary[f"{p}/{key}"][1] for p in POLICIES]
        ax.bar(x + j * width, means, width, yerr=ses, capsize=3, label=label)
    ax.set_xticks(x + width, POLICIES)
    ax.set(title="quickstart, held-out tasks (mean ± SE over seeds)", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    own, overrides = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "quickstart_seeds"))
    parser.add_argument("--preset", default="default", help="a preset of configs/quickstart.py")
    args = parser.parse_args(own)
    bad = [
        o
        for o in overrides
        if not o.startswith("--config.") or o.startswith(("--config.seed=", "--config.workdir="))
    ]
    if bad:
        raise SystemExit(f"overrides must be --config.key=value (not seed/workdir, set per seed): {bad}")

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    per_seed = {s: run_seed(s, os.path.join(args.out, f"seed{s}"), overrides, args.preset) for s in seeds}
    summary = summarize(per_seed)
    by_scenario = summarize_scenarios(per_seed)
    text = table(summary, per_seed, by_scenario)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    png = plot(summary, os.path.join(args.out, "quickstart_seeds.png"))
    mean = {p: summary[f"{p}/success"][0] for p in POLICIES}
    result = {
        "seeds": list(seeds),
        "success": mean,
        "success_se": {p: summary[f"{p}/success"][1] for p in POLICIES},
        "success_per_seed": {p: summary[f"{p}/success"][2] for p in POLICIES},
        "r_strict": {p: summary[f"{p}/score/strict"][0] for p in POLICIES},
        "r_loose": {p: summary[f"{p}/score/loose"][0] for p in POLICIES},
        "sft_rl_over_sft": mean["sft_rl"] / mean["sft"] if mean["sft"] > 0 else None,
        "sft_rl_minus_sft_per_seed": [
            a - b for a, b in zip(summary["sft_rl/success"][2], summary["sft/success"][2], strict=True)
        ],
        "ordering_holds": bool(mean["sft_rl"] > mean["sft"] > mean["untrained"]),
        "wall_min": [round(r["wall_s"] / 60, 2) for r in per_seed.values()],
        "preset": args.preset,
        "overrides": overrides,
        "png": png,
        "by_scenario": {
            scenario: {
                name: {key: value[0] for key, value in stats.items()} if name in POLICIES else stats[0]
                for name, stats in block.items()
            }
            for scenario, block in by_scenario.items()
        },
    }
    json.dump(result, open(os.path.join(args.out, "results.json"), "w"), indent=1)
    print("\n" + text, flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
