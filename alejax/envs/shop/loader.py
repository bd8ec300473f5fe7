"""Reading (and writing) the released ShopSimulator JSONL schema: one record per product, which is one task.

`load_jsonl(path)` gives a `LoadedWorld` that `ShopEnv(world=...)` (or `make("shop/<scenario>",
data_path=path)`) runs on like a generated one, with a `LoadReport` of what the records left unclear:

- the budget comes from the instruction's own words (`budget.parse_budget`); a task that states none is
  reported (count and ids) and, by default, not served; `unparsed_budget="no_price_term"` serves it scored
  without the price term, `"error"` refuses the file.
- `pricing` `[min, max]` stays a range (pages show `¥min to ¥max`); an option value's `price` is the product's
  price with that value chosen, so only axes whose prices differ change it.
- goal options keep their axis, also when `instruction_options` lists bare values: a value is looked up
  among the product's own axes.
- the persona keeps its nested layout; `reason_key` (`<section>-<field>`) finds the clue; `__` keys and null
  values are dropped before anything is shown.
- the shopper's opening is `instruction_simple` only when it names no goal piece; else a type-only line.

`write_jsonl(world, path, indices)` writes generated tasks in the released schema (plus the alejax extension
fields `type_nouns`, `alejax_slots` and `alejax_clue`, which a reader of the released data does without).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from alejax.envs.shop import catalog, persona
from alejax.envs.shop.budget import Budget, parse_budget
from alejax.envs.shop.catalog import mentions
from alejax.envs.shop.world import Product, Slot, Task, World

CATEGORY_SEP = "›"
UNPARSED_BUDGET = ("exclude", "no_price_term", "error")
REQUIRED_FIELDS = ("asin", "title", "category", "pricing")
_CLAUSE = re.compile(r"[，。；！？,;!?、\n]")
_NUMERAL = re.compile(r"[0-9.]+[kKwW千万百]?|[零〇一二两三四五六七八九十百千万]{2,}")


def task_record(world: World, i: int) -> dict | None:
    task = world.task(i)
    if task is None:
        return None
    p = world.product(i)
    return {
        "asin": p.asin,
        "title": p.title,
        "category": CATEGORY_SEP.join(p.category),
        "shop_name": p.shop_name,
        "pricing": [p.price],
        "attribute": p.attributes,
        "small_description": p.bullets,
        "full_description": p.description,
        "customization_options": {
            axis: [{"value": v, "price": p.price + d} for v, d in values]
            for axis, values in p.options.items()
        },
        "split": p.split,
        "instructions": [
            {
                "instruction": task.instruction,
                "instruction_sample": task.instruction_persona,
                "instruction_simple": task.opening,
                "attributes": task.attributes,
                "instruction_options": task.options,
            }
        ],
        "user_persona": task.persona,
        "reason_key": task.reason_key,
        "type_nouns": list(p.type_nouns),
        "alejax_slots": [dataclasses.asdict(s) for s in task.slots],
        "alejax_clue": task.slots.index(task.clue),
    }


def write_jsonl(world: World, path: str | Path, indices) -> int:
    """Write the tasks of products `indices` (those with a unique goal); returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in indices:
            record = task_record(world, int(i))
            if record is not None:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
    return n


# ---- the report ------------------------------------------------------------------------------------------
ISSUES = {
    "budget_unparsed": "the instruction states no budget the parser reads",
    "no_instruction": "the record has no instruction",
    "option_not_offered": "a goal option is not among the product's option values",
    "option_axis_ambiguous": "a bare goal option value is offered on several axes and its clause names none "
    "(the first free one is used)",
    "reason_key_unresolved": "reason_key names no persona field",
    "clue_not_found": "no goal piece is in the reason_key field nor missing from instruction_sample",
    "clue_left_in_instruction_sample": "instruction_sample still names the clue (its clause is dropped)",
    "opening_names_goal": "instruction_simple names a goal piece (a type-only opening is used)",
}


