"""Train a small language model on generated text (the foundation's end-to-end job).

Run:   python -m alejax.main --config=configs/lm.py            # tiny preset: ~1M params, CPU, ~1 minute
       python -m alejax.main --config=configs/lm.py:25m --config.steps=2000
Override any key: --config.optim.learning_rate=1e-3 --config.mesh.tensor=2

Expected (tiny, seed 0): final train loss ~0.50, eval loss ~0.55 nats/token after 300 steps (measured
2026-12-01; the generated corpus is very regular).
"""

from ml_collections import ConfigDict

from alejax.config import model_section
from alejax.models.config import get_preset


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "tiny"
    c = ConfigDict()
    c.job = "lm"
    c.seed = 0
    c.workdir = f"runs/lm_{preset}"
    c.model = model_section(get_preset(preset))
    c.mesh = ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})  # -1 fills with the remaining devices
    # A Hugging Face tokenizer directory; default: a BPE trained on the corpus (kept in workdir/tokenizer).
    c.tokenizer = ConfigDict({"dir": ""})

    c.data = ConfigDict()
    c.data.n_docs = 6000  # generated documents (ignored when text_glob is set)
    c.data.text_glob = ""  # e.g. "/data/books/*.txt": train on your own text instead
    c.data.seq_len = 128
    c.data.batch_size = 16
    c.data.eval_fraction = 0.05

    c.optim = ConfigDict()
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 30
    c.optim.weight_decay = 0.1
    c.optim.grad_clip = 1.0
    c.optim.schedule = "cosine"
    c.optim.microbatches = 1  # gradient accumulation: each batch in this many parts, one update (same result)

    c.steps = 300
    c.log_every = 10
    c.eval_every = 50
    c.eval_batches = 8
    c.checkpoint_every = 100
    c.keep_checkpoints = 3
    c.progress_every_s = 5.0
    c.wandb_project = ""  # W&B only if installed and named here

    if preset == "25m":
        c.data.n_docs, c.data.seq_len, c.data.batch_size = 40000, 256, 16
        c.optim.learning_rate, c.steps = 1e-3, 2000
    elif preset == "100m":
        c.data.n_docs, c.data.seq_len, c.data.batch_size = 80000, 512, 8
        c.optim.learning_rate, c.steps = 6e-4, 2000
    elif preset != "tiny":
        raise ValueError(f"unknown preset {preset!r} for configs/lm.py; expected tiny, 25m or 100m")
    return c
