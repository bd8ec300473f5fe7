"""The rm job (`job = "rm"`, configs/rm_causal.py / configs/rm_bt.py): toy preference pairs -> grain batches ->
sharded pair-loss step -> metrics (every loss part, both optimizer groups' gradient norms) + PNG -> orbax
checkpoints; a rerun resumes by itself.

The data is Tier B of spec/causal_rm.md (alejax.reward.toy): the train split carries planted artifacts;
evaluation reports gold-label accuracy on IID / balanced / reversed splits.
"""

from __future__ import annotations

import os
import time

import jax
from ml_collections import ConfigDict

from alejax.config import from_section
from alejax.data.batches import batched_rows
from alejax.reward import toy
from alejax.reward.losses import RMLossConfig
from alejax.reward.training import evaluate, init_rm_from_config, make_rm_train_step, make_scorer
from alejax.train.checkpoint import Checkpointer, resume
from alejax.train.metrics import MetricsWriter, Progress, plot_metrics

SHOWN = ("loss", "loss/pred", "accuracy", "eval/acc_iid", "eval/acc_reversed")


def run(config: ConfigDict) -> dict[str, float]:
    workdir = config.workdir
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    d = config.data
    train_rows = toy.preference_pairs(
        d.n_train, d.train_split, seed=config.seed, label_noise=d.label_noise, task=d.task
    )
    if not d.attrs:
        train_rows = {k: v for k, v in train_rows.items() if not k.startswith("attrs")}
    train_rows.pop("correct_w")
    eval_splits = {
        s: toy.preference_pairs(d.n_eval, s, seed=config.seed + 1 + i, gold=True, task=d.task)
        for i, s in enumerate(("iid", "balanced", "reversed"))
    }

    graphdef, state, shardings, tx, mesh, model_config, head_config = init_rm_from_config(config)
    loss_config = from_section(RMLossConfig, config.loss)
    train_step = make_rm_train_step(
        graphdef, tx, shardings, mesh, loss_config, config.steps, microbatches=config.optim.microbatches
    )
    scorer = make_scorer(graphdef, mesh)
    print(
        f"rm: {head_config.kind} head on a {model_config.num_params() / 1e6:.2f}M backbone; {d.n_train} train pairs "
        f"({d.train_split}); loss {loss_config}",
        flush=True,
    )

    data_iter = iter(batched_rows(train_rows, d.batch_size, seed=config.seed))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
    state, _, _ = resume(checkpointer, state, data_iter)

    first_step = int(state.step)
    progress = Progress(config.steps, start=first_step, every_s=config.progress_every_s, label="rm")
    last: dict[str, float] = {}
    with MetricsWriter(
        workdir, wandb_project=config.wandb_project or None, config=config.to_dict()
    ) as writer:
        for step in range(first_step + 1, config.steps + 1):
            state, metrics = train_step(state, next(data_iter))
            if step % config.log_every == 0 or step == config.steps:
                metrics = jax.device_get(metrics)
                if step % config.eval_every == 0 or step == config.steps:
                    metrics.update(evaluate(scorer, state.model_params(), eval_splits, d.batch_size))
                last = writer.write(step, metrics)
                progress.update(step, {k: last[k] for k in SHOWN if k in last})
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpointer.save(step, state, extra={"data_iter": data_iter.get_state()})
    checkpointer.close()
    png = plot_metrics(
        os.path.join(workdir, "metrics.jsonl"),
        ["loss", "loss/pred", "loss/adv", "accuracy", "eval/acc_balanced", "eval/acc_reversed"],
        title=f"reward model ({head_config.kind})",
    )
    print(
        f"done: {config.steps} steps in {time.time() - t_start:.0f}s; metrics {writer.path}, plot {png}",
        flush=True,
    )
    return last
