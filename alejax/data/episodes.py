"""Episodes as training data: the env's scripted expert played into chats, and chats into token ids with a loss
mask on the model's own turns, rendered exactly as rollout renders them (`agent.chat.EpisodeChat`), so what SFT
teaches is what the sampler will be asked to continue."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from alejax.agent.chat import EpisodeChat
from alejax.agent.loop import run_episode
from alejax.data.packing import pack_documents
from alejax.data.tokenizer import Tokenizer
from alejax.envs.base import make


def episode_tokens(
    tokenizer: Tokenizer, messages: list[dict], tools: list[dict] | None = None
) -> tuple[list[int], list[int]]:
    """(tokens, loss_mask) of a finished chat: the mask covers each assistant turn and its end-of-turn token.

    `messages`: optional system, the first observation, then assistant / observation turns. Observation
    roles are kept (tool or user). Observations after the last assistant turn are dropped: rollout never
    renders the terminal observation either, so the two token layouts stay identical.
    """
    while messages and messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    turns = messages[1:] if system else list(messages)
    if not turns or turns[0]["role"] == "assistant":
        raise ValueError(
            "an episode starts with an observation (user or tool message) after the system prompt"
        )
    chat = EpisodeChat(tokenizer, system, tools)
    tokens = tokenizer.encode(chat.start(turns[0]["content"], role=turns[0]["role"]))
    mask = [0] * len(tokens)
    rest = turns[1:]
    for i, message in enumerate(rest):
        if message["role"] != "assistant":
            continue
        answer = tokenizer.encode(message["content"]) + [tokenizer.eos_id]
        tokens += answer
        mask += [1] * len(answer)
        following = rest[i + 1] if i + 1 < len(rest) else None
        if following is not None and following["role"] != "assistant":
            context = tokenizer.encode(
                chat.add_turn(message["content"], following["content"], role=following["role"])
            )
        else:
            chat.add_final_turn(message["content"])
            rendered, text = chat.render(), tokenizer.decode(tokens)
            context = tokenizer.encode(rendered[len(text) :]) if rendered.startswith(text) else []
        tokens += context
        mask += [0] * len(context)
    return tokens, mask


def expert_episodes(
    env_name: str,
    seeds: Iterable[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    max_turns: int = 50,
    successful_only: bool = True,
    policy_kwargs: dict[str, Any] | None = None,
) -> list[list[dict]]:
    """Chats of the env's scripted policy (every alejax env has one), optionally only the successful ones.
    `policy_kwargs` go to the env's `scripted_policy` (e.g. compact=True for one-line `NAME ARG` actions)."""
    env = make(env_name, **(env_kwargs or {}))
    chats = []
    for seed in seeds:
        policy = lambda env: env.scripted_policy(**(policy_kwargs or {}))  # noqa: E731
        episode = run_episode(env, policy, seed, max_turns=max_turns, policy_needs_env=True)
        if episode.reward > 0 or not successful_only:
            chats.append(episode.messages)
    return chats


def episodes_tokenizer(
    chats: list[list[dict]], vocab_size: int, tools: list[dict] | None = None
) -> Tokenizer:
    """A byte-level BPE trained on the chats as the model will see them (chat template included, so the
    template's own words become single tokens)."""
    from alejax.data.tokenizer import DEFAULT_CHAT_TEMPLATE, render_chat_template, train_bpe

    rendered = (render_chat_template(DEFAULT_CHAT_TEMPLATE, chat, tools=tools) for chat in chats)
    return train_bpe(rendered, vocab_size=vocab_size)


def sft_rows(
    tokenizer: Tokenizer, chats: list[list[dict]], seq_len: int, tools: list[dict] | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Packed rows (loss on the assistant turns only) and how many episodes had to be split across rows."""
    encoded = [episode_tokens(tokenizer, chat, tools) for chat in chats]
    too_long = sum(len(tokens) > seq_len for tokens, _ in encoded)
    rows = pack_documents([t for t, _ in encoded], seq_len, loss_masks=[m for _, m in encoded])
    return rows, too_long


def with_system_prompt(chats: list[list[dict]], system_prompt: str | None) -> list[list[dict]]:
    """`system_prompt` replaces each chat's system message ("" drops it; None keeps the env's)."""
    if system_prompt is None:
        return chats
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [head + [m for m in chat if m["role"] != "system"] for chat in chats]
