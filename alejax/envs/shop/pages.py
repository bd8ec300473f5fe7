"""The page machine: `ShopEnv`, one episode at a time, for the four scenarios.

Pages: search -> results (20 a page, 150 at most) -> item (options, `description` / `features` / `reviews`
sub-pages) -> `buy now`, which ends the episode and scores it. An observation is the page text joined with
` [SEP] `, then whether the search bar is shown, then the clickables. Product ids on pages are drawn afresh
per episode (from the episode seed), so a policy has to copy them from the page rather than memorize them.
The goal (target id, hidden slots, reason_key) lives in `env.task` and is never rendered.

The world is generated (`world_seed`, `n_products`) or read from released-schema JSONL (`data_path`, see
`loader.py`): `make("shop/multi_persona", data_path="shop.jsonl")` serves any of the four scenarios on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import numpy as np

from alejax.envs.shop import persona, scoring
from alejax.envs.shop.actions import BACK, BUY, NEXT, PREV, SEP, SUBPAGES, parse_action
from alejax.envs.shop.loader import UNPARSED_BUDGET, get_loaded_world
from alejax.envs.shop.search import PAGE_SIZE, TOP_K, SearchIndex, get_index
from alejax.envs.shop.shopper import LLMShopper, RuleShopper, Shopper
from alejax.envs.shop.world import Product, Task, get_world

LOOP_REPEATS = 3
REWARDS = ("loose", "strict", "success")
VIEWS = ("standard", "compact")
SHOPPERS = ("rule", "llm")
CONTROLS = {BACK, NEXT, PREV, BUY, *SUBPAGES}
# Product splits. "sft" and "rl" divide "train" (RL_FRACTION of its products go to "rl"), so an RL stage can
# train on products its SFT stage never saw; "eval" is held out from all three; "all" is every product (to
# evaluate a file of released records as a whole).
SPLITS = ("train", "eval", "sft", "rl", "all")
RL_FRACTION = 0.25
RL_SPLIT_SEED = 20251130


@dataclasses.dataclass(frozen=True)
class Scenario:
    multi_turn: bool
    persona: bool
    max_steps: int


SCENARIOS = {
    "single": Scenario(False, False, 30),
    "single_persona": Scenario(False, True, 30),
    "multi": Scenario(True, False, 40),
    "multi_persona": Scenario(True, True, 40),
}

SYSTEM_PROMPT = """你是淘宝购物助手，在一个模拟商城里为用户买到符合要求的商品。
每一步只输出一个动作，单独一行：
  search[关键词]    在搜索页搜索（只在显示搜索栏时可用）
  click[值]         点击当前页面可点击列表中的一项：商品编号、选项值、next >、< prev、back to search、
                    description、features、reviews、buy now
{ask}点击 buy now 即购买并结束。商品编号每局都会变化，请从页面上抄写。"""
ASK_LINE = "  ask[话]          和用户对话：询问需求（颜色、尺码、预算……）或提议购买\n"

TOOLS = [
    {"name": "search", "description": "search[keywords]: search the shop", "parameters": {"type": "string"}},
    {
        "name": "click",
        "description": "click[value]: click a clickable on the page",
        "parameters": {"type": "string"},
    },
]
ASK_TOOL = {
    "name": "ask",
    "description": "ask[utterance]: talk to the shopper",
    "parameters": {"type": "string"},
}

_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def price_text(product: Product, selected: dict[str, str] | None = None) -> str:
    """`¥59`, or the listed range `¥59 to ¥79` while the options that set a ranged product's price are open."""
    selected = selected or {}
    if product.price_max is not None and not (
        product.price_axes() and set(product.price_axes()) <= set(selected)
    ):
        return f"¥{product.price:g} to ¥{product.price_max:g}"
    return f"¥{product.price_with(selected):g}"


def option_labels(product: Product) -> dict[str, tuple[str, str]]:
    """Clickable label -> (axis, value) of a product's option values: the value itself, or `axis=value`
    where the value is on two axes (or reads like a button), so every click selects on the right axis."""
    counts = Counter(v for values in product.options.values() for v, _ in values)
    controls = {c.lower() for c in CONTROLS}
    labels = {}
    for axis, values in product.options.items():
        for v, _ in values:
            clash = counts[v] > 1 or v.lower() in controls
            labels[f"{axis}={v}" if clash else v] = (axis, v)
    return labels


