"""Scoring a purchase against the goal (R_loose, R_strict, R_succ, Right and their parts) and error tags."""

from __future__ import annotations

import dataclasses
import difflib

from alejax.envs.shop.world import Product, Task

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


def score_purchase(product: Product, selected: dict[str, str], task: Task) -> Score:
    same_path = tuple(product.category[:2]) == tuple(task.category[:2])
    r_type = 1.0 if same_path or set(product.type_nouns) & set(task.type_nouns) else 0.5
    text = " ".join([product.title, *product.attributes, *product.bullets, product.description])
    n_att = sum(matches(a, text, product.attributes) for a in task.attributes)
    chosen = list(selected.values())
    n_opt = sum(
        any(v == c or token_set_ratio(v, c) > FUZZY_THRESHOLD for c in chosen) for v in task.options.values()
    )
    n_u_att, n_u_opt = len(task.attributes), len(task.options)
    r_att = n_att / n_u_att if n_u_att else 1.0
    r_opt = n_opt / n_u_opt if n_u_opt else 1.0
    r_price = float(product.price_with(selected) <= task.price_upper)
    loose = r_type * (n_att + n_opt + r_price) / (n_u_att + n_u_opt + 1)
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
TAGS = (INVALID_ACTION, LOOP, STEP_CAP, NO_DETAILS, AFTER_REFUSAL)
