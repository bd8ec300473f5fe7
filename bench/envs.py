"""Process env pool throughput: steps/s with 1, 2 and 8 worker processes against the same env stepped serially
in-process (the baseline, measured in the same run), for a fast env and for one with 20 ms latency; and the
start latency of a terminal episode (its reset, through a worker) without and with warm sandboxes.

    python bench/envs.py [--episodes 32] [--latency-steps 5] [--fast-steps 50] [--start-episodes 40]

Episodes advance in lockstep, the way the rollout scheduler calls the pool: one step for every live
episode, wait, repeat. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from alejax.envs import make
from alejax.envs.pools import ProcessEnvPool, wait_all
from alejax.envs.toolcall import format_tool_call


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


def start_latencies_ms(warm_sandboxes: int, episodes: int, decode_s: float) -> list[float]:
    """Reset times of `episodes` terminal episodes, one after another through one worker. Between two
    episodes the policy "decodes" for `decode_s` (the time warm sandboxes get to refill); the previous
    episode's release (closing its sandbox) is done before the clock starts."""
    command = format_tool_call("bash", {"command": "ls"})
    times = []
    with ProcessEnvPool("terminal/all", {"warm_sandboxes": warm_sandboxes}, num_workers=1) as pool:
        for i in range(-1, episodes):  # episode -1: worker start-up and the first warm set, not timed
            pool.worker_stats()  # answered after the release before it: the worker is idle
            time.sleep(decode_s)
            start = time.perf_counter()
            result = pool.reset(i, i).result(120)
            if i >= 0:
                times.append(1000 * (time.perf_counter() - start))
            assert not result.info.get("aborted"), result.info
            pool.step(i, command).result(60)
            pool.release(i)
    return times


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--latency-steps", type=int, default=5)
    parser.add_argument("--fast-steps", type=int, default=50)
    parser.add_argument("--start-episodes", type=int, default=40)
    parser.add_argument("--decode-s", type=float, default=0.3)
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
    # Episode start: a cold reset builds the sandbox (holder process, namespaces) before the task's setup
    # and shell; with warm sandboxes the worker made it while the previous episode ran.
    for label, warm in (("cold", 0), ("warm", 2)):
        times = start_latencies_ms(warm, args.start_episodes, args.decode_s)
        p50, p95 = statistics.median(times), percentile(times, 95)
        report[f"start_latency_ms_{label}"] = round(p50, 1)
        report[f"start_latency_ms_{label}_p95"] = round(p95, 1)
        print(f"terminal episode start, {label:4s} sandboxes: p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")
    speedup = report["start_latency_ms_cold"] / report["start_latency_ms_warm"]
    report["warm_start_speedup"] = round(speedup, 2)
    print(f"warm sandboxes start episodes {speedup:.2f}x faster (p50)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
