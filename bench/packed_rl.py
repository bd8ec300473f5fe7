"""Packed vs padded RL batches: the policy update and the log-prob pass on a ragged batch of trajectories.

  python bench/packed_rl.py [--batch 32] [--width 512] [--min-length 32] [--repeats 5]

A batch of `--batch` trajectories whose lengths are uniform in [min-length, width] (multi-turn episodes end
at very different lengths), right-padded to `width` as `collate` does. The same update (GRPO's ppo_clip
loss over the RL arrays, one optimizer step, `make_train_step`) and the same log-prob pass
(`make_logprob_fn`) run on the padded rows and on the rows `packed_model_inputs` packs them into, on a
5M-parameter model; interleaved repeats, best of each. The packed results equal the padded ones (checked
here on the log-probs; tests/test_packed_rl.py checks gradients and a whole RL step).

Last line: one JSON object with `packed_train_step_speedup`, `packed_logprob_speedup` (padded time / packed
time), the row counts and how full the rows are, and the matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from alejax.data.packing import packed_model_inputs  # noqa: E402
from alejax.models import ModelConfig  # noqa: E402
from alejax.parallel.mesh import make_mesh  # noqa: E402
from alejax.parallel.rules import batch_parallelism  # noqa: E402
from alejax.rl.losses import LossConfig  # noqa: E402
from alejax.rl.objective import make_rl_loss  # noqa: E402
from alejax.train.state import init_train_state, make_optimizer  # noqa: E402
from alejax.train.step import make_logprob_fn, make_train_step  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "bench"))
from train_step import matmul_peak_flops  # noqa: E402

MODEL = ModelConfig(
    vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, mlp_dim=768
)


def ragged_rl_arrays(batch: int, width: int, min_length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays the RL update reads, for trajectories of random lengths (the second half of each is the
    policy's tokens), right-padded to `width`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, width + 1, batch)
    real = np.arange(width)[None] < lengths[:, None]
    generated = real & (np.arange(width)[None] >= lengths[:, None] // 2)
    logp = np.where(generated, -rng.uniform(0.1, 3.0, (batch, width)), 0.0).astype(np.float32)
    return {
        "tokens": np.where(real, rng.integers(1, MODEL.vocab_size, (batch, width)), 0).astype(np.int32),
        "segment_ids": real.astype(np.int32),
        "loss_mask": generated.astype(np.float32),
        "chunk_id": generated.astype(np.int32),
        "behaviour_logp": logp,
        "old_logp": logp,
        "advantages": np.where(generated, rng.normal(size=(batch, 1)), 0.0).astype(np.float32),
        "reward": np.zeros((batch, width), np.float32),
    }


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--min-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    mesh = make_mesh({"fsdp": -1})
    peak = matmul_peak_flops()
    print(
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    arrays = ragged_rl_arrays(args.batch, args.width, args.min_length)
    lengths = arrays["segment_ids"].sum(1)
    packed = {
        **arrays,
        **packed_model_inputs(arrays["tokens"], lengths, row_multiple=batch_parallelism(mesh)),
    }
    rows = len(packed["packed_tokens"])
    fill_padded = lengths.sum() / arrays["tokens"].size
    fill_packed = lengths.sum() / packed["packed_tokens"].size
    print(
        f"{args.batch} trajectories of {lengths.min()}-{lengths.max()} tokens (mean {lengths.mean():.0f}) in rows of "
        f"{args.width}: padded {args.batch} rows ({fill_padded:.0%} real tokens), packed {rows} rows "
        f"({fill_packed:.0%})",
        flush=True,
    )

    tx = make_optimizer(1e-5, warmup_steps=1, total_steps=10**6, weight_decay=0.0, schedule="constant")
    graphdef, state, shardings = init_train_state(MODEL, tx, mesh, seed=0)
    step = make_train_step(graphdef, tx, shardings, mesh, make_rl_loss(LossConfig()))
    logprob_fn = make_logprob_fn(graphdef)

    def update(batch):
        nonlocal state
        state, metrics = step(state, batch)
        return metrics["loss"]

    def logprobs(batch):
        with jax.set_mesh(mesh):
            return logprob_fn(state.params, state.frozen, {k: jnp.asarray(v) for k, v in batch.items()})

    model_inputs = (
        "tokens",
        "segment_ids",
        "packed_tokens",
        "packed_positions",
        "packed_segment_ids",
        "pack_index",
    )
    padded_inputs = {k: arrays[k] for k in model_inputs if k in arrays}
    packed_inputs = {k: packed[k] for k in model_inputs}
    valid = arrays["loss_mask"] > 0
    diff = np.abs(np.asarray(logprobs(packed_inputs)) - np.asarray(logprobs(padded_inputs)))[valid].max()
    print(f"packed vs padded log-probs on the policy's tokens: max |diff| {diff:.2e}", flush=True)
    for batch in (arrays, packed):  # compile both before timing
        update(batch)
    times = {"train_padded": [], "train_packed": [], "logprob_padded": [], "logprob_packed": []}
    for _ in range(args.repeats):  # interleaved: the machine's drift hits both alike
        times["train_padded"].append(best_of(lambda: update(arrays), 1))
        times["train_packed"].append(best_of(lambda: update(packed), 1))
        times["logprob_padded"].append(best_of(lambda: logprobs(padded_inputs), 1))
        times["logprob_packed"].append(best_of(lambda: logprobs(packed_inputs), 1))
    best = {k: min(v) for k, v in times.items()}
    print(
        f"update: padded {best['train_padded'] * 1e3:.0f} ms, packed {best['train_packed'] * 1e3:.0f} ms "
        f"({best['train_padded'] / best['train_packed']:.2f}x); log-prob pass: padded "
        f"{best['logprob_padded'] * 1e3:.0f} ms, packed {best['logprob_packed'] * 1e3:.0f} ms "
        f"({best['logprob_padded'] / best['logprob_packed']:.2f}x)",
        flush=True,
    )
    print(
        json.dumps(
            {
                "packed_train_step_speedup": round(best["train_padded"] / best["train_packed"], 3),
                "packed_logprob_speedup": round(best["logprob_padded"] / best["logprob_packed"], 3),
                "train_step_ms_padded": round(best["train_padded"] * 1e3, 1),
                "train_step_ms_packed": round(best["train_packed"] * 1e3, 1),
                "rows_padded": args.batch,
                "rows_packed": rows,
                "real_token_fraction_padded": round(float(fill_padded), 3),
                "real_token_fraction_packed": round(float(fill_packed), 3),
                "max_abs_logprob_diff": float(diff),
                "matmul_peak_flops": peak,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
