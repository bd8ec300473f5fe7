"""A saved model as a chat policy: messages in, the assistant's next turn out (for the agent CLI and evals)."""

from __future__ import annotations

from typing import Callable

from alejax.data.tokenizer import Tokenizer
from alejax.models.hf import from_pretrained
from alejax.rollout.sampler import Sampler, SamplingConfig

GREEDY = SamplingConfig(temperature=0.0)


def load_policy(
    checkpoint_dir: str,
    *,
    tools: list[dict] | None = None,
    max_new_tokens: int = 256,
    max_length: int = 4096,
    sampling: SamplingConfig = GREEDY,
) -> Callable[[list[dict]], str]:
    """`checkpoint_dir` holds a Hugging Face-format model (config.json + safetensors, as `save_pretrained`
    writes) and its tokenizer (tokenizer.json, with the chat template in tokenizer_config.json)."""
    model = from_pretrained(checkpoint_dir)
    tokenizer = Tokenizer.from_dir(checkpoint_dir)
    max_length = min(max_length, model.config.max_position_embeddings)
    sampler = Sampler(
        model, batch_size=1, max_length=max_length, sampling=sampling, stop_ids=[tokenizer.eos_id]
    )

    def policy(messages: list[dict]) -> str:
        prompt = tokenizer.encode(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
        )
        if len(prompt) >= max_length:
            raise ValueError(
                f"the conversation ({len(prompt)} tokens) does not fit the context of {max_length}"
            )
        (tokens,), _ = sampler.generate([prompt], min(max_new_tokens, max_length - len(prompt)))
        if tokens and tokens[-1] == tokenizer.eos_id:
            tokens = tokens[:-1]
        return tokenizer.decode(tokens)

    return policy
