"""Score the scripted agents in every scenario and print the baseline table (markdown).

python -m alejax.envs.shop.evaluate --episodes 200            # tiny world, eval split
python -m alejax.envs.shop.evaluate --episodes 200 --write docs/shop.md       # refresh the table in the docs
python -m alejax.envs.shop.evaluate --data shop.jsonl --split all --episodes 0   # released records, each task once

A row is one (scenario, agent): full success (R_succ), R_strict, R_loose, Right (bought the target itself)
and the paper's failure tags, each as a share of the wrong purchases (bought, not a full success):
bought without checking details, bought after the shopper refused (multi-turn only), persona under-use and
over-reading (persona scenarios only; `-` where a tag cannot occur, `n/a` where nothing was bought wrongly).
"""

from __future__ import annotations

import argparse
import os
import re

from alejax.envs.shop import scoring
from alejax.envs.shop.agents import AGENTS, run_episode
from alejax.envs.shop.metrics import FAILURE_TAGS, aggregate, failure_rates
from alejax.envs.shop.pages import SCENARIOS, ShopEnv

METRIC_COLUMNS = (
    ("success", "full success"),
    ("strict", "R_strict"),
    ("loose", "R_loose"),
    ("right", "Right"),
)
TAG_LABELS = {
    scoring.NO_DETAILS: "no details",
    scoring.AFTER_REFUSAL: "after refusal",
    scoring.PERSONA_UNDER_USE: "persona under-use",
    scoring.PERSONA_OVER_READING: "persona over-reading",
}


def tag_applies(tag: str, scenario: str) -> bool:
    """Whether a failure tag can occur in a scenario (no shopper refuses in single-turn, no persona ...)."""
    if tag == scoring.AFTER_REFUSAL:
        return SCENARIOS[scenario].multi_turn
    if tag in (scoring.PERSONA_UNDER_USE, scoring.PERSONA_OVER_READING):
        return SCENARIOS[scenario].persona
    return True


def evaluate(agent: str, scenario: str, episodes: int, world_seed: int = 0, n_products: int = 500,
             split: str = "eval", data_path: str | None = None, unparsed_budget: str = "exclude",
             world=None) -> dict:  # fmt: skip
    """Aggregate scores of `agent` over `episodes` seeds, or (episodes=0) over every task of the split once;
    `failures` holds the failure tags' shares of the wrong purchases (`metrics.failure_rates`)."""
    env = ShopEnv(scenario, world_seed=world_seed, n_products=n_products, split=split, data_path=data_path,
                  unparsed_budget=unparsed_budget, world=world)  # fmt: skip
    if episodes > 0:
        results = [run_episode(env, AGENTS[agent](), seed) for seed in range(episodes)]
    else:
        results = [run_episode(env, AGENTS[agent](), k, task=int(i)) for k, i in enumerate(env._pool)]
    out = aggregate(results)
    out["failures"] = failure_rates(results)
    return out


def evaluate_all(episodes: int, agents=tuple(AGENTS), scenarios=tuple(SCENARIOS), **kwargs) -> dict:
    """{scenario: {agent: evaluate(...)}} for every scenario and agent (kwargs go to `evaluate`)."""
    return {s: {a: evaluate(a, s, episodes, **kwargs) for a in agents} for s in scenarios}


def rows(results: dict) -> dict:
    """The table's numbers as plain data: {scenario: {agent: {metric: mean, tag: share or None, ...}}} (a
    tag that cannot occur in the scenario is None)."""
    out = {}
    for scenario, by_agent in results.items():
        out[scenario] = {}
        for agent, a in by_agent.items():
            f = a["failures"]
            row = {key: round(a[key][0], 4) for key, _ in METRIC_COLUMNS}
            row.update(episodes=a["episodes"], wrong_purchases=int(f["wrong_purchases"]))
            row.update({t: (round(f[t], 4) if tag_applies(t, scenario) else None) for t in FAILURE_TAGS})
            out[scenario][agent] = row
    return out


def markdown(results: dict, intervals: bool = True) -> str:
    """The per-scenario table of `evaluate_all`'s results (95% bootstrap intervals in brackets)."""

    def cell(m):
        mean, low, high = m
        return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]" if intervals else f"{100 * mean:.1f}"

    head = ["scenario", "agent", *(f"{label} %" for _, label in METRIC_COLUMNS), "wrong / episodes"]
    head += [f"{TAG_LABELS[t]} %" for t in FAILURE_TAGS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario, by_agent in results.items():
        for agent, a in by_agent.items():
            f = a["failures"]
            tags = [
                "-"
                if not tag_applies(t, scenario)
                else "n/a"
                if not f["wrong_purchases"]
                else f"{100 * f[t]:.0f}"
                for t in FAILURE_TAGS
            ]
            cells = [scenario, agent, *(cell(a[key]) for key, _ in METRIC_COLUMNS)]
            cells += [f"{int(f['wrong_purchases'])} / {a['episodes']}", *tags]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(episodes: int, world_seed: int = 0, n_products: int = 500, split: str = "eval",
          data_path: str | None = None, unparsed_budget: str = "exclude") -> str:  # fmt: skip
    """A headed markdown table of every scenario x agent."""
    results = evaluate_all(
        episodes, world_seed=world_seed, n_products=n_products, split=split, data_path=data_path,
        unparsed_budget=unparsed_budget,
    )  # fmt: skip
    runs = (
        f"{episodes} episodes per cell (episode seeds 0..{episodes - 1})"
        if episodes > 0
        else "each served task once"
    )
    source = (
        f"records {data_path} (unparsed budgets: {unparsed_budget})"
        if data_path
        else f"world seed {world_seed}, {n_products} products"
    )
    head = (
        f"{runs}, {source}, {split} split; 95% bootstrap intervals in brackets; failure tags as a share of "
        "the wrong purchases (-: cannot occur in the scenario, n/a: no wrong purchase)."
    )
    return head + "\n\n" + markdown(results)


def write_section(path: str, key: str, text: str) -> None:
    """Put `text` between the markers `<!-- shop-table:key -->` and `<!-- /shop-table:key -->` of the
    markdown file `path` (appended with its markers when absent), leaving the rest of the file as it is."""
    begin, end = f"<!-- shop-table:{key} -->", f"<!-- /shop-table:{key} -->"
    block = f"{begin}\n{text}\n{end}"
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    new = (
        pattern.sub(lambda _: block, old)
        if pattern.search(old)
        else old + ("\n" if old else "") + block + "\n"
    )
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200, help="0: every task of the split once")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--split", default="eval")
    parser.add_argument("--data", default=None, help="released-schema JSONL instead of a generated world")
    parser.add_argument("--unparsed-budget", default="exclude", help="exclude | no_price_term | error")
    parser.add_argument(
        "--write",
        default=None,
        help="also put the table into this markdown file (between its shop-table markers)",
    )
    args = parser.parse_args()
    text = table(args.episodes, args.world_seed, args.products, args.split, args.data, args.unparsed_budget)
    print(text)
    if args.write:
        write_section(args.write, "records" if args.data else "generated", text)


if __name__ == "__main__":
    main()
