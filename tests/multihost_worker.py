"""One process of the multi-host test (tests/test_multihost.py), or the single-process reference run.

  JAX_COORDINATOR_ADDRESS=localhost:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i \
  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
  python tests/multihost_worker.py --out result_i.npz

joins the job through `alejax.parallel.distributed.maybe_initialize` (no JAX_* variables: one process),
builds a mesh over all global devices, and runs two sharded, donated train steps from the project's
`make_train_step`: a next-token step and an RL update (`alejax.rl.objective.make_rl_loss`, GRPO advantages,
PPO-clip + KL + entropy + TIS) on a fixed synthetic trajectory batch. The next-token step is fed with only
this process's rows (`global_batch`, as a per-host loader would); the RL update with the whole batch held
by every process (`global_batch_from_full`, as the single controller holds it). It writes the losses, metrics and the full updated parameters (gathered from every process).

With `--mode rollout` it runs one whole RL step instead (`RLPipeline.step`: the sampler and the slot scheduler
playing two-turn episodes on the global mesh with a KV pool and chunked prefill, reference and old log-probs,
a GRPO update, the weight sync) and writes the trajectories, the step's deterministic metrics, the updated
parameters, the rows whose envs ran on this process and the episodes its env pool served.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from alejax.config import load_config_file, section_of  # noqa: E402
from alejax.data.synthetic import generate_corpus  # noqa: E402
from alejax.data.tokenizer import train_bpe  # noqa: E402
from alejax.envs.base import register  # noqa: E402
from alejax.envs.pools import env_pool_from_config  # noqa: E402
from alejax.models import ModelConfig  # noqa: E402
from alejax.parallel import make_mesh  # noqa: E402
from alejax.parallel.distributed import (  # noqa: E402
    exchange_objects,
    global_batch,
    global_batch_from_full,
    maybe_initialize,
    process_row_range,
)
from alejax.rl.advantages import AdvantageConfig, get_advantage  # noqa: E402
from alejax.rl.build import build_pipeline  # noqa: E402
from alejax.rl.losses import LossConfig  # noqa: E402
from alejax.rl.objective import make_rl_loss  # noqa: E402
from alejax.rl.pipeline import RLConfig  # noqa: E402
from alejax.rollout.scheduler import RolloutConfig  # noqa: E402
from alejax.train.checkpoint import Checkpointer, abstract_like  # noqa: E402
from alejax.train.state import init_train_state, make_optimizer  # noqa: E402
from alejax.train.step import batch_shardings, make_train_step, next_token_loss, token_logprobs  # noqa: E402

# Every sharded dimension divisible by the fsdp axis (4); batch rows divisible by data x fsdp (8).
MODEL = ModelConfig(
    vocab_size=128, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64, qkv_bias=True
)
MESH = {"data": 2, "fsdp": 4}
ROWS, LENGTH, GROUP = 16, 24, 4


def lm_batch(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, MODEL.vocab_size, (ROWS, LENGTH)).astype(np.int32)
    return {"tokens": tokens, "loss_mask": (rng.random((ROWS, LENGTH)) < 0.8).astype(np.float32)}


def trajectory_batch(seed: int = 2) -> dict[str, np.ndarray]:
    """A fixed batch laid out as the RL pipeline's: prompt, then two model turns split by an observation."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, MODEL.vocab_size, (ROWS, LENGTH)).astype(np.int32)
    chunk_id = np.zeros((ROWS, LENGTH), np.int32)
    chunk_id[:, 6:12], chunk_id[:, 16:22] = 1, 2  # turn 1 and turn 2 of the model
    lengths = rng.integers(18, LENGTH + 1, ROWS)
    valid = np.arange(LENGTH)[None, :] < lengths[:, None]
    chunk_id = chunk_id * valid
    loss_mask = (chunk_id > 0).astype(np.float32)
    group_id = np.repeat(np.arange(ROWS // GROUP), GROUP).astype(np.int32)
    reward = rng.integers(0, 2, ROWS).astype(np.float32)
    return {
        "tokens": tokens * valid,
        "loss_mask": loss_mask,
        "segment_ids": valid.astype(np.int32),
        "chunk_id": chunk_id,
        "reward_row": reward,
        "group_id": group_id,
    }


class TwoTurnEnv:
    """Two turns: any first answer gets "again"; the second is rewarded when its length is even (about half
    of an untrained policy's answers: rewards vary within a group, so the update has signal). Each call
    sleeps a random 0-10 ms, so which answers arrive first differs between processes and runs: the
    trajectories must not depend on it."""

    tools: list = []
    system_prompt = "Answer twice."

    def reset(self, seed):
        self.turn = 0
        time.sleep(random.random() * 0.01)
        return f"question {seed}", {}

    def step(self, action):
        self.turn += 1
        time.sleep(random.random() * 0.01)
        if self.turn == 1:
            return "again", 0.0, False, False, {}
        reward = float(len(action) % 2 == 0)
        return "", reward, True, False, {"success": bool(reward)}


register("multihost/two_turn", TwoTurnEnv)
ROLLOUT_GROUPS, ROLLOUT_GROUP_SIZE = 4, 4  # 16 episodes in flight: 2 rows per device, 8 per process


class CountingPool:
    """The env pool, noting which episodes this process's pool served (the envs of the rows it owns)."""

    def __init__(self, pool):
        self.pool, self.episodes, self.lock = pool, set(), threading.Lock()

    def reset(self, episode_id, seed):
        with self.lock:
            self.episodes.add(episode_id)
        return self.pool.reset(episode_id, seed)

    def __getattr__(self, name):
        return getattr(self.pool, name)


def rollout_step() -> dict:
    """One `RLPipeline.step` on the global mesh; returns what the test compares."""
    tokenizer = train_bpe(generate_corpus(300, seed=0), vocab_size=400)  # deterministic: same on every host
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "rl.py"))
    c.seed, c.steps, c.max_length, c.num_devices = 0, 10, 128, -1
    c.mesh = ConfigDict(MESH)
    c.env.name, c.env.kwargs = "multihost/two_turn", ConfigDict()
    c.model = ConfigDict(
        dict(
            vocab_size=tokenizer.vocab_size,
            d_model=32,
            n_layers=1,
            n_heads=4,
            n_kv_heads=2,
            head_dim=8,
            mlp_dim=64,
        )
    )
    rl = RLConfig(
        groups_per_step=ROLLOUT_GROUPS,
        group_size=ROLLOUT_GROUP_SIZE,
        minibatch_size=8,
        filter_zero_variance_groups=False,
        loss=LossConfig(kl_coef=0.05),
    )
    c.rl = section_of(RLConfig, **{f.name: getattr(rl, f.name) for f in dataclasses.fields(rl)})
    # A KV pool (8 decode rows for 16 episodes) and chunked prefill: the scheduler's whole machinery.
    rollout = RolloutConfig(max_turns=2, max_new_tokens_per_turn=6, decode_rows=8, prefill_chunk=16)
    c.rollout = section_of(RolloutConfig, **dataclasses.asdict(rollout))
    c.optim.learning_rate = 2e-2
    pool = CountingPool(env_pool_from_config(c.env_pool, c.env.name, {}))
    t0 = time.time()
    pipeline = build_pipeline(c, tokenizer, env_pool=pool)
    print(f"worker: build {time.time() - t0:.1f}s", flush=True)
    collects = []  # the step's rollout, as the scheduler returns it
    collect = pipeline.scheduler.collect
    pipeline.scheduler.collect = lambda *a, **k: collects.append(collect(*a, **k)) or collects[-1]
    t0 = time.time()
    metrics = pipeline.step(range(ROLLOUT_GROUPS))
    print(
        f"worker: rl step {time.time() - t0:.1f}s ("
        + ", ".join(f"{k[5:-2]} {v:.1f}s" for k, v in metrics.items() if k.startswith("time_"))
        + f"; {pipeline.sampler.compilations} sampler programs)",
        flush=True,
    )
    pipeline.close()
    params = multihost_utils.process_allgather(nnx.to_pure_dict(pipeline.state.params), tiled=True)
    ((trajectories, _),) = collects
    width = max(len(t.tokens) for t in trajectories)
    pad = lambda rows, dtype: np.array([r + [0] * (width - len(r)) for r in rows], dtype)  # noqa: E731
    deterministic = {
        k: v
        for k, v in metrics.items()
        if not any(word in k for word in ("time", "wall", "utilization", "overlap", "env_pool"))
    }
    return {
        **{
            f"param:{jax.tree_util.keystr(p)}": np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
        },
        **{f"metric:{k}": np.float64(v) for k, v in deterministic.items()},
        "tokens": pad([t.tokens for t in trajectories], np.int32),
        "behaviour_logp": pad([t.behaviour_logp for t in trajectories], np.float32),
        "loss_mask": pad([t.loss_mask for t in trajectories], np.float32),
        "reward": np.array([t.reward for t in trajectories], np.float32),
        "owned_rows": np.array([i for i, s in enumerate(pipeline.scheduler.slots) if s.owned], np.int32),
        "served_episodes": np.array(sorted(pool.episodes), np.int32),
        # A payload past the inline size takes the exchange's second all-gather.
        "exchanged_sizes": np.array(
            [len(x) for x in exchange_objects("y" * 3000 * (jax.process_index() + 1))]
        ),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help=".npz file for this process's results")
    parser.add_argument("--checkpoint-dir", default="", help="save + restore the state here (shared)")
    parser.add_argument("--mode", default="train", choices=["train", "rollout"])
    args = parser.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py: comparable sums
    t0 = time.time()
    joined = maybe_initialize()
    t_join = time.time() - t0
    print(
        f"worker: joined={joined} process {jax.process_index()}/{jax.process_count()} "
        f"local {jax.local_device_count()} global {jax.device_count()} (joined in {t_join:.1f}s)",
        flush=True,
    )
    if args.mode == "rollout":
        results = rollout_step()
        np.savez(args.out, **results, process_count=np.int64(jax.process_count()))
        print(f"worker {jax.process_index()}: rollout step done, {time.time() - t0:.1f}s", flush=True)
        if joined:
            jax.distributed.shutdown()
        return

    mesh = make_mesh(MESH)
    tx = make_optimizer(1e-2, warmup_steps=1, total_steps=10, schedule="constant")
    graphdef, state, shardings = init_train_state(MODEL, tx, mesh, seed=0)
    replicated = NamedSharding(mesh, PartitionSpec())

    def feed(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Each process hands over only the rows its devices hold (as a per-host data loader would)."""
        sh = batch_shardings(mesh, batch)
        start, stop = process_row_range(sh["tokens"], ROWS)
        return global_batch({k: v[start:stop] for k, v in batch.items()}, sh), (start, stop)

    # 1. next-token train step.
    lm_step = make_train_step(graphdef, tx, shardings, mesh, next_token_loss)
    batch, rows = feed(lm_batch())
    state, lm_metrics = lm_step(state, batch)
    print(f"worker: init + lm step {time.time() - t0:.1f}s", flush=True)

    # 2. RL update on the fixed trajectory batch: π_old from the current weights (a sharded forward), μ a
    # perturbed copy of it, GRPO advantages on the host (identical on every process).
    traj = trajectory_batch()
    logp_fn = jax.jit(
        lambda params, b: token_logprobs(nnx.merge(graphdef, params), b)[0], out_shardings=replicated
    )
    model_inputs = {k: traj[k] for k in ("tokens", "segment_ids")}
    with jax.set_mesh(mesh):
        old_logp = np.asarray(logp_fn(state.params, feed(model_inputs)[0]))
    behaviour_logp = old_logp + np.random.default_rng(3).normal(0, 0.05, old_logp.shape).astype(np.float32)
    advantages, _ = get_advantage("grpo")(
        {"reward": traj["reward_row"], "group_id": traj["group_id"], "loss_mask": traj["loss_mask"]},
        AdvantageConfig(),
    )
    rl_config = RLConfig(loss=LossConfig(kl_coef=0.05, entropy_coef=0.01, tis_cap=2.0))
    rl_arrays = {
        "tokens": traj["tokens"],
        "loss_mask": traj["loss_mask"],
        "segment_ids": traj["segment_ids"],
        "chunk_id": traj["chunk_id"],
        "behaviour_logp": behaviour_logp * traj["loss_mask"],
        "old_logp": old_logp * traj["loss_mask"],
        "ref_logp": (old_logp - 0.1) * traj["loss_mask"],
        "advantages": np.asarray(advantages, np.float32),
        "reward": np.broadcast_to(traj["reward_row"][:, None], (ROWS, LENGTH)).astype(np.float32),
    }
    rl_step = make_train_step(graphdef, tx, shardings, mesh, make_rl_loss(rl_config.loss))
    # Here every process holds the whole batch (as the controller does) and places only its own pieces.
    state, rl_metrics = rl_step(state, global_batch_from_full(rl_arrays, batch_shardings(mesh, rl_arrays)))
    print(f"worker: + rl update {time.time() - t0:.1f}s", flush=True)

    # 3. Checkpoint round trip through the project's Checkpointer: every process writes its own shards into
    # one shared directory (as on a gs:// workdir) and reads them back onto the same layout.
    ckpt_diff = -1.0  # elements of the restored state that differ from the saved one
    if args.checkpoint_dir:
        with Checkpointer(args.checkpoint_dir, keep=1) as checkpointer:
            checkpointer.save(int(state.step), state, {"note": "multihost"})
            checkpointer.wait()
            restored, extra, restored_step = checkpointer.restore(abstract_like(state))
        assert extra == {"note": "multihost"} and restored_step == int(state.step), (extra, restored_step)
        # Elements that differ, over the whole state (params, Adam moments, step, RNG); summed on the mesh.
        count_diff = jax.jit(
            lambda a, b: sum(jnp.sum(x != y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))),
            out_shardings=replicated,
        )
        ckpt_diff = float(count_diff(state, restored))
        print(f"worker: + checkpoint round trip {time.time() - t0:.1f}s", flush=True)

    # Every process gathers all updated parameters to compare them on the host.
    params = multihost_utils.process_allgather(nnx.to_pure_dict(state.params), tiled=True)
    flat = {
        jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    metrics = {f"lm/{k}": float(v) for k, v in lm_metrics.items()}
    metrics.update({f"rl/{k}": float(v) for k, v in rl_metrics.items()})
    np.savez(
        args.out,
        **{f"param:{k}": v for k, v in flat.items()},
        **{f"metric:{k}": np.float64(v) for k, v in metrics.items()},
        step=np.int64(int(state.step)),
        rows=np.asarray(rows),
        process_count=np.int64(jax.process_count()),
        old_logp=old_logp,
        checkpoint_mismatches=np.float64(ckpt_diff),
    )
    print(
        f"worker {jax.process_index()}: rows {rows}, lm loss {metrics['lm/loss']:.6f}, "
        f"rl loss {metrics['rl/loss']:.6f}, {time.time() - t0:.1f}s",
        flush=True,
    )
    if joined:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
