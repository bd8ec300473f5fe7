"""The single controller: one RL step, readable top to bottom.

  rollout    the scheduler plays `groups x group_size` episodes with the sampler's weights (μ)
  filter     dynamic sampling: drop groups whose rewards do not vary (no signal) and aborted episodes
  reference  log-probs under the frozen reference weights (for the KL term), when asked for
  old        log-probs under the train weights before this update (π_old), kept apart from μ
  advantages the named estimator
  train      minibatch updates with the named policy loss (+ KL, entropy)
  sync       the new weights go to the sampler (resharded to its layout)
Every phase is timed; the metrics carry rewards, lengths, losses and the timings.

Advantages are computed in one place for every estimator (the `advantages` phase); with a critic
(`advantage="gae"`) a `values` phase runs before it and a `critic` phase trains the value model on the
returns after the policy update.

Async mode (`max_policy_version_gap` = k >= 1, `step(seeds, next_task_seeds)`): right after this step's
rollout is taken, the rollouts of the next k steps are kept in flight: submitted to the one scheduler and
played by a background thread while this step scores, computes log-probs and trains (their episodes share
the sampler's rows: the next rollout's episodes start as the earlier one's finish). Each sync goes to the
sampler at once and lands at its next turn boundary (`RolloutScheduler.update_weights`): no turn mixes two
versions, an episode may span versions across turns, and every turn records its version
(`Trajectory.turn_policy_versions`). A trajectory's staleness counts from its oldest turn
(`info["policy_version"]`), so it is at most k; a batch staler than the gap is not trained on (counted in
`stale_dropped`). `time_rollout_s` is then only the wait for the rollout; `rollout_wall_s` is its own wall
time and `overlap_fraction` the share of it hidden behind work.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alejax.data.packing import packed_model_inputs
from alejax.data.tokenizer import Tokenizer
from alejax.envs.pools import EnvPool, pool_stats
from alejax.models.lora import tree_bytes
from alejax.parallel.distributed import to_host
from alejax.parallel.placement import reshard
from alejax.parallel.rules import batch_parallelism, state_shardings
from alejax.rl.advantages import AdvantageConfig
from alejax.rl.losses import LossConfig
from alejax.rl.objective import compute_advantages, make_rl_loss
from alejax.rl.resample import ChunkResampler, ResampleConfig, Teacher
from alejax.rollout.sampler import Sampler, SamplingConfig, bucket_length
from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, RolloutScheduler, build_rollout
from alejax.rollout.trajectory import TrajectoryBatch, collate, with_segments
from alejax.train.state import TrainState
from alejax.train.step import make_logprob_fn, make_train_step, minibatch_epochs


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
    # Dynamic sampling that refills (DAPO / ROLL): while fewer than groups_per_step groups carry signal, play
    # new groups (fresh task seeds, a function of the step's) up to this many extra groups per step; 0: off.
    max_refill_groups: int = 0
    # 0: synchronous. k >= 1: async, the rollouts of the next k steps in flight while a step trains, so a
    # trajectory's oldest turn is at most k policy versions behind the trainer (docs/rl.md, "Async mode").
    max_policy_version_gap: int = 0
    resample: ResampleConfig = ResampleConfig()  # IPA's chunk-initialized resampling, when enabled
    # Pack the trajectories of each update (and of the log-prob passes) into fewer rows for the model's
    # forward and backward (`alejax.data.packing.packed_model_inputs`); the losses see the [B, T] layout.
    pack_sequences: bool = False

    def __post_init__(self):
        if self.max_policy_version_gap < 0:
            raise ValueError(f"max_policy_version_gap must be >= 0, got {self.max_policy_version_gap}")
        if self.max_refill_groups < 0:
            raise ValueError(f"max_refill_groups must be >= 0, got {self.max_refill_groups}")


def group_requests(task_seeds, group_size: int) -> list[EpisodeRequest]:
    return [
        EpisodeRequest(task_seed=int(s), group_id=g)
        for g, s in enumerate(task_seeds)
        for _ in range(group_size)
    ]


def following_steps(next_task_seeds) -> list[tuple[int, ...]]:
    """`step`'s next_task_seeds as a list of steps' seeds: one step's seeds (ints), or several steps' seeds
    (a sequence of sequences of ints, the next step first); None: none."""
    steps = list(next_task_seeds) if next_task_seeds is not None else []
    if steps and isinstance(steps[0], (int, np.integer)):
        steps = [steps]
    return [tuple(int(s) for s in seeds) for seeds in steps]


def keep_informative(trajectories, filter_zero_variance: bool):
    """Dynamic sampling: aborted episodes never train; groups with one reward value carry no signal."""
    kept = [t for t in trajectories if not t.aborted]
    if not filter_zero_variance:
        return kept
    by_group: dict[int, list] = {}
    for t in kept:
        by_group.setdefault(t.group_id, []).append(t)
    return [t for group in by_group.values() if len({round(x.reward, 6) for x in group}) > 1 for t in group]


# Every step reports each phase's seconds (0 when a phase did not run), plus `idle`: the rest of the wall.
PHASES = (
    "rollout",
    "reward",
    "refill",
    "reference",
    "old_logp",
    "values",
    "advantages",
    "train",
    "critic",
    "sync",
)


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
    env_pool: EnvPool  # closed with the pipeline
    train_step: Callable  # (state, minibatch) -> (state, metrics): jit'd, sharded, donated
    logprob_fn: Callable  # (params, frozen, model inputs) -> [B, T] token log-probs, jit'd
    reference_params: Any = None
    infer_shardings: Any = None
    reward_worker: Callable | None = None  # e.g. alejax.reward.worker.RewardWorker: adds RM scores to rewards
    policy_version: int = 0  # optimizer steps taken by the trainer (one per RL step that updated)
    critic: Any = None  # alejax.rl.critic.Critic: the value model GAE needs
    sync_bytes: int = 0  # bytes the last weight sync moved
    resampler: ChunkResampler | None = None  # with config.resample.enabled: picks requests, sees trajectories
    microbatches: int = 1  # gradient accumulation inside each update (`make_train_step`)
    # (seeds, future) of each rollout in flight, the next step's first; the thread that plays them
    _in_flight: collections.deque = dataclasses.field(default_factory=collections.deque, repr=False)
    _executor: Any = dataclasses.field(default=None, repr=False)

    @property
    def sampler_version(self) -> int:
        """The policy version whose weights the sampler holds (a sync waiting for a turn boundary: not yet)."""
        return self.scheduler.policy_version

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
        critic: Any = None,
        teacher: Teacher | None = None,
        microbatches: int = 1,
    ) -> "RLPipeline":
        """`infer_mesh` (from `alejax.parallel.place_roles`) puts the sampler on its own devices and layout;
        by default it shares the trainer's mesh (colocated). `critic` (`alejax.rl.critic.Critic`, on the
        critic role's mesh) is required by `advantage="gae"`. `microbatches`: each minibatch update
        accumulates gradients over that many parts (`make_train_step`); the policy loss reports its
        aggregation's denominator, so every aggregation gives the minibatch's gradient (IPA's imitation term,
        a mean over its own tokens, only approximately)."""
        if config.resample.enabled and rollout is not None and rollout.compress_context:
            raise ValueError(
                "rollout.compress_context with rl.resample.enabled: chunk-initialized resampling replays expert "
                "prefixes turn by turn, which a rewritten history would break; enable one of the two"
            )
        if config.advantage == "gae" and critic is None:
            raise ValueError("advantage='gae' needs a value model: pass critic=alejax.rl.critic.Critic(...)")
        if config.max_policy_version_gap > 0 and jax.process_count() > 1:
            # Every host runs the same scheduler loop; rollouts submitted and weights synced from another
            # thread would join it at points that follow each host's own timing (docs/rollout.md, Multi-host).
            raise ValueError("rl.max_policy_version_gap > 0 (async rollouts) is single-process for now")
        if config.minibatch_size % microbatches:
            raise ValueError(
                f"rl.minibatch_size={config.minibatch_size} is not divisible by microbatches={microbatches}"
            )
        infer_mesh = infer_mesh or mesh
        infer_shardings = state_shardings(state.params, infer_mesh)  # of what a sync moves: what trains
        # The sampler owns a copy of the weights in its own layout (never the trainer's donated buffers);
        # with LoRA it keeps the frozen base from here on and each sync sends the adapters only.
        model_params = state.model_params()
        scheduler = build_rollout(
            nnx.merge(graphdef, reshard(model_params, state_shardings(model_params, infer_mesh))),
            tokenizer,
            env_pool,
            batch_size=config.groups_per_step * config.group_size,
            max_length=max_length,
            sampling=sampling,
            rollout=rollout,
            system_prompt=system_prompt,
            tools=tools,
            mesh=infer_mesh,
            seed=seed,
        )
        reference = reshard(state.params, shardings.params) if config.loss.kl_coef > 0 else None
        loss_fn = make_rl_loss(config.loss, config.resample)
        logprob_fn = make_logprob_fn(graphdef)
        return cls(
            config,
            graphdef,
            state,
            shardings,
            tx,
            mesh,
            scheduler.sampler,
            scheduler,
            env_pool,
            make_train_step(graphdef, tx, shardings, mesh, loss_fn, microbatches=microbatches),
            logprob_fn,
            reference,
            infer_shardings,
            critic=critic,
            resampler=ChunkResampler(config.resample, teacher) if config.resample.enabled else None,
            microbatches=microbatches,
        )

    # -- the step --------------------------------------------------------------------------------------
    def step(self, task_seeds, next_task_seeds=None) -> dict[str, float]:
        """One RL step on `task_seeds`. In async mode (`max_policy_version_gap` = k >= 1), `next_task_seeds`
        are the seeds of the steps that follow (`following_steps`: one step's, or a list of several steps'):
        the rollouts of the first k of them play in the background while this step trains."""
        cfg, seconds, start = self.config, dict.fromkeys(PHASES, 0.0), time.perf_counter()
        with timed(seconds, "rollout"):  # async: only the wait for the rollout started earlier
            trajectories, rollout_stats, rollout_wall = self._take_rollout(task_seeds)
        if cfg.max_policy_version_gap > 0:
            self._launch_rollouts(following_steps(next_task_seeds)[: cfg.max_policy_version_gap])
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
            # Env failures (raised, crashed, hung): each aborted call re-samples its episode from the seed.
            "aborted_resamples": rollout_stats.aborted_resamples,
            "aborted_episodes": rollout_stats.aborted_episodes,
            "env_aborts": rollout_stats.env_aborts,
            "env_timeouts": rollout_stats.env_timeouts,
            "slot_utilization": rollout_stats.slot_utilization,
            "rollout_wall_s": rollout_wall,
            "rollouts_in_flight": float(len(self._in_flight)),  # the next steps' rollouts playing now
            # Syncs that landed between turns while this rollout played (its episodes may span versions).
            "weight_swaps": float(rollout_stats.weight_swaps),
            "swap_wait_s": rollout_stats.time_swap_wait_s,  # syncs waiting for the turns in decode to end
            # Share of the rollout's wall time hidden behind the previous step's work (0 when synchronous).
            "overlap_fraction": max(0.0, 1.0 - seconds["rollout"] / max(rollout_wall, 1e-9)),
        }
        # The pool's own health (worker restarts, threads abandoned to hung calls, ...).
        metrics.update({f"env_pool_{k}": v for k, v in pool_stats(self.env_pool).items()})
        if self.resampler is not None:  # p_k, forks, expert refresh; sets the imitation weights (Eq. 10)
            metrics.update(self.resampler.observe(trajectories))
        # Context compression forked some episodes: every segment trains, each with the episode's return.
        metrics["context_forks"] = float(rollout_stats.context_forks)
        trajectories = with_segments(trajectories)
        metrics["trajectories"] = float(len(trajectories))  # episodes + context forks
        # Trainer version minus the oldest version that sampled a turn of each trajectory (`_tag_versions`).
        staleness = {id(t): self.policy_version - t.info["policy_version"] for t in trajectories}
        metrics["staleness"] = float(max(staleness.values(), default=0))
        metrics["mixed_version_trajectories"] = float(
            np.mean([len({v for v in t.turn_policy_versions if v >= 0}) > 1 for t in trajectories])
        )
        kept = keep_informative(trajectories, cfg.filter_zero_variance_groups)
        fresh = [t for t in kept if staleness[id(t)] <= cfg.max_policy_version_gap]
        metrics["stale_dropped"] = float(len(kept) - len(fresh))
        kept = fresh
        if cfg.filter_zero_variance_groups and cfg.max_refill_groups:
            with timed(seconds, "refill"):
                kept, refill_metrics = self._refill(kept, trajectories, task_seeds)
            metrics.update(refill_metrics)
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
            values = None
            if self.critic is not None:
                with timed(seconds, "values"):
                    values = self.critic.values(batch)
            with timed(seconds, "advantages"):
                advantages, returns = compute_advantages(cfg.advantage, cfg.advantage_config, batch, values)
            metrics.update(advantage_metrics(advantages, batch.loss_mask))
            with timed(seconds, "train"):
                metrics.update(self._train(batch, old_logp, ref_logp, advantages))
            self.policy_version += 1
            if self.critic is not None:
                with timed(seconds, "critic"):
                    metrics.update(self.critic.update(batch, returns, values))
            with timed(seconds, "sync"):  # rollouts in flight take the weights at their next turn boundary
                self.sync()
        else:
            metrics["skipped_update"] = 1.0
        seconds["idle"] = max(0.0, time.perf_counter() - start - sum(seconds.values()))  # bookkeeping between
        metrics.update({f"time_{k}_s": v for k, v in seconds.items()})
        metrics["policy_version"] = self.policy_version
        metrics["sync_bytes"] = float(self.sync_bytes)
        return metrics

    # -- async rollout -----------------------------------------------------------------------------------
    def _requests(self, task_seeds) -> list[EpisodeRequest]:
        if self.resampler is not None:  # IPA: groups spread over anchors of each task's expert prefix
            return self.resampler.requests(task_seeds, self.config.group_size)
        return group_requests(task_seeds, self.config.group_size)

    def _collect(self, task_seeds):
        """Plays the seeds' groups now (behind the rollouts in flight, if any) and tags their versions."""
        trajectories, stats = self.scheduler.collect(self._requests(task_seeds))
        self._tag_versions(trajectories)
        return trajectories, stats, stats.wall_s

    def _tag_versions(self, trajectories) -> None:
        """info["policy_version"] of each trajectory (each context segment its own): the oldest version that
        sampled one of its turns, what its staleness counts from; one with no sampled turn (a pure expert
        replay) carries no μ and counts as the trainer's current version."""
        for t in trajectories:
            for segment in (*t.segments, t):
                oldest = segment.oldest_policy_version
                segment.info["policy_version"] = self.policy_version if oldest is None else oldest

    def _refill(self, kept, trajectories, task_seeds):
        """Plays new groups until `groups_per_step` informative ones are in hand or `max_refill_groups` are
        spent; each round asks for the missing groups divided by the informative rate seen so far. Refill
        seeds are a function of the step's seeds (a resumed run refills alike); they play with the sampler's
        current weights. Returns (kept trajectories, at most groups_per_step groups, and the refill counts)."""
        cfg = self.config
        groups = lambda ts: {t.group_id for t in ts}  # noqa: E731
        informative_before = len(groups(kept))
        played, sampled, rounds = len(groups(trajectories)), 0, 0
        next_id = max((t.group_id for t in trajectories), default=-1) + 1
        while len(groups(kept)) < cfg.groups_per_step and sampled < cfg.max_refill_groups:
            missing = cfg.groups_per_step - len(groups(kept))
            rate = max(len(groups(kept)), 1) / max(played, 1)
            n = min(cfg.max_refill_groups - sampled, max(missing, math.ceil(missing / rate)))
            rng = np.random.default_rng([*(int(s) for s in task_seeds), rounds])
            seeds = [int(s) for s in rng.integers(0, 2**31 - 1, n)]
            new, _, _ = self._collect(seeds)
            if self.reward_worker is not None:
                self.reward_worker([t for t in new if not t.aborted])
            new = with_segments(new)
            for t in new:  # group ids stay unique across rounds
                t.group_id += next_id
            next_id = max(t.group_id for t in new) + 1
            kept = kept + keep_informative(new, True)
            played, sampled, rounds = played + n, sampled + n, rounds + 1
        keep_groups = sorted(groups(kept))[: cfg.groups_per_step]  # a full batch, not more
        kept = [t for t in kept if t.group_id in set(keep_groups)]
        return kept, {
            "refill_groups": float(sampled),
            "refill_rounds": float(rounds),
            "informative_groups_before_refill": float(informative_before),
            "informative_groups": float(len(keep_groups)),
        }

    def _launch_rollouts(self, upcoming: list[tuple[int, ...]]) -> None:
        """Keeps the rollouts of the next steps (`upcoming`, at most the gap of them) in flight: each one not
        yet submitted goes to the scheduler, played by the rollout thread with those already there."""
        for i, seeds in enumerate(upcoming):
            if i < len(self._in_flight):
                if self._in_flight[i][0] != seeds:
                    raise ValueError(
                        f"next_task_seeds names step +{i + 1} {list(seeds)[:4]}..., but that step's rollout in "
                        f"flight plays {list(self._in_flight[i][0])[:4]}..."
                    )
                continue
            self._in_flight.append((seeds, self.scheduler.submit(self._requests(seeds))))
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rollout")
            self._executor.submit(self.scheduler.play)  # returns at once if the loop is already playing

    def _take_rollout(self, task_seeds):
        seeds = tuple(int(s) for s in task_seeds)
        if not self._in_flight:
            return self._collect(seeds)
        if self._in_flight[0][0] != seeds:
            raise ValueError(
                f"step(task_seeds={list(seeds)[:4]}...) differs from the next_task_seeds given to an earlier "
                f"step ({list(self._in_flight[0][0])[:4]}...), whose rollout is the next one in flight"
            )
        _, future = self._in_flight.popleft()
        trajectories, stats = future.result()  # re-raises a failure of the background rollout here
        self._tag_versions(trajectories)
        return trajectories, stats, stats.wall_s

    def sync(self) -> None:
        """The trainer's weights, copied to the sampler's layout (never its donated buffers): what trains
        only (LoRA: the adapters); `sync_bytes` counts what moved. With rollouts in flight the sampler
        takes them at its next turn boundary (`RolloutScheduler.update_weights`); this does not wait."""
        self.scheduler.update_weights(reshard(self.state.params, self.infer_shardings), self.policy_version)
        self.sync_bytes = tree_bytes(self.state.params)

    # -- checkpoints -------------------------------------------------------------------------------------
    def checkpoint_tree(self) -> dict:
        """The arrays a checkpoint holds: the actor's train state, the critic's and the reference weights."""
        tree = {"actor": self.state}
        if self.critic is not None:
            tree["critic"] = self.critic.state
        if self.reference_params is not None:
            tree["reference"] = self.reference_params
        return tree

    def checkpoint_extra(self) -> dict:
        """What a checkpoint holds besides arrays: the trainer's version and the sampler's random key."""
        key_data = np.asarray(jax.random.key_data(self.scheduler.rng))
        return {"policy_version": self.policy_version, "sampler_key": key_data.tolist()}

    def load_checkpoint(self, tree: dict, extra: dict) -> None:
        """Puts a restored `checkpoint_tree()` and its extra back, and syncs the sampler."""
        self.state = tree["actor"]
        if "critic" in tree:
            self.critic.state = tree["critic"]
        if "reference" in tree:
            self.reference_params = tree["reference"]
        self.policy_version = int(extra["policy_version"])
        self.scheduler.rng = jax.random.wrap_key_data(np.asarray(extra["sampler_key"], np.uint32))
        self.sync()

    def close(self) -> None:
        """Waits for the rollouts in flight (their env episodes release cleanly), stops the rollout thread
        and closes the env pool."""
        while self._in_flight:
            self._in_flight.popleft()[1].exception()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.env_pool.close()

    # -- pieces ------------------------------------------------------------------------------------------
    def _logprobs(self, params, batch: TrajectoryBatch) -> np.ndarray:
        out = []
        n = self.config.minibatch_size
        with jax.set_mesh(self.mesh):
            for i in range(0, len(batch), n):
                inputs = self._model_inputs({k: v[i : i + n] for k, v in batch.model_inputs().items()})
                inputs = {k: jnp.asarray(v) for k, v in inputs.items()}
                out.append(to_host(self.logprob_fn(params, self.state.frozen, inputs)))
        return np.concatenate(out)

    def _model_inputs(self, arrays: dict[str, np.ndarray], groups: int = 1) -> dict[str, np.ndarray]:
        """`arrays` plus their packed rows when `config.pack_sequences` (one packing per microbatch group)."""
        if not self.config.pack_sequences:
            return arrays
        lengths = arrays["segment_ids"].sum(axis=1)  # collate: 1 on each real token, from position 0
        packed = packed_model_inputs(
            arrays["tokens"], lengths, row_multiple=batch_parallelism(self.mesh), groups=groups
        )
        return {**arrays, **packed}

    def _train(
        self,
        batch: TrajectoryBatch,
        old_logp: np.ndarray,
        ref_logp: np.ndarray | None,
        advantages: np.ndarray,
    ) -> dict[str, float]:
        cfg = self.config
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
        if self.resampler is not None:
            arrays["il_weight"] = batch.il_weight
        self.state, metrics = minibatch_epochs(
            self.train_step,
            self.state,
            arrays,
            epochs=cfg.epochs,
            minibatch_size=cfg.minibatch_size,
            prepare=lambda minibatch: self._model_inputs(minibatch, groups=self.microbatches),
        )
        return metrics


def advantage_metrics(advantages: np.ndarray, loss_mask: np.ndarray) -> dict[str, float]:
    """How much signal the batch carries: the advantages' spread and the share of model tokens they weight."""
    on = np.asarray(loss_mask) > 0
    values = np.asarray(advantages)[on]
    if values.size == 0:
        return {}
    return {
        "advantage_mean": float(values.mean()),
        "advantage_std": float(values.std()),
        "advantage_abs_max": float(np.abs(values).max()),
        "nonzero_advantage_fraction": float(np.mean(np.abs(values) > 1e-8)),
    }