@dataclasses.dataclass
class LoadReport:
    """What loading found: record and task counts, budget kinds, and the ids behind every issue."""

    source: str
    n_records: int = 0
    n_tasks: int = 0  # tasks served
    budget_kinds: Counter = dataclasses.field(default_factory=Counter)  # parsed budgets by kind
    issues: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {k: [] for k in ISSUES})

    @property
    def n_budget_parsed(self) -> int:
        return sum(self.budget_kinds.values())

    @property
    def budget_unparsed(self) -> list[str]:
        return self.issues["budget_unparsed"]

    def add(self, issue: str, asin: str) -> None:
        self.issues[issue].append(asin)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.budget_kinds.items()))
        lines = [
            f"{self.source}: {self.n_records} records, {self.n_tasks} tasks served; budget parsed "
            f"{self.n_budget_parsed} ({kinds or 'none'}), not parsed {len(self.budget_unparsed)}"
        ]
        for issue, ids in self.issues.items():
            if ids:
                shown = ", ".join(ids[:10]) + (f" (+{len(ids) - 10} more)" if len(ids) > 10 else "")
                lines.append(f"  {issue} ({ISSUES[issue]}): {len(ids)}: {shown}")
        return "\n".join(lines)


# ---- records -> products ---------------------------------------------------------------------------------
def _number(value, what: str) -> float:
    try:
        number = float(str(value).replace("¥", "").replace(",", "").strip())
    except ValueError:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a price >= 0, got {value!r}")
    return number


def _product(r: dict, i: int) -> Product:
    missing = [k for k in REQUIRED_FIELDS if r.get(k) in (None, "", [])]
    if missing:
        raise ValueError(f"record has no {', '.join(missing)}")
    pricing = r["pricing"] if isinstance(r["pricing"], (list, tuple)) else [r["pricing"]]
    if not 1 <= len(pricing) <= 2:
        raise ValueError(f"pricing must be [price] or [min, max], got {r['pricing']!r}")
    pricing = [_number(p, "pricing") for p in pricing]
    base, top = min(pricing), max(pricing)
    options = {}
    for axis, values in (r.get("customization_options") or {}).items():
        entries = []
        for o in values or []:
            value = o.get("value") if isinstance(o, dict) else o
            if value is None or not str(value).strip():
                continue
            price = o.get("price") if isinstance(o, dict) else None
            entries.append(
                (str(value).strip(), None if price in (None, "") else _number(price, "option price"))
            )
        if not entries:
            continue
        # An axis whose values all cost the same changes no price (whatever that price is).
        varies = len({p for _, p in entries if p is not None}) > 1
        options[str(axis).strip()] = [
            (v, (p - base) if varies and p is not None else 0.0) for v, p in entries
        ]
    category = r["category"]
    category = tuple(
        c.strip() for c in (category if isinstance(category, list) else category.split(CATEGORY_SEP))
    )
    return Product(
        index=i,
        asin=str(r["asin"]),
        title=str(r["title"]),
        category=category,
        type_nouns=tuple(r.get("type_nouns") or category[-1:]),
        shop_name=r.get("shop_name") or "",
        price=base,
        attributes=[str(a) for a in r.get("attribute") or []],
        bullets=[str(b) for b in r.get("small_description") or []],
        description=r.get("full_description") or "",
        options=options,
        reviews=[str(x) for x in r.get("reviews") or []],
        split=r.get("split") or "train",
        price_max=top if top > base else None,
    )


# ---- records -> tasks ------------------------------------------------------------------------------------
def _goal_options(
    raw, product: Product, asin: str, report: LoadReport, instruction: str = ""
) -> dict[str, str]:
    """{axis: value} with every value on the product's own axis: a dict's key is trusted only when the value
    is offered there; bare values (a list, or `axis:value` strings) are looked up among the axes. A bare value
    offered on several axes goes to the one its clause of the instruction names (套餐选标准的 -> 套餐), else
    to the first axis no other goal value holds (reported as ambiguous)."""
    if isinstance(raw, dict):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in raw.items()]
    else:
        pairs = []
        for item in raw or []:
            axis, _, value = str(item).replace("：", ":").rpartition(":")
            pairs.append((axis.strip(), value.strip()))
    goal, ambiguous = {}, []
    for axis, value in pairs:
        if not value:
            continue
        offering = _axes_offering(product, value)
        axes = [a for a, _ in offering]
        if axis in axes:
            goal[axis] = dict(offering)[axis]
        elif len(offering) == 1:
            goal[offering[0][0]] = offering[0][1]
        elif offering:
            ambiguous.append((value, offering))
        else:
            report.add("option_not_offered", asin)
            goal[axis or "选项"] = value
    for value, offering in ambiguous:  # after the others, so they do not take an axis a value already holds
        named = [(a, v) for a, v in offering if _clause_names_axis(instruction, value, a)]
        if len(named) != 1:
            report.add("option_axis_ambiguous", asin)
        free = [(a, v) for a, v in (named or offering) if a not in goal]
        axis, spelled = (free or named or offering)[0]
        goal[axis] = spelled
    return goal


