"""The seeded world generator: leaf categories with schemas, near-identical products, tasks and personas.

Everything is a pure function of `(seed, n_products)`. Products live in numpy arrays (one row per product,
generated per leaf) and become `Product` records only when a page shows them, so a 200k-product world is
built in about a second. A task is derived from its target product on demand (`world.task(i)`), with a goal
set that no other product in the leaf satisfies (checked by brute force over the leaf).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from alejax.envs.shop import catalog
from alejax.envs.shop.budget import Budget
from alejax.envs.shop.catalog import canonical, surface_forms

EVAL_FRACTION = 0.1
PRODUCTS_PER_LEAF = 120
MIN_LEAVES = 12  # the tiny world still spans every domain


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A leaf category: the schema its products share."""

    index: int
    domain: str
    base: str  # canonical|synonyms of the type noun
    modifier: str
    series: str  # canonical|synonyms
    slots: tuple[tuple[str, str, tuple[str, ...]], ...]  # (slot name, family, values)
    brands: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...], tuple[int, ...]], ...]  # (axis, values, price deltas)
    price_band: tuple[int, int]

    @property
    def name(self) -> str:
        return self.modifier + canonical(self.base)

    @property
    def path(self) -> tuple[str, str, str]:
        return (self.domain, canonical(self.base), f"{self.name}({canonical(self.series)})")

    @property
    def type_nouns(self) -> tuple[str, ...]:
        return tuple(surface_forms(self.base))


@dataclasses.dataclass
class Product:
    index: int
    asin: str  # the catalogue id; never shown to the agent (pages show per-episode display ids)
    title: str
    category: tuple[str, ...]
    type_nouns: tuple[str, ...]
    shop_name: str
    price: float  # with no option selected
    attributes: list[str]
    bullets: list[str]
    description: str
    options: dict[str, list[tuple[str, float]]]  # axis -> [(value, price delta)]
    reviews: list[str]
    split: str = "train"
    price_max: float | None = None  # a released `[min, max]` pricing's max (price is then the min)

    def price_with(self, selected: dict[str, str]) -> float:
        """The price with `selected` ({axis: value}); the deltas of several priced axes add, up to the
        listed max (a shop never charges above its own range)."""
        price = self.price
        for axis, value in selected.items():
            price += dict(self.options.get(axis, [])).get(value, 0.0)
        return min(price, self.price_max) if self.price_max is not None else price

    def price_axes(self) -> list[str]:
        """The option axes whose choice changes the price."""
        return [axis for axis, values in self.options.items() if len({d for _, d in values}) > 1]


@dataclasses.dataclass
class Slot:
    """One piece of the goal as the shopper holds it: revealed when asked about its family."""

    kind: str  # "att", "opt" or "budget"
    family: str
    value: str  # canonical value (the budget as a number string)
    phrase: str  # how the shopper says it
    forms: tuple[str, ...] = ()  # every surface form of the value (canonical first)
    axis: str = ""  # an option slot's axis (颜色分类, 尺码 ...)


@dataclasses.dataclass
class Task:
    index: int
    target: int  # product index
    asin: str
    attributes: list[str]  # U_att, canonical
    options: dict[str, str]  # U_opt: axis -> canonical value
    price_upper: float | None  # None: a released task whose instruction states no budget (no price term)
    instruction: str  # single-turn, everything said
    instruction_persona: str  # one clue removed (it lives in the persona)
    opening: str  # the shopper's vague first line (type only)
    persona: dict
    reason_key: str  # persona field that holds the clue
    clue: Slot  # the goal piece removed from instruction_persona
    slots: list[Slot]  # every goal piece, in the order the shopper volunteers them
    split: str
    type_nouns: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    budget: Budget | None = None  # a released task's budget as parsed from its instruction


def _leaf_order(seed: int) -> list[tuple[int, int, int, int]]:
    """All (domain, base, modifier, series) combinations, shuffled per domain and dealt round-robin."""
    rng = np.random.default_rng([seed, 1])
    per_domain = []
    for d, dom in enumerate(catalog.DOMAINS):
        combos = [
            (d, b, m, s)
            for b in range(len(dom["bases"]))
            for m in range(len(dom["modifiers"]))
            for s in range(len(catalog.SERIES))
        ]
        per_domain.append([combos[i] for i in rng.permutation(len(combos))])
    order = []
    for rank in range(max(len(c) for c in per_domain)):
        for d in rng.permutation(len(per_domain)):
            if rank < len(per_domain[d]):
                order.append(per_domain[d][rank])
    return order


