"""The rl job (`job = "rl"`, configs/rl.py): RL post-training of an agent on a registered environment.

1. SFT warm start on the env's scripted expert (`config.sft`, the sft job's stage; steps = 0: none, the
   tokenizer is still trained on the expert's episodes) -> workdir/sft
2. the RL pipeline (rl/build.py): GRPO or any registered estimator / loss, IPA resampling, async rollout
3. RL steps with progress lines, metrics (JSONL + TensorBoard + PNG) and orbax checkpoints every K steps;
   a rerun with the same workdir resumes from the last checkpoint and ends at the same step count.
"""

from __future__ import annotations

import json
import os
import time

from flax import nnx
from ml_collections import ConfigDict

from alejax.rl.build import build_pipeline, task_seeds
from alejax.rl.pipeline import RLPipeline
from alejax.train.checkpoint import Checkpointer, resume
from alejax.train.metrics import MetricsWriter, Progress, last_logged, plot_metrics, read_metrics
from alejax.train.sft import train_sft

SHOWN = ("reward", "success", "kept_fraction", "loss", "staleness")
PLOTTED = ["reward", "success", "kept_fraction", "loss", "grad_norm", "time_rollout_s", "time_train_s"]


def run(config: ConfigDict) -> dict[str, float]:
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    graphdef, sft_params, tokenizer, _ = train_sft(config.sft)  # a finished SFT stage just loads
    print(
        f"rl: {config.env.name}, vocab {tokenizer.vocab_size}, {config.rl.advantage} + "
        f"{config.rl.loss.policy_loss}, {config.rl.groups_per_step}x{config.rl.group_size} episodes/step, "
        f"gap {config.rl.max_policy_version_gap}",
        flush=True,
    )
    # RL trains the model SFT trained (a pretrained one's architecture, the same adapters).
    model_config = nnx.merge(graphdef, sft_params).config
    pipeline = build_pipeline(config, tokenizer, params=sft_params, model_config=model_config)
    last = train_loop(pipeline, config, workdir)  # closes the pipeline
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if "reward" not in last:  # resumed at the final step
        last = {**last_logged(metrics_path, ("reward", "success")), **last}
    png = plot_metrics(metrics_path, PLOTTED, title=f"RL on {config.env.name}")
    print(
        f"done: step {int(last['rl_step'])}/{config.steps} in {time.time() - t_start:.0f}s; reward "
        f"{last.get('reward', float('nan')):.3f}, success {last.get('success', float('nan')):.3f}; "
        f"metrics {metrics_path}, plot {png}",
        flush=True,
    )
    return last


def train_loop(pipeline: RLPipeline, config: ConfigDict, workdir: str) -> dict[str, float]:
    """RL steps `start + 1 .. config.steps` (start = the last checkpoint's step), with metrics, progress
    lines and checkpoints every `config.checkpoint_every` steps and at the end; closes the pipeline.
    Returns the last metrics."""
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    tree, extra, first = resume(checkpointer, pipeline.checkpoint_tree())
    if extra is not None:
        pipeline.load_checkpoint(tree, extra)
    drop_metrics_after(os.path.join(workdir, "metrics.jsonl"), first)
    progress = Progress(config.steps, start=first, every_s=config.progress_every_s, label="rl")
    last: dict[str, float] = {}
    try:
        with MetricsWriter(
            workdir, wandb_project=config.wandb_project or None, config=config.to_dict()
        ) as writer:
            for step in range(first + 1, config.steps + 1):
                # Async mode keeps the rollouts of the next `gap` steps in flight: their seeds, in order.
                ahead = range(step + 1, min(step + config.rl.max_policy_version_gap, config.steps) + 1)
                metrics = pipeline.step(task_seeds(config, step), [task_seeds(config, s) for s in ahead])
                metrics["rl_step"] = step
                last = writer.write(step, metrics)
                progress.update(step, {k: last[k] for k in SHOWN if k in last}, force=step == config.steps)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    checkpointer.save(step, pipeline.checkpoint_tree(), extra=pipeline.checkpoint_extra())
    finally:
        pipeline.close()
        checkpointer.close()
    last.setdefault("rl_step", first)
    return last


def drop_metrics_after(path: str, step: int) -> None:
    """A run killed between checkpoints logged steps it will redo: keep only rows up to `step`."""
    if not os.path.exists(path):
        return
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
