"""ShopSimulator RL over seeds, all four scenarios: held-out full success of SFT and SFT+RL, paired by seed.

  python bench/shop_rl.py                                  # seeds 0, 1, 2 -> runs/shop_rl
  python bench/shop_rl.py --seeds 5 --out DIR -- --config.rl.steps=40     # quickstart overrides after --
  python bench/shop_rl.py --tiny --seeds 2 --out /tmp/shop_rl_tiny   # the four_scenarios_test preset: a
                                                           # minute a seed, nothing learns; checks the wiring

Each seed is the four-scenario quickstart (`python -m alejax.main --config=configs/quickstart.py:four_scenarios
--config.seed=S --config.workdir=OUT/seedS`) in its own process, through bench/quickstart_seeds.py (a seed
whose workdir holds results.json is read, not rerun). Its held-out tasks are 50 of each scenario (single,
single+persona, multi, multi+persona). The baseline in the same run is the SFT policy: the ratio printed is
SFT+RL / SFT full success, and the gain is paired by seed (each seed's SFT+RL minus its own SFT), its mean over
its standard error across seeds. Writes OUT/results.{md,json}, OUT/quickstart_seeds.png; the last line is one
JSON object: sft_success, sft_rl_success (means over seeds), sft_rl_over_sft, paired_gain_over_se, seeds, and
by_scenario (each scenario's means, gain and failure tags).
"""

from __future__ import annotations

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import quickstart_seeds  # noqa: E402  (the multi-seed driver next to this file)

SCENARIO_NAMES = ("single", "single_persona", "multi", "multi_persona")

PRESET = "four_scenarios"
TINY_PRESET = "four_scenarios_test"  # --tiny: every stage and scenario in seconds (one held-out task each)


def headline(result: dict) -> dict:
    """The bench's keys from bench/quickstart_seeds.py's result."""
    sft, sft_rl = result["success"]["sft"], result["success"]["sft_rl"]
    gains = result["sft_rl_minus_sft_per_seed"]
    n = len(gains)
    mean = sum(gains) / n
    se = math.sqrt(sum((g - mean) ** 2 for g in gains) / (n - 1) / n) if n > 1 else float("nan")
    return {
        "sft_success": sft,
        "sft_rl_success": sft_rl,
        "sft_rl_over_sft": sft_rl / sft if sft > 0 else None,
        "paired_gain": mean,
        "paired_gain_se": se,
        "paired_gain_over_se": mean / se if se > 0 else None,
        "seeds": result["seeds"],
        "by_scenario": result["by_scenario"],
        "wall_min": result["wall_min"],
        "preset": result["preset"],
        "overrides": result["overrides"],
    }


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, rest = (argv[: argv.index("--")], argv[argv.index("--") :]) if "--" in argv else (argv, [])
    if any(a == "--preset" or a.startswith("--preset=") for a in own):
        raise SystemExit(
            f"bench/shop_rl.py runs the {PRESET} preset (--tiny: {TINY_PRESET}); for another, use "
            "bench/quickstart_seeds.py"
        )
    preset = TINY_PRESET if "--tiny" in own else PRESET
    own = [a for a in own if a != "--tiny"]
    if not any(a == "--out" or a.startswith("--out=") for a in own):
        own += ["--out", os.path.join(quickstart_seeds.ROOT, "runs", "shop_rl")]
    out = headline(quickstart_seeds.main([*own, "--preset", preset, *rest]))
    missing = [s for s in SCENARIO_NAMES if s not in out["by_scenario"]]
    if missing:
        raise SystemExit(f"the runs reported no per-scenario results for {', '.join(missing)}")
    print(
        f"\nSFT {100 * out['sft_success']:.1f}% -> SFT+RL {100 * out['sft_rl_success']:.1f}% full success "
        f"(x{out['sft_rl_over_sft'] or float('nan'):.2f}); paired gain {100 * out['paired_gain']:+.1f} points, "
        f"{out['paired_gain_over_se'] or float('nan'):.1f} SE over {len(out['seeds'])} seeds",
        flush=True,
    )
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