def _clause_names_axis(instruction: str, value: str, axis: str) -> bool:
    """Whether a clause of the instruction that says `value` also names `axis` (or its family's words)."""
    words = (axis, *catalog.FAMILY_KEYWORDS.get(catalog.family_of(axis), ()))
    return any(
        mentions(clause, value) and any(w in clause for w in words) for clause in _CLAUSE.split(instruction)
    )


def _axes_offering(product: Product, value: str) -> list[tuple[str, str]]:
    """(axis, the product's own spelling) of each axis that offers `value`, exactly or up to case and spaces."""
    offered = [(a, v) for a, values in product.options.items() for v, _ in values]
    exact = [(a, v) for a, v in offered if v == value]
    squash = value.lower().replace(" ", "")
    return exact or [(a, v) for a, v in offered if v.lower().replace(" ", "") == squash]


def _attribute_family(attribute: str, product: Product) -> str:
    """The family a goal attribute is asked about by: the key of the product bullet that states it
    (`材质：纯棉` -> 材质), else the axis of the product's own options that offers it (颜色分类 -> 颜色), else
    the generated vocabulary's family (option values included), a colour word's (…色), else 其他 (a generic
    question reveals it)."""
    for bullet in product.bullets:
        key, sep, value = bullet.replace(":", "：").partition("：")
        if sep and attribute in value and key.strip():
            return catalog.family_of(key.strip())
    for axis, values in product.options.items():
        if any(v == attribute for v, _ in values):
            return catalog.family_of(axis)
    for dom in catalog.DOMAINS:
        for family, values in dom["slots"].values():
            if any(attribute in catalog.surface_forms(v) for v in values):
                return family
        for axis, values in dom["options"].items():
            if any(attribute in catalog.surface_forms(v) for v in values):
                return catalog.family_of(axis)
        if attribute in dom["brands"]:
            return "品牌"
    if attribute.endswith("色") and len(attribute) <= 4:
        return "颜色"
    return "其他"


def _own_clause(text: str, form: str, others: list[str]) -> str | None:
    """The clause of `text` that says `form` and no other goal piece (how the shopper repeats it)."""
    for clause in _CLAUSE.split(text):
        clause = clause.strip()
        if clause and mentions(clause, form) and not any(mentions(clause, o) for o in others if o != form):
            return clause
    return None


def _budget_slot(b: Budget, instruction: str, others: list[str]) -> Slot:
    numbers = _NUMERAL.findall(b.text)
    forms = (b.text, f"{b.amount:g}", *numbers)
    return Slot("budget", "预算", f"{b.upper:g}", _own_clause(instruction, b.text, others) or b.text, forms)


def _type_only_opening(product: Product, withheld: list[str]) -> str:
    for word in (*reversed(product.category), *product.type_nouns):
        if word and not any(mentions(word, w) for w in withheld):
            return f"我想买{word}。"
    return "我想买点东西。"


def _drop_clauses(text: str, forms: tuple[str, ...]) -> str:
    parts = re.split(r"([，。；！？,;!?\n])", text)
    kept = []
    for k in range(0, len(parts), 2):
        clause, punct = parts[k], parts[k + 1] if k + 1 < len(parts) else ""
        if not any(mentions(clause, f) for f in forms if f):
            kept.append(clause + punct)
    return "".join(kept).lstrip("，,；;") or "。"


