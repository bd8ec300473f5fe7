"""Deterministic generated text: a corpus a tiny LM can learn structure from.

Everything is a pure function of `seed` (a private `random.Random`), so a run is
reproducible without any downloaded data. Document kinds: English and Chinese
product blurbs, shopping-cart arithmetic whose numbers are consistent, bare
arithmetic drills, and ChatML dialogues (some with a tool call + tool response).
"""

from __future__ import annotations

import json
import random
from typing import Any

from alejax.data.tokenizer import DEFAULT_CHAT_TEMPLATE, render_chat_template

__all__ = ["generate_corpus", "chat_corpus", "SHOP_TOOLS"]

# (english, chinese) pairs so both languages describe the same world.
_PRODUCTS = [
    ("backpack", "背包"),
    ("kettle", "水壶"),
    ("lamp", "台灯"),
    ("umbrella", "雨伞"),
    ("notebook", "笔记本"),
    ("jacket", "夹克"),
    ("mug", "杯子"),
    ("headphones", "耳机"),
    ("chair", "椅子"),
    ("teapot", "茶壶"),
    ("scarf", "围巾"),
    ("keyboard", "键盘"),
]
_COLORS = [
    ("red", "红色"),
    ("blue", "蓝色"),
    ("green", "绿色"),
    ("black", "黑色"),
    ("white", "白色"),
    ("yellow", "黄色"),
    ("gray", "灰色"),
]
_SIZES = [("small", "小号"), ("medium", "中号"), ("large", "大号")]
_BRANDS = ["Acme", "Nordwind", "Lumen", "Kato", "Bluebird", "Orchard"]
_FRUITS = [("apple", "apples"), ("pear", "pears"), ("orange", "oranges"), ("lemon", "lemons")]
_NAMES = ["Alice", "Bob", "Chen", "Dana", "Li Wei", "Omar", "Sara"]
_STARS = ["⭐", "⭐⭐", "⭐⭐⭐", "⭐⭐⭐⭐", "⭐⭐⭐⭐⭐"]

SHOP_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_price",
            "description": "Look up the price of a product in dollars.",
            "parameters": {
                "type": "object",
                "properties": {"item": {"type": "string", "description": "product name"}},
                "required": ["item"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]


def _product(rng: random.Random) -> dict[str, Any]:
    (en, zh), (cen, czh), (sen, szh) = rng.choice(_PRODUCTS), rng.choice(_COLORS), rng.choice(_SIZES)
    return {
        "en": en,
        "zh": zh,
        "color": cen,
        "color_zh": czh,
        "size": sen,
        "size_zh": szh,
        "brand": rng.choice(_BRANDS),
        "price": rng.randint(3, 199),
        "grams": rng.randint(50, 2000),
        "stars": rng.randint(1, 5),
    }


def _english_blurb(rng: random.Random) -> str:
    p = _product(rng)
    lines = [
        f"The {p['color']} {p['en']} from {p['brand']} costs ${p['price']}.",
        f"It weighs {p['grams']} grams and comes in a {p['size']} size.",
        f"Customers rate it {p['stars']} out of 5 {_STARS[p['stars'] - 1]}.",
    ]
    if rng.random() < 0.5:
        n = rng.randint(2, 5)
        lines.append(f"Buying {n} of them costs {n} * {p['price']} = ${n * p['price']}.")
    return " ".join(lines)


def _chinese_blurb(rng: random.Random) -> str:
    p = _product(rng)
    text = (
        f"这款{p['brand']}{p['color_zh']}{p['zh']}售价{p['price']}元，"
        f"重{p['grams']}克，{p['size_zh']}。用户评分{p['stars']}分。"
    )
    if rng.random() < 0.5:
        n = rng.randint(2, 5)
        text += f"买{n}个一共{n * p['price']}元。"
    return text


def _cart(rng: random.Random) -> str:
    name = rng.choice(_NAMES)
    items, total = [], 0
    for _ in range(rng.randint(2, 4)):
        (one, many), n, unit = rng.choice(_FRUITS), rng.randint(1, 9), rng.randint(1, 9)
        items.append(f"{n} {one if n == 1 else many} at ${unit} each (${n * unit})")
        total += n * unit
    return f"{name} bought " + ", ".join(items) + f". In total {name} paid ${total}."


def _arithmetic(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 8)):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice("+-*")
        val = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append(f"{a} {op} {b} = {val}")
    return "\n".join(lines)


def _price_dialogue(rng: random.Random) -> list[dict[str, Any]]:
    p = _product(rng)
    item = f"{p['color']} {p['en']}"
    return [
        {"role": "system", "content": "You are a helpful shopping assistant."},
        {"role": "user", "content": f"How much is the {item}?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_price", "arguments": {"item": item}}}
            ],
        },
        {"role": "tool", "content": json.dumps({"item": item, "price": p["price"]})},
        {"role": "assistant", "content": f"The {item} costs ${p['price']}."},
    ]


def _add_dialogue(rng: random.Random) -> list[dict[str, Any]]:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return [
        {"role": "user", "content": f"What is {a} + {b}?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": a, "b": b}}}],
        },
        {"role": "tool", "content": str(a + b)},
        {"role": "assistant", "content": f"{a} + {b} = {a + b}."},
    ]


def _plain_dialogue(rng: random.Random) -> list[dict[str, Any]]:
    p = _product(rng)
    if rng.random() < 0.5:
        return [
            {"role": "user", "content": f"Tell me about the {p['brand']} {p['en']}."},
            {
                "role": "assistant",
                "content": f"It is {p['color']}, weighs {p['grams']} grams and costs ${p['price']}.",
            },
        ]
    return [
        {"role": "user", "content": f"{p['zh']}多少钱？"},
        {"role": "assistant", "content": f"{p['color_zh']}{p['zh']}售价{p['price']}元。"},
    ]


def chat_corpus(n: int, seed: int) -> list[list[dict[str, Any]]]:
    """`n` conversations (OpenAI-style message dicts); tool-using ones call `SHOP_TOOLS`."""
    rng = random.Random(seed)
    kinds = (_price_dialogue, _add_dialogue, _plain_dialogue)
    return [rng.choice(kinds)(rng) for _ in range(n)]


def _rendered_chat(rng: random.Random) -> str:
    (messages,) = chat_corpus(1, rng.getrandbits(32))
    uses_tools = any("tool_calls" in m for m in messages)
    return render_chat_template(DEFAULT_CHAT_TEMPLATE, messages, tools=SHOP_TOOLS if uses_tools else None)


def generate_corpus(n_docs: int, seed: int) -> list[str]:
    """`n_docs` generated documents, a pure function of `seed`."""
    rng = random.Random(seed)
    kinds = [_english_blurb, _chinese_blurb, _cart, _arithmetic, _rendered_chat]
    weights = [3, 2, 2, 2, 1]
    return [rng.choices(kinds, weights)[0](rng) for _ in range(n_docs)]
