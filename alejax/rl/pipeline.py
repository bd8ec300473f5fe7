"""The single controller: one RL step, readable top to bottom.

  rollout    the scheduler plays `groups x group_size` episodes with the sampler's weights (μ)
  filter     dynamic sampling: drop groups whose rewards do not vary (no signal) and aborted episodes
  reference  log-probs under the frozen reference weights (for the KL term), when asked for
  old        log-probs under the train weights before this update (π_old), kept apart from μ
  advantages the named estimator
  train      minibatch updates with the named policy loss (+ KL, entropy)
  sync       the new weights go to the sampler (resharded to its layout)
Every phase is timed; the metrics carry rewards, lengths, losses and the timings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alejax.data.tokenizer import Tokenizer
from alejax.envs.base import EnvPool
from alejax.parallel.placement import reshard
from alejax.parallel.rules import state_shardings
from alejax.rl.advantages import AdvantageConfig
from alejax.rl.losses import LossConfig
from alejax.rl.objective import compute_advantages, make_rl_loss
from alejax.rollout.sampler import Sampler, SamplingConfig, bucket_length
from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, RolloutScheduler
from alejax.rollout.trajectory import TrajectoryBatch, collate
from alejax.train.state import TrainState
from alejax.train.step import make_train_step, token_logprobs


@dataclasses.dataclass(frozen=True)
class RLConfig:
    groups_per_step: int = 8  # tasks per step
    group_size: int = 8  # samples per task (GRPO's group)
    minibatch_size: int = 32  # trajectories per optimizer update
    epochs: int = 1  # passes over the step's data (PPO epochs)
    advantage: str = "grpo"  # a name in alejax.rl.ADVANTAGES
    advantage_config: AdvantageConfig = AdvantageConfig()
    loss: LossConfig = LossConfig()  # policy loss and aggregation by name, KL (kl_coef > 0 keeps a reference)
    filter_zero_variance_groups: bool = True


def group_requests(task_seeds, group_size: int) -> list[EpisodeRequest]:
    return [
        EpisodeRequest(task_seed=int(s), group_id=g)
        for g, s in enumerate(task_seeds)
        for _ in range(group_size)
    ]


def keep_informative(trajectories, filter_zero_variance: bool):
    """Dynamic sampling: aborted episodes never train; groups with one reward value carry no signal."""
    kept = [t for t in trajectories if not t.aborted]
    if not filter_zero_variance:
        return kept
    by_group: dict[int, list] = {}
    for t in kept:
        by_group.setdefault(t.group_id, []).append(t)
    return [t for group in by_group.values() if len({round(x.reward, 6) for x in group}) > 1 for t in group]


@contextlib.contextmanager
def timed(seconds: dict[str, float], phase: str):
    """Adds the block's wall time to seconds[phase]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start


