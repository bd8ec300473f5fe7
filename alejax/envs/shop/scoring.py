"""Scoring a purchase against the goal (R_loose, R_strict, R_succ, Right and their parts) and error tags."""

from __future__ import annotations

import dataclasses
import difflib
import json

from alejax.envs.shop.catalog import mentions
from alejax.envs.shop.world import Product, Slot, Task

FUZZY_THRESHOLD = 85


def token_set_ratio(a: str, b: str) -> float:
    """fuzzywuzzy's token-set ratio (0-100) on whitespace tokens, with difflib doing the string ratios."""
    ta, tb = set(a.lower().split()), set(b.lower().split())
    common = " ".join(sorted(ta & tb))
    rest_a = (common + " " + " ".join(sorted(ta - tb))).strip()
    rest_b = (common + " " + " ".join(sorted(tb - ta))).strip()

    def ratio(x, y):
        return 100 * difflib.SequenceMatcher(None, x, y).ratio() if x or y else 0.0

    return max(ratio(common, rest_a), ratio(common, rest_b), ratio(rest_a, rest_b))


def matches(goal: str, text: str, phrases: list[str] = ()) -> bool:
    """Upstream matching: a substring of the text, or a fuzzy match to one of the phrases."""
    return goal in text or any(token_set_ratio(goal, p) > FUZZY_THRESHOLD for p in phrases)


@dataclasses.dataclass
class Score:
    r_type: float = 0.0
    r_att: float = 0.0
    r_opt: float = 0.0
    r_price: float = 0.0
    n_att: int = 0  # goal attributes matched
    n_opt: int = 0  # goal options matched
    loose: float = 0.0  # R_loose, the env's step reward
    strict: float = 0.0  # R_strict
    success: float = 0.0  # R_succ
    right: float = 0.0  # bought the target itself

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _option_matches(goal: str, chosen: str) -> bool:
    return goal == chosen or token_set_ratio(goal, chosen) > FUZZY_THRESHOLD


def product_text(product: Product) -> str:
    return " ".join([product.title, *product.attributes, *product.bullets, product.description])


def attribute_met(goal: str, product: Product) -> bool:
    """A goal attribute is in the product's title, attributes, bullets or description."""
    return matches(goal, product_text(product), product.attributes)


def option_met(axis: str, goal: str, product: Product, selected: dict[str, str]) -> bool:
    """A goal option is selected on its axis (on any axis, when the product has no such axis)."""
    if axis in product.options:
        return axis in selected and _option_matches(goal, selected[axis])
    return any(_option_matches(goal, c) for c in selected.values())


def score_purchase(product: Product, selected: dict[str, str], task: Task) -> Score:
    """Score buying `product` with `selected` ({axis: value}) against `task`'s goal. A goal option counts
    when the same axis holds it (any selected value, when the product has no such axis); a task with no
    budget (`price_upper` None: a released task scored with `unparsed_budget="no_price_term"`) drops the
    price term from R_loose, R_strict and R_succ."""
    same_path = tuple(product.category[:2]) == tuple(task.category[:2])
    r_type = 1.0 if same_path or set(product.type_nouns) & set(task.type_nouns) else 0.5
    n_att = sum(attribute_met(a, product) for a in task.attributes)
    n_opt = sum(option_met(axis, value, product, selected) for axis, value in task.options.items())
    n_u_att, n_u_opt = len(task.attributes), len(task.options)
    r_att = n_att / n_u_att if n_u_att else 1.0
    r_opt = n_opt / n_u_opt if n_u_opt else 1.0
    priced = task.price_upper is not None
    r_price = float(product.price_with(selected) <= task.price_upper) if priced else 1.0
    n_terms = n_u_att + n_u_opt + priced
    loose = r_type * (n_att + n_opt + (r_price if priced else 0.0)) / n_terms if n_terms else r_type
    strict = r_type * r_att * r_opt * r_price
    success = float(r_type == 1.0 and r_att == 1.0 and r_opt == 1.0 and r_price == 1.0)
    return Score(
        r_type, r_att, r_opt, r_price, n_att, n_opt, loose, strict, success, float(product.asin == task.asin)
    )


# Error tags an episode can carry (see ShopEnv's info["tags"]).
INVALID_ACTION = "invalid_action"
LOOP = "loop"
STEP_CAP = "step_cap"
NO_DETAILS = "bought_without_checking_details"
AFTER_REFUSAL = "bought_after_refusal"
PERSONA_UNDER_USE = "persona_under_use"
PERSONA_OVER_READING = "persona_over_reading"
TAGS = (INVALID_ACTION, LOOP, STEP_CAP, NO_DETAILS, AFTER_REFUSAL, PERSONA_UNDER_USE, PERSONA_OVER_READING)


def slot_met(slot: Slot, product: Product, selected: dict[str, str], task: Task) -> bool:
    """Whether buying `product` with `selected` satisfies one goal piece (as `score_purchase` counts it)."""
    if slot.kind == "att":
        return attribute_met(slot.value, product)
    if slot.kind == "opt":
        return option_met(slot.axis, slot.value, product, selected)
    return task.price_upper is None or product.price_with(selected) <= task.price_upper


def persona_error(
    product: Product, selected: dict[str, str], task: Task, target: Product, persona_view: dict
) -> str | None:
    """The persona error of a wrong purchase in a persona scenario (None: not a persona error).

    under-use: the purchase misses the clue, the goal piece only the persona states.
    over-reading: the clue is met, but where the purchase departs from the goal (an attribute the target
    lacks, or a goal axis's selected option that is not the goal's) it takes a value the persona states
    (a decoy preference for another category, a profile tag ...): the persona was read beyond its clue.
    Exclusive, under-use first, as the paper splits persona errors."""
    if task.clue is None:
        return None
    if not slot_met(task.clue, product, selected, task):
        return PERSONA_UNDER_USE
    departures = [a for a in product.attributes if a not in target.attributes]
    departures += [
        v
        for axis, v in selected.items()
        if axis in task.options and not _option_matches(task.options[axis], v)
    ]
    said = json.dumps(persona_view, ensure_ascii=False)
    return PERSONA_OVER_READING if any(mentions(said, d) for d in departures) else None
