"""The simulated shopper of the multi-turn scenarios.

The rule-based shopper opens with the product type only and reveals a hidden goal slot when asked about its
family (keyword lexicon in `catalog.FAMILY_KEYWORDS`); a generic "anything else?" reveals one slot. It refuses
a purchase proposal while a slot is unrevealed, naming the missing family. With a persona, the slot planted in
the persona is never said: questions the shopper cannot answer get "按照我以往的习惯即可".
Any text->text callable can stand in for the rules (`LLMShopper`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

from alejax.envs.shop import catalog
from alejax.envs.shop.world import Slot, Task

HABIT = "按照我以往的习惯即可"
REFUSAL = "信息还不完整"
ACCEPT = "好的，就买这款吧。"
NOTHING_ELSE = "没有其他要求了。"
NO_PREFERENCE = "这个我没有特别要求。"
NOT_UNDERSTOOD = "不太明白，您可以问我具体想要什么样的。"


@dataclasses.dataclass
class Reply:
    text: str
    revealed: list[Slot] = dataclasses.field(default_factory=list)
    refused: bool = False  # a purchase proposal turned down
    accepted: bool = False  # a purchase proposal agreed to


class Shopper(Protocol):
    def opening(self) -> str: ...

    def reply(self, utterance: str) -> Reply: ...


def families_in(utterance: str) -> list[str]:
    return [f for f, words in catalog.FAMILY_KEYWORDS.items() if any(w in utterance for w in words)]


def is_proposal(utterance: str) -> bool:
    return any(w in utterance for w in catalog.PROPOSAL_KEYWORDS)


class RuleShopper:
    def __init__(self, task: Task, persona: bool = False):
        self.task = task
        self.persona = persona
        # With a persona the clue is not the shopper's to say: the agent must read it from the persona.
        self.slots = [s for s in task.slots if not (persona and s is task.clue)]
        self.revealed: list[Slot] = []

    def opening(self) -> str:
        return self.task.opening

    def hidden(self) -> list[Slot]:
        return [s for s in self.slots if all(s is not r for r in self.revealed)]

    def reply(self, utterance: str) -> Reply:
        if is_proposal(utterance):
            missing = self.hidden()
            if missing:
                return Reply(f"{REFUSAL}，您还没问我{missing[0].family}呢。", refused=True)
            return Reply(ACCEPT, accepted=True)
        families = families_in(utterance)
        if families:
            found = [s for s in self.hidden() if s.family in families]
            known = {s.family for s in self.slots}
            parts = [s.phrase for s in found]
            parts += ["之前说过了" for f in families if f in known and not any(s.family == f for s in found)]
            if self.persona and any(f not in known for f in families):
                parts.append(HABIT)
            elif not parts:
                parts.append(NO_PREFERENCE)
            self.revealed += found
            return Reply("；".join(dict.fromkeys(parts)) + "。", revealed=found)
        if any(w in utterance for w in catalog.GENERIC_QUESTION_KEYWORDS):
            hidden = self.hidden()
            if not hidden:
                return Reply(HABIT + "。" if self.persona else NOTHING_ELSE)
            self.revealed.append(hidden[0])
            return Reply(hidden[0].phrase + "。", revealed=[hidden[0]])
        return Reply(NOT_UNDERSTOOD)


class LLMShopper:
    """A shopper played by any text->text callable (an LLM). The prompt holds the goal and the rules."""

    def __init__(self, task: Task, generate: Callable[[str], str], persona: bool = False):
        self.task = task
        self.generate = generate
        said = [s for s in task.slots if not (persona and s is task.clue)]
        self.prompt = (
            "你是一位在淘宝购物的顾客，正在和导购对话。你的需求（不要一次说完，只在被问到相关方面时回答）：\n"
            + "\n".join(f"- {s.family}：{s.phrase}" for s in said)
            + f"\n开场只说想买{task.type_nouns[0]}。需求没问全时对方提议下单，回答“{REFUSAL}”并说出缺的方面。"
            + (f"\n被问到上面没有的方面时回答“{HABIT}”。" if persona else "")
        )
        self.history: list[str] = []

    def opening(self) -> str:
        return self.task.opening

    def reply(self, utterance: str) -> Reply:
        self.history.append(f"导购：{utterance}")
        text = self.generate(self.prompt + "\n" + "\n".join(self.history) + "\n顾客：").strip()
        self.history.append(f"顾客：{text}")
        proposal = is_proposal(utterance)
        return Reply(text, refused=proposal and REFUSAL in text, accepted=proposal and REFUSAL not in text)