def _released_slots(
    instruction: str, attributes: list[str], options: dict[str, str], budget: Budget | None, product: Product
) -> list[Slot]:
    """The shopper's slots for a released task: each goal piece with its family and the instruction's own
    clause for it (a template when that clause also says another goal piece)."""
    goal_words = attributes + list(options.values()) + ([budget.text] if budget else [])
    slots = []
    for a in attributes:
        family = _attribute_family(a, product)
        fallback = f"{family}要{a}" if family != "其他" else f"要{a}的"
        slots.append(Slot("att", family, a, _own_clause(instruction, a, goal_words) or fallback, (a,)))
    for axis, v in options.items():
        phrase = _own_clause(instruction, v, goal_words) or f"{axis.removesuffix('分类')}要{v}"
        slots.append(Slot("opt", catalog.family_of(axis), v, phrase, (v,), axis))
    if budget is not None:
        slots.append(_budget_slot(budget, instruction, goal_words))
    return slots


def _find_clue(
    view: dict,
    reason_key: str,
    slots: list[Slot],
    instruction: str,
    sample: str,
    asin: str,
    report: LoadReport,
) -> Slot | None:
    """The goal piece the persona field `reason_key` holds: one named in that field and missing from
    `instruction_sample`, else one named in the field, else one missing from the sample."""
    value = persona.field(view, reason_key)
    if value is None:
        report.add("reason_key_unresolved", asin)
        return None
    held = persona.text_of(value)
    in_field = [s for s in slots if any(mentions(held, f) for f in s.forms)]
    removed = [
        s
        for s in slots
        if mentions(instruction, s.forms[0]) and not any(mentions(sample, f) for f in s.forms)
    ]
    clue = ([s for s in in_field if s in removed] or in_field or removed or [None])[0]
    if clue is None:
        report.add("clue_not_found", asin)
    return clue


def _task(r: dict, product: Product, unparsed_budget: str, report: LoadReport) -> Task | None:
    asin = product.asin
    specs = r.get("instructions") or []
    specs = [specs] if isinstance(specs, dict) else specs
    spec = specs[0] if specs and isinstance(specs[0], dict) else {}
    instruction = str(spec.get("instruction") or "").strip()
    if not instruction:
        report.add("no_instruction", asin)
        return None
    attributes = [str(a).strip() for a in spec.get("attributes") or [] if str(a).strip()]
    options = _goal_options(spec.get("instruction_options"), product, asin, report, instruction)
    budget = parse_budget(instruction)
    if budget is None:
        report.add("budget_unparsed", asin)
        if unparsed_budget != "no_price_term":
            return None
    else:
        report.budget_kinds[budget.kind] += 1

    if "alejax_slots" in r:  # written by write_jsonl: the generated task's own slots, synonyms included
        slots = [Slot(**{**s, "forms": tuple(s["forms"])}) for s in r["alejax_slots"]]
    else:
        slots = _released_slots(instruction, attributes, options, budget, product)
    view = persona.visible(r.get("user_persona"))
    reason_key = str(r.get("reason_key") or "").strip()
    sample = str(spec.get("instruction_sample") or "").strip() or instruction
    if "alejax_clue" in r:
        clue = slots[r["alejax_clue"]]
    else:
        clue = _find_clue(view, reason_key, slots, instruction, sample, asin, report) if reason_key else None
    if clue is not None and any(mentions(sample, f) for f in clue.forms):
        report.add("clue_left_in_instruction_sample", asin)
        sample = _drop_clauses(sample, clue.forms)

    withheld = [f for s in slots for f in s.forms] + [asin]
    simple = str(spec.get("instruction_simple") or "").strip()
    opening = simple
    if not simple or any(mentions(simple, w) for w in withheld):
        if simple:
            report.add("opening_names_goal", asin)
        opening = _type_only_opening(product, withheld)
    return Task(
        index=product.index,
        target=product.index,
        asin=asin,
        attributes=attributes,
        options=options,
        price_upper=budget.upper if budget is not None else None,
        instruction=instruction,
        instruction_persona=sample,
        opening=opening,
        persona=view,
        reason_key=reason_key,
        clue=clue,
        slots=slots,
        split=product.split,
        type_nouns=product.type_nouns,
        category=product.category,
        budget=budget,
    )


