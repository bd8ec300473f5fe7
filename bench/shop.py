"""ShopSimulator throughput: env steps/s, and search latency at 20k and 200k products.

  python bench/shop.py                       # a couple of minutes on a 2-core CPU
  python bench/shop.py --sizes=20000 --queries=100

Baselines measured in the same run: the same BM25 scores computed by a linear scan over every document
(`SearchIndex.brute_force_scores`), so the index's speed-up is a ratio. World generation and index build
times are reported too. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from alejax.envs.shop.agents import ExpertAgent, run_episode
from alejax.envs.shop.pages import ShopEnv
from alejax.envs.shop.search import get_index
from alejax.envs.shop.world import get_world


def search_latency(n_products: int, n_queries: int, n_brute: int) -> dict:
    t = time.perf_counter()
    world = get_world(0, n_products)
    gen_s = time.perf_counter() - t
    index = get_index(world)
    rng = np.random.default_rng(0)
    queries = []
    for i in rng.choice(n_products, n_queries * 2, replace=False):
        task = world.task(int(i))
        if task is not None:
            queries.append(task.instruction if len(queries) % 2 else " ".join(task.attributes))
        if len(queries) == n_queries:
            break
    index.search(queries[0])  # warm
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q)
        times.append(time.perf_counter() - t)
    brute = []
    for q in queries[:n_brute]:
        t = time.perf_counter()
        scores = index.brute_force_scores(q)
        np.argsort(-scores)[:150]
        brute.append(time.perf_counter() - t)
    p50, p99 = np.percentile(times, 50) * 1e3, np.percentile(times, 99) * 1e3
    brute_p50 = np.percentile(brute, 50) * 1e3
    return {
        "products": n_products,
        "generate_s": gen_s,
        "index_build_s": index.build_seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "brute_p50_ms": brute_p50,
        "speedup_p50": brute_p50 / p50,
    }


def env_steps_per_s(n_episodes: int, scenario: str = "single", n_products: int = 500) -> float:
    env = ShopEnv(scenario, n_products=n_products)
    run_episode(env, ExpertAgent(), 0)  # warm (index built, caches filled)
    steps = 0
    t = time.perf_counter()
    for seed in range(n_episodes):
        steps += len(run_episode(env, ExpertAgent(), seed)["actions"])
    return steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--brute", type=int, default=20, help="queries timed with the linear-scan baseline")
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    out = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        r = search_latency(n, args.queries, args.brute)
        tag = f"{n // 1000}k"
        print(
            f"{n:>7} products: generate {r['generate_s']:.2f}s, index build {r['index_build_s']:.2f}s, "
            f"search p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms; linear scan p50 {r['brute_p50_ms']:.1f} ms "
            f"(index {r['speedup_p50']:.0f}x faster)"
        )
        for k in ("p50_ms", "p99_ms"):
            out[f"search_{k}_{tag}"] = round(r[k], 3)
        out[f"index_build_s_{tag}"] = round(r["index_build_s"], 2)
        out[f"generate_s_{tag}"] = round(r["generate_s"], 2)
        out[f"search_speedup_vs_linear_scan_{tag}"] = round(r["speedup_p50"], 1)
    for scenario in ("single", "multi_persona"):
        rate = env_steps_per_s(args.episodes, scenario)
        print(f"env steps/s ({scenario}, expert policy, tiny world): {rate:.0f}")
        out["env_steps_per_s" if scenario == "single" else f"env_steps_per_s_{scenario}"] = round(rate, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
