"""DPO and its variants behind names, on preference pairs from a JSONL file or built from trajectories.

  PREFERENCE_LOSSES[name](inputs: PreferenceInputs, config: DPOConfig) -> (loss per pair [P], metrics)
  preference_loss(inputs, config) -> (scalar, metrics)      the mean over pairs, what the train step minimizes
  read_preference_jsonl(path) -> [PreferencePair]           {"prompt", "chosen", "rejected"} lines
  pairs_from_records(records) -> [PreferencePair]           success vs failure of the same (env, seed)
  preference_arrays(tokenizer, pairs, max_length) -> arrays [P, T] per side (chosen_* / rejected_*)
  with_reference_logprobs(...)                              the frozen reference's per-token log-probs
  make_dpo_loss(config) -> loss_fn(model, batch)            for `alejax.train.step.make_train_step`

The policy's log-probs come from the one forward the RL losses use (`alejax.train.step.token_logprobs`, chosen
and rejected rows in one batch) and the reference's from `make_logprob_fn` over the starting weights, as RL's
π_ref: no second log-prob path. A pair's log-ratio is Δ = Σ_t m_t·(log π_θ − log π_ref) over its response
tokens (m: their loss weights, `target_weights`); the implicit reward is β·Δ.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alejax.data.datasets import chat_tokens, records_tokenizer, validate_messages
from alejax.data.records import RecordError, TrajectoryRecord, read_jsonl
from alejax.rl.registry import Registry
from alejax.train.step import LOSS_WEIGHT, target_weights, token_logprobs

Array = jax.Array
Metrics = dict[str, Array]
SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    loss: str = "dpo"  # a name in PREFERENCE_LOSSES: dpo | dpo_norm | ipo | dpo_nll
    beta: float = 0.1  # β: the KL strength (dpo, dpo_norm); IPO's target margin is 1 / (2β)
    label_smoothing: float = 0.0  # ε (conservative DPO): the share of pairs assumed mislabelled
    nll_coef: float = 1.0  # α of dpo_nll: weight of the chosen side's per-token negative log-likelihood


class PreferenceInputs(NamedTuple):
    chosen_logp: Array  # [P, T] log π_θ per token of the chosen sequence (`token_logprobs` layout)
    rejected_logp: Array  # [P, T]
    chosen_ref_logp: Array  # [P, T] log π_ref
    rejected_ref_logp: Array  # [P, T]
    chosen_mask: Array  # [P, T] weights of the chosen response's tokens (0 on prompt and padding)
    rejected_mask: Array  # [P, T]


PREFERENCE_LOSSES: Registry = Registry("preference loss")
PreferenceLossFn = Callable[[PreferenceInputs, DPOConfig], tuple[Array, Array, Metrics]]


def _sums(inputs: PreferenceInputs) -> tuple[Array, Array, Array, Array]:
    """(Δ_chosen, Δ_rejected, |chosen|, |rejected|): summed log-ratios to the reference and response lengths."""
    d_c = ((inputs.chosen_logp - inputs.chosen_ref_logp) * inputs.chosen_mask).sum(1)
    d_r = ((inputs.rejected_logp - inputs.rejected_ref_logp) * inputs.rejected_mask).sum(1)
    return d_c, d_r, inputs.chosen_mask.sum(1), inputs.rejected_mask.sum(1)


def _sigmoid_loss(h: Array, label_smoothing: float) -> Array:
    """−(1−ε)·log σ(h) − ε·log σ(−h), with log_sigmoid so a large |h| stays finite."""
    return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(h) - label_smoothing * jax.nn.log_sigmoid(-h)


@PREFERENCE_LOSSES.register("dpo")
def dpo(inputs: PreferenceInputs, config: DPOConfig) -> tuple[Array, Array, Metrics]:
    """DPO (Rafailov et al. 2023): ℓ = −log σ(β·(Δ_c − Δ_r)), Δ = Σ_t (log π_θ − log π_ref) over the response.
    Returns (loss per pair, implicit reward margin β·(Δ_c − Δ_r) per pair, metrics)."""
    d_c, d_r, _, _ = _sums(inputs)
    margin = config.beta * (d_c - d_r)
    return _sigmoid_loss(margin, config.label_smoothing), margin, {}


@PREFERENCE_LOSSES.register("dpo_norm")
def dpo_norm(inputs: PreferenceInputs, config: DPOConfig) -> tuple[Array, Array, Metrics]:
    """Length-normalised DPO: Δ is the mean per-token log-ratio (Δ / |y|), so a long response cannot win
    (or lose) by its length alone; ℓ = −log σ(β·(Δ_c/|y_c| − Δ_r/|y_r|)). A larger β suits it (the means are
    ~|y| times smaller than DPO's sums)."""
    d_c, d_r, n_c, n_r = _sums(inputs)
    margin = config.beta * (d_c / jnp.maximum(n_c, 1.0) - d_r / jnp.maximum(n_r, 1.0))
    return _sigmoid_loss(margin, config.label_smoothing), margin, {}


@PREFERENCE_LOSSES.register("ipo")
def ipo(inputs: PreferenceInputs, config: DPOConfig) -> tuple[Array, Array, Metrics]:
    """IPO (Azar et al. 2023, Eq. 17): ℓ = (Δ_c − Δ_r − 1/(2β))², a squared loss that pulls the log-ratio
    margin to a finite target instead of pushing it to infinity (DPO's overfitting on deterministic
    preferences). Δ are sums over the response, as in the paper (TRL's "ipo" averages them)."""
    d_c, d_r, _, _ = _sums(inputs)
    h = d_c - d_r
    return (h - 1.0 / (2.0 * config.beta)) ** 2, config.beta * h, {}


@PREFERENCE_LOSSES.register("dpo_nll")
def dpo_nll(inputs: PreferenceInputs, config: DPOConfig) -> tuple[Array, Array, Metrics]:
    """DPO plus the chosen side's negative log-likelihood per token (Pang et al. 2024, "Iterative Reasoning
    Preference Optimization"; RPO): ℓ = DPO + α·(−Σ_t m_t log π_θ(y_c,t) / |y_c|). When chosen and rejected
    share most of their tokens (two episodes of one task that part at a single action), DPO alone can lower
    the likelihood of both, and of the greedy path with them; the NLL term holds the chosen one up."""
    loss, margin, _ = dpo(inputs, config)
    n_c = jnp.maximum(inputs.chosen_mask.sum(1), 1.0)
    nll = -(inputs.chosen_logp * inputs.chosen_mask).sum(1) / n_c
    return loss + config.nll_coef * nll, margin, {"chosen_nll": nll.mean()}


def get_preference_loss(name: str) -> PreferenceLossFn:
    """The preference loss registered as `name` (KeyError listing the known names otherwise)."""
    return PREFERENCE_LOSSES[name]


def preference_loss(inputs: PreferenceInputs, config: DPOConfig) -> tuple[Array, Metrics]:
    """The mean over pairs of `PREFERENCE_LOSSES[config.loss]`, and metrics: loss, reward_margin (mean
    implicit reward margin), accuracy (share of pairs whose margin is > 0; 0 where π_θ = π_ref), the chosen /
    rejected rewards β·Δ, the policy's own log-prob margin, and LOSS_WEIGHT = the pairs counted (a pair with
    an empty side is left out), so a microbatched step gives the full batch's gradient exactly."""
    loss_per_pair, margin, metrics = PREFERENCE_LOSSES[config.loss](inputs, config)
    d_c, d_r, n_c, n_r = _sums(inputs)
    valid = ((n_c > 0) & (n_r > 0)).astype(jnp.float32)
    n = jnp.maximum(valid.sum(), 1.0)
    mean = lambda x: (x * valid).sum() / n  # noqa: E731
    loss = mean(loss_per_pair)
    logp_c = (inputs.chosen_logp * inputs.chosen_mask).sum(1)
    logp_r = (inputs.rejected_logp * inputs.rejected_mask).sum(1)
    return loss, {
        **metrics,
        "loss": loss,
        "reward_margin": mean(margin),
        "accuracy": mean((margin > 0).astype(jnp.float32)),
        "chosen_reward": mean(config.beta * d_c),
        "rejected_reward": mean(config.beta * d_r),
        "logp_margin": mean(logp_c - logp_r),
        "chosen_tokens": mean(n_c),
        "rejected_tokens": mean(n_r),
        LOSS_WEIGHT: valid.sum(),
    }


# -- the train step's loss ---------------------------------------------------------------------------------
def side(batch, name: str) -> dict[str, Array]:
    """One side's model inputs (tokens, loss_mask, segment_ids) from a pair batch's `<name>_*` arrays."""
    prefix = f"{name}_"
    return {k[len(prefix) :]: v for k, v in batch.items() if k.startswith(prefix)}


def pair_logprobs(model, batch) -> tuple[Array, Array]:
    """(log π_θ of the chosen rows, of the rejected rows), [P, T] each, from ONE forward over both sides
    stacked (`token_logprobs`, RL's forward); LoRA's dropout key, when the step sets one, reaches it."""
    chosen, rejected = side(batch, "chosen"), side(batch, "rejected")
    both = {k: jnp.concatenate([chosen[k], rejected[k]]) for k in ("tokens", "segment_ids")}
    if "dropout_key" in batch:
        both["dropout_key"] = batch["dropout_key"]
    logp, _ = token_logprobs(model, both)
    n = chosen["tokens"].shape[0]
    return logp[:n], logp[n:]


def preference_inputs(batch, chosen_logp: Array, rejected_logp: Array) -> PreferenceInputs:
    chosen, rejected = side(batch, "chosen"), side(batch, "rejected")
    return PreferenceInputs(
        chosen_logp=chosen_logp,
        rejected_logp=rejected_logp,
        chosen_ref_logp=batch["chosen_ref_logp"],
        rejected_ref_logp=batch["rejected_ref_logp"],
        chosen_mask=target_weights(chosen),
        rejected_mask=target_weights(rejected),
    )


def make_dpo_loss(config: DPOConfig):
    """loss_fn(model, batch) -> (loss, metrics) for `make_train_step`; the batch holds `preference_arrays`
    plus chosen_ref_logp / rejected_ref_logp (`with_reference_logprobs`)."""
    get_preference_loss(config.loss)  # an unknown name fails here, not inside jit

    def loss_fn(model, batch):
        chosen_logp, rejected_logp = pair_logprobs(model, batch)
        return preference_loss(preference_inputs(batch, chosen_logp, rejected_logp), config)

    return loss_fn


def with_reference_logprobs(
    logprob_fn: Callable, params, frozen, arrays: dict[str, np.ndarray], mesh, batch_size: int
) -> dict[str, np.ndarray]:
    """`arrays` plus chosen_ref_logp / rejected_ref_logp: the log-probs of the model (params, frozen) under
    `logprob_fn` (`alejax.train.step.make_logprob_fn`), in batches of `batch_size` pairs. The reference is
    fixed, so it is computed once, before training."""
    out = dict(arrays)
    n = len(arrays["chosen_tokens"])
    with jax.set_mesh(mesh):
        for name in SIDES:
            inputs = side(arrays, name)
            parts = []
            for i in range(0, n, batch_size):
                # The last chunk is padded to a full one: one compiled shape for every chunk.
                chunk = {
                    k: pad_rows(inputs[k][i : i + batch_size], batch_size) for k in ("tokens", "segment_ids")
                }
                logp = logprob_fn(params, frozen, {k: jnp.asarray(v) for k, v in chunk.items()})
                parts.append(np.asarray(logp, np.float32)[: min(batch_size, n - i)])
            out[f"{name}_ref_logp"] = np.concatenate(parts)
    return out


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """`x` with zero rows appended up to `rows` (an all-zero pair has empty masks: no loss, no metrics)."""
    return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)]) if len(x) < rows else x


