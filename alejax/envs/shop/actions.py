"""The shop's text interface, in one place: the action grammar a policy writes and the page vocabulary it
reads (button labels, the observation layout). A policy, the scripted agents and the env all use it.

    search[<keywords>]   type keywords into the search bar (only where the page shows one)
    click[<value>]       click one of the page's clickables: a product id, an option value, `next >`,
                         `< prev`, `back to search`, `description`, `features`, `reviews`, `buy now`
    ask[<utterance>]     multi-turn scenarios only: say something to the shopper (a question, or a
                         purchase proposal such as 就买这款可以吗？)

An action is one line; an optional `Action:` prefix is tolerated. Anything else is an invalid action,
reported and otherwise ignored.

An observation is the page text joined with ` [SEP] `, then a `[search] available` line where the search bar
is shown, then `[clickables] a | b | ...`: `parse_observation` reads it back.
"""

from __future__ import annotations

import re
from typing import NamedTuple

KINDS = ("search", "click", "ask")
_ACTION = re.compile(
    r"^\s*(?:action\s*[:：]\s*)?(search|click|ask)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL
)


# Buttons (click values) besides product ids and option values.
BACK = "back to search"
NEXT = "next >"
PREV = "< prev"
BUY = "buy now"
SUBPAGES = ("description", "features", "reviews")
SEP = " [SEP] "  # between the parts of a page's text


class Action(NamedTuple):
    kind: str
    arg: str


def parse_action(text: str) -> Action | None:
    """`"click[B7K2QX]"` -> Action("click", "B7K2QX"); None when the text is not an action."""
    match = _ACTION.match(text)
    if match is None:
        return None
    return Action(match.group(1).lower(), match.group(2).strip())


def format_action(kind: str, arg: str) -> str:
    assert kind in KINDS, kind
    return f"{kind}[{arg}]"


def search(keywords: str) -> str:
    return format_action("search", keywords)


def click(value: str) -> str:
    return format_action("click", value)


def ask(utterance: str) -> str:
    return format_action("ask", utterance)


def parse_observation(observation: str) -> tuple[list[str], bool, list[str]]:
    """-> (page text parts, search bar shown, clickables)."""
    lines = observation.split("\n")
    parts = lines[0].split(SEP) if lines else []
    search = any(line == "[search] available" for line in lines)
    clickables = []
    for line in lines:
        if line.startswith("[clickables]"):
            rest = line[len("[clickables]") :].strip()
            clickables = rest.split(" | ") if rest else []
    return parts, search, clickables
