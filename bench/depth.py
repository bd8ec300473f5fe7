"""DEPTH over several seeds: direct extraction (the baseline, measured in the same run) against grounding only
and grounding + refinement on held-out sentences, micro-F1 and hallucination rate, mean ± SE over seeds.

  python bench/depth.py                                   # seeds 0, 1, 2 -> runs/depth_seeds
  python bench/depth.py --seeds 5 --out DIR -- --config.eval.split=test   # overrides after --

Each seed is `python -m alejax.main --config=configs/depth.py[:preset] --config.seed=S --config.workdir=OUT/seedS`,
run as its own process. A seed whose workdir already holds results.json is read, not rerun (delete its folder to
rerun it). The seed changes the training sentences SFT and RL see, the models' init and every sample; the
held-out sentences are the config's (`eval.split`, `eval.first_seed`), the same for every seed, so seeds pair.

The ratio printed is direct / pipeline hallucination (the issue's goal: >= 2x at equal or better F1), with the
best pipeline variant of each seed by F1 (grounding only, or grounding + refinement). Writes
OUT/results.{md,json}; the last line is one JSON object with f1_direct, f1_pipeline, hallucination_direct,
hallucination_pipeline (means), their SEs, the paired differences, per-seed values and `seeds`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quickstart_seeds  # noqa: E402  (the per-seed process runner next to this file)
from quickstart_seeds import ROOT, mean_se  # noqa: E402

VARIANTS = ("direct", "grounding", "pipeline")
STAGES = ("untrained", "sft", "sft_rl", "sft_rm")  # alejax.jobs.depth.STAGES (the bench imports no job code)


def run_seed(seed: int, workdir: str, overrides: list[str], preset: str) -> dict:
    return quickstart_seeds.run_seed(seed, workdir, overrides, preset, config_file="configs/depth.py")


def summarize(per_seed: dict[int, dict]) -> dict:
    """(mean, SE, per seed) of each variant's F1 / hallucination at the final stage, the headline pair and
    the paired (by seed) differences pipeline - direct."""
    runs = list(per_seed.values())
    stage = runs[0]["headline"]["stage"]
    out = {"stage": stage}
    for variant in VARIANTS:
        for key in ("f1", "precision", "recall", "hallucination_rate"):
            out[f"{variant}/{key}"] = mean_se([r["results"][f"{variant}/{stage}"][key] for r in runs])
    for key in ("f1_direct", "f1_pipeline", "hallucination_direct", "hallucination_pipeline"):
        out[key] = mean_se([r["headline"][key] for r in runs])
    out["f1_gain"] = mean_se(np.array(out["f1_pipeline"][2]) - np.array(out["f1_direct"][2]))
    out["hallucination_change"] = mean_se(
        np.array(out["hallucination_pipeline"][2]) - np.array(out["hallucination_direct"][2])
    )
    out["recall_lost"] = mean_se([r["recall_lost_by_simplification"][stage]["recall_lost"] for r in runs])
    out["best_variant"] = [r["headline"]["best_pipeline_variant"] for r in runs]
    out["stages"] = [s for s in STAGES if f"direct/{s}" in runs[0]["results"]]
    for st in out["stages"]:  # every stage, and the full pipeline against direct at each (the goal)
        for variant in VARIANTS:
            for key in ("f1", "hallucination_rate"):
                out[f"{variant}/{st}/{key}"] = mean_se([r["results"][f"{variant}/{st}"][key] for r in runs])
        out[f"goal/{st}"] = goal_check(
            out[f"direct/{st}/f1"][2],
            out[f"pipeline/{st}/f1"][2],
            out[f"direct/{st}/hallucination_rate"][2],
            out[f"pipeline/{st}/hallucination_rate"][2],
        )
        if all(f"pipeline/{st}/equal_f1" in r["results"] for r in runs):  # abstaining to direct's F1
            for key in ("f1", "hallucination_rate", "threshold"):
                out[f"equal_f1/{st}/{key}"] = mean_se(
                    [r["results"][f"pipeline/{st}/equal_f1"][key] for r in runs]
                )
            out[f"goal_equal_f1/{st}"] = goal_check(
                out[f"direct/{st}/f1"][2],
                out[f"equal_f1/{st}/f1"][2],
                out[f"direct/{st}/hallucination_rate"][2],
                out[f"equal_f1/{st}/hallucination_rate"][2],
            )
    return out


def goal_check(f1_direct, f1_pipeline, hall_direct, hall_pipeline) -> dict:
    """The issue's goal for the full pipeline (grounding + refinement) against direct extraction: hallucination
    direct / pipeline >= 2 (means over seeds) at equal or better F1 (paired F1 gain not below 0 by more than
    its SE)."""
    gain = mean_se(np.asarray(f1_pipeline) - np.asarray(f1_direct))
    hd, hp = float(np.mean(hall_direct)), float(np.mean(hall_pipeline))
    ratio = hd / hp if hp > 0 else (float("inf") if hd > 0 else None)
    # An extractor that finds nothing (F1 0, as an untrained one) meets no goal, however little it hallucinates.
    met = ratio is not None and ratio >= 2.0 and gain[0] + gain[1] >= 0 and float(np.mean(f1_pipeline)) > 0
    return {"f1_gain": gain[0], "f1_gain_se": gain[1], "hallucination_ratio": ratio, "met": bool(met)}


def table(summary: dict, per_seed: dict[int, dict]) -> str:
    first = next(iter(per_seed.values()))["held_out"]
    stage = summary["stage"]
    lines = [
        f"Held-out relation extraction, {len(per_seed)} seeds ({', '.join(map(str, per_seed))}); {first['split']} "
        f"split, {first['sentences']} sentences, {first['pairs']} candidate pairs ({first['negatives']} "
        f"NO-RELATION); stage {stage}; greedy; mean ± SE over seeds (points):",
        "",
        "| variant | micro-F1 | precision | recall | hallucination | F1 per seed | hallucination per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        cells = [
            f"{100 * summary[f'{variant}/{k}'][0]:.1f} ± {100 * summary[f'{variant}/{k}'][1]:.1f}"
            for k in ("f1", "precision", "recall", "hallucination_rate")
        ]
        each = [
            ", ".join(f"{100 * v:.1f}" for v in summary[f"{variant}/{k}"][2])
            for k in ("f1", "hallucination_rate")
        ]
        lines.append(f"| {variant} | " + " | ".join(cells + each) + " |")
    hd, hp = summary["hallucination_direct"][0], summary["hallucination_pipeline"][0]
    gain, change, lost = summary["f1_gain"], summary["hallucination_change"], summary["recall_lost"]
    lines += [
        "",
        f"Best pipeline variant per seed (by F1): {', '.join(summary['best_variant'])}.",
        f"Pipeline - direct, paired by seed: F1 {100 * gain[0]:+.1f} ± {100 * gain[1]:.1f} points, "
        f"hallucination {100 * change[0]:+.1f} ± {100 * change[1]:.1f} points.",
        "Hallucination direct / pipeline: "
        + (f"{hd / hp:.2f}x" if hp > 0 else "n/a (pipeline 0)")
        + " (goal >= 2x).",
        f"Recall lost by simplification (direct - grounding recall): {100 * lost[0]:+.1f} ± {100 * lost[1]:.1f} points.",
        "Wall time per seed: " + ", ".join(f"{r['wall_s'] / 60:.1f}" for r in per_seed.values()) + " min.",
        "",
        "Every stage (sft_rl: RL on the rule reward; sft_rm: RL on the causal RM, both from the SFT weights); "
        "mean ± SE over seeds; the goal column is the full pipeline (grounding + refinement) against direct: "
        "hallucination direct / pipeline >= 2 at equal or better F1:",
        "",
        "| stage | direct F1 | direct hall. | grounding F1 | grounding hall. | pipeline F1 | pipeline hall. | "
        "pipeline - direct F1 | direct / pipeline hall. | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for st in summary["stages"]:
        cells = []
        for variant in VARIANTS:
            f1, hall = summary[f"{variant}/{st}/f1"], summary[f"{variant}/{st}/hallucination_rate"]
            cells += [f"{100 * f1[0]:.1f} ± {100 * f1[1]:.1f}", f"{100 * hall[0]:.2f} ± {100 * hall[1]:.2f}%"]
        g = summary[f"goal/{st}"]
        ratio = "n/a" if g["hallucination_ratio"] is None else f"{g['hallucination_ratio']:.2f}x"
        cells += [
            f"{100 * g['f1_gain']:+.1f} ± {100 * g['f1_gain_se']:.1f}",
            ratio,
            "met" if g["met"] else "not met",
        ]
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    equal = [st for st in summary["stages"] if f"goal_equal_f1/{st}" in summary]
    if equal:
        lines += [
            "",
            "At equal F1: the full pipeline abstains below a probability threshold chosen per seed on validation "
            "sentences (validation F1 closest to direct's from above); held-out, mean ± SE over seeds:",
            "",
            "| stage | threshold | pipeline F1 | pipeline hall. | direct F1 | direct hall. | pipeline - direct F1 | "
            "direct / pipeline hall. | goal |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for st in equal:
            g = summary[f"goal_equal_f1/{st}"]
            ratio = "n/a" if g["hallucination_ratio"] is None else f"{g['hallucination_ratio']:.2f}x"
            f1, hall = summary[f"equal_f1/{st}/f1"], summary[f"equal_f1/{st}/hallucination_rate"]
            d_f1, d_hall = summary[f"direct/{st}/f1"], summary[f"direct/{st}/hallucination_rate"]
            lines.append(
                f"| {st} | {summary[f'equal_f1/{st}/threshold'][0]:.3f} | {100 * f1[0]:.1f} ± {100 * f1[1]:.1f} | "
                f"{100 * hall[0]:.2f} ± {100 * hall[1]:.2f}% | {100 * d_f1[0]:.1f} ± {100 * d_f1[1]:.1f} | "
                f"{100 * d_hall[0]:.2f} ± {100 * d_hall[1]:.2f}% | {100 * g['f1_gain']:+.1f} ± {100 * g['f1_gain_se']:.1f} | "
                f"{ratio} | {'met' if g['met'] else 'not met'} |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    own, overrides = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny", help="a preset of configs/depth.py")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "depth_seeds"))
    args = parser.parse_args(own)
    bad = [
        o
        for o in overrides
        if not o.startswith("--config.") or o.startswith(("--config.seed=", "--config.workdir="))
    ]
    if bad:
        raise SystemExit(f"overrides must be --config.key=value (not seed/workdir, set per seed): {bad}")
    if args.seeds < 1:
        raise SystemExit("--seeds must be at least 1")

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    per_seed = {s: run_seed(s, os.path.join(args.out, f"seed{s}"), overrides, args.preset) for s in seeds}
    summary = summarize(per_seed)
    text = table(summary, per_seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    hd, hp = summary["hallucination_direct"][0], summary["hallucination_pipeline"][0]
    result = {
        "seeds": seeds,
        "stage": summary["stage"],
        "f1_direct": summary["f1_direct"][0],
        "f1_pipeline": summary["f1_pipeline"][0],
        "hallucination_direct": hd,
        "hallucination_pipeline": hp,
        "se": {
            k: summary[k][1]
            for k in ("f1_direct", "f1_pipeline", "hallucination_direct", "hallucination_pipeline")
        },
        "per_seed": {
            k: summary[k][2]
            for k in ("f1_direct", "f1_pipeline", "hallucination_direct", "hallucination_pipeline")
        },
        "paired_f1_gain": {"mean": summary["f1_gain"][0], "se": summary["f1_gain"][1]},
        "paired_hallucination_change": {
            "mean": summary["hallucination_change"][0],
            "se": summary["hallucination_change"][1],
        },
        "hallucination_direct_over_pipeline": hd / hp if hp > 0 else None,
        # The full pipeline at equal F1 (abstaining below a validation-chosen threshold), headline stage.
        **(
            {
                "f1_pipeline_equal_f1": summary[f"equal_f1/{summary['stage']}/f1"][0],
                "hallucination_pipeline_equal_f1": summary[f"equal_f1/{summary['stage']}/hallucination_rate"][
                    0
                ],
                "goal_met_equal_f1": summary[f"goal_equal_f1/{summary['stage']}"]["met"],
            }
            if f"goal_equal_f1/{summary['stage']}" in summary
            else {}
        ),
        "goal_met": summary[f"goal/{summary['stage']}"]["met"],
        "best_pipeline_variant": summary["best_variant"],
        "by_variant": {
            v: {k: summary[f"{v}/{k}"][0] for k in ("f1", "precision", "recall", "hallucination_rate")}
            for v in VARIANTS
        },
        "recall_lost_by_simplification": summary["recall_lost"][0],
        "by_stage": {
            st: {v: {k: summary[f"{v}/{st}/{k}"][0] for k in ("f1", "hallucination_rate")} for v in VARIANTS}
            | {"goal": summary[f"goal/{st}"]}
            | (
                {
                    "pipeline_equal_f1": {
                        k: summary[f"equal_f1/{st}/{k}"][0] for k in ("f1", "hallucination_rate", "threshold")
                    },
                    "goal_equal_f1": summary[f"goal_equal_f1/{st}"],
                }
                if f"goal_equal_f1/{st}" in summary
                else {}
            )
            for st in summary["stages"]
        },
        "held_out": next(iter(per_seed.values()))["held_out"],
        "wall_min": [round(r["wall_s"] / 60, 2) for r in per_seed.values()],
        "preset": args.preset,
        "overrides": overrides,
    }
    json.dump(result, open(os.path.join(args.out, "results.json"), "w"), indent=1)
    print("\n" + text, flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