# -- preference pairs --------------------------------------------------------------------------------------
@dataclasses.dataclass
class PreferencePair:
    prompt: list[dict]  # the messages before the responses (system, user, earlier turns: context only)
    chosen: list[dict]  # the preferred continuation: assistant turns (and observations between them)
    rejected: list[dict]
    tools: list[dict] | None = None
    id: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    def side(self, name: str) -> list[dict]:
        """The whole chat of one side; the prompt's own assistant turns get weight 0 (context, not trained)."""
        prompt = [dict(m, weight=0.0) if m["role"] == "assistant" else m for m in self.prompt]
        return prompt + getattr(self, name)


_PAIR_FIELDS = ("prompt", "chosen", "rejected", "tools", "id")


def preference_from_json(data: Any, where: str = "record") -> PreferencePair:
    """A pair from one JSON object: `prompt` is a string (one user message) or a list of messages; `chosen`
    and `rejected` are strings (one assistant reply) or lists of messages holding at least one assistant
    turn; `tools` (optional) the tool schemas. Other keys go to `info`. A malformed record raises a
    RecordError naming `where` (e.g. "prefs.jsonl line 3") and the field."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: a preference record must be a JSON object, got {type(data).__name__}")
    for name in ("prompt", "chosen", "rejected"):
        if name not in data or data[name] is None:
            raise RecordError(f"{where}: field {name!r} is missing (a pair needs prompt, chosen, rejected)")
    prompt = data["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RecordError(f"{where}: field 'prompt' is an empty string")
        prompt = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list):
        prompt = validate_messages(prompt, f"{where}: field 'prompt'")
    else:
        raise RecordError(
            f"{where}: field 'prompt' must be a string or a list of messages, got {type(prompt).__name__}"
        )
    sides = {}
    for name in SIDES:
        value = data[name]
        if isinstance(value, str):
            value = [{"role": "assistant", "content": value}]
        elif not isinstance(value, list):
            raise RecordError(
                f"{where}: field {name!r} must be a string (the reply) or a list of messages, "
                f"got {type(value).__name__}"
            )
        value = validate_messages(value, f"{where}: field {name!r}")
        if not any(m["role"] == "assistant" for m in value):
            raise RecordError(f"{where}: field {name!r} holds no assistant message (nothing to prefer)")
        sides[name] = value
    if sides["chosen"] == sides["rejected"]:
        raise RecordError(
            f"{where}: fields 'chosen' and 'rejected' are identical (the pair carries no signal)"
        )
    tools = data.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise RecordError(f"{where}: field 'tools' must be a list of tool schemas (objects)")
    pair_id = data.get("id", "")
    if not isinstance(pair_id, str):
        raise RecordError(f"{where}: field 'id' must be a string, got {json.dumps(pair_id)[:40]}")
    info = {k: v for k, v in data.items() if k not in _PAIR_FIELDS}
    return PreferencePair(prompt, sides["chosen"], sides["rejected"], tools or None, pair_id, info)


def read_preference_jsonl(path: str) -> list[PreferencePair]:
    """Preference pairs from a JSONL file, one {"prompt", "chosen", "rejected"} object a line; errors name the
    file, line and field."""
    pairs = [preference_from_json(data, f"{path} line {n}") for n, data in read_jsonl(path)]
    if not pairs:
        raise RecordError(f"{path}: no preference pairs")
    return pairs


def _common_prompt(a: list[dict], b: list[dict]) -> int:
    """How many leading messages two chats share, backed off so both continuations keep an assistant turn."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    has_turn = lambda chat, i: any(m["role"] == "assistant" for m in chat[i:])  # noqa: E731
    while n > 0 and not (has_turn(a, n) and has_turn(b, n)):
        n -= 1
    return n


