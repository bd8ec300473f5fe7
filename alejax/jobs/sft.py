"""The sft job (`job = "sft"`, configs/sft.py): SFT of a policy on an env's scripted-expert episodes, then the
model in Hugging Face format under `workdir/model` with its tokenizer (loadable by `alejax.models.from_pretrained`
and the agent CLI: `python -m alejax.agent --policy=<workdir>/model`)."""

from __future__ import annotations

import os

from flax import nnx
from ml_collections import ConfigDict

from alejax.models.hf import save_pretrained
from alejax.models.lora import merged_model
from alejax.train.sft import train_sft


def run(config: ConfigDict) -> dict[str, float]:
    graphdef, params, tokenizer, last = train_sft(config)
    model_dir = os.path.join(config.workdir, "model")
    # LoRA: the adapters folded into the weights, so the export is a plain model of the base's shape.
    save_pretrained(merged_model(nnx.merge(graphdef, params)), model_dir, eos_token_id=tokenizer.eos_id)
    tokenizer.save(model_dir)
    print(f"model saved to {model_dir}", flush=True)
    return {**last, "model_dir": model_dir}
