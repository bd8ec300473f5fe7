"""Chat rendering of an episode, identical in training and in play.

The rollout scheduler needs the episode as *pieces*: the prompt up to the first generation prompt, then
after each model turn (which ends with the tokenizer's end-of-turn token) the text that the template
puts between that token and the next generation prompt. `EpisodeChat` computes those pieces by rendering
the whole conversation with the tokenizer's own chat template and taking differences, so any prefix-stable
template works and the concatenation of pieces is, by construction, the template's rendering of the turns.
"""

from __future__ import annotations

from typing import Any

from alejax.data.tokenizer import Tokenizer


class TemplateMismatch(ValueError):
    """The chat template is not prefix-stable, so turns cannot be spliced incrementally."""


class EpisodeChat:
    def __init__(self, tokenizer: Tokenizer, system_prompt: str = "", tools: list[dict] | None = None):
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.messages: list[dict[str, Any]] = []
        if system_prompt:
            self.messages.append({"role": "system", "content": system_prompt})
        self.eos_text = tokenizer.decode([tokenizer.eos_id])

    def render(self, add_generation_prompt: bool = False, messages: list[dict] | None = None) -> str:
        return self.tokenizer.apply_chat_template(
            self.messages if messages is None else messages,
            add_generation_prompt=add_generation_prompt,
            tools=self.tools,
        )

    def start(self, observation: str, role: str = "user") -> str:
        """The prompt: system (+ tools) and the first observation, through the generation prompt."""
        if any(m["role"] != "system" for m in self.messages):
            raise RuntimeError("start() was already called for this episode")
        self.messages.append({"role": role, "content": observation})
        return self.render(add_generation_prompt=True)

    def add_turn(self, assistant_text: str, observation: str, role: str = "tool") -> str:
        """Record the model's turn (without its end-of-turn token) and the env's answer.

        Returns the text that follows the model's end-of-turn token, through the next generation prompt.
        """
        before_turn = self.render(add_generation_prompt=True)
        self.messages.append({"role": "assistant", "content": assistant_text})
        with_turn = self.render()
        model_part = assistant_text + self.eos_text
        if not with_turn.startswith(before_turn + model_part):
            raise TemplateMismatch(
                "the template does not render an assistant turn as its content followed by the end-of-turn "
                f"token {self.eos_text!r}; cannot splice turns"
            )
        tail = with_turn[len(before_turn) + len(model_part) :]
        self.messages.append({"role": role, "content": observation})
        after_observation = self.render(add_generation_prompt=True)
        if not after_observation.startswith(with_turn):
            raise TemplateMismatch("rendering a new observation changed the text before it")
        return tail + after_observation[len(with_turn) :]

    def add_final_turn(self, assistant_text: str) -> None:
        """The model's last turn of the episode (no observation follows)."""
        self.messages.append({"role": "assistant", "content": assistant_text})
