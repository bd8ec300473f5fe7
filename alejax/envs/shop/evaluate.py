"""Score the scripted agents in every scenario and print the baseline table (markdown).

python -m alejax.envs.shop.evaluate --episodes 200            # tiny world, eval split
python -m alejax.envs.shop.evaluate --episodes 200 --write docs/shop.md
"""

from __future__ import annotations

import argparse
import os

from alejax.envs.shop.agents import AGENTS, run_episode
from alejax.envs.shop.metrics import aggregate
from alejax.envs.shop.pages import SCENARIOS, ShopEnv


def evaluate(agent: str, scenario: str, episodes: int, world_seed: int = 0, n_products: int = 500,
             split: str = "eval") -> dict:  # fmt: skip
    env = ShopEnv(scenario, world_seed=world_seed, n_products=n_products, split=split)
    results = [run_episode(env, AGENTS[agent](), seed) for seed in range(episodes)]
    return aggregate(results)


def table(episodes: int, world_seed: int = 0, n_products: int = 500, split: str = "eval") -> str:
    def cell(m):
        mean, low, high = m
        return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    rows = [
        "| scenario | agent | full success % | R_strict % | R_loose % | Right % | no details % | after refusal % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        for agent in AGENTS:
            a = evaluate(agent, scenario, episodes, world_seed, n_products, split)
            tags = a["tags"]
            rows.append(
                f"| {scenario} | {agent} | {cell(a['success'])} | {cell(a['strict'])} | {cell(a['loose'])} | "
                f"{cell(a['right'])} | {100 * tags.get('bought_without_checking_details', 0):.0f} | "
                f"{100 * tags.get('bought_after_refusal', 0):.0f} |"
            )
    head = (
        f"{episodes} episodes per cell (episode seeds 0..{episodes - 1}), world seed {world_seed}, "
        f"{n_products} products, {split} split; 95% bootstrap intervals in brackets."
    )
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--split", default="eval")
    parser.add_argument("--write", default=None, help="also write the table into this markdown file")
    args = parser.parse_args()
    text = table(args.episodes, args.world_seed, args.products, args.split)
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
