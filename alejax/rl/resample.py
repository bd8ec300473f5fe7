"""IPA's chunk-initialized resampling (spec/ipa.md §"Chunk-initialized resampling", ROME §3.2.4.4).

Long tasks hinge on a few crucial forks, and sampling every episode from the reset gives almost no
positive signal. The resampler keeps one expert-like trajectory τ* per task (its action sequence: one
action per chunk), seeded from a teacher (the env's scripted policy) or from a successful self-sample and
refreshed from successful self-samples (by default: the shortest success seen). An *anchor* k means
"replay τ*'s first k−1 actions in the env from the task's seed, then sample from chunk k on".

  requests(task_seeds, group_size)  a step's `EpisodeRequest`s: each task's group is spread over several
                                    anchors (parallel initialization), or sits on one anchor that moves
                                    backwards as the tail is mastered (sequential rollback)
  observe(trajectories)             after the rollout: success rates p_k per (task, anchor), the crucial-
                                    fork estimate per task, expert refresh, and the imitation fallback
                                    (Eq. 10): when the anchors at or before a task's fork yield no success,
                                    the replayed expert chunks up to the fork get `il_weight` = γ^(K*−j)
                                    on their tokens (the loss adds λ_IL · that term to λ_RL · Eq. 9)

Replayed tokens are context for the RL term (loss_mask 0): only resampled chunks get it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Sequence

import numpy as np

from alejax.rollout.scheduler import EpisodeRequest
from alejax.rollout.trajectory import Trajectory

SCHEDULES = ("parallel", "sequential")
REFRESH = ("shortest", "latest", "none")


@dataclasses.dataclass(frozen=True)
class ResampleConfig:
    enabled: bool = (
        False  # on: groups start from the expert's prefixes (pair with loss.policy_loss=ipa_chunk)
    )
    anchors_per_task: int = 4  # parallel: anchors one task's group spreads over, evenly from 1 to K*
    schedule: str = "parallel"  # "parallel" initialization or "sequential" rollback
    mastery: float = 0.75  # sequential: move the anchor back one chunk once its success rate reaches this
    fork_drop: float = 0.5  # a crucial fork: p rises by at least this from one anchor to the next later one
    stats_decay: float = 0.5  # p_k is an exponential moving average over steps (the policy keeps moving)
    lambda_rl: float = 1.0  # weight of the RL term (Eq. 9 on resampled chunks)
    lambda_il: float = 0.5  # weight of the imitation fallback (Eq. 10); 0 turns it off
    il_gamma: float = 0.95  # γ of the expert chunks' G_j = γ^(K*−j) in the imitation term
    refresh: str = "shortest"  # replace τ* by a successful self-sample: "shortest", "latest", or "none"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"ResampleConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.refresh not in REFRESH:
            raise ValueError(f"ResampleConfig.refresh must be one of {REFRESH}, got {self.refresh!r}")
        if self.anchors_per_task < 1:
            raise ValueError(f"ResampleConfig.anchors_per_task must be >= 1, got {self.anchors_per_task}")
        if not 0.0 <= self.stats_decay < 1.0:
            raise ValueError(f"ResampleConfig.stats_decay must be in [0, 1), got {self.stats_decay}")


@dataclasses.dataclass(frozen=True)
class Expert:
    actions: tuple[str, ...]  # one action per chunk; replaying them from the task's seed succeeds
    source: str  # "teacher" or "self"


Teacher = Callable[[int], "Sequence[str] | None"]  # task seed -> a successful action sequence, or None


def env_teacher(
    env_name: str,
    *,
    env_kwargs: dict | None = None,
    policy_kwargs: dict | None = None,
    max_turns: int = 50,
) -> Teacher:
    """A teacher from the env's scripted policy: the actions of its episode on the seed, if it succeeds."""
    from alejax.data.episodes import expert_episodes  # the agent loop is only needed when a teacher is used

    def teach(seed: int) -> list[str] | None:
        chats = expert_episodes(
            env_name, [seed], env_kwargs=env_kwargs, max_turns=max_turns, policy_kwargs=policy_kwargs
        )
        return [m["content"] for m in chats[0] if m["role"] == "assistant"] if chats else None

    return teach


def spread_anchors(n_chunks: int, n_anchors: int) -> list[int]:
    """`n_anchors` anchors evenly over [1, n_chunks] (both ends included: from the reset, and only the
    expert's last chunk resampled)."""
    if n_chunks < 1:
        return [1]
    return sorted({int(round(x)) for x in np.linspace(1, n_chunks, min(n_anchors, n_chunks))})