def _make_leaf(index: int, combo: tuple[int, int, int, int], rng: np.random.Generator) -> Leaf:
    d, b, m, s = combo
    dom = catalog.DOMAINS[d]
    base, (lo, hi) = dom["bases"][b]
    slots = tuple((name, fam, tuple(vals)) for name, (fam, vals) in dom["slots"].items())
    brands = tuple(dom["brands"][i] for i in np.sort(rng.choice(len(dom["brands"]), 5, replace=False)))
    options = []
    for axis, values in dom["options"].items():
        k = min(len(values), int(rng.integers(3, 7)))
        chosen = tuple(values[i] for i in np.sort(rng.choice(len(values), k, replace=False)))
        if axis == "规格":  # bigger specs cost more; colours and sizes do not
            step = max(5, int(round((lo + hi) * 0.08 / 10)) * 10)
            deltas = tuple(step * i for i in range(k))
        else:
            deltas = (0,) * k
        options.append((axis, chosen, deltas))
    # A leaf's price band: a narrower window inside the base's band.
    centre = float(rng.uniform(lo, hi))
    band = (max(lo, int(centre * 0.7)), min(hi, int(centre * 1.3)) + 1)
    return Leaf(
        index, dom["name"], base, dom["modifiers"][m], catalog.SERIES[s], slots, brands, tuple(options), band
    )


def _synonym(value: str) -> str:
    forms = surface_forms(value)
    return forms[1] if len(forms) > 1 else forms[0]


def _price_tag(x: np.ndarray) -> np.ndarray:
    """Shop prices end in 9 (59, 129 ...)."""
    return (np.floor(x / 10.0) * 10 + 9).astype(np.int64)


