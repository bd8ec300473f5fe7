"""ShopSimulator: the scripted expert against the baselines in each scenario, env steps/s, search latency.

  python bench/shop.py                       # a couple of minutes on a 2-core CPU
  python bench/shop.py --sizes= --episodes=50          # the scenario tables only (seconds)

1. Per scenario (single, single+persona, multi, multi+persona) and agent (the privileged scripted expert;
   the baselines first_result and random, measured in the same run): full success, R_strict, R_loose, Right
   and the paper's failure tags (shares of the wrong purchases), on the hand-written released-schema fixture
   (tests/data/shop_released, each served task once; its budget-parse counts and the goal-leak scan's
   coverage too) and on the generated world (500 products, eval split, `--episodes` seeds).
2. Search: the same BM25 scores computed by a linear scan over every document (`SearchIndex.brute_force_scores`)
   are the baseline, so the index's speed-up is a ratio; world generation and index build times too.
3. Env steps/s with the expert policy.

The last line is one JSON object (`by_scenario`: {fixture, generated}: {scenario: {agent: row}}).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from alejax.envs.shop import leaks
from alejax.envs.shop.agents import ExpertAgent, run_episode
from alejax.envs.shop.evaluate import evaluate_all, markdown, rows
from alejax.envs.shop.loader import get_loaded_world, load_jsonl
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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "shop_released", "records.jsonl")


def scenario_tables(fixture: str, episodes: int, n_products: int = 500) -> dict:
    """Expert and baselines per scenario on the released-schema fixture (every served task once) and on the
    generated world (`episodes` seeds of its eval split): printed tables, and their rows for the JSON."""
    report = get_loaded_world(fixture).report
    print(f"fixture {os.path.relpath(fixture, ROOT)}: {report.summary()}")
    fixture_results = evaluate_all(0, data_path=fixture, split="all")
    print(f"\nfixture, each served task once ({report.n_tasks} tasks):\n{markdown(fixture_results, False)}\n")
    world_results = evaluate_all(episodes, n_products=n_products, split="eval")
    print(f"generated world (seed 0, {n_products} products, eval split, {episodes} episodes per cell):")
    print(markdown(world_results) + "\n", flush=True)
    with open(fixture, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    leak = leaks.scan(load_jsonl(fixture, "no_price_term"), records)  # every record's task, budgetless too
    print(f"fixture {leak.summary()}\n", flush=True)
    return {
        "leak_scan": leak.as_dict(),
        "fixture_budget": {
            "records": report.n_records,
            "parsed": report.n_budget_parsed,
            "kinds": dict(sorted(report.budget_kinds.items())),
            "unparsed": report.budget_unparsed,
        },
        "by_scenario": {"fixture": rows(fixture_results), "generated": rows(world_results)},
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
    parser.add_argument("--sizes", default="20000,200000", help="world sizes for search latency ('': none)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--brute", type=int, default=20, help="queries timed with the linear-scan baseline")
    parser.add_argument(
        "--episodes", type=int, default=200, help="episodes per scenario table cell and env rate"
    )
    parser.add_argument("--fixture", default=FIXTURE, help="released-schema JSONL for the first table")
    args = parser.parse_args()
    out = scenario_tables(args.fixture, args.episodes)
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
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
