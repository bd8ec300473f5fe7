"""Scripted agents: the expert (the SFT data source) and two baselines (random, buy-the-first-result).

Agents speak the action grammar of `actions.py` as plain text, exactly what a policy would emit. The expert
is privileged (it reads `env.task`), but it finds product ids by reading the page like a policy must.
"""

from __future__ import annotations

import re

import numpy as np

from alejax.envs.shop import actions, scoring
from alejax.envs.shop.actions import BACK, BUY, NEXT, PREV, SEP, parse_observation


def user_request(observation: str) -> str:
    """The instruction (single-turn) or the shopper's line (multi-turn) in an observation of either view."""
    parts = [p.strip() for p in re.split(re.escape(SEP) + "|\n", observation)]
    for marker in ("Instruction:", "Shopper:"):
        if marker in parts[:-1]:
            return parts[parts.index(marker) + 1]
    return ""


class ExpertAgent:
    """Asks the shopper about every goal family (multi-turn), searches with the catalogue's own words, pages
    through results to the target, selects the goal options, checks the features, proposes, buys."""

    def __init__(self, check_details: bool = True):
        self.check_details = check_details

    def reset(self, env, observation: str) -> None:  # env: the ShopEnv being played
        self.env = env
        task = env.task
        self.world = env.world
        self.target_title = self.world.product(task.target).title
        leaf = self.world.leaves[self.world.leaf_of[task.target]] if hasattr(self.world, "leaves") else None
        words = [leaf.name] if leaf is not None else [task.type_nouns[0]]
        words += [a for a in task.attributes if a not in words[0]]
        self.queries = [" ".join(words), self.target_title]
        # One question per family the shopper can recognise; a generic one for each slot it cannot name
        # (a released attribute of family 其他), and a last "anything else?".
        families = list(dict.fromkeys(s.family for s in task.slots if s.family != "其他"))
        generic = 1 + sum(s.family == "其他" for s in task.slots)
        self.questions = [f"请问您对{f}有什么要求？" for f in families] + ["还有其他要求吗？"] * generic
        if not env.scenario.multi_turn:
            self.questions = []
        self.options = dict(task.options)
        self.checked = False
        self.proposed = False

    def meets_goal(self, index: int) -> bool:
        """Buying product `index` with the goal's options would be a full success."""
        product = self.world.product(index)
        for axis, value in self.env.task.options.items():
            pool = product.options[axis] if axis in product.options else sum(product.options.values(), [])
            if value not in (v for v, _ in pool):
                return False
        return bool(scoring.score_purchase(product, dict(self.env.task.options), self.env.task).success)

    def act(self, observation: str) -> str:
        parts, search, clickables = parse_observation(self.env.standard_observation())
        if self.questions:
            return actions.ask(self.questions.pop(0))
        if search:
            return actions.search(self.queries.pop(0) if len(self.queries) > 1 else self.queries[0])
        if BUY in clickables:  # item page
            if self.target_title not in parts and not self.meets_goal(self.env.item):
                return actions.click(PREV)
            offered = set(clickables)
            for axis, value in list(self.options.items()):
                self.options.pop(axis)
                label = self.env.option_label(axis, value)
                if label in offered:
                    return actions.click(label)
            if not self.checked and self.check_details:
                self.checked = True
                return actions.click("features")
            if self.env.scenario.multi_turn and not self.proposed:
                self.proposed = True
                return actions.ask("这款可以下单吗？")
            return actions.click(BUY)
        if clickables == [BACK, PREV]:  # a details sub-page: back to the item
            return actions.click(PREV)
        # The first listed product that meets the whole goal (what a careful shopper would pick, and a rule
        # a policy can learn from the page), else the target itself further down.
        for pid in clickables:
            if pid in self.env._by_id and self.meets_goal(self.env._by_id[pid]):
                return actions.click(self.env.click_label(pid))
        for k, part in enumerate(parts[1:], 1):
            if part == self.target_title and parts[k - 1] in clickables:
                return actions.click(self.env.click_label(parts[k - 1]))
        if NEXT in clickables:
            return actions.click(NEXT)
        return actions.click(BACK)


class _SearchesTheRequest:
    """Baselines that search the user's request verbatim whenever the search bar is shown."""

    def reset(self, env, observation: str) -> None:
        self.env = env
        # The first observation: the standard re-render of a page carries no shopper line.
        self.request = user_request(observation) or user_request(env.standard_observation()) or "商品"

    def act(self, observation: str) -> str:
        _, search, clickables = parse_observation(self.env.standard_observation())
        return actions.search(self.request) if search else self.browse(clickables)


class RandomAgent(_SearchesTheRequest):
    """Searches the request verbatim, then clicks uniformly at random."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def browse(self, clickables: list[str]) -> str:
        if not clickables:
            return actions.click(BACK)
        return actions.click(clickables[int(self.rng.integers(len(clickables)))])


class FirstResultAgent(_SearchesTheRequest):
    """Searches the request verbatim, clicks the first result, buys it (no options, no questions)."""

    def browse(self, clickables: list[str]) -> str:
        if BUY in clickables:
            return actions.click(BUY)
        ids = [c for c in clickables if c not in (BACK, NEXT, PREV)]
        return actions.click(ids[0]) if ids else actions.click(BACK)


AGENTS = {"expert": ExpertAgent, "random": RandomAgent, "first_result": FirstResultAgent}


def run_episode(env, agent, seed: int, task: int | None = None) -> dict:
    """One episode of the ShopEnv `env` (on product `task`'s task, else the one `seed` draws); returns the
    score fields, tags, task id, whether it bought, actions and observations."""
    observation, _ = env.reset(seed, task=task)
    agent.reset(env, observation)
    observations, taken = [observation], []
    info: dict = {}
    done = False
    while not done:
        action = agent.act(observation)
        observation, _, terminated, truncated, info = env.step(action)
        observations.append(observation)
        taken.append(action)
        done = terminated or truncated
    return {
        **info["score"],
        "tags": info["tags"],
        "task": info["task"],
        "bought": info["bought"],
        "actions": taken,
        "observations": observations,
    }