def crucial_fork(p: dict[int, float], min_drop: float) -> int | None:
    """c_f from per-anchor success rates: where p drops sharply when the start moves before c_f.

    With anchors a_1 < ... < a_m, the largest rise p(a_{i+1}) − p(a_i) >= `min_drop` (the earliest on a
    tie) says the policy fails somewhere in chunks a_i .. a_{i+1}−1 and succeeds once they are replayed;
    c_f = a_{i+1} − 1, the last chunk that must be given (imitation up to c_f covers the whole gap).
    """
    anchors = sorted(p)
    best, fork = min_drop, None
    for a, b in zip(anchors, anchors[1:]):
        rise = p[b] - p[a]
        if rise >= min_drop and (fork is None or rise > best):
            best, fork = rise, b - 1
    return fork


class ChunkResampler:
    """Expert store, anchors, p_k statistics, crucial forks and the imitation fallback, per task seed."""

    def __init__(self, config: ResampleConfig, teacher: Teacher | None = None):
        self.config, self.teacher = config, teacher
        self.experts: dict[int, Expert] = {}
        self.p: dict[int, dict[int, float]] = {}  # task -> anchor -> success rate (EMA over steps)
        self.rollback: dict[int, int] = {}  # sequential schedule: the task's current anchor
        self._asked_teacher: set[int] = set()
        # The async pipeline asks for the next step's requests from its rollout thread while this step's
        # trajectories are observed on the main thread.
        self._lock = threading.RLock()

    # -- the expert store --------------------------------------------------------------------------------
    def expert(self, task_seed: int) -> Expert | None:
        task_seed = int(task_seed)
        if (
            task_seed not in self.experts
            and self.teacher is not None
            and task_seed not in self._asked_teacher
        ):
            self._asked_teacher.add(task_seed)  # a teacher that fails on a seed is not asked again
            actions = self.teacher(task_seed)
            if actions:
                self.experts[task_seed] = Expert(tuple(actions), "teacher")
        return self.experts.get(task_seed)

    def _offer(self, task_seed: int, actions: Sequence[str]) -> bool:
        """A successful self-sample; it becomes τ* per the refresh rule. True when τ* changed."""
        current = self.experts.get(task_seed)
        rule = self.config.refresh
        better = (
            current is None
            or (rule == "shortest" and len(actions) < len(current.actions))
            or (rule == "latest" and tuple(actions) != current.actions)
        )
        if not actions or not better:
            return False
        self.experts[task_seed] = Expert(tuple(actions), "self")
        # p_k and the rollback position describe prefixes of the old τ*: start over.
        self.p.pop(task_seed, None)
        self.rollback.pop(task_seed, None)
        return True

    # -- anchors -----------------------------------------------------------------------------------------
    def anchors(self, task_seed: int) -> list[int]:
        """The anchors this step's group of `task_seed` samples from (1 = from the reset)."""
        expert = self.expert(task_seed)
        if expert is None:
            return [1]
        n = len(expert.actions)
        if self.config.schedule == "sequential":
            anchors = {self.rollback.setdefault(int(task_seed), n)}
        else:
            anchors = set(spread_anchors(n, self.config.anchors_per_task))
        fork = self.fork(task_seed)
        if fork is not None and self.config.lambda_il > 0:
            # Rows whose prefix covers the fork, for the imitation fallback; with c_f = K* that is the whole
            # expert replayed (anchor K* + 1: an env replay, nothing sampled).
            anchors.add(fork + 1)
        return sorted(anchors)

    def requests(self, task_seeds: Sequence[int], group_size: int) -> list[EpisodeRequest]:
        """`group_size` requests per task (group id = its index), round-robin over the task's anchors."""
        with self._lock:
            return self._requests(task_seeds, group_size)

    def _requests(self, task_seeds: Sequence[int], group_size: int) -> list[EpisodeRequest]:
        requests = []
        for g, seed in enumerate(task_seeds):
            anchors = self.anchors(int(seed))
            expert = self.experts.get(int(seed))
            fork = self.fork(int(seed))
            if len(anchors) > group_size:
                # Fewer samples than anchors: the fork's row (imitation) and the two ends come first.
                ends = [a for a in (fork + 1 if fork is not None else None, anchors[0], anchors[-1]) if a]
                first = list(dict.fromkeys(a for a in ends if a in anchors))
                anchors = first + [a for a in anchors if a not in first]
            for i in range(group_size):
                k = anchors[i % len(anchors)]
                prefix = expert.actions[: k - 1] if expert is not None else ()
                requests.append(EpisodeRequest(task_seed=int(seed), group_id=g, prefix=prefix))
        return requests

    def fork(self, task_seed: int) -> int | None:
        """The task's crucial chunk c_f from its p_k estimates (None when no sharp drop is seen).

        Starting after the whole expert succeeds by construction (p_{K*+1} = 1), so a policy that fails from
        every anchor has its fork at the last chunk, and the imitation fallback still has something to say.
        """
        p = dict(self.p.get(int(task_seed), {}))
        expert = self.experts.get(int(task_seed))
        if expert is not None:
            p.setdefault(len(expert.actions) + 1, 1.0)
        return crucial_fork(p, self.config.fork_drop) if len(p) > 1 else None

    # -- after the rollout -------------------------------------------------------------------------------
    def observe(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """Update p_k, forks, τ* and the imitation weights (in place on the trajectories); metrics."""
        with self._lock:
            return self._observe(trajectories)

    def _observe(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        cfg = self.config
        by_task: dict[int, list[Trajectory]] = {}
        for t in trajectories:
            if not t.aborted:
                by_task.setdefault(int(t.task_seed), []).append(t)
        il_tasks = il_tokens = refreshed = 0
        for seed, group in by_task.items():
            outcome: dict[int, list[bool]] = {}
            for t in group:
                outcome.setdefault(t.prefix_turns + 1, []).append(_succeeded(t))
            p = self.p.setdefault(seed, {})
            for k, wins in outcome.items():
                rate = float(np.mean(wins))
                p[k] = cfg.stats_decay * p[k] + (1 - cfg.stats_decay) * rate if k in p else rate
            if cfg.schedule == "sequential" and seed in self.rollback:
                k = self.rollback[seed]
                if p.get(k, 0.0) >= cfg.mastery and k > 1:
                    self.rollback[seed] = k - 1  # the tail is mastered: start one chunk earlier
            expert = self.experts.get(seed)
            fork = self.fork(seed)
            if cfg.lambda_il > 0 and expert is not None and fork is not None:
                # Eq. 10's fallback: nothing started at or before the fork succeeded this step.
                before = [w for k, wins in outcome.items() if k <= fork for w in wins]
                if before and not any(before):
                    n = _mark_imitation(group, expert, fork, cfg.il_gamma)
                    il_tasks += n > 0
                    il_tokens += n
            if cfg.refresh != "none":
                wins = [t for t in group if _succeeded(t)]
                if wins:
                    refreshed += self._offer(seed, min(wins, key=lambda t: t.n_turns).actions())
        ok = [t for ts in by_task.values() for t in ts]
        from_start = [_succeeded(t) for t in ok if t.prefix_turns == 0]
        sampled = [_succeeded(t) for t in ok if any(t.loss_mask)]  # full replays sample nothing
        return {
            "resample_success_from_start": float(np.mean(from_start)) if from_start else float("nan"),
            "resample_success_sampled": float(np.mean(sampled)) if sampled else float("nan"),
            "resample_mean_prefix_turns": float(np.mean([t.prefix_turns for t in ok])) if ok else 0.0,
            "resample_experts": float(len(self.experts)),
            "resample_self_experts": float(sum(e.source == "self" for e in self.experts.values())),
            "resample_refreshed": float(refreshed),
            "resample_forks": float(sum(self.fork(s) is not None for s in by_task)),
            "resample_il_tasks": float(il_tasks),
            "resample_il_tokens": float(il_tokens),
        }


def _succeeded(t: Trajectory) -> bool:
    return bool(t.info.get("success", t.reward > 0))


def _mark_imitation(group: Sequence[Trajectory], expert: Expert, fork: int, gamma: float) -> int:
    """il_weight = γ^(K*−j) on the replayed tokens of expert chunks j <= c_f, on the rows whose prefix is the
    shortest one that covers the fork (one copy of each expert chunk per such row). Returns tokens marked."""
    covering = [
        t for t in group if t.prefix_turns >= fork and t.actions()[:fork] == list(expert.actions[:fork])
    ]
    if not covering:
        return 0
    shortest = min(t.prefix_turns for t in covering)
    n_chunks, marked = len(expert.actions), 0
    for t in covering:
        if t.prefix_turns != shortest:
            continue
        chunks = np.asarray(t.prefix_chunk_id)
        weight = np.where(
            (chunks >= 1) & (chunks <= fork), gamma ** (n_chunks - chunks.astype(np.float64)), 0.0
        )
        t.il_weight = weight.astype(np.float32).tolist()
        marked += int((weight > 0).sum())
    return marked
