"""Throughput and MFU of the sharded train step, against this machine's practical peak measured now.

  python bench/train_step.py                 # ~25M and ~100M models, a few minutes on a 2-core CPU
  python bench/train_step.py --sizes=25m --steps=3

The baseline is a large f32 matmul timed in the same process (the practical peak of these cores);
MFU = model FLOPs/s of the train step (6N + attention, per token) / that peak. The last line is one
JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from alejax.models.config import get_preset
from alejax.parallel.mesh import make_mesh
from alejax.train.state import init_train_state, make_optimizer
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


def train_step_throughput(preset: str, batch_size: int, seq_len: int, steps: int, mesh) -> dict:
    config = get_preset(preset)
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
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="25m,100m")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4, help="rows per step (25m uses 2x this)")
    args = parser.parse_args()

    mesh = make_mesh({"fsdp": -1})
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; mesh {dict(mesh.shape)}", flush=True
    )
    # Peak before and after the model runs: the machine is shared and noisy, so take the better one.
    peak = matmul_peak_flops()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s", flush=True)
    results = {}
    for size in args.sizes.split(","):
        batch = args.batch * (2 if size == "25m" else 1)
        r = train_step_throughput(size, batch, args.seq_len, args.steps, mesh)
        results[size] = r
        print(
            f"{size}: {r['params_m']:.1f}M params, batch {batch}x{args.seq_len}, step {r['step_s']:.2f}s "
            f"(compile {r['compile_s']:.1f}s), {r['tokens_per_s']:.0f} tokens/s, "
            f"{r['model_flops_per_s'] / 1e9:.1f} GFLOP/s",
            flush=True,
        )
    peak = max(peak, matmul_peak_flops())
    summary = {"matmul_peak_flops": peak}
    for size, r in results.items():
        summary[f"mfu_{size}"] = round(r["model_flops_per_s"] / peak, 4)
        summary[f"tokens_per_s_{size}"] = round(r["tokens_per_s"], 1)
        summary[f"step_s_{size}"] = round(r["step_s"], 3)
    for size in results:
        print(f"MFU {size}: {summary[f'mfu_{size}']:.3f} of the measured matmul peak", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
