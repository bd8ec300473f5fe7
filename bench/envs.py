"""Process env pool throughput: steps/s with 1, 2 and 8 worker processes against the same env stepped serially
in-process (the baseline, measured in the same run), for a fast env and for one with 20 ms latency.

    python bench/envs.py [--episodes 32] [--latency-steps 5] [--fast-steps 50]

Episodes advance in lockstep, the way the rollout scheduler calls the pool: one step for every live
episode, wait, repeat. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

from alejax.envs import make
from alejax.envs.pools import ProcessEnvPool, wait_all


def serial_steps_per_s(env_kwargs: dict, episodes: int, steps: int) -> float:
    envs = [make("toy/echo", **env_kwargs) for _ in range(episodes)]
    for i, env in enumerate(envs):
        env.reset(i)
    start = time.perf_counter()
    for t in range(steps):
        for env in envs:
            env.step(f"a{t}")
    return episodes * steps / (time.perf_counter() - start)


def pool_steps_per_s(env_kwargs: dict, workers: int, episodes: int, steps: int) -> float:
    with ProcessEnvPool("toy/echo", env_kwargs, num_workers=workers, max_batch=64) as pool:
        wait_all([pool.reset(i, i) for i in range(episodes)], 120)  # worker start-up is not timed
        start = time.perf_counter()
        for t in range(steps):
            results = wait_all([pool.step(i, f"a{t}") for i in range(episodes)], 120)
            assert not any(r.info.get("aborted") for r in results)
        return episodes * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--latency-steps", type=int, default=5)
    parser.add_argument("--fast-steps", type=int, default=50)
    args = parser.parse_args()
    report: dict[str, float] = {}
    for label, kwargs, steps in [
        ("fast_env", {}, args.fast_steps),
        ("latency_env", {"latency_s": 0.02}, args.latency_steps),
    ]:
        baseline = serial_steps_per_s(kwargs, args.episodes, steps)
        report[f"steps_per_s_{label}_in_process_serial"] = round(baseline, 1)
        print(f"{label}: in-process serial {baseline:10.1f} steps/s")
        for workers in (1, 2, 8):
            rate = pool_steps_per_s(kwargs, workers, args.episodes, steps)
            report[f"steps_per_s_{label}_{workers}_workers"] = round(rate, 1)
            report[f"speedup_{workers}_workers_{label}"] = round(rate / baseline, 2)
            print(f"{label}: {workers} worker(s)      {rate:10.1f} steps/s  ({rate / baseline:.2f}x serial)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