def pairs_from_records(
    records: Sequence[TrajectoryRecord], *, max_pairs_per_task: int = 1, seed: int = 0
) -> list[PreferencePair]:
    """Success vs failure of the same task: graded records grouped by (env, env_kwargs, seed); in each group
    up to `max_pairs_per_task` successes are paired with as many failures (a seeded draw, each record used
    once). The prompt is the messages both episodes share (system, first observation, any identical turns);
    each side is the rest of its episode. Ungraded records, records without a seed and tasks with only
    successes or only failures give no pair."""
    groups: dict[tuple, list[TrajectoryRecord]] = {}
    for r in records:
        if r.seed is None or (r.success is None and r.reward is None):
            continue
        groups.setdefault((r.env, json.dumps(r.env_kwargs, sort_keys=True), int(r.seed)), []).append(r)
    rng = np.random.default_rng(seed)
    pairs = []
    for key in sorted(groups):
        group = groups[key]
        wins = [group[i] for i in rng.permutation(len(group)) if group[i].is_success]
        losses = [group[i] for i in rng.permutation(len(group)) if not group[i].is_success]
        for win, loss in list(zip(wins, losses))[:max_pairs_per_task]:
            n = _common_prompt(win.messages, loss.messages)
            if win.messages[n:] == loss.messages[n:]:
                continue
            pairs.append(
                PreferencePair(
                    prompt=list(win.messages[:n]),
                    chosen=list(win.messages[n:]),
                    rejected=list(loss.messages[n:]),
                    tools=win.tools,
                    id=f"{key[0]}:{key[2]}:{win.id or 'win'}>{loss.id or 'loss'}",
                    info={
                        "env": key[0],
                        "seed": key[2],
                        "chosen_reward": win.reward,
                        "rejected_reward": loss.reward,
                    },
                )
            )
    return pairs


