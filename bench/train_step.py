"""Throughput and MFU of the sharded train step, against this machine's practical peak measured now.

  python bench/train_step.py                 # ~25M, ~100M, SmolLM2-135M full and LoRA; minutes on 2 CPU cores
  python bench/train_step.py --sizes=25m --steps=3

The baseline is a large f32 matmul timed in the same process (the practical peak of these cores);
MFU = model FLOPs/s of the train step / that peak, with the FLOPs the step must do per token: 6N +
attention for full training; for LoRA (rank 8 on every projection) 4N on the frozen weights (forward and
input gradient, no weight gradient), 3x attention and 6x the adapters. Each row runs in its own process,
so its peak host memory is its own. The LoRA row also reports the bytes a weight sync moves (the adapters)
against the full weights. The last line is one JSON object with the figures.

Compile-time rows: seconds to trace, lower and compile (AOT, on abstract arrays: nothing is initialised) the
train step and the sampler's prefill and decode at the SmolLM2-135M shape with 4 and with 30 layers. The
layers run under one `lax.scan`, so the ratio 30 vs 4 should stay near 1 (an unrolled graph grows ~linearly).

  python bench/train_step.py --sizes= --compile_layers=4,30     # compile rows only
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alejax.models.config import LoRAConfig, get_preset
from alejax.models.init import abstract_model
from alejax.models.lora import tree_bytes
from alejax.models.transformer import init_cache
from alejax.parallel.mesh import make_mesh
from alejax.parallel.rules import state_shardings
from alejax.rollout.sampler import Sampler
from alejax.train.state import TrainState, init_train_state, make_optimizer
from alejax.train.step import make_train_step


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n f32 matmul chain (several in one jit so dispatch overhead is negligible)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)

    @jax.jit
    def chain(a, b):
        for _ in range(4):
            a = (a @ b) * (1.0 / n)
        return a

    jax.block_until_ready(chain(a, b))
    return 4 * 2 * n**3 / _best_time(lambda: chain(a, b), repeats)


# A bench row name -> its model preset and LoRA rank (0: full training).
SIZES = {
    "25m": ("25m", 0),
    "100m": ("100m", 0),
    "smollm2": ("smollm2_135m", 0),
    "smollm2_lora": ("smollm2_135m", 8),
}


def train_step_throughput(size: str, batch_size: int, seq_len: int, steps: int) -> dict:
    preset, rank = SIZES[size]
    mesh = make_mesh({"fsdp": -1})
    config = get_preset(preset, lora=LoRAConfig(rank=rank))
    tx = make_optimizer(1e-4, warmup_steps=1, total_steps=100)
    graphdef, state, shardings = init_train_state(config, tx, mesh)
    step = make_train_step(graphdef, tx, shardings, mesh)
    rng = np.random.default_rng(0)
    batch = {
        "tokens": rng.integers(0, config.vocab_size, (batch_size, seq_len)).astype(np.int32),
        "loss_mask": np.ones((batch_size, seq_len), np.float32),
    }
    t = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    tokens = batch_size * seq_len
    flops = config.flops_per_token(seq_len) * tokens
    return {
        "params_m": config.num_params() / 1e6,
        "batch": batch_size,
        "seq_len": seq_len,
        "step_s": step_s,
        "compile_s": compile_s,
        "tokens_per_s": tokens / step_s,
        "model_flops_per_s": flops / step_s,
        "loss": float(metrics["loss"]),
        # This row's process: params, Adam (of what trains), activations.
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "sync_bytes": tree_bytes(state.params),  # what a weight sync to the sampler moves
        "model_bytes": tree_bytes(state.model_params()),
    }


def in_own_process(fn, *args):
    """fn(*args) in a fresh process (spawned: its own jax, its own peak memory)."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _compile_seconds(jitted, *args, **kwargs) -> float:
    jax.clear_caches()  # a repeat must trace and compile again, not hit jit's caches
    t = time.perf_counter()
    jitted.lower(*args, **kwargs).compile()
    return time.perf_counter() - t


