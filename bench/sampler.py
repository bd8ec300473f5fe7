"""Decode throughput of the sampler against baselines measured in the same run, and slot utilization.

  python bench/sampler.py                  # tiny (~5M) and ~100M, batch 1 / 8 / 64; several minutes on 2 cores
  python bench/sampler.py --sizes=5m --batches=1,8

Baselines, on the same weights:
  (a) no-cache JAX: a jit'd loop that recomputes the full forward over the whole sequence for each token
  (b) Hugging Face `generate` (torch CPU, KV cache) on the weights exported with `save_pretrained`
  (c) the memory-bandwidth floor at batch 1: parameter bytes per token / the bandwidth of a large copy
      or read, whichever is faster
Then a multi-turn run against an env with 5-50 ms latency reports slot utilization. The last line is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from alejax.data.synthetic import generate_corpus
from alejax.data.tokenizer import train_bpe
from alejax.envs.pools import ThreadEnvPool
from alejax.models import ModelConfig, create_model, get_preset, save_pretrained
from alejax.rollout import EpisodeRequest, RolloutConfig, RolloutScheduler, Sampler, SamplingConfig

SIZES = {
    "5m": ModelConfig(
        vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, mlp_dim=768
    ),
    "100m": get_preset("100m"),
}
PROMPT, NEW = 32, 32


def memory_bandwidth(n_bytes: int = 1 << 30, repeats: int = 5) -> dict[str, float]:
    """Bytes/s of a large copy (read + write) and of a large read (a sum): a decode step only reads its
    weights, and the copy's writes make it the slower of the two, so the floor uses the faster one."""
    x = jnp.ones((n_bytes // 4,), jnp.float32)
    copy, read = jax.jit(lambda x: x + 1.0), jax.jit(jnp.sum)
    jax.block_until_ready((copy(x), read(x)))
    return {
        "copy": 2 * n_bytes / min(_timed(lambda: copy(x)) for _ in range(repeats)),
        "read": n_bytes / min(_timed(lambda: read(x)) for _ in range(repeats)),
    }


def _timed(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def alejax_decode(model, batch: int, new: int = NEW, repeats: int = 2) -> float:
    """Seconds per decode step (one new token per row) in the while_loop, prefill excluded."""
    sampler = Sampler(model, batch, max_length=PROMPT + new + 1, sampling=SamplingConfig(1.0), segment=new)
    prompts = np.random.default_rng(0).integers(0, model.config.vocab_size, (batch, PROMPT))
    keys = jax.random.split(jax.random.key(0), batch)
    cache, token, _ = sampler.prefill(sampler.init_cache(), list(prompts), [0] * batch, keys)
    position, budget = np.full(batch, PROMPT), np.full(batch, new)
    best = float("inf")
    for i in range(repeats + 1):  # the first run compiles
        c = jax.tree.map(jnp.copy, cache)
        t = time.perf_counter()
        out = sampler.decode(c, token, position, budget, jax.random.split(jax.random.key(i), batch))
        jax.block_until_ready(out[1])
        if i:
            best = min(best, time.perf_counter() - t)
        assert int(np.asarray(out[3]).min()) == new
    return best / new


def nocache_decode(model, batch: int, steps: int) -> float:
    """Seconds per token for the naive loop: full forward over the (fixed, padded) sequence each step."""
    from flax import nnx

    graphdef, params = nnx.split(model)
    length = PROMPT + NEW

    @jax.jit
    def step(params, tokens, t, key):
        logits = nnx.merge(graphdef, params)(tokens)
        next_logits = jax.lax.dynamic_index_in_dim(logits, t - 1, axis=1, keepdims=False)
        token = jax.random.categorical(key, next_logits)
        return jax.lax.dynamic_update_index_in_dim(tokens, token[:, None].astype(jnp.int32), t, axis=1)

    tokens = jnp.zeros((batch, length), jnp.int32)
    tokens = tokens.at[:, :PROMPT].set(
        jnp.asarray(np.random.default_rng(0).integers(0, 100, (batch, PROMPT)))
    )
    jax.block_until_ready(step(params, tokens, PROMPT, jax.random.key(0)))
    t0 = time.perf_counter()
    for i in range(steps):
        tokens = step(params, tokens, PROMPT + i, jax.random.key(i))
    jax.block_until_ready(tokens)
    return (time.perf_counter() - t0) / steps


def hf_decode(model, batch: int, new: int) -> float | None:
    """Seconds per decode step of transformers' generate on the exported weights (prefill subtracted)."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as path:
        save_pretrained(model, path)
        hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (batch, PROMPT))
    kwargs = dict(do_sample=True, temperature=1.0, top_k=0, pad_token_id=0, eos_token_id=None)

    def run(n):
        t = time.perf_counter()
        with torch.no_grad():
            hf.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, **kwargs
            )
        return time.perf_counter() - t

    run(2)  # warm-up
    return max(min(run(new) for _ in range(2)) - min(run(1) for _ in range(2)), 1e-9) / (new - 1)


def slot_utilization(n_slots: int = 8, episodes: int = 64) -> dict:
    tokenizer = train_bpe(generate_corpus(400, seed=0), vocab_size=512)
    config = SIZES["5m"].replace(vocab_size=tokenizer.vocab_size)

    class LatencyEnv:
        tools: list = []
        system_prompt = "Talk for three turns."

        def reset(self, seed):
            self.rng, self.turn = random.Random(seed), 0
            return f"task {seed}", {}

        def step(self, action):
            time.sleep(self.rng.uniform(0.005, 0.05))
            self.turn += 1
            return f"observation {self.turn}", 1.0, self.turn >= 3, False, {}

    sampler = Sampler(
        create_model(config), n_slots, 1024, SamplingConfig(1.0), stop_ids=[tokenizer.eos_id], segment=16
    )
    pool = ThreadEnvPool(LatencyEnv, max_concurrency=n_slots)
    scheduler = RolloutScheduler(
        sampler,
        tokenizer,
        pool,
        system_prompt=LatencyEnv.system_prompt,
        config=RolloutConfig(max_turns=3, max_new_tokens_per_turn=24),
    )
    scheduler.collect([EpisodeRequest(s) for s in range(n_slots)])  # warm-up: compile the buckets
    _, stats = scheduler.collect([EpisodeRequest(s) for s in range(episodes)])
    pool.close()
    return stats.as_dict()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5m,100m")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--skip_hf", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    measured = memory_bandwidth()
    bandwidth = max(measured.values())
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; memory bandwidth: copy "
        f"{measured['copy'] / 1e9:.1f} GB/s, read {measured['read'] / 1e9:.1f} GB/s (the floor uses the faster)",
        flush=True,
    )
    summary: dict[str, float] = {f"{k}_bandwidth_gb_s": round(v / 1e9, 2) for k, v in measured.items()}
    for size in args.sizes.split(","):
        model = create_model(SIZES[size], seed=0)
        weight_bytes = SIZES[size].num_params() * 4
        for batch in batches:
            ours = alejax_decode(model, batch)
            naive = nocache_decode(model, batch, steps=4 if size == "100m" else 16)
            hf = None if args.skip_hf else hf_decode(model, batch, new=16 if size == "100m" else NEW)
            line = (
                f"{size} batch {batch}: alejax {batch / ours:8.1f} tok/s | no-cache {batch / naive:8.1f} tok/s "
                f"({naive / ours:.1f}x)"
            )
            summary[f"tokens_per_s_{size}_b{batch}"] = round(batch / ours, 1)
            summary[f"speedup_vs_nocache_{size}_b{batch}"] = round(naive / ours, 2)
            if hf is not None:
                line += f" | HF generate {batch / hf:8.1f} tok/s ({hf / ours:.1f}x)"
                summary[f"speedup_vs_hf_{size}_b{batch}"] = round(hf / ours, 2)
            if batch == 1:
                floor = weight_bytes / bandwidth
                summary[f"floor_ratio_b1_{size}"] = round(ours / floor, 2)
                line += f" | {1e3 * ours:.1f} ms/token vs bandwidth floor {1e3 * floor:.1f} ms ({ours / floor:.2f}x)"
            print(line, flush=True)
    stats = slot_utilization()
    print(
        f"multi-turn (8 slots, env latency 5-50 ms): slot utilization {stats['slot_utilization']:.3f} "
        f"(while work was queued {stats['steady_slot_utilization']:.3f}), "
        f"decode-row utilization {stats['decode_row_utilization']:.3f}, {stats['episodes']} episodes "
        f"in {stats['wall_s']:.1f}s",
        flush=True,
    )
    # Occupancy over the whole run, final drain included (while work is queued a freed slot is refilled at
    # once, so the steady-state figure is ~1 by construction); decode-row utilization says how much of the
    # decode compute produced tokens, the stricter measure.
    summary["slot_utilization"] = round(stats["slot_utilization"], 3)
    summary["steady_slot_utilization"] = round(stats["steady_slot_utilization"], 3)
    summary["decode_row_utilization"] = round(stats["decode_row_utilization"], 3)
    # The headline keys: the largest model measured at batch 64 / 1.
    big = "100m" if "100m" in args.sizes else args.sizes.split(",")[-1]
    for key in ("speedup_vs_hf", "speedup_vs_nocache"):
        if f"{key}_{big}_b64" in summary:
            summary[f"{key}_b64"] = summary[f"{key}_{big}_b64"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
