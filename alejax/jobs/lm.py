"""The lm job (`job = "lm"`, configs/lm.py): a language model trained on packed text.

generated corpus (or the user's text files) -> BPE tokenizer -> packed rows -> the next-token loop (grain
batches, sharded donated train step, metrics + PNG, checkpoints with the data iterator's state; a rerun
resumes from the latest good checkpoint).
"""

from __future__ import annotations

import glob
import os
import time

from ml_collections import ConfigDict

from alejax.config import model_config_from
from alejax.data import synthetic
from alejax.data.packing import pack_documents
from alejax.data.tokenizer import load_or_train_tokenizer, train_bpe
from alejax.train.loop import fit_next_token


def load_texts(config: ConfigDict) -> list[str]:
    if config.data.text_glob:
        paths = sorted(glob.glob(config.data.text_glob))
        if not paths:
            raise FileNotFoundError(f"config.data.text_glob={config.data.text_glob!r} matches no file")
        return [open(p, encoding="utf-8").read() for p in paths]
    return synthetic.generate_corpus(config.data.n_docs, seed=config.seed)


def run(config: ConfigDict) -> dict[str, float]:
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()

    texts = load_texts(config)
    tokenizer = load_or_train_tokenizer(
        config.tokenizer.dir, workdir, lambda: train_bpe(texts, vocab_size=config.model.vocab_size)
    )
    model_config = model_config_from(config.model, tokenizer)
    n_eval = max(1, int(len(texts) * config.data.eval_fraction))
    encoded = [tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]
    train_rows = pack_documents(encoded[n_eval:], config.data.seq_len)
    eval_rows = pack_documents(encoded[:n_eval], config.data.seq_len)
    print(
        f"data: {len(texts)} docs -> {len(train_rows['tokens'])} train rows, {len(eval_rows['tokens'])} eval rows "
        f"of {config.data.seq_len} tokens; vocab {tokenizer.vocab_size}; model "
        f"{model_config.num_params() / 1e6:.2f}M params",
        flush=True,
    )

    _, _, last = fit_next_token(
        config,
        workdir,
        model_config,
        train_rows,
        eval_rows,
        title=f"LM training ({model_config.num_params() / 1e6:.1f}M params)",
    )
    print(f"done in {time.time() - t_start:.0f}s", flush=True)
    return last
