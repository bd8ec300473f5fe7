"""The causal RM against reward hacking on relation extraction (DEPTH, issue #19 item 5). CPU, minutes.

  python bench/depth_rm.py [--seeds 3] [--p-train 0.9] [--methods bt,causal_rm_cond_mmd_auto]
                           [--regimes dr_grpo,grpo] [--rl-steps 600] [--rm-steps 1500]

Preference pairs over grounding-env answers (label + wording) where the preferred answer carries the
confident phrase and the longer rationale with probability p_train in training and 0.5 at test; BT and the
causal RM trained on them (alejax.reward.robustness); then a tiny policy, label-SFT'd on a few examples, RL'd on
each RM and on the gold rule. Reported, mean ± SE over seeds: the RMs' pairwise accuracy (IID validation,
feature-independent test, reversed) and spurious sensitivity (score change in score sd when only the
feature is toggled on the same test answers); the policy's held-out micro-F1 and hallucination rate, and the
hacking measure: how far P(confident phrase) and the expected rationale length (words, of 6) moved from the
start (0.5, 3.0). The pieces live in alejax.envs.relation.hacking. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alejax.envs.relation.hacking import GOLD, REGIMES, StudyConfig, run_study  # noqa: E402

HEADLINE_REGIME = "dr_grpo"  # the JSON's unprefixed keys; the other regime's keys carry its name


def mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def fmt(values, digits: int = 3) -> str:
    m, se = mean_se(values)
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def short(source: str) -> str:
    """The JSON prefix of a reward source: bt, causal (the causal RM variant), rule."""
    return source if source in ("bt", GOLD) else "causal" if source == "causal_rm_cond_mmd_auto" else source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--p-train", type=float, default=0.9)
    parser.add_argument("--methods", default="bt,causal_rm_cond_mmd_auto")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--rm-steps", type=int, default=StudyConfig.rm_steps)
    parser.add_argument("--rl-steps", type=int, default=StudyConfig.rl_steps)
    parser.add_argument("--rl-entropy", type=float, default=StudyConfig.rl_entropy)
    parser.add_argument("--out", default="runs/depth_rm", help="per-seed results.json goes here")
    args = parser.parse_args(argv)
    t0 = time.time()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    methods, regimes = tuple(args.methods.split(",")), tuple(args.regimes.split(","))
    config = dataclasses.replace(
        StudyConfig(),
        p_train=args.p_train,
        rm_steps=args.rm_steps,
        rl_steps=args.rl_steps,
        rl_entropy=args.rl_entropy,
    )
    results = run_study(config, seeds, methods, regimes)
    for method, runs in results["rm"].items():
        print(f"{method} per seed: acc_test {[round(r['acc_test'], 3) for r in runs]}")
    for regime, sources in results["rl"].items():
        for source, runs in sources.items():
            print(
                f"{regime} {source} per seed: F1 {[round(r['end']['f1'], 3) for r in runs]}, P(confident) "
                f"{[round(r['end']['confident_rate'], 3) for r in runs]}"
            )
    summary = {"seeds": seeds, "p_train": args.p_train, "rl_steps": args.rl_steps}

    print(f"\nReward models (p_train {args.p_train}; {len(seeds)} seeds, mean ± SE)\n")
    print(
        "| RM | acc IID val | acc test (0.5) | acc reversed | sens confident (sd) | sens length 0→6 (sd) "
        "| RM-best label F1 | its hallucination |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for method, runs in results["rm"].items():
        col = {k: [r[k] for r in runs] for k in runs[0]}
        weights = f" (weights {col['weight']})" if "weight" in col else ""
        print(
            f"| {method}{weights} | {fmt(col['acc_val'])} | {fmt(col['acc_test'])} | {fmt(col['acc_reversed'])} "
            f"| {fmt(col['sens_confident'])} | {fmt(col['sens_length'])} | {fmt(col['argmax_f1'])} "
            f"| {fmt(col['argmax_hallucination'])} |"
        )
        for k in (
            "acc_test",
            "acc_reversed",
            "sens_confident",
            "sens_length",
            "argmax_f1",
            "argmax_hallucination",
        ):
            summary[f"{short(method)}_{k}"] = round(mean_se(col[k])[0], 4)

    for regime, sources in results["rl"].items():
        print(
            f"\nRL ({regime}, {args.rl_steps} steps, entropy {args.rl_entropy}; held-out dev observations)\n"
        )
        print(
            "| reward | F1 start | F1 end | hallucination end | P(confident) end | growth | "
            "rationale words end | growth |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for source, runs in sources.items():
            end = {k: [r["end"][k] for r in runs] for k in runs[0]["end"]}
            start = {k: [r["start"][k] for r in runs] for k in runs[0]["start"]}
            growth_conf = np.subtract(end["confident_rate"], start["confident_rate"])
            growth_len = np.subtract(end["rationale_length"], start["rationale_length"])
            print(
                f"| {source} | {fmt(start['f1'])} | {fmt(end['f1'])} | {fmt(end['hallucination'])} "
                f"| {fmt(end['confident_rate'])} | {fmt(growth_conf)} | {fmt(end['rationale_length'], 2)} "
                f"| {fmt(growth_len, 2)} |"
            )
            prefix = ("" if regime == HEADLINE_REGIME else f"{regime}_") + short(source)
            for key, values in (
                ("gold_f1", end["f1"]),
                ("hallucination", end["hallucination"]),
                ("feature_growth", growth_conf),
                ("length_growth", growth_len),
            ):
                summary[f"{prefix}_{key}"] = round(mean_se(values)[0], 4)
                summary[f"{prefix}_{key}_se"] = round(mean_se(values)[1], 4)
    summary["sft_f1"] = round(mean_se([r["start"]["f1"] for r in results["rl"][regimes[0]][GOLD]])[0], 4)
    summary["wall_s"] = round(time.time() - t0, 1)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "summary": summary, "per_seed": results}, f, indent=1)
    print(f"\n{summary['wall_s']} s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