@dataclasses.dataclass
class LoadedWorld:
    """Products and tasks from released records; the same interface the env uses on a generated World."""

    products: list[Product]
    tasks: list[Task | None]  # None: the record's task is not served (see report)
    report: LoadReport
    key: tuple  # what the search index is cached by

    @property
    def n_products(self) -> int:
        return len(self.products)

    def split_indices(self, split: str) -> np.ndarray:
        return np.array([i for i, p in enumerate(self.products) if p.split == split], np.int64)

    def product(self, i: int) -> Product:
        return self.products[int(i)]

    def task(self, i: int) -> Task | None:
        return self.tasks[int(i)]

    def has_persona(self, i: int) -> bool:
        """A persona task: its persona is shown and holds the clue."""
        task = self.tasks[int(i)]
        return task is not None and bool(task.persona) and task.clue is not None

    def search_phrases(self) -> tuple[np.ndarray, list[str]]:
        """Title words, attributes, category levels and option values, as phrase ids (-1 pads)."""
        table: dict[str, int] = {}
        docs = []
        for p in self.products:
            words = re.split(r"\s+", p.title) + p.attributes + list(p.category)
            words += [v for values in p.options.values() for v, _ in values]
            docs.append([table.setdefault(w, len(table)) for w in words if w])
        width = max(1, max((len(d) for d in docs), default=1))
        ids = np.full((len(docs), width), -1, np.int64)
        for i, d in enumerate(docs):
            ids[i, : len(d)] = d
        return ids, sorted(table, key=table.get)


def load_records(
    records: list[dict], source: str = "<records>", unparsed_budget: str = "exclude"
) -> LoadedWorld:
    """Records in the released schema -> a LoadedWorld. A malformed product record is a ValueError naming
    it; task-level problems are counted in `world.report`."""
    if unparsed_budget not in UNPARSED_BUDGET:
        raise ValueError(f"unparsed_budget={unparsed_budget!r}: expected one of {', '.join(UNPARSED_BUDGET)}")
    report = LoadReport(source, n_records=len(records))
    products, seen = [], {}
    for i, r in enumerate(records):
        where = f"{source}: record {i + 1}" + (
            f" ({r.get('asin')})" if isinstance(r, dict) and r.get("asin") else ""
        )
        if not isinstance(r, dict):
            raise ValueError(f"{where}: a record must be a JSON object, got {type(r).__name__}")
        try:
            products.append(_product(r, i))
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{where}: {e}") from None
        if products[-1].asin in seen:
            raise ValueError(
                f"{where}: asin {products[-1].asin!r} repeats record {seen[products[-1].asin] + 1}"
            )
        seen[products[-1].asin] = i
    tasks = [_task(r, p, unparsed_budget, report) for r, p in zip(records, products)]
    if unparsed_budget == "error" and report.budget_unparsed:
        ids = report.budget_unparsed
        raise ValueError(
            f"{source}: {len(ids)} tasks state no budget the parser reads ({', '.join(ids[:20])}"
            f"{' ...' if len(ids) > 20 else ''}); pass unparsed_budget='exclude' to skip them or "
            "'no_price_term' to score them without the price term"
        )
    report.n_tasks = sum(t is not None for t in tasks)
    return LoadedWorld(products, tasks, report, ("loaded", source, unparsed_budget))


def load_jsonl(path: str | Path, unparsed_budget: str = "exclude") -> LoadedWorld:
    """Read a released-schema JSONL file (one product = one task a line); see the module docstring."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
    stat = os.stat(path)
    world = load_records(records, str(path.resolve()), unparsed_budget)
    world.key = ("loaded", str(path.resolve()), stat.st_mtime_ns, stat.st_size, unparsed_budget)
    return world


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int, unparsed_budget: str) -> LoadedWorld:
    return load_jsonl(path, unparsed_budget)


def get_loaded_world(path: str | Path, unparsed_budget: str = "exclude") -> LoadedWorld:
    """One LoadedWorld per file version: envs built from the same `data_path` share it (and its index)."""
    stat = os.stat(path)
    return _cached(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, unparsed_budget)