@dataclasses.dataclass
class World:
    """A generated catalogue. Per-product arrays; `product(i)` and `task(i)` materialize records."""

    seed: int
    n_products: int
    leaves: list[Leaf]
    leaf_of: np.ndarray  # [N] leaf index
    slot_value: np.ndarray  # [N, S] value index into the leaf's slot vocabulary
    brand: np.ndarray  # [N] index into leaf.brands
    offered: np.ndarray  # [N, A, V] bool: option values a product offers
    price: np.ndarray  # [N] base price
    title_drop: np.ndarray  # [N] slot left out of the title (-1: none), so details pages matter
    stuffing: np.ndarray  # [N, K] indices into catalog.GENERIC_WORDS (-1: none)
    title_synonym: np.ndarray  # [N, S] bool: the title also carries this slot value's first synonym
    type_synonym: np.ndarray  # [N] bool: the title also carries the type noun's first synonym
    is_eval: np.ndarray  # [N] bool
    leaf_start: np.ndarray  # [L + 1] products of leaf l are leaf_start[l]:leaf_start[l + 1]

    @property
    def key(self) -> tuple:
        return ("generated", self.seed, self.n_products)

    def asin(self, i: int) -> str:
        return f"A{self.seed % 1000:03d}{i:07d}"

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.is_eval if split == "eval" else ~self.is_eval)

    # ---- product records -------------------------------------------------------------------------
    def _values(self, i: int) -> list[str]:
        leaf = self.leaves[self.leaf_of[i]]
        return [canonical(leaf.slots[s][2][v]) for s, v in enumerate(self.slot_value[i, : len(leaf.slots)])]

    def product(self, i: int) -> Product:
        i = int(i)
        leaf = self.leaves[self.leaf_of[i]]
        values = self._values(i)
        brand = leaf.brands[self.brand[i]]
        rng = np.random.default_rng([self.seed, i, 2])
        stuffing = [catalog.GENERIC_WORDS[k] for k in self.stuffing[i] if k >= 0]
        middle = [canonical(leaf.series)] + [v for s, v in enumerate(values) if s != self.title_drop[i]]
        # Keyword stuffing with synonyms of the product's own values: honest, but it reorders siblings.
        middle += [_synonym(leaf.slots[s][2][v]) for s, v in enumerate(self.slot_value[i, : len(leaf.slots)])
                   if self.title_synonym[i, s]]  # fmt: skip
        if self.type_synonym[i]:
            middle.append(_synonym(leaf.base))
        middle = [middle[k] for k in rng.permutation(len(middle))]
        title = " ".join([brand, *stuffing, *middle, leaf.name])
        options = {}
        for a, (axis, vals, deltas) in enumerate(leaf.options):
            options[axis] = [
                (canonical(vals[v]), float(deltas[v])) for v in range(len(vals)) if self.offered[i, a, v]
            ]
        attributes = [leaf.modifier, canonical(leaf.series), *values, brand]
        bullets = [f"{leaf.slots[s][0]}：{v}" for s, v in enumerate(values)]
        bullets += [f"品牌：{brand}", f"款式：{leaf.name}", f"系列：{canonical(leaf.series)}"]
        description = f"这款{leaf.name}来自{brand}，" + "，".join(
            f"{leaf.slots[s][0]}为{v}" for s, v in enumerate(values)
        )
        description += f"，属于{canonical(leaf.series)}。"
        reviews = [f"{canonical(leaf.base)}收到了，{v}和描述一致。" for v in values[:2]] + [
            "物流很快，包装完好。"
        ]
        return Product(
            index=i,
            asin=self.asin(i),
            title=title,
            category=leaf.path,
            type_nouns=leaf.type_nouns,
            shop_name=f"{brand}官方旗舰店",
            price=float(self.price[i]),
            attributes=attributes,
            bullets=bullets,
            description=description,
            options=options,
            reviews=reviews,
            split="eval" if self.is_eval[i] else "train",
        )

    def search_phrases(self) -> tuple[np.ndarray, list[str]]:
        """Per product, the phrases the search index sees (title + attributes + category + options), as
        ids into a phrase table; -1 pads. Built from the arrays, no per-product Python."""
        table: dict[str, int] = {}

        def pid(text: str) -> int:
            return table.setdefault(text, len(table))

        n_leaves = len(self.leaves)
        max_s = self.slot_value.shape[1]
        max_a, max_v = self.offered.shape[1:]
        generic = np.array([pid(w) for w in catalog.GENERIC_WORDS])
        fixed = np.full((n_leaves, 5), -1)
        slot_ids = np.full((n_leaves, max_s, 8), -1)
        slot_syn_ids = np.full((n_leaves, max_s, 8), -1)
        type_syn_ids = np.full(n_leaves, -1)
        brand_ids = np.full((n_leaves, 8), -1)
        option_ids = np.full((n_leaves, max_a, max_v), -1)
        for leaf in self.leaves:
            li = leaf.index
            fixed[li] = [pid(leaf.domain), pid(canonical(leaf.base)), pid(leaf.name), pid(leaf.modifier),
                        pid(canonical(leaf.series))]  # fmt: skip
            for s, (_, _, vals) in enumerate(leaf.slots):
                slot_ids[li, s, : len(vals)] = [pid(canonical(v)) for v in vals]
                slot_syn_ids[li, s, : len(vals)] = [pid(_synonym(v)) for v in vals]
            type_syn_ids[li] = pid(_synonym(leaf.base))
            brand_ids[li, : len(leaf.brands)] = [pid(b) for b in leaf.brands]
            for a, (_, vals, _) in enumerate(leaf.options):
                option_ids[li, a, : len(vals)] = [pid(canonical(v)) for v in vals]
        lf = self.leaf_of
        n = self.n_products
        slot_cols = slot_ids[lf[:, None], np.arange(max_s)[None, :], self.slot_value]  # [N, S]
        # Values in the title count twice (title + attributes), the dropped one once.
        title_slots = np.where(np.arange(max_s)[None, :] == self.title_drop[:, None], -1, slot_cols)
        stuff = np.where(self.stuffing >= 0, generic[np.maximum(self.stuffing, 0)], -1)
        syn_cols = slot_syn_ids[lf[:, None], np.arange(max_s)[None, :], self.slot_value]
        syn_cols = np.where(self.title_synonym, syn_cols, -1)
        type_syn = np.where(self.type_synonym, type_syn_ids[lf], -1)[:, None]
        offered = np.where(self.offered, option_ids[lf], -1).reshape(n, -1)
        brand_col = brand_ids[lf, self.brand][:, None]
        cols = [
            fixed[lf],
            fixed[lf][:, 2:3],
            fixed[lf][:, 4:5],
            slot_cols,
            title_slots,
            brand_col,
            brand_col,
            stuff,
            syn_cols,
        ]
        cols.append(type_syn)
        cols.append(offered)
        phrases = sorted(table, key=table.get)
        return np.concatenate(cols, axis=1), phrases

    # ---- tasks ------------------------------------------------------------------------------------
    def task(self, i: int) -> Task | None:
        """The task whose target is product i, or None when no goal set singles it out in its leaf."""
        return make_task(self, int(i))