def _shopper_policy(spec):
    """The chat policy an LLM shopper runs on: a Policy as given, or a model spec `model_policy` loads."""
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec:
        from alejax.agent.policy import model_policy  # jax and the model load only when asked for

        return model_policy(spec)
    raise ValueError(
        "shopper='llm' needs shopper_policy: a Policy (messages -> text) or a model spec for "
        f"alejax.agent.policy.model_policy (a model directory, a .gguf file, 'smollm2'); got {spec!r}"
    )


def split_pool(world, split: str) -> np.ndarray:
    """The product indices of `split` (one of SPLITS). "sft"/"rl" are a fixed division of "train", drawn
    per product index from its own stream (the world's generation is untouched)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if split == "all":
        return np.arange(world.n_products)
    if split in ("train", "eval"):
        return world.split_indices(split)
    train = world.split_indices("train")
    to_rl = np.random.default_rng(RL_SPLIT_SEED).random(world.n_products)[train] < RL_FRACTION
    return train[to_rl] if split == "rl" else train[~to_rl]


class ShopEnv:
    """A ShopSimulator episode. `make("shop/single", world_seed=0, n_products=500, split="train")`, or on
    released-schema records `make("shop/multi", data_path="shop.jsonl")`.

    `shopper`: "rule" (RuleShopper) or "llm" (LLMShopper on `shopper_policy`: a Policy, messages -> text,
    or a model spec for `alejax.agent.policy.model_policy`). `unparsed_budget`: what a released task whose
    instruction states no budget does (see loader.py)."""

    def __init__(
        self,
        scenario: str = "single",
        world_seed: int = 0,
        n_products: int = 500,
        split: str = "train",
        world=None,
        shopper_factory=None,
        max_steps: int | None = None,
        page_size: int = PAGE_SIZE,
        top_k: int = TOP_K,
        reward: str = "loose",
        view: str = "standard",
        data_path: str | None = None,
        unparsed_budget: str = "exclude",
        shopper: str = "rule",
        shopper_policy=None,
    ):
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario={scenario!r}: expected one of {', '.join(SCENARIOS)}")
        self.scenario_name = scenario
        self.scenario = SCENARIOS[scenario]
        if data_path and world is not None:
            raise ValueError("give either world or data_path, not both")
        if unparsed_budget not in UNPARSED_BUDGET:
            raise ValueError(
                f"unparsed_budget={unparsed_budget!r}: expected one of {', '.join(UNPARSED_BUDGET)}"
            )
        if data_path:
            world = get_loaded_world(data_path, unparsed_budget)
        self.world = world if world is not None else get_world(world_seed, n_products)
        self.index: SearchIndex = get_index(self.world)
        self.split = split
        if shopper not in SHOPPERS:
            raise ValueError(f"shopper={shopper!r}: expected one of {', '.join(SHOPPERS)}")
        if shopper_factory is None and shopper == "llm":
            policy = _shopper_policy(shopper_policy)
            shopper_factory = lambda task, persona: LLMShopper(task, policy, persona)  # noqa: E731
        self.shopper_factory = shopper_factory or (lambda task, persona: RuleShopper(task, persona))
        self.max_steps = max_steps or self.scenario.max_steps
        # Shorter result pages / lists make shorter episodes (the tiny-policy quickstart uses 5 of 20).
        self.page_size, self.top_k = page_size, top_k
        # The purchase's reward: R_loose (ShopSimulator's), R_strict, or full success (binary, as IPA assumes).
        if reward not in REWARDS:
            raise ValueError(f"reward={reward!r}: expected one of {', '.join(REWARDS)}")
        self.reward = reward
        # "standard": ShopSimulator's page text; "compact": the same information in about half the tokens
        # (one line per result, no separators or repeated control lists), for small policies.
        if view not in VIEWS:
            raise ValueError(f"view={view!r}: expected one of {', '.join(VIEWS)}")
        self.view = view
        self.system_prompt = SYSTEM_PROMPT.format(ask=ASK_LINE if self.scenario.multi_turn else "")
        self.tools = TOOLS + ([ASK_TOOL] if self.scenario.multi_turn else [])
        self._pool = split_pool(self.world, split)
        # Released records: only the tasks the loader serves, and in persona scenarios only persona tasks.
        if hasattr(self.world, "has_persona"):
            self._pool = np.array([i for i in self._pool if self._serves(int(i))], np.int64)
            if not len(self._pool):
                raise ValueError(
                    f"no {'persona ' if self.scenario.persona else ''}task to serve in split {split!r} of "
                    f"{self.world.report.source}\n{self.world.report.summary()}"
                )
        self.task: Task | None = None  # privileged: for scoring and scripted agents, never rendered

    def _serves(self, i: int) -> bool:
        return self.world.task(i) is not None and (not self.scenario.persona or self.world.has_persona(i))

    # ---- episode --------------------------------------------------------------------------------
    def reset(self, seed: int, task: int | None = None) -> tuple[str, dict]:
        """A new episode: the task is drawn from the split by `seed`, or is product `task`'s own."""
        self.seed = int(seed)
        if task is None:
            self.task = self._pick_task(self.seed)
        else:
            if not 0 <= int(task) < self.world.n_products or self.world.task(int(task)) is None:
                raise ValueError(f"product {task} has no task to serve (world of {self.world.n_products})")
            self.task = self.world.task(int(task))
        self.shopper: Shopper | None = (
            self.shopper_factory(self.task, self.scenario.persona) if self.scenario.multi_turn else None
        )
        self._ids: dict[int, str] = {}
        self._by_id: dict[str, int] = {}
        self.page = "search"
        self.query = ""
        self.results: list[int] = []
        self.results_page = 1
        self.item: int | None = None
        self.selected: dict[str, str] = {}
        self.steps = 0
        self.done = False
        self.n_invalid = 0
        self.seen_details: set[int] = set()
        self.refused_pending = False  # the shopper refused and has not agreed since
        self.bought_after_refusal = False
        self._pairs: dict[tuple, int] = {}
        self.loop = False
        parts = []
        if self.scenario.multi_turn:
            parts += ["Shopper:", self.shopper.opening()]
        if self.scenario.persona:
            parts += ["Persona:", json.dumps(persona.visible(self.task.persona), ensure_ascii=False)]
        return self._observation(parts), {"scenario": self.scenario_name, "split": self.split, "step": 0}

    def _pick_task(self, seed: int) -> Task:
        start = int(np.random.default_rng([seed, 11]).integers(len(self._pool)))
        for k in range(len(self._pool)):
            task = self.world.task(self._pool[(start + k) % len(self._pool)])
            if task is not None:
                return task
        raise RuntimeError("no task with a unique goal in this split")

    def scripted_policy(self, check_details: bool = True):
        """The privileged expert (`agents.ExpertAgent`) for the current episode, as a Policy (messages ->
        action): the SFT data source. `check_details=False` skips the features look (shorter episodes)."""
        from alejax.envs.shop.agents import ExpertAgent

        agent, started = ExpertAgent(check_details=check_details), []

        def act(messages: list[dict]) -> str:
            observation = self.standard_observation()
            if not started:
                agent.reset(self, observation)
                started.append(True)
            return agent.act(observation)

        return act

    def instruction(self) -> str:
        """What the user said up front (multi-turn: nothing beyond the opening line)."""
        if self.scenario.multi_turn:
            return ""
        return self.task.instruction_persona if self.scenario.persona else self.task.instruction

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.steps += 1
        key = (
            self.page,
            self.query,
            self.results_page,
            self.item,
            tuple(sorted(self.selected.items())),
            action,
        )
        self._pairs[key] = self._pairs.get(key, 0) + 1
        self.loop |= self._pairs[key] >= LOOP_REPEATS
        reward, terminated, prefix, valid = 0.0, False, [], True
        parsed = parse_action(action)
        clickables = self.clickables()
        if parsed is None:
            valid, prefix = False, ["Invalid action: not search[...], click[...] or ask[...]"]
        elif parsed.kind == "search":
            if self.page != "search":
                valid, prefix = False, ["Invalid action: no search bar on this page"]
            elif not parsed.arg:
                valid, prefix = False, ["Invalid action: empty search"]
            else:
                self.query, self.results, self.results_page = (
                    parsed.arg,
                    self.index.search(parsed.arg, self.top_k),
                    1,
                )
                self.page = "results"
        elif parsed.kind == "ask":
            if not self.scenario.multi_turn:
                valid, prefix = False, ["Invalid action: there is no shopper to ask in this scenario"]
            elif not parsed.arg:
                valid, prefix = False, ["Invalid action: empty question"]
            else:
                reply = self.shopper.reply(parsed.arg)
                if reply.refused:
                    self.refused_pending = True
                elif reply.accepted:
                    self.refused_pending = False
                prefix = ["Shopper:", reply.text]
        else:
            value = _match_clickable(self._from_label(parsed.arg), clickables)
            if value is None:
                valid, prefix = False, [f"Invalid action: {parsed.arg!r} is not clickable on this page"]
            elif value == BUY:
                reward, terminated = self._buy()
            else:
                self._click(value)
        if not valid:
            self.n_invalid += 1
        truncated = not terminated and self.steps >= self.max_steps
        self.done = terminated or truncated
        info = {"step": self.steps, "valid": valid, "page": self.page}
        if self.done:
            info.update(self._final_info(truncated))
            if not terminated:
                info["score"] = scoring.Score().as_dict()
        if terminated:
            return "Thank you for shopping with us!", reward, True, False, info
        return self._observation(prefix), reward, False, truncated, info

    def _click(self, value: str) -> None:
        if value == BACK:
            self.page, self.item, self.selected = "search", None, {}
        elif value == NEXT:
            self.results_page += 1
        elif value == PREV:
            if self.page in SUBPAGES:
                self.page = "item"
            elif self.page == "item":
                self.page, self.item, self.selected = "results", None, {}
            else:
                self.results_page -= 1
        elif value in SUBPAGES:
            self.page = value
            if value in ("description", "features"):
                self.seen_details.add(self.item)
        elif self.page == "results":
            self.page, self.item, self.selected = "item", self._by_id[value], {}
        else:  # an option value on the item page
            axis, option = option_labels(self.world.product(self.item))[value]
            self.selected[axis] = option

    def _buy(self) -> tuple[float, bool]:
        product = self.world.product(self.item)
        self.score = scoring.score_purchase(product, dict(self.selected), self.task)
        self.bought_after_refusal = self.refused_pending
        return getattr(self.score, self.reward), True

    def _final_info(self, truncated: bool) -> dict:
        bought = not truncated
        tags = []
        if self.n_invalid:
            tags.append(scoring.INVALID_ACTION)
        if self.loop:
            tags.append(scoring.LOOP)
        if truncated:
            tags.append(scoring.STEP_CAP)
        if bought and self.item not in self.seen_details:
            tags.append(scoring.NO_DETAILS)
        if bought and self.bought_after_refusal:
            tags.append(scoring.AFTER_REFUSAL)
        if bought and self.scenario.persona and not self.score.success:
            error = scoring.persona_error(
                self.world.product(self.item),
                self.selected,
                self.task,
                self.world.product(self.task.target),
                persona.visible(self.task.persona),
            )
            tags += [error] if error else []
        info = {
            "tags": tags,
            "n_invalid": self.n_invalid,
            "task": int(self.task.index),
            "scenario": self.scenario_name,
            "bought": bought,
        }
        if bought:
            info["score"] = self.score.as_dict()
        info["success"] = bool(bought and self.score.success)  # full success (R_succ), for RL metrics
        return info

    # ---- rendering ------------------------------------------------------------------------------
    def display_id(self, product: int) -> str:
        """This episode's id for a product: a keyed hash of (episode seed, product)."""
        if product not in self._ids:
            salt = 0
            while True:
                digest = hashlib.blake2b(f"{self.seed}/{product}/{salt}".encode(), digest_size=8).digest()
                pid = "B" + "".join(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in digest[:5])
                if pid not in self._by_id:
                    break
                salt += 1
            self._ids[product], self._by_id[pid] = pid, product
        return self._ids[product]

    def _page_results(self) -> list[int]:
        lo = (self.results_page - 1) * self.page_size
        return self.results[lo : lo + self.page_size]

    def clickables(self) -> list[str]:
        if self.page == "search":
            return []
        if self.page == "results":
            out = [BACK]
            if self.results_page > 1:
                out.append(PREV)
            if self.results_page * self.page_size < len(self.results):
                out.append(NEXT)
            return out + [self.display_id(i) for i in self._page_results()]
        if self.page == "item":
            return [BACK, PREV, *SUBPAGES, BUY, *option_labels(self.world.product(self.item))]
        return [BACK, PREV]

    def page_text(self) -> list[str]:
        if self.page == "search":
            text = ["WebShop"]
            if self.instruction():
                text += ["Instruction:", self.instruction()]
            return text + ["Search"]
        if self.page == "results":
            n = len(self.results)
            pages = max(1, -(-n // self.page_size))
            text = [f"Results for: {self.query}", f"Page {self.results_page}/{pages} (total results: {n})"]
            if not n:
                text.append("No products found")
            for i in self._page_results():
                product = self.world.product(i)
                text += [self.display_id(i), product.title, price_text(product)]
            return text
        product = self.world.product(self.item)
        if self.page == "item":
            text = [product.title, f"Price: {price_text(product, self.selected)}"]
            labels = {option: label for label, option in option_labels(product).items()}
            for axis, values in product.options.items():
                text.append(f"{axis}: " + " / ".join(labels[axis, v] for v, _ in values))
            if self.selected:
                text.append("Selected: " + ", ".join(f"{a}={v}" for a, v in self.selected.items()))
            return text
        if self.page == "description":
            return [product.description]
        if self.page == "features":
            return list(product.bullets)
        return list(product.reviews)

    def _observation(self, prefix: list[str], view: str | None = None) -> str:
        if (view or self.view) == "compact":
            return "\n".join(prefix + self.compact_page_text())
        text = SEP.join(prefix + self.page_text())
        search = "available" if self.page == "search" else "unavailable"
        return f"{text}\n[search] {search}\n[clickables] " + " | ".join(self.clickables())

    def standard_observation(self) -> str:
        """The current page in the standard view (what the scripted agents parse, whatever the policy sees)."""
        return self._observation([], view="standard")

    def compact_page_text(self) -> list[str]:
        """The compact view: results by position (`click[1]`; ids still work), option values, `next >`; the
        fixed controls (back to search, < prev, description, features, reviews, buy now) left implicit."""
        if self.page == "search":
            return [self.instruction() or "Search"]
        if self.page == "results":
            lines = [f"Page {self.results_page}" + (" (next >)" if NEXT in self.clickables() else "")]
            if not self.results:
                lines.append("No products found")
            for k, i in enumerate(self._page_results(), 1):
                product = self.world.product(i)
                lines.append(f"[{k}] {product.title} {price_text(product)}")
            return lines
        if self.page != "item":
            return self.page_text()
        product = self.world.product(self.item)
        lines = [f"{product.title} {price_text(product, self.selected)}"]
        labels = {option: label for label, option in option_labels(product).items()}
        for axis, values in product.options.items():
            chosen = self.selected.get(axis)
            # Values in brackets, as the click action writes them, so both tokenize alike.
            lines.append(
                f"{axis}={chosen}"
                if chosen
                else f"{axis}: " + " ".join(f"[{labels[axis, v]}]" for v, _ in values)
            )
        return lines

    def option_label(self, axis: str, value: str) -> str | None:
        """How option `value` of `axis` is clicked on the current item page (None: not offered there)."""
        if self.item is None:
            return None
        for label, option in option_labels(self.world.product(self.item)).items():
            if option == (axis, value):
                return label
        return None

    def click_label(self, display_id: str) -> str:
        """How a result is clicked in this view: its id (standard) or its position on the page (compact:
        `click[2]`), which spares a small policy copying random ids."""
        if self.view != "compact" or self.page != "results":
            return display_id
        ids = [self.display_id(i) for i in self._page_results()]
        return str(ids.index(display_id) + 1) if display_id in ids else display_id

    def _from_label(self, arg: str) -> str:
        """A compact-view position (`1`..) on a results page -> that result's id; anything else unchanged."""
        if self.view == "compact" and self.page == "results" and arg.strip().isdigit():
            page = self._page_results()
            k = int(arg.strip())
            if 1 <= k <= len(page):
                return self.display_id(page[k - 1])
        return arg


def _match_clickable(arg: str, clickables: list[str]) -> str | None:
    """Case-insensitive exact match (ids and markers are ASCII; option values are copied as shown)."""
    lowered = {c.lower(): c for c in clickables}
    return lowered.get(arg.strip().lower())