def pairs_tokenizer(pairs: Sequence[PreferencePair], vocab_size: int):
    """A byte-level BPE trained on both sides' chats as the model will see them (a fresh model's tokenizer)."""
    chats = [TrajectoryRecord(messages=p.side(s), tools=p.tools) for p in pairs for s in SIDES]
    return records_tokenizer(chats, vocab_size)


def preference_arrays(
    tokenizer,
    pairs: Sequence[PreferencePair],
    max_length: int,
    *,
    multiple: int = 16,
    width: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """[P, T] arrays of both sides, rendered by the tokenizer's chat template (`chat_tokens`, SFT's layout):
    `<side>_tokens`, `<side>_loss_mask` (the response's weights; 0 on the prompt), `<side>_segment_ids` (1 on
    tokens, 0 on padding). T: the longest side rounded up to `multiple`, at most `max_length`; a longer side
    is cut at max_length, and a pair with a side left without response tokens is dropped. `width` fixes T
    instead (e.g. held-out pairs at the train pairs' width: one compiled shape); sides are then cut at it.
    Returns (arrays, {"pairs", "truncated", "dropped"})."""
    max_length = max_length if width is None else width
    encoded, truncated, dropped = [], 0, 0
    for pair in pairs:
        sides = []
        for name in SIDES:
            tokens, weights = chat_tokens(tokenizer, pair.side(name), pair.tools)
            truncated += len(tokens) > max_length
            sides.append((tokens[:max_length], weights[:max_length]))
        if all(sum(w[1:]) > 0 for _, w in sides):  # position 0 never counts (`target_weights`)
            encoded.append(sides)
        else:
            dropped += 1
    if not encoded:
        raise ValueError(f"no preference pair has response tokens within max_length={max_length}")
    longest = max(len(t) for sides in encoded for t, _ in sides)
    width = width or min(max_length, -(-longest // multiple) * multiple)
    arrays = {}
    for i, name in enumerate(SIDES):
        tokens = np.full((len(encoded), width), tokenizer.pad_id, np.int32)
        mask = np.zeros((len(encoded), width), np.float32)
        segments = np.zeros((len(encoded), width), np.int32)
        for row, sides in enumerate(encoded):
            t, w = sides[i]
            tokens[row, : len(t)], mask[row, : len(t)], segments[row, : len(t)] = t, w, 1
        arrays.update({f"{name}_tokens": tokens, f"{name}_loss_mask": mask, f"{name}_segment_ids": segments})
    return arrays, {"pairs": len(encoded), "truncated": truncated, "dropped": dropped}
