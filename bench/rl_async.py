"""Async vs synchronous RL steps: wall time per step, per-phase breakdown, overlap and staleness.

Both modes run the same tasks from the same initial weights (configs/rl.py tiny, no warm start, every group
trained so each step does the full work). The first `--warmup` steps (compilation) are left out.

  python bench/rl_async.py [--steps 12] [--warmup 5] [--env-latency 0.1]

`--env-latency` adds that many seconds to every env step (as a sandboxed tool call or a remote env would):
the part of a rollout that async mode can hide behind training even when both share the CPU cores.

Last line: one JSON object with sync_step_s, async_step_s, speedup (sync / async), async_overlap_fraction,
max_staleness and the synchronous step's phase breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from alejax.config import load_config_file  # noqa: E402
from alejax.envs.base import make  # noqa: E402
from alejax.envs.pools import ThreadEnvPool  # noqa: E402
from alejax.rl.build import build_pipeline, task_seeds  # noqa: E402
from alejax.train.sft import sft_episodes  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "rl.py")


class SlowEnv:
    """The configured env with a fixed latency on every step."""

    def __init__(self, env, latency: float):
        self.env, self.latency = env, latency
        self.tools, self.system_prompt = env.tools, env.system_prompt

    def reset(self, seed):
        return self.env.reset(seed)

    def step(self, action):
        time.sleep(self.latency)
        return self.env.step(action)


def run_mode(gap: int, steps: int, warmup: int, workdir: str, tokenizer, latency: float) -> dict:
    c = load_config_file(f"{CONFIG}:tiny")
    c.workdir, c.steps, c.sft.steps = workdir, steps, 0
    c.rl.max_policy_version_gap = gap
    c.rl.filter_zero_variance_groups = False
    factory = lambda: SlowEnv(make(c.env.name, **c.env.kwargs.to_dict()), latency)  # noqa: E731
    pipeline = build_pipeline(c, tokenizer, env_pool=ThreadEnvPool(factory, c.env_pool.workers))
    rows, t_prev = [], time.perf_counter()
    try:
        for step in range(1, steps + 1):
            following = [task_seeds(c, s) for s in range(step + 1, min(step + gap, steps) + 1)]  # k in flight
            metrics = pipeline.step(task_seeds(c, step), following)
            now = time.perf_counter()
            metrics["wall_s"], t_prev = now - t_prev, now
            rows.append(metrics)
            print(
                f"[gap {gap}] step {step}/{steps} wall {metrics['wall_s']:.2f}s rollout wait "
                f"{metrics['time_rollout_s']:.2f}s train {metrics['time_train_s']:.2f}s "
                f"overlap {metrics['overlap_fraction']:.2f} staleness {metrics['staleness']:.0f}",
                flush=True,
            )
    finally:
        pipeline.close()
    timed = rows[warmup:]
    phases = sorted(k for k in timed[0] if k.startswith("time_"))
    return {
        "step_s": float(np.mean([r["wall_s"] for r in timed])),
        "phases": {k[5:-2]: float(np.mean([r[k] for r in timed])) for k in phases},
        "overlap_fraction": float(np.mean([r["overlap_fraction"] for r in timed])),
        "max_staleness": float(max(r["staleness"] for r in rows)),
        "rollout_wall_s": float(np.mean([r["rollout_wall_s"] for r in timed])),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--env-latency", type=float, default=0.1)
    parser.add_argument("--gap", type=int, default=1, help="async mode's rollouts in flight (k)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        c = load_config_file(f"{CONFIG}:tiny")
        c.workdir = workdir
        _, _, tokenizer = sft_episodes(c.sft)  # the expert's episodes' BPE, as the rl job trains it
        lat = args.env_latency
        sync = run_mode(0, args.steps, args.warmup, os.path.join(workdir, "sync"), tokenizer, lat)
        async_ = run_mode(args.gap, args.steps, args.warmup, os.path.join(workdir, "async"), tokenizer, lat)
    print(
        "phase breakdown of one synchronous step (s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sync["phases"].items())
    )
    print(
        "phase breakdown of one async step (s):       "
        + ", ".join(f"{k} {v:.3f}" for k, v in async_["phases"].items())
    )
    print(
        f"sync {sync['step_s']:.3f} s/step, async {async_['step_s']:.3f} s/step: speedup "
        f"{sync['step_s'] / async_['step_s']:.2f}x; async hides {async_['overlap_fraction']:.0%} of the rollout"
    )
    print(
        json.dumps(
            {
                "env_latency_s": args.env_latency,
                "gap": args.gap,
                "sync_step_s": round(sync["step_s"], 4),
                "async_step_s": round(async_["step_s"], 4),
                "speedup": round(sync["step_s"] / async_["step_s"], 3),
                "async_overlap_fraction": round(async_["overlap_fraction"], 3),
                "max_staleness": async_["max_staleness"],
                "sync_phases_s": {k: round(v, 4) for k, v in sync["phases"].items()},
                "async_phases_s": {k: round(v, 4) for k, v in async_["phases"].items()},
            }
        )
    )


if __name__ == "__main__":
    main()