def generate_world(seed: int = 0, n_products: int = 500) -> World:
    """Generate a world of `n_products` products (about 120 per leaf; at least one leaf per domain)."""
    rng = np.random.default_rng([seed, 0])
    order = _leaf_order(seed)
    n_leaves = min(len(order), max(MIN_LEAVES, math.ceil(n_products / PRODUCTS_PER_LEAF)))
    leaves = [_make_leaf(k, order[k], np.random.default_rng([seed, 3, k])) for k in range(n_leaves)]
    sizes = np.full(n_leaves, n_products // n_leaves)
    sizes[: n_products % n_leaves] += 1
    leaf_start = np.concatenate([[0], np.cumsum(sizes)])
    leaf_of = np.repeat(np.arange(n_leaves), sizes)

    max_s = max(len(leaf.slots) for leaf in leaves)
    max_a = max(len(leaf.options) for leaf in leaves)
    max_v = max(len(vals) for leaf in leaves for _, vals, _ in leaf.options)
    n_vals = np.zeros((n_leaves, max_s + 1), np.int64)  # slot vocab sizes, brands last
    for leaf in leaves:
        n_vals[leaf.index, : len(leaf.slots)] = [len(v) for _, _, v in leaf.slots]
        n_vals[leaf.index, max_s] = len(leaf.brands)
    n_vals_p = n_vals[leaf_of]  # [N, S+1]
    dims = max_s + 1
    # Each leaf has a modal product; every product differs from it in 1-3 dims (slots or brand).
    modal = (rng.random((n_leaves, dims)) * np.maximum(n_vals, 1)).astype(np.int64)
    values = modal[leaf_of].copy()
    n_diff = rng.integers(1, 4, n_products)
    rank = np.argsort(rng.random((n_products, dims)) + (n_vals_p == 0) * 2.0, axis=1)  # never an empty slot
    change = np.zeros((n_products, dims), bool)
    rows = np.arange(n_products)
    for k in range(3):
        sel = n_diff > k
        change[rows[sel], rank[sel, k]] = True
    shift = 1 + (rng.random((n_products, dims)) * np.maximum(n_vals_p - 1, 1)).astype(np.int64)
    values = np.where(change & (n_vals_p > 1), (values + shift) % np.maximum(n_vals_p, 1), values)
    values = np.where(n_vals_p == 0, 0, values)
    # Exact twins can never be told apart by a goal: nudge one dim of each later twin, a few passes.
    radix = np.cumprod(np.concatenate([[1], np.maximum(n_vals.max(0), 1)]))
    for _ in range(6):
        key = leaf_of * radix[-1] + (values * radix[:-1]).sum(1)
        _, first = np.unique(key, return_index=True)
        twin = np.ones(n_products, bool)
        twin[first] = False
        if not twin.any():
            break
        d = (rng.random(n_products) * (n_vals_p > 1).sum(1)).astype(np.int64)
        d = np.argsort(n_vals_p <= 1, axis=1, kind="stable")[rows, d]  # a dim with more than one value
        bump = np.zeros_like(values)
        bump[rows, d] = 1 + (rng.random(n_products) * np.maximum(n_vals_p[rows, d] - 1, 1)).astype(np.int64)
        values = np.where(twin[:, None], (values + bump) % np.maximum(n_vals_p, 1), values)

    n_opt_vals = np.zeros((n_leaves, max_a), np.int64)
    for leaf in leaves:
        n_opt_vals[leaf.index, : len(leaf.options)] = [len(v) for _, v, _ in leaf.options]
    valid = np.arange(max_v)[None, None, :] < n_opt_vals[leaf_of][:, :, None]
    offered = (rng.random((n_products, max_a, max_v)) < 0.55) & valid
    forced = (rng.random((n_products, max_a)) * np.maximum(n_opt_vals[leaf_of], 1)).astype(np.int64)
    offered[rows[:, None], np.arange(max_a)[None, :], forced] |= n_opt_vals[leaf_of] > 0

    bands = np.array([leaf.price_band for leaf in leaves], np.float64)
    lo, hi = bands[leaf_of, 0], bands[leaf_of, 1]
    price = _price_tag(np.clip(lo + rng.random(n_products) * (hi - lo), 9, None))
    title_drop = np.where(rng.random(n_products) < 0.4, rng.integers(0, max_s, n_products), -1)
    title_drop = np.where(title_drop < (n_vals_p[:, :max_s] > 0).sum(1), title_drop, -1)
    n_words = len(catalog.GENERIC_WORDS)
    stuffing = np.argsort(rng.random((n_products, n_words)), axis=1)[:, :3]
    stuffing = np.where(rng.random((n_products, 3)) < np.array([0.9, 0.6, 0.3]), stuffing, -1)
    is_eval = rng.random(n_products) < EVAL_FRACTION
    title_synonym = (rng.random((n_products, max_s)) < 0.3) & (n_vals_p[:, :max_s] > 0)
    type_synonym = rng.random(n_products) < 0.5
    return World(
        seed=seed,
        n_products=n_products,
        leaves=leaves,
        leaf_of=leaf_of,
        slot_value=values[:, :max_s],
        brand=values[:, max_s],
        offered=offered,
        price=price,
        title_drop=title_drop,
        stuffing=stuffing,
        is_eval=is_eval,
        title_synonym=title_synonym,
        type_synonym=type_synonym,
        leaf_start=leaf_start,
    )


@functools.lru_cache(maxsize=8)
def get_world(seed: int = 0, n_products: int = 500) -> World:
    """One shared world per (seed, size): env instances built from the same arguments share it."""
    return generate_world(seed, n_products)


# ---------------------------------------------------------------------------------------------------
# Tasks: goal sets, instructions, personas.

_ATT_TEMPLATES = {
    "材质": ("{v}材质的", "用{v}做的", "面料是{v}的"),
    "功能": ("带{v}的", "要{v}的", "得是{v}"),
    "风格": ("{v}风格的", "偏{v}一点的"),
    "人群": ("适合{v}的", "{v}用的", "给{v}的"),
    "口味": ("{v}的", "口味要{v}"),
    "规格": ("{v}规格的", "{v}的"),
    "系列": ("{v}的", "要{v}"),
    "品牌": ("{v}家的", "牌子要{v}", "{v}牌的"),
    "款式": ("{v}款", "{v}的"),
}
_OPT_TEMPLATES = {
    "颜色": ("颜色要{v}", "{v}的那个颜色", "选{v}"),
    "尺寸": ("尺码{v}", "要{v}的尺寸", "大小选{v}"),
    "规格": ("规格选{v}", "要{v}"),
}
_BUDGET_TEMPLATES = ("预算{p}元以内", "价格不超过{p}元", "{p}块钱以下", "别超过{p}元")
_INSTRUCTION_TEMPLATES = (
    "我想买一款{atts}{type}，{opts}{budget}。",
    "帮我找{atts}{type}，{opts}{budget}。",
    "需要一个{type}，{atts}{opts}{budget}。",
    "有没有{atts}{type}？{opts}{budget}。",
)
_OPENINGS = (
    "我想买个{type}。",
    "帮我挑一款{type}吧。",
    "最近想入手{type}，帮我看看。",
    "想买{type}，有推荐吗？",
)
_HABIT = "按照我以往的习惯即可"


def _say(value: str, rng: np.random.Generator) -> str:
    """A synonym most of the time: the instruction should not read like the title."""
    forms = surface_forms(value)
    if len(forms) > 1 and rng.random() < 0.75:
        return forms[1 + int(rng.integers(len(forms) - 1))]
    return forms[0]


def _phrase(templates: dict, family: str, value: str, rng: np.random.Generator) -> str:
    options = templates.get(family, ("{v}的",))
    return options[int(rng.integers(len(options)))].format(v=_say(value, rng))


def _unique_goal(world: World, i: int, rng: np.random.Generator):
    """Greedy goal: option values first, then distinguishing dims, until no sibling satisfies it all."""
    leaf = world.leaves[world.leaf_of[i]]
    lo, hi = world.leaf_start[leaf.index], world.leaf_start[leaf.index + 1]
    others = np.arange(lo, hi) != i
    n_slots = len(leaf.slots)
    goal_opts = {}
    alive = others.copy()
    for a, (_, vals, _) in enumerate(leaf.options):
        offered = np.flatnonzero(world.offered[i, a, : len(vals)])
        v = int(offered[rng.integers(len(offered))])
        goal_opts[a] = v
        alive &= world.offered[lo:hi, a, v]
    dims = np.concatenate([world.slot_value[lo:hi, :n_slots], world.brand[lo:hi, None]], axis=1)
    target = dims[i - lo]
    # Distinguishing dims first (they differ from most siblings), ties broken at random.
    share = (dims == target).mean(0) + rng.random(dims.shape[1]) * 1e-3
    order = list(np.argsort(share))
    chosen = []
    for d in order:
        if not alive.any() and len(chosen) >= 1:
            break
        chosen.append(int(d))
        alive &= dims[:, d] == target[d]
    if alive.any():
        return None
    # One extra, non-distinguishing constraint now and then: goals differ in length.
    rest = [int(d) for d in order if d not in chosen]
    if rest and rng.random() < 0.3:
        chosen.append(rest[0])
    return leaf, sorted(chosen), goal_opts


def make_task(world: World, i: int) -> Task | None:
    rng = np.random.default_rng([world.seed, i, 5])
    found = _unique_goal(world, i, rng)
    if found is None:
        return None
    leaf, dims, goal_opts = found
    product = world.product(i)
    n_slots = len(leaf.slots)
    slots: list[Slot] = [
        Slot(
            "att",
            "款式",
            leaf.modifier,
            _phrase(_ATT_TEMPLATES, "款式", leaf.modifier, rng),
            (leaf.modifier,),
        ),
        Slot(
            "att",
            "系列",
            canonical(leaf.series),
            _phrase(_ATT_TEMPLATES, "系列", leaf.series, rng),
            tuple(surface_forms(leaf.series)),
        ),  # fmt: skip
    ]
    for d in dims:
        if d < n_slots:
            _, family, vals = leaf.slots[d]
            value = vals[world.slot_value[i, d]]
        else:
            family, value = "品牌", leaf.brands[world.brand[i]]
        phrase = _phrase(_ATT_TEMPLATES, family, value, rng)
        slots.append(Slot("att", family, canonical(value), phrase, tuple(surface_forms(value))))
    options = {}
    for a, v in goal_opts.items():
        axis, vals, _ = leaf.options[a]
        family = catalog.OPTION_FAMILIES[axis]
        options[axis] = canonical(vals[v])
        phrase = _phrase(_OPT_TEMPLATES, family, vals[v], rng)
        slots.append(Slot("opt", family, canonical(vals[v]), phrase, tuple(surface_forms(vals[v])), axis))
    # The budget is a function of (task, seed): some headroom above the target's price.
    price = product.price_with(options)
    price_upper = float(math.ceil(price * (1.05 + 0.4 * rng.random()) / 10.0) * 10)
    budget = _BUDGET_TEMPLATES[int(rng.integers(len(_BUDGET_TEMPLATES)))].format(p=int(price_upper))
    slots.append(Slot("budget", "预算", str(int(price_upper)), budget, (str(int(price_upper)),)))

    # The persona clue: one non-leaf goal piece (brand, attribute or option) moves into the persona.
    clue_pool = [s for s in slots[2:] if s.kind != "budget"]
    clue = clue_pool[int(rng.integers(len(clue_pool)))]
    type_word = _say(leaf.base, rng)

    def render(skip: Slot | None) -> str:
        atts = [s.phrase for s in slots if s.kind == "att" and s is not skip and s.family not in ("款式",)]
        opts = [s.phrase for s in slots if s.kind == "opt" and s is not skip]
        template = _INSTRUCTION_TEMPLATES[int(rng.integers(len(_INSTRUCTION_TEMPLATES)))]
        order = rng.permutation(len(atts))
        att_text = "、".join(atts[k] for k in order)
        return template.format(
            atts=att_text + ("、" if att_text else ""),
            type=leaf.modifier + type_word,
            opts="".join(o + "，" for o in opts),
            budget=budget,
        ).replace("、" + leaf.modifier, leaf.modifier)

    instruction = render(None)
    instruction_persona = render(clue)
    opening = _OPENINGS[int(rng.integers(len(_OPENINGS)))].format(type=type_word)
    persona, reason_key = make_persona(world, leaf, clue, rng)
    return Task(
        index=i,
        target=i,
        asin=product.asin,
        attributes=[s.value for s in slots if s.kind == "att"],
        options=options,
        price_upper=price_upper,
        instruction=instruction,
        instruction_persona=instruction_persona,
        opening=opening,
        persona=persona,
        reason_key=reason_key,
        clue=clue,
        slots=slots,
        split=product.split,
        type_nouns=leaf.type_nouns,
        category=leaf.path,
    )


_PROFILE = {
    "性别": ("女", "男"),
    "年龄段": ("18-24岁", "25-30岁", "31-40岁", "41-50岁"),
    "地区": ("广东", "浙江", "北京", "四川", "江苏", "湖北", "上海"),
    "消费水平": ("中等", "中高", "较高"),
    "标签": ("爱逛街", "理性消费", "精致生活", "宝妈", "数码控", "养宠人士", "上班族", "学生党"),
}
# Which persona field carries a clue of each family.
_CLUE_FIELD = {"品牌": "品牌偏好", "颜色": "颜色偏好", "尺寸": "尺码偏好", "规格": "近14天搜索"}


def make_persona(world: World, leaf: Leaf, clue: Slot, rng: np.random.Generator) -> tuple[dict, str]:
    """A persona with the clue planted in one field and same-type decoys (other categories) around it."""

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    # Decoys: other domains' type nouns with values of the same kind.
    other_domains = [d for d in catalog.DOMAINS if d["name"] != leaf.domain]
    decoys = [other_domains[k] for k in rng.choice(len(other_domains), 2, replace=False)]
    base = canonical(leaf.base)
    persona = {k: pick(v) for k, v in _PROFILE.items() if k != "标签"}
    persona["品类偏好"] = [leaf.domain] + [d["name"] for d in decoys]
    persona["品牌偏好"] = {canonical(d["bases"][0][0]): pick(d["brands"]) for d in decoys}
    persona["属性偏好"] = {}
    persona["颜色偏好"] = {canonical(d["bases"][1][0]): canonical(pick(catalog.COLORS)) for d in decoys[:1]}
    persona["尺码偏好"] = {canonical(d["bases"][2][0]): pick(catalog.SIZES) for d in decoys[:1]}
    for d in decoys:
        name, (family, vals) = pick(list(d["slots"].items()))
        persona["属性偏好"][canonical(d["bases"][0][0])] = f"偏好{canonical(pick(vals))}"
    persona["近14天搜索"] = [pick(d["modifiers"]) + canonical(d["bases"][1][0]) for d in decoys]
    persona["标签"] = [str(t) for t in rng.choice(_PROFILE["标签"], 2, replace=False)]

    field = _CLUE_FIELD.get(clue.family, "属性偏好")
    said = _say("|".join(clue.forms), rng)
    if field == "近14天搜索":
        persona[field] = persona[field] + [f"{said}{base}"]
        rng.shuffle(persona[field])
    elif field == "属性偏好":
        persona[field][base] = f"偏好{said}"
    else:
        persona[field][base] = said
    return persona, field
