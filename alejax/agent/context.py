"""Context engineering for long episodes: a token budget, compression of old observations, goal reminders,
and detection of repeated identical actions.

`ContextManager.view(messages)` is what the policy sees: a copy of the episode in which, once the budget
nears, the oldest observations are truncated with a marker (or summarized by a pluggable function), the
most recent ones kept verbatim, and a reminder of the goal appended after a compression (or every
`remind_every` turns). Assistant turns are never rewritten: they are the model's own tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

TokenCounter = Callable[[str], int]
Summarizer = Callable[[str], str]  # an observation -> a shorter text

OBSERVATION_ROLES = ("tool", "user")


def approx_tokens(text: str) -> int:
    """~4 characters per token: a tokenizer-free estimate (pass a real counter where one is at hand)."""
    return (len(text) + 3) // 4


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep the head and tail of `text`, with a marker saying how much was cut."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    return (
        f"{text[:head]}\n[... {len(text) - max_chars} characters omitted ...]\n{text[-tail:] if tail else ''}"
    )


@dataclasses.dataclass(frozen=True)
class ContextConfig:
    token_budget: int = 8192  # the whole episode as the policy sees it
    compress_at: float = 0.75  # compress once the episode exceeds this fraction of the budget
    keep_recent: int = 2  # most recent observations always kept verbatim
    compressed_chars: int = 200  # what an old observation is truncated to
    remind_every: int = 0  # goal reminder every N assistant turns; 0 = only after a compression
    max_repeats: int = 3  # identical consecutive actions before the agent is told it is looping


def count_messages(messages: list[dict], count_tokens: TokenCounter = approx_tokens) -> int:
    return sum(count_tokens(m.get("content") or "") + 4 for m in messages)  # + role / delimiters


class ContextManager:
    def __init__(
        self,
        config: ContextConfig | None = None,
        count_tokens: TokenCounter = approx_tokens,
        summarize: Summarizer | None = None,
    ):
        self.config = config or ContextConfig()
        self.count_tokens = count_tokens
        self.summarize = summarize

    def _compress(self, text: str) -> str:
        if self.summarize is not None:
            return f"[summary] {self.summarize(text)}"
        return truncate_middle(text, self.config.compressed_chars)

    def view(self, messages: list[dict]) -> list[dict]:
        """The messages to show the policy (a copy; `messages` is left as recorded)."""
        config = self.config
        out = [dict(m) for m in messages]
        first_user = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
        # The task statement (first user message) is never compressed; older observations go first.
        candidates = [i for i, m in enumerate(out) if m["role"] in OBSERVATION_ROLES and i != first_user]
        candidates = candidates[: max(0, len(candidates) - config.keep_recent)]
        limit = int(config.token_budget * config.compress_at)
        compressed = 0
        for i in candidates:
            if count_messages(out, self.count_tokens) <= limit:
                break
            shorter = self._compress(out[i]["content"])
            if len(shorter) < len(out[i]["content"]):
                out[i]["content"] = shorter
                compressed += 1
        turns = sum(m["role"] == "assistant" for m in out)
        remind = compressed > 0 or (config.remind_every and turns and turns % config.remind_every == 0)
        if (
            remind
            and first_user is not None
            and out[-1]["role"] in OBSERVATION_ROLES
            and len(out) - 1 != first_user
        ):
            goal = truncate_middle(out[first_user]["content"], 400)
            out[-1]["content"] = f"{out[-1]['content']}\n[Reminder] Your goal: {goal}"
        return out

    def over_budget(self, messages: list[dict]) -> bool:
        """Even the compressed view does not fit: the episode should end (truncated)."""
        return count_messages(self.view(messages), self.count_tokens) > self.config.token_budget


class RepeatDetector:
    """Counts identical consecutive actions (whitespace-normalized)."""

    def __init__(self, max_repeats: int = 3):
        self.max_repeats = max_repeats
        self.last: str | None = None
        self.count = 0

    def observe(self, action: str) -> int:
        """Record an action; returns how many times in a row it has now been taken."""
        normalized = " ".join(action.split())
        self.count = self.count + 1 if normalized == self.last else 1
        self.last = normalized
        return self.count

    def warning(self) -> str | None:
        if self.count >= self.max_repeats:
            return (
                f"[Note] You have sent the same action {self.count} times in a row and it is not making "
                "progress. Try something different."
            )
        return None
