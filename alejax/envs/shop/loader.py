"""Reading (and writing) the released ShopSimulator JSONL schema: one record per product, which is one task.

`load_jsonl(path)` gives a `LoadedWorld` that `ShopEnv(world=...)` runs on like a generated one.
`write_jsonl(world, path, indices)` writes generated tasks in the released schema (plus the alejax extension
fields `price_upper` and `alejax_slots`, which a reader of the released data does without).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from alejax.envs.shop import catalog
from alejax.envs.shop.world import Product, Slot, Task, World

CATEGORY_SEP = "›"


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
        "price_upper": task.price_upper,
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


def _guess_family(text: str) -> str:
    for family, words in catalog.FAMILY_KEYWORDS.items():
        if any(w in text for w in words):
            return family
    return "其他"


@dataclasses.dataclass
class LoadedWorld:
    """Products and tasks from released records; the same interface the env uses on a generated World."""

    records: list[dict]
    source: str
    seed: int = 0

    @property
    def key(self) -> tuple:
        return ("loaded", self.source, self.seed)

    @property
    def n_products(self) -> int:
        return len(self.records)

    def split_indices(self, split: str) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.records) if r.get("split", "train") == split], np.int64)

    def product(self, i: int) -> Product:
        r = self.records[int(i)]
        base = float(r["pricing"][0])
        category = tuple(r["category"].split(CATEGORY_SEP))
        return Product(
            index=int(i),
            asin=r["asin"],
            title=r["title"],
            category=category,
            type_nouns=tuple(r.get("type_nouns") or category[-1:]),
            shop_name=r.get("shop_name", ""),
            price=base,
            attributes=list(r.get("attribute", [])),
            bullets=list(r.get("small_description", [])),
            description=r.get("full_description", ""),
            options={
                axis: [(o["value"], float(o.get("price", base)) - base) for o in values]
                for axis, values in (r.get("customization_options") or {}).items()
            },
            reviews=list(r.get("reviews", [])),
            split=r.get("split", "train"),
        )

    def price_upper(self, i: int) -> float:
        """Released records carry no budget: derive one from (task, seed), never from an unseeded draw."""
        r = self.records[int(i)]
        if "price_upper" in r:
            return float(r["price_upper"])
        h = int.from_bytes(
            hashlib.blake2b(f"{self.seed}/{r['asin']}".encode(), digest_size=4).digest(), "big"
        )
        return float(math.ceil(float(max(r["pricing"])) * (1.1 + 0.3 * h / 2**32) / 10.0) * 10)

    def task(self, i: int) -> Task:
        r = self.records[int(i)]
        spec = r["instructions"][0]
        options = spec.get("instruction_options") or {}
        if isinstance(options, list):  # some dumps list values without their axis
            options = {f"option{k}": v for k, v in enumerate(options)}
        price_upper = self.price_upper(i)
        if "alejax_slots" in r:
            slots = [Slot(**{**s, "forms": tuple(s["forms"])}) for s in r["alejax_slots"]]
            clue = slots[r.get("alejax_clue", 0)]
        else:
            slots = [Slot("att", _guess_family(a), a, a, (a,)) for a in spec.get("attributes", [])]
            slots += [
                Slot("opt", catalog.OPTION_FAMILIES.get(k, "规格"), v, v, (v,)) for k, v in options.items()
            ]
            slots.append(Slot("budget", "预算", str(int(price_upper)), f"预算{int(price_upper)}元以内"))
            clue_text = json.dumps(
                (r.get("user_persona") or {}).get(r.get("reason_key") or "", ""), ensure_ascii=False
            )
            clue = next((s for s in slots if s.value in clue_text), slots[0])
        product = self.product(i)
        return Task(
            index=int(i),
            target=int(i),
            asin=r["asin"],
            attributes=list(spec.get("attributes", [])),
            options=dict(options),
            price_upper=price_upper,
            instruction=spec["instruction"],
            instruction_persona=spec.get("instruction_sample") or spec["instruction"],
            opening=spec.get("instruction_simple") or f"我想买{product.type_nouns[0]}。",
            persona=r.get("user_persona") or {},
            reason_key=r.get("reason_key") or "",
            clue=clue,
            slots=slots,
            split=product.split,
            type_nouns=product.type_nouns,
            category=product.category,
        )

    def search_phrases(self) -> tuple[np.ndarray, list[str]]:
        """Title words, attributes, category levels and option values, as phrase ids (-1 pads)."""
        table: dict[str, int] = {}
        docs = []
        for i in range(self.n_products):
            p = self.product(i)
            words = re.split(r"\s+", p.title) + p.attributes + list(p.category)
            words += [v for values in p.options.values() for v, _ in values]
            docs.append([table.setdefault(w, len(table)) for w in words if w])
        width = max(1, max((len(d) for d in docs), default=1))
        ids = np.full((len(docs), width), -1, np.int64)
        for i, d in enumerate(docs):
            ids[i, : len(d)] = d
        return ids, sorted(table, key=table.get)


def load_jsonl(path: str | Path, seed: int = 0) -> LoadedWorld:
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return LoadedWorld(records, str(Path(path).resolve()), seed)