def compile_times(n_layers: int, mesh, batch: int = 2, seq_len: int = 128, cache_len: int = 256) -> dict:
    """Seconds to trace + compile the train step, the sampler's prefill and its decode segment at the
    SmolLM2-135M shape with `n_layers` layers (abstract inputs: no parameter is ever created)."""
    config = get_preset("smollm2_135m", n_layers=n_layers)
    tx = make_optimizer(1e-4, warmup_steps=1, total_steps=100)
    model = abstract_model(config)
    graphdef, params = nnx.split(model)
    state = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=jax.eval_shape(tx.init, params),
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    shardings = state_shardings(state, mesh)
    step = make_train_step(graphdef, tx, shardings, mesh)
    train_batch = {
        "tokens": np.zeros((batch, seq_len), np.int32),
        "loss_mask": np.ones((batch, seq_len), np.float32),
    }
    with jax.set_mesh(mesh):
        train_s = _compile_seconds(step.jitted_for(train_batch), state, train_batch)

    sampler = Sampler(model, batch_size=batch, max_length=cache_len, segment=32)
    cache = jax.eval_shape(lambda: init_cache(config, batch, cache_len))
    rows = jax.ShapeDtypeStruct((batch,), jnp.int32)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
    chunk = jax.ShapeDtypeStruct((batch, 64), jnp.int32)
    prefill_s = _compile_seconds(sampler._prefill, params, cache, chunk, rows, rows, keys)
    decode_s = _compile_seconds(sampler._decode, params, cache, rows, rows, rows, keys, steps=32)
    return {"train_s": train_s, "prefill_s": prefill_s, "decode_s": decode_s}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="25m,100m,smollm2,smollm2_lora", help=f"rows of {sorted(SIZES)}")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4, help="rows per step (25m uses 2x this)")
    parser.add_argument(
        "--compile_layers", default="4,30", help="two layer counts of the SmolLM2 shape ('' skips)"
    )
    parser.add_argument("--compile_repeats", type=int, default=2, help="best of this many compiles")
    args = parser.parse_args()

    mesh = make_mesh({"fsdp": -1})
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; mesh {dict(mesh.shape)}", flush=True
    )
    # Peak before and after the model runs: the machine is shared and noisy, so take the better one.
    peak = matmul_peak_flops()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
    # Interleaved repeats, best of each: the shared machine's noise is larger than a scanned graph's growth.
    compile_rows: dict[int, dict] = {}
    for _ in range(args.compile_repeats):
        for n_layers in [int(n) for n in args.compile_layers.split(",") if n]:
            r = compile_times(n_layers, mesh)
            best = compile_rows.setdefault(n_layers, r)
            compile_rows[n_layers] = {k: min(v, best[k]) for k, v in r.items()}
            print(
                f"compile smollm2 shape, {n_layers} layers: train step {r['train_s']:.1f}s, "
                f"prefill {r['prefill_s']:.1f}s, decode {r['decode_s']:.1f}s",
                flush=True,
            )
    results = {}
    for size in [s for s in args.sizes.split(",") if s]:
        batch = args.batch * (2 if size == "25m" else 1)
        r = in_own_process(train_step_throughput, size, batch, args.seq_len, args.steps)
        results[size] = r
        print(
            f"{size}: {r['params_m']:.1f}M params, batch {batch}x{args.seq_len}, step {r['step_s']:.2f}s "
            f"(compile {r['compile_s']:.1f}s), {r['tokens_per_s']:.0f} tokens/s, "
            f"{r['model_flops_per_s'] / 1e9:.1f} GFLOP/s, peak host memory {r['peak_rss_gb']:.1f} GiB",
            flush=True,
        )
    peak = max(peak, matmul_peak_flops())
    summary = {"matmul_peak_flops": peak}
    for size, r in results.items():
        summary[f"mfu_{size}"] = round(r["model_flops_per_s"] / peak, 4)
        summary[f"tokens_per_s_{size}"] = round(r["tokens_per_s"], 1)
        summary[f"step_s_{size}"] = round(r["step_s"], 3)
        summary[f"peak_rss_gb_{size}"] = round(r["peak_rss_gb"], 2)
    if "smollm2_lora" in results:
        r = results["smollm2_lora"]
        summary["lora_sync_bytes"], summary["full_sync_bytes"] = r["sync_bytes"], r["model_bytes"]
        summary["lora_sync_fraction"] = round(r["sync_bytes"] / r["model_bytes"], 5)
        print(
            f"weight sync, SmolLM2 LoRA rank 8: {r['sync_bytes'] / 2**20:.1f} MiB vs {r['model_bytes'] / 2**20:.1f} "
            f"MiB of full weights ({summary['lora_sync_fraction']:.4f})",
            flush=True,
        )
    if len(compile_rows) == 2:
        few, many = sorted(compile_rows)
        a, b = compile_rows[few], compile_rows[many]
        train_ratio = b["train_s"] / a["train_s"]
        sampler_ratio = (b["prefill_s"] + b["decode_s"]) / (a["prefill_s"] + a["decode_s"])
        print(
            f"compile best of {args.compile_repeats}: train step {a['train_s']:.1f}s vs {b['train_s']:.1f}s, "
            f"sampler {a['prefill_s'] + a['decode_s']:.1f}s vs {b['prefill_s'] + b['decode_s']:.1f}s",
            flush=True,
        )
        summary[f"compile_ratio_train_{many}_vs_{few}"] = round(train_ratio, 3)
        summary[f"compile_ratio_sampler_{many}_vs_{few}"] = round(sampler_ratio, 3)
        for n, r in compile_rows.items():
            summary[f"compile_s_train_{n}"] = round(r["train_s"], 2)
            summary[f"compile_s_sampler_{n}"] = round(r["prefill_s"] + r["decode_s"], 2)
        print(
            f"compile ratio {many} vs {few} layers: train step {train_ratio:.2f}x, "
            f"sampler (prefill + decode) {sampler_ratio:.2f}x",
            flush=True,
        )
    for size in results:
        print(f"MFU {size}: {summary[f'mfu_{size}']:.3f} of the measured matmul peak", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
