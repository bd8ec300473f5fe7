"""The simulated shopper of the multi-turn scenarios.

The rule-based shopper opens with the product type only and reveals a hidden goal slot when asked about its
family (keyword lexicon in `catalog.FAMILY_KEYWORDS`, or the family's own name, such as an option axis
镜片); a generic "anything else?" reveals one slot. It refuses a purchase proposal while a slot is
unrevealed, naming the missing family. With a persona, the slot planted in the persona is never said:
questions the shopper cannot answer get "按照我以往的习惯即可".

`LLMShopper` plays the same part with a model: any alejax `Policy` (messages -> text: a checkpoint through
`alejax.agent.policy.model_policy`, a scripted or human policy) or a plain text -> text callable
(`text_policy`). Its prompt holds the goal minus what the scenario withholds; a reply that names the
withheld clue or the target id is replaced by the habit line.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Protocol

from alejax.envs.shop import catalog
from alejax.envs.shop.catalog import mentions
from alejax.envs.shop.world import Slot, Task

HABIT = "按照我以往的习惯即可"
REFUSAL = "信息还不完整"
ACCEPT = "好的，就买这款吧。"
NOTHING_ELSE = "没有其他要求了。"
NO_PREFERENCE = "这个我没有特别要求。"
NOT_UNDERSTOOD = "不太明白，您可以问我具体想要什么样的。"
_PUNCT = "，。；！？、,.;!?：: "


@dataclasses.dataclass
class Reply:
    text: str
    revealed: list[Slot] = dataclasses.field(default_factory=list)
    refused: bool = False  # a purchase proposal turned down
    accepted: bool = False  # a purchase proposal agreed to


class Shopper(Protocol):
    def opening(self) -> str: ...

    def reply(self, utterance: str) -> Reply: ...


def sentence(parts: list[str]) -> str:
    """Clauses joined with `；` and closed with one `。`: each part's own end punctuation is dropped, so
    phrases taken from instructions never double it (`红色。。`, `以内，；`)."""
    parts = [p.strip().strip(_PUNCT) for p in parts]
    parts = list(dict.fromkeys(p for p in parts if p))
    return "；".join(parts) + "。" if parts else ""


def families_in(utterance: str, known: tuple[str, ...] = ()) -> list[str]:
    """The slot families a question asks about: by the keyword lexicon, or by naming a `known` family."""
    found = [f for f, words in catalog.FAMILY_KEYWORDS.items() if any(w in utterance for w in words)]
    return found + [f for f in known if f not in found and f in utterance and f != "其他"]


def is_proposal(utterance: str) -> bool:
    return any(w in utterance for w in catalog.PROPOSAL_KEYWORDS)


def said_slots(task: Task, persona: bool) -> list[Slot]:
    """The goal pieces the shopper may say: with a persona, not the clue (the agent must read it there)."""
    return [s for s in task.slots if not (persona and s is task.clue)]


class RuleShopper:
    def __init__(self, task: Task, persona: bool = False):
        self.task = task
        self.persona = persona
        self.slots = said_slots(task, persona)
        self.known = tuple(dict.fromkeys(s.family for s in self.slots))
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
        families = families_in(utterance, self.known)
        if families:
            found = [s for s in self.hidden() if s.family in families]
            parts = [s.phrase for s in found]
            parts += [
                "之前说过了" for f in families if f in self.known and not any(s.family == f for s in found)
            ]
            if self.persona and any(f not in self.known for f in families):
                parts.append(HABIT)
            elif not parts:
                parts.append(NO_PREFERENCE)
            self.revealed += found
            return Reply(sentence(parts), revealed=found)
        if any(w in utterance for w in catalog.GENERIC_QUESTION_KEYWORDS):
            hidden = self.hidden()
            if not hidden:
                return Reply(sentence([HABIT]) if self.persona else NOTHING_ELSE)
            self.revealed.append(hidden[0])
            return Reply(sentence([hidden[0].phrase]), revealed=[hidden[0]])
        return Reply(NOT_UNDERSTOOD)


Policy = Callable[[list[dict]], str]


def text_policy(generate: Callable[[str], str]) -> Policy:
    """A text -> text model (a prompt in, a completion out) as a chat policy: the system turn, then the
    conversation as 导购 / 顾客 lines, ending on `顾客：` for the model to complete."""

    def policy(messages: list[dict]) -> str:
        lines = []
        for m in messages:
            who = {"system": "", "user": "导购：", "assistant": "顾客："}[m["role"]]
            lines.append(who + m["content"])
        return generate("\n".join(lines) + "\n顾客：")

    return policy


def shopper_prompt(task: Task, persona: bool) -> str:
    """The LLM shopper's instructions: the goal pieces it may say (never the target id or, with a persona,
    the clue), when to refuse, and the habit line."""
    lines = [
        "你是一位在淘宝购物的顾客，正在和导购对话。你的需求如下（不要一次说完，只在被问到相关方面时回答）：",
        *(f"- {s.family}：{sentence([s.phrase])}" for s in said_slots(task, persona)),
        f"开场白已经说过：{task.opening}",
        f"需求没问全时导购提议下单，回答“{REFUSAL}”并说出缺的方面；问全了就同意购买。",
        "每次只回答一句话。",
    ]
    if persona:
        lines.append(f"被问到上面没有的方面时回答“{HABIT}”。")
    return "\n".join(lines)


class LLMShopper:
    """The shopper played by a chat policy (messages -> text). The agent's lines are the `user` turns, the
    shopper's the `assistant` turns, after a system turn with `shopper_prompt`."""

    def __init__(self, task: Task, policy: Policy, persona: bool = False):
        self.task = task
        self.policy = policy
        self.persona = persona
        self.slots = said_slots(task, persona)
        self.messages: list[dict] = [{"role": "system", "content": shopper_prompt(task, persona)}]
        # What no reply may say: the target id, and with a persona the clue.
        clue_forms = task.clue.forms if (persona and task.clue is not None) else ()
        self.withheld = (task.asin, *clue_forms)

    def opening(self) -> str:
        return self.task.opening

    def reply(self, utterance: str) -> Reply:
        self.messages.append({"role": "user", "content": utterance})
        text = re.sub(r"^\s*(顾客|customer|assistant)\s*[:：]\s*", "", str(self.policy(list(self.messages))),
                      flags=re.IGNORECASE).strip().split("\n")[0].strip()  # fmt: skip
        if not text or any(mentions(text, w) for w in self.withheld):
            text = HABIT
        # A model's doubled punctuation (好的，，就买吧！！) is written once, and a reply ends a sentence.
        text = re.sub(r"[，。；！？、,.;!?：:]{2,}", lambda m: m.group(0)[-1], text)
        text = sentence([text]) if text[-1] not in "。！？!?" else text
        self.messages.append({"role": "assistant", "content": text})
        proposal = is_proposal(utterance)
        revealed = [s for s in self.slots if any(mentions(text, f) for f in s.forms)]
        return Reply(
            text, revealed, refused=proposal and REFUSAL in text, accepted=proposal and REFUSAL not in text
        )
