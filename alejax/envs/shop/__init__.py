"""ShopSimulator in alejax: a seeded Chinese shopping world, its page machine and shopper, scoring, agents.

    from alejax.envs import make
    env = make("shop/single", world_seed=0, n_products=500, split="train")
    observation, info = env.reset(seed=3)
    observation, reward, terminated, truncated, info = env.step("search[纯棉 连衣裙]")

    env = make("shop/multi_persona", data_path="shop.jsonl")   # released-schema records instead
    env = make("shop/mix", split="eval")     # all four scenarios, the seed picks one (info["scenario"])

Modules: `catalog` (vocabulary), `world` (generator, tasks, personas), `search` (BM25 index), `pages` (the
env), `actions` (the action grammar), `shopper` (rule and LLM shoppers), `scoring`, `metrics`, `agents`,
`loader` (released JSONL), `budget` (budgets from instruction text), `persona` (released personas),
`mix` (the four scenarios in one env), `evaluate` (baseline table), `leaks` (the goal-leak scan).
"""

from __future__ import annotations

import functools

from alejax.envs.base import register
from alejax.envs.shop.actions import Action, format_action, parse_action
from alejax.envs.shop.mix import MixedShopEnv
from alejax.envs.shop.pages import SCENARIOS, ShopEnv
from alejax.envs.shop.world import World, generate_world, get_world

for _name in SCENARIOS:
    register(f"shop/{_name}", functools.partial(ShopEnv, _name))
register("shop/mix", MixedShopEnv)

__all__ = [
    "SCENARIOS",
    "Action",
    "MixedShopEnv",
    "ShopEnv",
    "World",
    "format_action",
    "generate_world",
    "get_world",
    "parse_action",
]
