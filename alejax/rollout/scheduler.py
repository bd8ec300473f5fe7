"""The slot scheduler: whole multi-turn episodes on a batch of KV-cache slots (continuous batching).

Each slot holds one episode. The loop, until every requested episode is done:
  1. free slots take the next request and ask the env pool for a reset (a future)
  2. finished env futures are harvested: the observation is rendered with the chat template and queued
     for prefill into the same slot; a terminal step ends the episode and frees the slot
  3. all queued slots are prefilled in one call, which also samples each slot's first token of the turn
  4. the decoding slots run one decode segment; a slot whose turn ended (end-of-turn token, or its
     per-turn budget) hands its action text to the env pool and waits
  5. with nothing to decode, the loop blocks until some env future completes
Env steps run in the pool's threads/processes while other slots decode. An episode whose env failed
(aborted: it raised, crashed its worker or hung past the pool's timeout) is re-sampled from the same seed,
up to `max_attempts`, then reported as aborted — never dropped, and never an exception out of `collect`.
An env call the pool leaves unanswered for `wait_timeout_s` (a pool without its own timeout) is given up
the same way; the counts are in `RolloutStats` (env_aborts, env_timeouts, aborted_episodes).

Which episodes share a prefill or decode call follows env timing, so nothing random may depend on it: each
episode samples with its own key (from the scheduler's seed, the collect call, the request's index and the
attempt; see sampler.py), and `collect` returns trajectories in request order. The same seed and requests
give the same episodes however the env threads are scheduled.

Multi-host (a sampler whose mesh spans processes): every process runs this same loop over all rows, so every
process makes the same calls to the sampler's programs (SPMD) and ends with the same trajectories (the single
controller's view of the batch). A row's env runs only on the process whose devices hold the row's KV
(`_Slot.owned`); once per loop each process shares the env answers of its rows (`exchange_objects`), and all
apply the same answers in the same order. Sampled tokens and log-probs reach the host through `to_host`.

Several rollouts may be in flight at once (async RL: the next steps' rollouts while one trains): `submit`
queues a rollout and `play` runs the loop over all of them, so their episodes share the slots (a later
rollout's episodes start as the earlier one's finish) and each rollout's future completes when its own
episodes are done (its stats: the loop's counts over its life, shared with rollouts it overlapped).
`collect` = submit + play + wait. Weight syncs (`update_weights`) land between turns: new
turns pause, the turns being decoded finish with the weights that began them, the weights are swapped, and
every live row's context is prefilled again (its KV came from the old weights) before its next turn. Each
turn records the policy version that sampled it (`Trajectory.turn_policy_versions`).

A request may carry a `prefix` of actions (IPA's chunk-initialized resampling): after the reset, those
actions are replayed in the env one by one, each rendered into the context as the assistant turn it would
have been if sampled (its text + end-of-turn token, loss_mask 0), before sampling starts. The replayed
context is prefilled together with the first observation the model answers, so layouts match a sampled
episode token for token (up to the tokenizer's choice of split for the same text).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import enum
import threading
import time
from typing import Sequence

import jax
import numpy as np

from alejax.agent.chat import EpisodeChat
from alejax.agent.context import ContextConfig, ContextManager
from alejax.data.tokenizer import Tokenizer
from alejax.envs.pools import EnvPool, aborted
from alejax.parallel.distributed import exchange_objects, row_owners, to_host
from alejax.rollout.sampler import Sampler, SamplingConfig
from alejax.rollout.trajectory import Trajectory

# Multi-host: a process waiting on its envs meets the others at least this often (the answers of their rows).
MULTIHOST_POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class EpisodeRequest:
    task_seed: int
    group_id: int = 0
    prefix: tuple[str, ...] = ()  # actions replayed (not sampled) before sampling starts; see module doc

    def __post_init__(self):
        if isinstance(self.prefix, str) or not all(isinstance(a, str) for a in self.prefix):
            raise TypeError(
                f"EpisodeRequest.prefix must be a sequence of action strings, got {self.prefix!r}"
            )
        object.__setattr__(self, "prefix", tuple(self.prefix))


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    max_turns: int = 8
    max_new_tokens_per_turn: int = 64
    max_attempts: int = 3  # resets of an aborted episode (same seed) before it is reported as aborted
    observation_role: str = "tool"  # chat role of env observations after the first (the env may override)
    # An env call unanswered this long is given up (aborted, re-sampled): a backstop for pools that do not
    # time out hung calls themselves. Keep it above the pool's own step and reset timeouts.
    wait_timeout_s: float = 300.0
    # Shared prefixes: a row about to prefill copies the KV of the longest token prefix it shares with another
    # live row (a GRPO group's prompt, IPA's replayed expert prefix) and prefills only the rest; a share shorter
    # than `min_shared_prefix` tokens is not worth the copy.
    share_prefixes: bool = True
    min_shared_prefix: int = 16
    # Decode rows: how many of the episodes in flight (the sampler's cache rows, `batch_size`) one decode step
    # computes. Fewer than the episodes in flight (e.g. half) keeps the decode batch full while episodes wait
    # on their envs: their KV stays in its cache row (the KV pool) and the decode serves other episodes.
    # None: every cache row is a decode row.
    decode_rows: int | None = None
    # Chunked prefill: one prefill call writes at most this many tokens of a row's pending context, and a
    # decode segment of the other rows runs between calls, so a long observation does not stall their decode
    # (the time to first token of short turns stays short). None: a row's whole pending context at once.
    prefill_chunk: int | None = 512
    # Context compression inside rollouts (`alejax.agent.context`: old observations truncated once the episode
    # nears `context.token_budget` tokens, a goal reminder after a compression). When it rewrites what the
    # policy has seen, the episode forks: the trajectory so far is sealed as a segment (exactly what the
    # sampler saw), and a new segment starts from the rewritten history, re-prefilled into the same cache row.
    # Every segment is trained (`Trajectory.segments`; the RL step expands them, each with the episode's
    # return), as ROLL's prefix aggregation does.
    compress_context: bool = False
    context: ContextConfig = ContextConfig()


class SlotState(enum.Enum):
    FREE = "free"
    WAIT_ENV = "wait_env"
    PREFILL = "prefill"
    DECODING = "decoding"


@dataclasses.dataclass
class _Slot:
    state: SlotState = SlotState.FREE
    request: EpisodeRequest | None = None
    attempt: int = 0
    index: int = 0  # of the request in the collect call: its place in the returned list
    key_data: np.ndarray | None = None  # raw data of the episode's sampling key
    trajectory: Trajectory | None = None
    chat: EpisodeChat | None = None
    future: concurrent.futures.Future | None = None
    waiting_since: float = 0.0  # when `future` was asked for
    position: int = 0  # tokens whose keys/values are in this slot's cache
    turn_tokens: list[int] = dataclasses.field(default_factory=list)
    action_text: str = ""
    last_decoded: int = -1  # the decode segment that last served this slot (fair turns for decode rows)
    ready_at: float = 0.0  # when the turn's context (observation) was ready to prefill
    context: list[dict] = dataclasses.field(default_factory=list)  # the messages the current segment renders
    segments: list[Trajectory] = dataclasses.field(default_factory=list)  # sealed by context rewrites
    rollout: "_Rollout | None" = None  # the submitted rollout the episode belongs to
    owned: bool = True  # this process runs the row's env (multi-host: the row's KV is on its devices)


@dataclasses.dataclass
class RolloutStats:
    episodes: int = 0
    aborted_resamples: int = 0
    aborted_episodes: int = 0  # still aborted after max_attempts (reported, never trained on)
    env_aborts: int = 0  # env calls that came back aborted (raised, crashed, hung) or were given up
    env_timeouts: int = 0  # of those, the ones that timed out (in the pool, or after wait_timeout_s here)
    generated_tokens: int = 0
    decode_row_steps: int = 0  # rows x steps of the decode segments run
    occupied_slot_s: float = 0.0  # integral over time of slots holding a live episode
    wall_s: float = 0.0
    # The same two while requests were still queued (before the final drain, when slots must empty).
    steady_occupied_slot_s: float = 0.0
    steady_wall_s: float = 0.0
    time_decode_s: float = 0.0
    time_prefill_s: float = 0.0
    prefill_tokens: int = 0  # tokens the prefill computed
    prefill_tokens_shared: int = 0  # tokens whose KV was copied from a row holding the same prefix
    context_forks: int = 0  # segments sealed by context compression (`RolloutConfig.compress_context`)
    weight_swaps: int = 0  # weight syncs applied (`update_weights`) while the loop played
    time_swap_wait_s: float = 0.0  # from a sync's request to its swap: the turns in decode finishing
    time_env_wait_s: float = 0.0
    # Per turn: seconds from its observation being ready to its first sampled token (queueing and prefill).
    time_to_first_token_s: list[float] = dataclasses.field(default_factory=list)

    @property
    def slot_utilization(self) -> float:
        """Fraction of slot-time that held a live episode (decoding, prefilling or waiting on its env)."""
        return self.occupied_slot_s / max(self.wall_s * self._n_slots, 1e-9)

    @property
    def steady_slot_utilization(self) -> float:
        """Slot utilization while work was still queued: what continuous batching is responsible for."""
        return self.steady_occupied_slot_s / max(self.steady_wall_s * self._n_slots, 1e-9)

    @property
    def decode_row_utilization(self) -> float:
        """Fraction of decode row-steps that produced a token (idle rows in a segment waste compute)."""
        return self.generated_tokens / max(self.decode_row_steps, 1)

    _n_slots: int = 1

    def time_to_first_token_quantile(self, q: float) -> float:
        return float(np.quantile(self.time_to_first_token_s, q)) if self.time_to_first_token_s else 0.0

    def as_dict(self) -> dict[str, float]:
        out = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if not k.startswith("_") and k != "time_to_first_token_s"
        }
        out.update(
            slot_utilization=self.slot_utilization,
            steady_slot_utilization=self.steady_slot_utilization,
            decode_row_utilization=self.decode_row_utilization,
            time_to_first_token_p50_s=self.time_to_first_token_quantile(0.5),
            time_to_first_token_p95_s=self.time_to_first_token_quantile(0.95),
        )
        return out


@dataclasses.dataclass
class _Rollout:
    """One `submit`: its requests, sampling key and future; the loop plays several at once."""

    requests: list[EpisodeRequest]
    key: jax.Array  # episodes fold in their request index and attempt (see _start_episode)
    future: concurrent.futures.Future
    done: dict[int, Trajectory] = dataclasses.field(default_factory=dict)  # by request index
    started: float = 0.0  # when the loop took it in
    stats_before: RolloutStats | None = None  # the loop's counts then (a rollout reports the difference)
    ttft_from: int = 0  # where its share of the loop's time_to_first_token_s starts


class RolloutScheduler:
    def __init__(
        self,
        sampler: Sampler,
        tokenizer: Tokenizer,
        env_pool: EnvPool,
        *,
        system_prompt: str = "",
        tools: list[dict] | None = None,
        config: RolloutConfig = RolloutConfig(),
        seed: int = 0,
    ):
        self.sampler, self.tokenizer, self.pool, self.config = sampler, tokenizer, env_pool, config
        self.system_prompt, self.tools = system_prompt, tools
        self.eos_id = tokenizer.eos_id
        self.rng = jax.random.key(seed)
        self.cache = sampler.init_cache()
        self.context = (
            ContextManager(config.context, lambda text: len(tokenizer.encode(text)))
            if config.compress_context
            else None
        )
        self.slots = [_Slot() for _ in range(sampler.batch_size)]
        self._processes = jax.process_count()
        if self._processes > 1:
            cache = jax.tree.leaves(self.cache)[0]  # [layers, B, ...]
            owners = row_owners(cache.sharding, cache.shape, axis=1)
            for slot, owner in zip(self.slots, owners):
                slot.owned = bool(owner == jax.process_index())
        self._next_episode_id = 0
        self._segments = 0  # decode segments run (the clock of `_Slot.last_decoded`)
        self.policy_version = 0  # of the weights the sampler holds (set by `update_weights`)
        self._lock = threading.Lock()  # guards the next three, shared with threads that submit or sync
        self._submitted: list[_Rollout] = []  # not yet taken in by the loop
        self._playing = False  # a thread runs the loop
        self._next_weights = None  # (params, version, requested at) waiting for a turn boundary
        self._wakeup = concurrent.futures.Future()  # set by `submit`: ends the loop's wait on envs
        self._rollouts: list[_Rollout] = []  # taken in by the loop, not finished
        self._queue = collections.deque()  # (request, attempt, index, rollout) waiting for a slot
        self._stats = RolloutStats(_n_slots=len(self.slots))  # the loop's counts, over every rollout

    # -- public --------------------------------------------------------------------------------------
    def collect(self, requests: Sequence[EpisodeRequest]) -> tuple[list[Trajectory], RolloutStats]:
        """Plays `requests` to the end: (their trajectories in request order, stats). When another thread
        plays rollouts already (async RL), these join its loop and this call waits for them."""
        future = self.submit(requests)
        self.play()
        return future.result()

    def submit(self, requests: Sequence[EpisodeRequest]) -> concurrent.futures.Future:
        """Queues a rollout (from any thread); its future gives what `collect` returns. `play` plays it with
        the rollouts already in flight: its episodes take slots after those submitted earlier. Its key is
        drawn here, in submission order, so what it samples does not depend on the loop's timing."""
        with self._lock:
            rollout = _Rollout(list(requests), self._split(), concurrent.futures.Future())
            self._submitted.append(rollout)
            if not self._wakeup.done():  # free slots need not wait for an env to answer to take it
                self._wakeup.set_result(None)
        return rollout.future

    def play(self) -> None:
        """Plays every submitted rollout to its end, and those submitted while it plays; returns at once when
        another thread is playing (that one plays them)."""
        with self._lock:
            if self._playing:
                return
            self._playing = True
        try:
            self._play()
        except BaseException as error:
            self._fail_rollouts(error)
            raise

    def update_weights(self, params, version: int) -> None:
        """Weight sync (does not wait): the sampler takes `params`, policy `version`, at once when nothing
        plays, else at the next turn boundary of every row: new turns (prefills) pause, the turns being
        decoded finish with the weights that began them, the weights are swapped, play resumes. No turn mixes
        two versions; an episode may span versions across turns. A newer sync replaces one still waiting."""
        with self._lock:
            self._next_weights = (params, version, time.perf_counter())
            if not self._playing:
                self._swap_weights()

    def _swap_weights(self) -> None:
        """Applies the waiting weights (lock held; no row is inside a turn). Every live row's KV came from the
        old weights, so its context is prefilled again before its next turn: that turn's μ is then the new
        policy's log-prob given the context, as the trainer computes it."""
        if self._next_weights is None:
            return
        params, self.policy_version, requested = self._next_weights
        self._next_weights = None
        self.sampler.update_params(params)
        if self._playing:
            self._stats.weight_swaps += 1
            self._stats.time_swap_wait_s += time.perf_counter() - requested
        for slot in self.slots:
            slot.position = 0

    def _take_submitted(self) -> None:
        """Submitted rollouts join the loop (lock held): their requests queue behind those already there."""
        if self._wakeup.done():
            self._wakeup = concurrent.futures.Future()
        now = time.perf_counter()
        for rollout in self._submitted:
            rollout.started = now
            rollout.stats_before = dataclasses.replace(self._stats, time_to_first_token_s=[])
            rollout.ttft_from = len(self._stats.time_to_first_token_s)
            self._queue.extend((r, 1, i, rollout) for i, r in enumerate(rollout.requests))
            self._rollouts.append(rollout)
        self._submitted = []

    def _deliver_finished(self) -> None:
        """Each rollout whose episodes are all done gets its trajectories (request order) and its stats."""
        for rollout in [r for r in self._rollouts if len(r.done) == len(r.requests)]:
            self._rollouts.remove(rollout)
            stats = _stats_since(self._stats, rollout.stats_before, rollout.ttft_from)
            stats.episodes, stats.wall_s = len(rollout.done), time.perf_counter() - rollout.started
            rollout.future.set_result(([rollout.done[i] for i in sorted(rollout.done)], stats))
        # The loop may play for a whole run: keep only the times the rollouts still in it will report.
        ttft = self._stats.time_to_first_token_s
        drop = min((r.ttft_from for r in self._rollouts), default=len(ttft))
        del ttft[:drop]
        for r in self._rollouts:
            r.ttft_from -= drop

    def _fail_rollouts(self, error: BaseException) -> None:
        """The loop raised: every rollout in it or waiting for it fails with the error; the slots are freed."""
        with self._lock:
            failed, self._rollouts, self._submitted = self._rollouts + self._submitted, [], []
            self._queue.clear()
            self._playing = False
        for slot in self.slots:
            self._free(slot)
        for rollout in failed:
            if not rollout.future.done():
                rollout.future.set_exception(error)

    def _play(self) -> None:
        queue, stats = self._queue, self._stats
        last = time.perf_counter()
        while True:
            with self._lock:
                self._take_submitted()
                if not queue and all(s.state is SlotState.FREE for s in self.slots):
                    self._deliver_finished()  # rollouts of no requests
                    self._swap_weights()  # a sync that came in at the very end
                    self._playing = False
                    return
            for slot in self.slots:
                if slot.state is SlotState.FREE and queue:
                    self._start_episode(slot, *queue.popleft())
            results = self._env_results()
            for i, slot in enumerate(self.slots):
                if i in results:
                    self._on_env_result(slot, results[i])
                if slot.state is SlotState.FREE and queue:  # refill at once: its reset overlaps the decode
                    self._start_episode(slot, *queue.popleft())
            if self._next_weights is not None and not any(s.state is SlotState.DECODING for s in self.slots):
                with self._lock:  # every row is between turns
                    self._swap_weights()
            # While a sync waits for the turns in decode to end, no new turn starts (no prefill).
            if self._next_weights is None and any(s.state is SlotState.PREFILL for s in self.slots):
                t = time.perf_counter()
                self._prefill()
                stats.time_prefill_s += time.perf_counter() - t
            if any(s.state is SlotState.DECODING for s in self.slots):
                t = time.perf_counter()
                self._decode_segment()
                stats.time_decode_s += time.perf_counter() - t
            elif not any(s.state is SlotState.PREFILL for s in self.slots):
                waiting = [s for s in self.slots if s.state is SlotState.WAIT_ENV and s.owned]
                if waiting:
                    t = time.perf_counter()
                    # Until some env answers, or the oldest call is due to be given up (next iteration).
                    oldest = min(s.waiting_since for s in waiting)
                    timeout = max(0.0, oldest + self.config.wait_timeout_s - time.monotonic())
                    if self._processes > 1:  # meet the other processes now and then, not only on answers
                        timeout = min(timeout, MULTIHOST_POLL_S)
                    concurrent.futures.wait(
                        [s.future for s in waiting] + [self._wakeup],
                        timeout=timeout,
                        return_when=concurrent.futures.FIRST_COMPLETED,
                    )
                    stats.time_env_wait_s += time.perf_counter() - t
            now = time.perf_counter()
            occupied = (now - last) * sum(s.state is not SlotState.FREE for s in self.slots)
            stats.occupied_slot_s += occupied
            if queue:
                stats.steady_occupied_slot_s += occupied
                stats.steady_wall_s += now - last
            last = now
            self._deliver_finished()

    # -- episode lifecycle ----------------------------------------------------------------------------
    def _start_episode(
        self, slot: _Slot, request: EpisodeRequest, attempt: int, index: int, rollout: _Rollout
    ) -> None:
        episode_id = self._next_episode_id
        self._next_episode_id += 1
        slot.request, slot.attempt, slot.index, slot.rollout = request, attempt, index, rollout
        key = jax.random.fold_in(jax.random.fold_in(rollout.key, index), attempt)
        slot.key_data = to_host(jax.random.key_data(key))
        slot.trajectory = Trajectory(
            episode_id=episode_id, task_seed=request.task_seed, group_id=request.group_id
        )
        slot.chat = EpisodeChat(self.tokenizer, self.system_prompt, self.tools)
        slot.position, slot.turn_tokens, slot.action_text = 0, [], ""
        slot.segments = []
        self._wait_env(slot, self._ask_env(slot, self.pool.reset, episode_id, request.task_seed))

    def _ask_env(self, slot: _Slot, call, *args):
        """`call(*args)` on this process's env pool for a row it owns; another process's row: None (its owner
        calls, and the answer arrives through `_env_results`)."""
        return call(*args) if slot.owned else None

    def _wait_env(self, slot: _Slot, future: concurrent.futures.Future | None) -> None:
        slot.future, slot.waiting_since, slot.state = future, time.monotonic(), SlotState.WAIT_ENV

    def _env_results(self) -> dict:
        """The env answers in by now, by row: those of this process's rows (done calls, and calls unanswered
        for wait_timeout_s, given up as if the pool had aborted them), and on several processes every
        process's, so that all apply the same answers."""
        now, results = time.monotonic(), {}
        for i, slot in enumerate(self.slots):
            if slot.state is SlotState.WAIT_ENV and slot.owned:
                if slot.future.done():
                    results[i] = _result_of(slot.future)
                elif now - slot.waiting_since > self.config.wait_timeout_s:
                    error = f"no answer from the env pool within {self.config.wait_timeout_s:g} s; episode given up"
                    op = "step" if slot.trajectory.tokens else "reset"
                    results[i] = aborted(op, error, timeout=True)
        if self._processes > 1:
            results = {i: r for part in exchange_objects(results) for i, r in part.items()}
        return results

    def _on_env_result(self, slot: _Slot, result) -> None:
        traj = slot.trajectory
        info = dict(result.info)
        if info.get("aborted"):
            self._stats.env_aborts += 1
            self._stats.env_timeouts += bool(info.get("timeout"))
            self._abort(slot, info.get("error", "environment failure"))
            return
        first = not traj.tokens
        if not first:
            traj.turn_rewards.append(float(result.reward))
            traj.info.update(info)
            if result.terminated or result.truncated:
                slot.chat.add_final_turn(slot.action_text)
                traj.terminated, traj.truncated = bool(result.terminated), bool(result.truncated)
                self._finish(slot)
                return
            if traj.n_turns >= self.config.max_turns:
                slot.chat.add_final_turn(slot.action_text)
                traj.truncated = True
                traj.info["truncated_by"] = "turn_limit"
                self._finish(slot)
                return
            role = info.get("role", self.config.observation_role)
            text = slot.chat.add_turn(slot.action_text, result.observation, role=role)
            if self.context is not None and traj.prefix_turns >= len(slot.request.prefix):
                slot.context = slot.context + slot.chat.messages[-2:]
                view = self.context.view(slot.context)
                if view != slot.context:  # the history the policy saw is rewritten: fork
                    traj = self._fork(slot, view)
                    text = slot.chat.render(add_generation_prompt=True, messages=view)
        else:
            traj.info.update(info)
            text = slot.chat.start(result.observation)
            slot.context = list(slot.chat.messages)
        tokens = self.tokenizer.encode(text)
        if len(traj.tokens) + len(tokens) + 1 >= self.sampler.max_length:
            # No room for the observation and at least one generated token: end as truncated, keeping
            # everything produced so far.
            traj.truncated = True
            traj.info["truncated_by"] = "context_limit"
            if first:
                traj.add_context(tokens[: self.sampler.max_length])
            self._finish(slot)
            return
        traj.add_context(tokens)
        if traj.prefix_turns < len(slot.request.prefix):
            self._replay_turn(slot, slot.request.prefix[traj.prefix_turns])
            return
        slot.state, slot.ready_at = SlotState.PREFILL, time.perf_counter()

    def _fork(self, slot: _Slot, view: list[dict]) -> Trajectory:
        """Seal the slot's trajectory as a segment (it ends with the model's last turn: what the sampler
        saw) and start the next segment of the same episode from the rewritten history `view`, prefilled
        from position 0 of the slot's cache row. Turn numbering and rewards so far carry over."""
        sealed = slot.trajectory
        slot.segments.append(sealed)
        fork = Trajectory(
            episode_id=sealed.episode_id,
            task_seed=sealed.task_seed,
            group_id=sealed.group_id,
            turn_rewards=list(sealed.turn_rewards),
            info=dict(sealed.info),
            prefix_turns=sealed.n_turns,  # the next sampled turn is chunk n_turns + 1, as without the fork
        )
        slot.trajectory, slot.position, slot.context = fork, 0, view
        self._stats.context_forks += 1
        return fork

    def _replay_turn(self, slot: _Slot, action: str) -> None:
        """Play a prefix action: rendered as the assistant turn a sampler would have produced (text and
        end-of-turn token), but context (loss_mask 0); the env steps with it like any sampled action."""
        traj = slot.trajectory
        tokens = self.tokenizer.encode(action) + [self.eos_id]
        if len(traj.tokens) + len(tokens) + 1 >= self.sampler.max_length:
            traj.truncated = True
            traj.info["truncated_by"] = "context_limit"
            self._finish(slot)
            return
        traj.add_replayed(tokens)
        slot.action_text = action
        self._wait_env(slot, self._ask_env(slot, self.pool.step, traj.episode_id, action))

    def _abort(self, slot: _Slot, error: str) -> None:
        self._ask_env(slot, self.pool.release, slot.trajectory.episode_id)
        if slot.attempt < self.config.max_attempts:
            self._stats.aborted_resamples += 1
            # Same seed and index (so the same place in the output), re-sampled first.
            self._queue.appendleft((slot.request, slot.attempt + 1, slot.index, slot.rollout))
            self._free(slot)
        else:
            self._stats.aborted_episodes += 1
            slot.trajectory.aborted = True
            slot.trajectory.info.update(error=error, attempts=slot.attempt)
            self._finish(slot)

    def _finish(self, slot: _Slot) -> None:
        traj = slot.trajectory
        traj.messages = list(slot.chat.messages)
        if traj.tokens and traj.messages[-1]["role"] == "assistant":
            # The template's text after the last end-of-turn token (e.g. a newline): context, no loss, so
            # the trajectory's tokens are exactly the template's rendering of its turns.
            rendered, text = slot.chat.render(), self.tokenizer.decode(traj.tokens)
            if rendered.startswith(text):
                traj.add_context(self.tokenizer.encode(rendered[len(text) :]))
        traj.info.setdefault("attempts", slot.attempt)
        if slot.segments:
            # Each earlier segment is trained with the episode's outcome (its return and ending).
            n = len(slot.segments) + 1
            for k, segment in enumerate(slot.segments):
                segment.turn_rewards = list(traj.turn_rewards)
                segment.terminated, segment.truncated, segment.aborted = (
                    traj.terminated,
                    traj.truncated,
                    traj.aborted,
                )
                segment.messages = traj.messages
                segment.info = dict(traj.info, segment=k, segments=n)
            traj.info.update(segment=n - 1, segments=n)
            traj.segments = slot.segments
        self._ask_env(slot, self.pool.release, traj.episode_id)
        slot.rollout.done[slot.index] = traj
        self._free(slot)

    def _free(self, slot) -> None:
        slot.state, slot.trajectory, slot.chat, slot.future, slot.request = (
            SlotState.FREE,
            None,
            None,
            None,
            None,
        )

    # -- model ---------------------------------------------------------------------------------------
    def _split(self):
        self.rng, key = jax.random.split(self.rng)
        return key

    def _row_keys(self, rows) -> jax.Array:
        """The episodes' own sampling keys, one per slot (unused rows get any key: they sample nothing)."""
        data = np.zeros((len(self.slots), *self.slots[rows[0]].key_data.shape), np.uint32)
        for i in rows:
            data[i] = self.slots[i].key_data
        return jax.random.wrap_key_data(data)

    def _prefill(self) -> None:
        rows = [i for i, s in enumerate(self.slots) if s.state is SlotState.PREFILL]
        sources = self._shared_prefixes(rows) if self.config.share_prefixes else {}
        # Rows that copy from another row prefilled in this same call go second, once that row's KV is written.
        later = [i for i in rows if sources.get(i, (None,))[0] in rows]
        for group in ([i for i in rows if i not in later], later):
            if group:
                self._prefill_rows(group, {i: sources[i] for i in group if i in sources})

    def _shared_prefixes(self, rows) -> dict[int, tuple[int, int]]:
        """For each row about to prefill, the (source row, prefix length) of the longest token prefix it
        shares with a row whose cache holds it: a live row (its fed tokens) or a row of this prefill that
        copies nothing (its whole context, once written). At most all but the last token is shared, so every
        row still samples its own next token with its own key."""
        cached = {  # row -> the tokens its cache holds (or will hold after this prefill's first call)
            j: s.trajectory.tokens[: s.position]
            for j, s in enumerate(self.slots)
            if s.state in (SlotState.DECODING, SlotState.WAIT_ENV) and s.trajectory is not None
        }
        sources = {}
        for i in rows:
            slot = self.slots[i]
            tokens = slot.trajectory.tokens
            best, best_length = None, slot.position + self.config.min_shared_prefix - 1
            for j, held in cached.items():
                if tokens[: best_length + 1] != held[: best_length + 1]:
                    continue  # cannot beat the best share so far
                n = _common_prefix(tokens, held, limit=len(tokens) - 1)
                if n > best_length:
                    best, best_length = j, n
            if best is None:
                cached[i] = tokens[: self._chunk_end(slot)]
            else:
                sources[i] = (best, best_length)
        return sources

    def _prefill_rows(self, rows, sources: dict[int, tuple[int, int]]) -> None:
        if sources:
            copy_from = np.arange(len(self.slots))
            for i, (j, _) in sources.items():
                copy_from[i] = j
            end = max(n for _, n in sources.values())
            self.cache = self.sampler.copy_rows(self.cache, copy_from, end)
            for i, (_, n) in sources.items():
                self._stats.prefill_tokens_shared += n - self.slots[i].position
                self.slots[i].position = n
        chunks = [None] * len(self.slots)
        starts = [0] * len(self.slots)
        for i in rows:
            slot = self.slots[i]
            # The pending context (with the unfed end-of-turn token), at most `prefill_chunk` of it.
            chunks[i] = slot.trajectory.tokens[slot.position : self._chunk_end(slot)]
            starts[i] = slot.position
            self._stats.prefill_tokens += len(chunks[i])
        self.cache, token, logp = self.sampler.prefill(self.cache, chunks, starts, self._row_keys(rows))
        token, logp = to_host((token, logp))
        now = time.perf_counter()
        for i in rows:
            slot = self.slots[i]
            slot.position += len(chunks[i])
            if slot.position < len(slot.trajectory.tokens):
                continue  # more chunks to come (the token sampled after a partial chunk is not used)
            self._stats.time_to_first_token_s.append(now - slot.ready_at)
            slot.turn_tokens = []
            self._append_generated(slot, [int(token[i])], [float(logp[i])])
            if self._turn_over(slot):
                self._end_turn(slot)
            else:
                slot.state = SlotState.DECODING

    def _chunk_end(self, slot) -> int:
        """Where this prefill call stops writing the slot's pending context."""
        end = len(slot.trajectory.tokens)
        chunk = self.config.prefill_chunk
        return end if chunk is None else min(end, slot.position + chunk)

    def _decode_segment(self) -> None:
        n, width = len(self.slots), self.sampler.decode_rows
        token, position, budget = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32)
        ready = [i for i, s in enumerate(self.slots) if s.state is SlotState.DECODING]
        # At most `width` rows decode; the ones served longest ago go first, so no episode starves.
        rows = sorted(ready, key=lambda i: self.slots[i].last_decoded)[:width]
        for i in rows:
            slot = self.slots[i]
            token[i], position[i] = slot.trajectory.tokens[slot.position], slot.position
            budget[i] = self._budget(slot)
            slot.last_decoded = self._segments
        self._segments += 1
        # With a KV pool (fewer decode rows than episodes), end the segment as soon as one row is done: its
        # decode row then serves the next episode ready to decode (or one whose env has answered meanwhile).
        min_active = len(rows) if width < n else 1
        self.cache, tokens, logps, count, _ = self.sampler.decode(
            self.cache, token, position, budget, self._row_keys(rows), min_active=min_active
        )
        tokens, logps, count = to_host((tokens, logps, count))
        self._stats.decode_row_steps += width * int(count.max(initial=0))
        for i in rows:
            slot = self.slots[i]
            k = int(count[i])
            slot.position += k
            self._append_generated(slot, tokens[i, :k].tolist(), logps[i, :k].tolist())
            if self._turn_over(slot):
                self._end_turn(slot)

    def _append_generated(self, slot: _Slot, tokens: list[int], logps: list[float]) -> None:
        slot.trajectory.add_generated(
            tokens,
            logps,
            chunk=slot.trajectory.n_turns + (0 if slot.turn_tokens else 1),
            policy_version=self.policy_version,
        )
        slot.turn_tokens += tokens
        self._stats.generated_tokens += len(tokens)

    def _budget(self, slot) -> int:
        per_turn = self.config.max_new_tokens_per_turn - len(slot.turn_tokens)
        return max(0, min(per_turn, self.sampler.max_length - 1 - slot.position))

    def _turn_over(self, slot) -> bool:
        return bool(slot.turn_tokens) and (slot.turn_tokens[-1] == self.eos_id or self._budget(slot) == 0)

    def _end_turn(self, slot) -> None:
        tokens = slot.turn_tokens
        if tokens[-1] != self.eos_id:
            # Cut by the budget: close the turn with an end-of-turn token the model did not choose (no loss
            # on it), so the transcript keeps the chat format.
            slot.trajectory.add_context([self.eos_id])
            slot.trajectory.info["cut_turns"] = slot.trajectory.info.get("cut_turns", 0) + 1
        else:
            tokens = tokens[:-1]
        slot.action_text = self.tokenizer.decode(tokens)
        if len(slot.trajectory.tokens) >= self.sampler.max_length:
            slot.chat.add_final_turn(slot.action_text)
            slot.trajectory.truncated = True
            slot.trajectory.info["truncated_by"] = "context_limit"
            self._finish(slot)
            return
        self._wait_env(
            slot, self._ask_env(slot, self.pool.step, slot.trajectory.episode_id, slot.action_text)
        )


