"""User personas as the released data writes them, and the view of them an agent may see.

A released persona is nested: sections (人口属性, 兴趣偏好, 行为特征 ...) with fields inside, and `reason_key`
names the field that holds the clue removed from the instruction by its `<section>-<field>` path
(`兴趣偏好-颜色偏好`; a flat persona's path is just the field). Values are often dirty: padded strings,
`null`s, empty lists, JSON written inside a string. Keys beginning with `__` (`__reasoning__` ...) explain the
answer: they never reach the agent.
"""

from __future__ import annotations

import json

PATH_SEP = "-"
_NULL_WORDS = {"", "null", "none", "nan", "n/a", "na", "无数据"}


def _drop(value) -> bool:
    return value is None or (isinstance(value, (list, dict)) and not value)


def clean(value):
    """A persona value made tidy: strings stripped, JSON inside strings parsed, nulls and empties dropped
    (returns None when nothing is left), hidden (`__`) keys removed at every level."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NULL_WORDS:
            return None
        if text[:1] in "[{" and text[-1:] in "]}":
            try:
                return clean(json.loads(text))
            except ValueError:
                return text
        return text
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            key = str(key).strip()
            if key.startswith("__"):
                continue
            item = clean(item)
            if not _drop(item):
                out[key] = item
        return out or None
    if isinstance(value, (list, tuple)):
        items = [clean(v) for v in value]
        items = [v for v in items if not _drop(v)]
        return items or None
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def visible(persona) -> dict:
    """What the agent is shown: the persona cleaned, without any `__` key. A persona stored as a JSON string
    is parsed; anything that is not a mapping gives {}."""
    if isinstance(persona, str):
        try:
            persona = json.loads(persona)
        except ValueError:
            return {}
    cleaned = clean(persona) if isinstance(persona, dict) else None
    return cleaned or {}


def field(persona: dict, path: str):
    """The value at `path` (`<section>-<field>`, or a flat field); None when the path names nothing.
    A key that itself contains the separator is found too (`近14天-搜索词` as one key), and a bare field name
    (`颜色偏好`) finds the field of that name when exactly one section holds it."""
    found = _at_path(persona, path)
    if found is not None or not path or not isinstance(persona, dict):
        return found
    named = [v[path] for v in persona.values() if isinstance(v, dict) and path in v]
    return named[0] if len(named) == 1 else None


def _at_path(persona, path: str):
    if not path or not isinstance(persona, dict):
        return None
    if path in persona:
        return persona[path]
    for key, value in persona.items():
        if path.startswith(key + PATH_SEP) and isinstance(value, dict):
            found = _at_path(value, path[len(key) + 1 :])
            if found is not None:
                return found
    return None


def text_of(value) -> str:
    """A persona value as one searchable string."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
