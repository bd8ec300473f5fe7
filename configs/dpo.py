"""DPO on preference pairs (`job = "dpo"`): a preference JSONL or success/failure pairs of trajectories.

Run:   python -m alejax.main --config=configs/dpo.py                 # tiny: a fresh tiny model, 2-core CPU, ~1 min
       python -m alejax.main --config=configs/dpo.py:ipo             # the same pairs with IPO
       python -m alejax.main --config=configs/dpo.py:shop            # from the ShopSimulator SFT stage
                              --config.data.path=<trajectory records>   (e.g. a synthesize job's output)
Your own pairs: --config.data.path=prefs.jsonl, one {"prompt": str | [messages], "chosen": str | [messages],
"rejected": str | [messages]} object a line (alejax/rl/dpo.py). `dpo.loss` picks the variant: dpo | dpo_norm
(length-normalised) | ipo. Writes <workdir>/model (Hugging Face format + tokenizer), metrics.{jsonl,png}.

Expected (tiny, 2-core CPU shared with another test run, measured 2026-12-02): on
tests/data/preferences/arithmetic.jsonl (48 pairs: "The answer is N." preferred to off-format replies; 5 held
out) the train loss falls from log 2 = 0.693 to 0.013 in 60 steps, reward margin (β·Δ) 0 -> 4.39, train
accuracy 1.0, held-out accuracy 1.0 (5/5 pairs); 86 s. An easy preference: it shows the machinery works.
"""

import dataclasses
import os

from ml_collections import ConfigDict

from alejax.config import load_config_file, model_section, section_of
from alejax.models.config import LoRAConfig, get_preset
from alejax.rl.dpo import DPOConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PRESETS = ("tiny", "ipo", "dpo_norm", "shop")


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "tiny"
    if preset not in PRESETS:
        raise ValueError(
            f"unknown preset {preset!r} for configs/dpo.py; expected one of {', '.join(PRESETS)}"
        )
    c = ConfigDict()
    c.job = "dpo"
    c.seed = 0
    c.workdir = f"runs/dpo_{preset}"
    # The starting policy, which is also the frozen reference: "fresh" (`model` at init, a BPE on the pairs
    # unless tokenizer.dir), "sft" (the `sft` section's stage: configs/sft.py; a finished SFT just loads) or
    # "pretrained" (`pretrained`: a model directory such as an sft job's <workdir>/model, a .gguf, smollm2).
    c.init = "fresh"
    c.pretrained = ""
    c.tokenizer = ConfigDict({"dir": ""})
    c.model = model_section(
        dataclasses.replace(get_preset("tiny"), vocab_size=512, max_position_embeddings=512)
    )
    c.lora = section_of(
        LoRAConfig
    )  # rank 0: full fine-tuning; > 0: adapters only (the reference is the base)
    c.mesh = ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    c.num_devices = 1  # devices used (-1: all); a tiny model trains fastest on one
    c.sft = ConfigDict()  # filled by the shop preset (init="sft")

    c.data = ConfigDict()
    c.data.source = "jsonl"  # "jsonl": preference pairs; "trajectories": records, success vs failure per task
    c.data.path = os.path.join(ROOT, "tests", "data", "preferences", "arithmetic.jsonl")
    c.data.max_pairs_per_task = 1  # trajectories: pairs drawn per (env, seed)
    c.data.max_length = 256  # tokens per side; a longer side is cut
    c.data.batch_size = 8  # pairs per step
    c.data.eval_fraction = 0.1

    c.dpo = section_of(DPOConfig)  # loss (dpo | dpo_norm | ipo | dpo_nll), beta, label_smoothing, nll_coef

    c.optim = ConfigDict()
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 5
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.optim.schedule = "cosine"
    c.optim.microbatches = 1

    c.steps = 60
    c.log_every = 5
    c.eval_every = 20
    c.checkpoint_every = 20
    c.keep_checkpoints = 2
    c.progress_every_s = 10.0
    c.wandb_project = ""

    if preset == "ipo":
        c.dpo.loss = "ipo"
    elif preset == "dpo_norm":
        c.dpo.loss, c.dpo.beta = "dpo_norm", 1.0  # per-token means are ~|y| times smaller than sums
    elif preset == "shop":  # from the quickstart's ShopSimulator SFT stage, on success/failure trajectories
        quickstart = load_config_file(os.path.join(HERE, "quickstart.py"))
        c.init, c.sft = "sft", quickstart.rl.sft
        c.sft.workdir = "runs/dpo_shop/sft"
        c.data.source, c.data.path = "trajectories", ""
        c.data.max_length, c.data.batch_size = 512, 8
        c.optim.learning_rate = 1e-5
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 100, 10, 50, 50
    return c