def _stats_since(stats: RolloutStats, before: RolloutStats, ttft_from: int) -> RolloutStats:
    """The loop's counts since `before` (a copy taken then; its times to first token from `ttft_from`): what
    a rollout reports. One that shared the loop with others counts their work and env events too."""
    out = dataclasses.replace(stats, time_to_first_token_s=stats.time_to_first_token_s[ttft_from:])
    for field in dataclasses.fields(RolloutStats):
        now = getattr(stats, field.name)
        if field.name != "_n_slots" and not isinstance(now, list):
            setattr(out, field.name, now - getattr(before, field.name))
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """Length of the common prefix of token lists a and b, at most `limit`."""
    low, high = 0, min(len(a), len(b), limit)  # invariant: a[:low] == b[:low]
    while low < high:  # bisect with slice comparisons (C speed; contexts run to thousands of tokens)
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _result_of(future: concurrent.futures.Future):
    """A finished env future's result; a pool that failed it (raised, cancelled) gives an aborted one."""
    try:
        return future.result()
    except BaseException as e:  # noqa: BLE001 - CancelledError is a BaseException; none may escape collect
        return aborted("step", f"the env pool failed the call: {type(e).__name__}: {e}")


def build_rollout(
    model,
    tokenizer: Tokenizer,
    env_pool: EnvPool,
    *,
    batch_size: int,
    max_length: int,
    sampling: SamplingConfig | None = None,
    rollout: RolloutConfig | None = None,
    system_prompt: str = "",
    tools: list[dict] | None = None,
    mesh=None,
    seed: int = 0,
) -> RolloutScheduler:
    """A sampler of `batch_size` cache rows (episodes in flight; `rollout.decode_rows` of them decode at once)
    over `model` (decoding stops at the tokenizer's end of turn) and the
    scheduler that plays `env_pool`'s episodes with it: what RL, evaluation and benches all build."""
    rollout = rollout or RolloutConfig()
    sampler = Sampler(
        model,
        batch_size,
        max_length,
        sampling or SamplingConfig(1.0),
        stop_ids=[tokenizer.eos_id],
        mesh=mesh,
        decode_rows=rollout.decode_rows,
    )
    return RolloutScheduler(
        sampler,
        tokenizer,
        env_pool,
        system_prompt=system_prompt,
        tools=tools,
        config=rollout,
        seed=seed,
    )