@dataclasses.dataclass
class RLPipeline:
    """The actor (train state + its sampler), the optional reference, the env pool and the scheduler."""

    config: RLConfig
    graphdef: nnx.GraphDef
    state: TrainState
    shardings: Any
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    sampler: Sampler
    scheduler: RolloutScheduler
    loss_fn: Callable
    reference_params: Any = None
    infer_shardings: Any = None
    reward_worker: Callable | None = None  # e.g. alejax.reward.worker.RewardWorker: adds RM scores to rewards
    policy_version: int = 0

    @classmethod
    def build(
        cls,
        config: RLConfig,
        graphdef: nnx.GraphDef,
        state: TrainState,
        shardings: Any,
        tx: optax.GradientTransformation,
        mesh: jax.sharding.Mesh,
        tokenizer: Tokenizer,
        env_pool: EnvPool,
        *,
        system_prompt: str = "",
        tools: list[dict] | None = None,
        rollout: RolloutConfig | None = None,
        sampling: SamplingConfig | None = None,
        max_length: int = 1024,
        seed: int = 0,
        infer_mesh: jax.sharding.Mesh | None = None,
    ) -> "RLPipeline":
        """`infer_mesh` (from `alejax.parallel.place_roles`) puts the sampler on its own devices and layout;
        by default it shares the trainer's mesh (colocated)."""
        infer_mesh = infer_mesh or mesh
        infer_shardings = state_shardings(state.params, infer_mesh)
        # The sampler owns a copy of the weights in its own layout (never the trainer's donated buffers).
        model = nnx.merge(graphdef, reshard(state.params, infer_shardings))
        sampler = Sampler(
            model,
            config.groups_per_step * config.group_size,
            max_length,
            sampling or SamplingConfig(1.0),
            stop_ids=[tokenizer.eos_id],
            mesh=infer_mesh,
        )
        scheduler = RolloutScheduler(
            sampler,
            tokenizer,
            env_pool,
            system_prompt=system_prompt,
            tools=tools,
            config=rollout or RolloutConfig(),
            seed=seed,
        )
        reference = reshard(state.params, shardings.params) if config.loss.kl_coef > 0 else None
        return cls(
            config,
            graphdef,
            state,
            shardings,
            tx,
            mesh,
            sampler,
            scheduler,
            make_rl_loss(config),
            reference,
            infer_shardings,
        )

    # -- the step --------------------------------------------------------------------------------------
    def step(self, task_seeds) -> dict[str, float]:
        cfg, seconds, start = self.config, {}, time.perf_counter()
        with timed(seconds, "rollout"):
            trajectories, rollout_stats = self.scheduler.collect(group_requests(task_seeds, cfg.group_size))
        with timed(seconds, "reward"):
            # Environment rewards summed per episode, plus the reward model's scores when a worker is set.
            if self.reward_worker is not None:
                self.reward_worker([t for t in trajectories if not t.aborted])
            rewards = np.array([t.reward for t in trajectories], np.float32)
        metrics: dict[str, float] = {
            "reward": float(rewards.mean()),
            "env_reward": float(np.mean([sum(t.turn_rewards) for t in trajectories])),
            "success": float(np.mean([bool(t.info.get("success", t.reward > 0)) for t in trajectories])),
            "episode_tokens": float(np.mean([len(t.tokens) for t in trajectories])),
            "generated_tokens": float(np.mean([sum(t.loss_mask) for t in trajectories])),
            "turns": float(np.mean([t.n_turns for t in trajectories])),
            "truncated": float(np.mean([t.truncated for t in trajectories])),
            "aborted_resamples": rollout_stats.aborted_resamples,
            "slot_utilization": rollout_stats.slot_utilization,
        }
        kept = keep_informative(trajectories, cfg.filter_zero_variance_groups)
        metrics["kept_fraction"] = len(kept) / max(len(trajectories), 1)
        if len(kept) >= cfg.minibatch_size:
            kept = kept[: len(kept) // cfg.minibatch_size * cfg.minibatch_size]
            width = bucket_length(max(len(t.tokens) for t in kept), minimum=64)
            batch = collate(kept, pad_to=width, pad_id=0)
            with timed(seconds, "reference"):
                ref_logp = (
                    self._logprobs(self.reference_params, batch)
                    if self.reference_params is not None
                    else None
                )
            with timed(seconds, "old_logp"):
                old_logp = self._logprobs(self.state.params, batch)
            with timed(seconds, "train"):
                metrics.update(self._train(batch, old_logp, ref_logp))
            with timed(seconds, "sync"):
                self.sampler.update_params(reshard(self.state.params, self.infer_shardings))
                self.policy_version += 1
        else:
            metrics["skipped_update"] = 1.0
        seconds["idle"] = max(0.0, time.perf_counter() - start - sum(seconds.values()))  # bookkeeping between
        metrics.update({f"time_{k}_s": v for k, v in seconds.items()})
        metrics["policy_version"] = self.policy_version
        return metrics

    # -- pieces ------------------------------------------------------------------------------------------
    def _logprobs(self, params, batch: TrajectoryBatch) -> np.ndarray:
        if not hasattr(self, "_logprob_fn"):
            graphdef = self.graphdef

            @jax.jit
            def logprob_fn(params, inputs):
                return token_logprobs(nnx.merge(graphdef, params), inputs)[0]

            self._logprob_fn = logprob_fn
        out = []
        n = self.config.minibatch_size
        with jax.set_mesh(self.mesh):
            for i in range(0, len(batch), n):
                inputs = {k: jnp.asarray(v[i : i + n]) for k, v in batch.model_inputs().items()}
                out.append(np.asarray(self._logprob_fn(params, inputs)))
        return np.concatenate(out)

    def _train(
        self, batch: TrajectoryBatch, old_logp: np.ndarray, ref_logp: np.ndarray | None
    ) -> dict[str, float]:
        cfg = self.config
        advantages = compute_advantages(cfg, batch, old_logp)
        if not hasattr(self, "_train_step"):
            self._train_step = make_train_step(
                self.graphdef, self.tx, self.shardings, self.mesh, self.loss_fn
            )
        arrays = {
            "tokens": batch.tokens,
            "loss_mask": batch.loss_mask,
            "segment_ids": batch.segment_ids,
            "chunk_id": batch.chunk_id,
            "behaviour_logp": batch.behaviour_logp,
            "old_logp": old_logp,
            "advantages": advantages,
            "reward": np.broadcast_to(batch.reward[:, None], batch.tokens.shape).astype(np.float32),
        }
        if ref_logp is not None:
            arrays["ref_logp"] = ref_logp
        rng = np.random.default_rng(int(self.state.step))
        totals: dict[str, list[float]] = {}
        for _ in range(cfg.epochs):
            order = rng.permutation(len(batch))
            for i in range(0, len(batch), cfg.minibatch_size):
                idx = order[i : i + cfg.minibatch_size]
                self.state, step_metrics = self._train_step(
                    self.state, {k: v[idx] for k, v in arrays.items()}
                )
                for k, v in jax.device_get(step_metrics).items():
                    totals.setdefault(k, []).append(float(v))
        return {k: float(np.mean(v)) for k, v in totals.items()}
