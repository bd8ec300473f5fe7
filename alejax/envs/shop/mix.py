"""`shop/mix`: the four ShopSimulator scenarios in one env, so SFT data, RL groups and evaluation cover them all.

    env = make("shop/mix", world_seed=0, n_products=500, split="eval")        # the four, equally often
    env = make("shop/mix", scenarios="single:2,multi_persona:1")                # weights (positive integers)
    observation, info = env.reset(seed=7)    # info["scenario"]: the scenario seed 7 plays

The scenario is a function of the episode seed alone (a weighted round-robin cycle indexed by seed modulo its
length), so a replay from the seed (IPA's resampling), every member of an RL group and a rerun all play the
same scenario, and consecutive seeds (SFT episodes, held-out tasks 0..n-1) split between the scenarios in
exact proportion. Each scenario is its own `ShopEnv` over one shared world and search index; the task within
it is drawn from the seed as `ShopEnv` draws it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from alejax.envs.shop.pages import ASK_TOOL, SCENARIOS, SYSTEM_PROMPT, TOOLS, ShopEnv

ALL = ",".join(SCENARIOS)


def parse_scenarios(spec: str | Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    """{scenario: weight} from "single,multi", "single:2,multi:1", a list of names or a mapping."""
    if isinstance(spec, str):
        items = []
        for part in (p.strip() for p in spec.split(",")):
            if part:
                name, _, weight = part.partition(":")
                items.append((name.strip(), weight.strip() or "1"))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        items = [(name, 1) for name in spec]
    weights: dict[str, int] = {}
    for name, weight in items:
        if name not in SCENARIOS:
            raise ValueError(
                f"scenarios: {name!r} is not a scenario; expected some of {', '.join(SCENARIOS)}"
            )
        if name in weights:
            raise ValueError(f"scenarios: {name!r} given twice in {spec!r}")
        try:
            w = int(weight)
        except (TypeError, ValueError):
            w = 0
        if w < 1 or str(weight).strip() not in (str(w), f"{w}.0"):
            raise ValueError(f"scenarios: the weight of {name!r} must be a positive integer, got {weight!r}")
        weights[name] = w
    if not weights:
        raise ValueError(f"scenarios: none given ({spec!r}); expected some of {', '.join(SCENARIOS)}")
    return weights


def scenario_cycle(weights: Mapping[str, int]) -> list[str]:
    """Each scenario `weight` times, interleaved (smooth weighted round-robin): 1:1:1:1 -> the four in order,
    2:1 -> a, b, a."""
    slots = [((k + 0.5) / w, j, name) for j, (name, w) in enumerate(weights.items()) for k in range(w)]
    return [name for _, _, name in sorted(slots)]


class MixedShopEnv:
    """One ShopEnv per scenario in `scenarios` (weights as `parse_scenarios` reads them); every other keyword
    argument goes to each ShopEnv (world, split, view, reward ...). Between resets it is the scenario env
    it last reset: attributes it does not define itself (task, world, page, scenario, scripted_policy ...)
    are that env's."""

    def __init__(self, scenarios: str | Sequence[str] | Mapping[str, int] = ALL, **kwargs):
        self.weights = parse_scenarios(scenarios)
        self.cycle = scenario_cycle(self.weights)
        self.envs = {name: ShopEnv(name, **kwargs) for name in self.weights}
        self.current = self.envs[self.cycle[0]]
        multi = any(SCENARIOS[name].multi_turn for name in self.weights)
        # One prompt for every episode (a chat's system turn is fixed before the scenario is known): with a
        # multi-turn scenario in the mix, ask[...] is offered, and it is an invalid action in the others.
        ask = "  ask[话]          有用户可对话时（多轮场景），询问需求或提议购买\n" if multi else ""
        self.system_prompt = SYSTEM_PROMPT.format(ask=ask)
        self.tools = TOOLS + ([ASK_TOOL] if multi else [])

    def scenario_of(self, seed: int) -> str:
        return self.cycle[int(seed) % len(self.cycle)]

    def reset(self, seed: int, task: int | None = None) -> tuple[str, dict]:
        self.current = self.envs[self.scenario_of(seed)]
        return self.current.reset(seed, task=task)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        return self.current.step(action)

    def __getattr__(self, name: str):
        if name == "current":  # not yet set (during __init__ / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.current, name)
