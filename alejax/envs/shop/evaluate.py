"""Score the scripted agents in every scenario and print the baseline table (markdown).

python -m alejax.envs.shop.evaluate --episodes 200            # tiny world, eval split
python -m alejax.envs.shop.evaluate --episodes 200 --write docs/shop.md
python -m alejax.envs.shop.evaluate --data shop.jsonl --split all --episodes 0   # released records, each task once
"""

from __future__ import annotations

import argparse
import os

from alejax.envs.shop.agents import AGENTS, run_episode
from alejax.envs.shop.metrics import aggregate
from alejax.envs.shop.pages import SCENARIOS, ShopEnv


def evaluate(agent: str, scenario: str, episodes: int, world_seed: int = 0, n_products: int = 500,
             split: str = "eval", data_path: str | None = None, unparsed_budget: str = "exclude") -> dict:  # fmt: skip
    """Aggregate scores of `agent` over `episodes` seeds, or (episodes=0) over every task of the split once."""
    env = ShopEnv(scenario, world_seed=world_seed, n_products=n_products, split=split, data_path=data_path,
                  unparsed_budget=unparsed_budget)  # fmt: skip
    if episodes > 0:
        results = [run_episode(env, AGENTS[agent](), seed) for seed in range(episodes)]
    else:
        results = [run_episode(env, AGENTS[agent](), k, task=int(i)) for k, i in enumerate(env._pool)]
    return aggregate(results)


def table(episodes: int, world_seed: int = 0, n_products: int = 500, split: str = "eval",
          data_path: str | None = None, unparsed_budget: str = "exclude") -> str:  # fmt: skip
    def cell(m):
        mean, low, high = m
        return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    rows = [
        "| scenario | agent | full success % | R_strict % | R_loose % | Right % | no details % | after refusal % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        for agent in AGENTS:
            a = evaluate(agent, scenario, episodes, world_seed, n_products, split, data_path, unparsed_budget)
            tags = a["tags"]
            rows.append(
                f"| {scenario} | {agent} | {cell(a['success'])} | {cell(a['strict'])} | {cell(a['loose'])} | "
                f"{cell(a['right'])} | {100 * tags.get('bought_without_checking_details', 0):.0f} | "
                f"{100 * tags.get('bought_after_refusal', 0):.0f} |"
            )
    runs = (
        f"{episodes} episodes per cell (episode seeds 0..{episodes - 1})"
        if episodes > 0
        else "each task once"
    )
    source = (
        f"records {data_path} ({unparsed_budget})"
        if data_path
        else f"world seed {world_seed}, {n_products} products"
    )
    head = f"{runs}, {source}, {split} split; 95% bootstrap intervals in brackets."
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200, help="0: every task of the split once")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--split", default="eval")
    parser.add_argument("--data", default=None, help="released-schema JSONL instead of a generated world")
    parser.add_argument("--unparsed-budget", default="exclude", help="exclude | no_price_term | error")
    parser.add_argument("--write", default=None, help="also write the table into this markdown file")
    args = parser.parse_args()
    text = table(args.episodes, args.world_seed, args.products, args.split, args.data, args.unparsed_budget)
    print(text)
    if args.write:
        os.makedirs(os.path.dirname(args.write) or ".", exist_ok=True)
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(DOC_HEAD + text + "\n")


DOC_HEAD = """## ShopSimulator baselines

`alejax.envs.shop` generates a seeded Chinese shopping world (12 domains, leaf categories of ~120
near-identical products, tasks whose goal is unique in the leaf) and serves the four ShopSimulator scenarios:
`shop/single`, `shop/single_persona`, `shop/multi`, `shop/multi_persona`. Scripted agents, produced by
`python -m alejax.envs.shop.evaluate --episodes 200 --write docs/shop.md`:

- `expert`: privileged scripted agent (the SFT data source); asks about every goal family, searches with
  catalogue words, copies the target's id from the page, selects options, checks features, buys.
- `first_result`: searches the request verbatim and buys the first result (no options): the bar a trained
  policy must clear.
- `random`: searches the request, then clicks uniformly at random.

"""


if __name__ == "__main__":
    main()
