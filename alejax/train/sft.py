"""SFT on an env's scripted-expert episodes, the stage the sft, rl and quickstart jobs share: expert chats ->
tokenizer -> packed rows with a loss mask on the model's turns -> the next-token loop (`train/loop.py`).

`config` keys (configs/sft.py; the rl job's `sft` section shares its env, expert, tokenizer and model):
seed, workdir, pretrained (a model directory, a .gguf file or `smollm2`; "" trains the `model` section from
scratch), lora (rank 0: full fine-tuning; > 0: adapters only, `alejax.models.LoRAConfig`), env {name, kwargs, system_prompt, render_tools}, expert (the scripted policy's kwargs), tokenizer.dir,
model, mesh, data {source, path, split, n_episodes, first_seed, successful_only, seq_len, batch_size,
eval_fraction}, optim, steps and the log / eval / checkpoint cadence. `data.source` picks the chats: "env" (the
default: the env's scripted expert), or a dataset at `data.path`: "jsonl" (chat JSONL, or trajectory records),
"hf_disk" (a Hugging Face `save_to_disk` directory, `data.split`) or "atif" (ATIF trajectories); see
alejax.data.datasets.
"""

from __future__ import annotations

import os

import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from alejax.config import lora_config_of, model_config_from, system_prompt_of
from alejax.data.datasets import chat_rows, chat_tokens, load_records, records_tokenizer, split_eval
from alejax.data.episodes import (
    episode_tokens,
    episodes_tokenizer,
    expert_episodes,
    sft_rows,
    with_system_prompt,
)
from alejax.data.tokenizer import load_or_train_tokenizer
from alejax.envs.base import make
from alejax.models.lora import with_lora
from alejax.parallel.mesh import make_mesh
from alejax.rollout.model_policy import load_model_and_tokenizer
from alejax.train.loop import fit_next_token


def sft_episodes(config: ConfigDict, tokenizer=None):
    """(chats, tools, tokenizer) of the SFT stage: the expert's episodes with the configured system prompt,
    the tool schemas when rendered, and the tokenizer (a pretrained model's, else `tokenizer.dir`, else the
    one saved in `workdir/tokenizer`, else a BPE trained on these chats and saved there)."""
    env_name, env_kwargs = config.env.name, config.env.kwargs.to_dict()
    env = make(env_name, **env_kwargs)
    d = config.data
    chats = expert_episodes(
        env_name,
        range(d.first_seed, d.first_seed + d.n_episodes),
        env_kwargs=env_kwargs,
        successful_only=d.successful_only,
        policy_kwargs=config.expert.to_dict(),
    )
    if not chats:
        raise RuntimeError(
            f"the scripted expert of {env_name!r} succeeded on none of {d.n_episodes} episodes"
        )
    chats = with_system_prompt(chats, system_prompt_of(config.env, env))
    tools = env.tools if config.env.render_tools else None
    if tokenizer is None:
        tokenizer = load_or_train_tokenizer(
            config.tokenizer.dir,
            config.workdir,
            lambda: episodes_tokenizer(chats, config.model.vocab_size, tools),
        )
    return chats, tools, tokenizer


def train_sft(config: ConfigDict):
    """Returns (graphdef, params, tokenizer, last metrics) (params: the whole model's, adapters included);
    the tokenizer is kept in `workdir/tokenizer` and
    every checkpoint carries the grain state, so a rerun resumes mid-epoch (a finished run just loads)."""
    workdir, d = config.workdir, config.data
    os.makedirs(workdir, exist_ok=True)
    init_params = tokenizer = None
    if config.pretrained:  # a real model: its weights, architecture and tokenizer (the model section unused)
        model, tokenizer = load_model_and_tokenizer(config.pretrained, make_mesh(config.mesh.to_dict()))
        init_params, model_config = nnx.state(model), with_lora(model.config, lora_config_of(config))
    source = d.get("source", "env")
    if source == "env":
        chats, tools, tokenizer = sft_episodes(config, tokenizer)
        n_eval = max(1, int(len(chats) * d.eval_fraction))
        train_rows, too_long = sft_rows(tokenizer, chats[n_eval:], d.seq_len, tools)
        eval_rows, _ = sft_rows(tokenizer, chats[:n_eval], d.seq_len, tools)
        mean_tokens = float(np.mean([len(episode_tokens(tokenizer, c, tools)[0]) for c in chats[:50]]))
        what, title = f"{len(chats)}/{d.n_episodes} expert episodes of {config.env.name}", config.env.name
    else:  # a dataset the user brings
        records = load_records(source, d.path, d.get("split") or None)
        if tokenizer is None:
            tokenizer = load_or_train_tokenizer(
                config.tokenizer.dir, workdir, lambda: records_tokenizer(records, config.model.vocab_size)
            )
        train_records, eval_records = split_eval(records, d.eval_fraction, config.seed)
        train_rows, too_long = chat_rows(tokenizer, train_records, d.seq_len)
        eval_rows, _ = chat_rows(tokenizer, eval_records, d.seq_len)
        mean_tokens = float(
            np.mean([len(chat_tokens(tokenizer, r.messages, r.tools)[0]) for r in records[:50]])
        )
        what, title = (
            f"{len(records)} chats of {source} dataset {d.path}",
            os.path.basename(d.path.rstrip("/")),
        )
    if init_params is None:
        model_config = with_lora(model_config_from(config.model, tokenizer), lora_config_of(config))
    print(
        f"sft data: {what} (~{mean_tokens:.0f} tokens each; {too_long} split across rows) -> "
        f"{len(train_rows['tokens'])} rows of {d.seq_len}; model {model_config.num_params() / 1e6:.2f}M params",
        flush=True,
    )
    graphdef, state, last = fit_next_token(
        config,
        workdir,
        model_config,
        train_rows,
        eval_rows,
        title=f"SFT on {title}",
        init_params=init_params,
    )
    return graphdef, state.model_params(), tokenizer, last
