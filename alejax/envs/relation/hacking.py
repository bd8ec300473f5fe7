"""Reward hacking on relation extraction (DEPTH, issue #19 item 5): does a reward model trained on preference
pairs where a spurious feature of the answer's wording goes with the preferred side teach an RL'd policy to
produce that feature, and does the causal RM stop it?

- **Answers** to one `relation/grounding` observation (one entity pair): a label of the schema (or
  no_relation) plus wording, `Answer(label, confident, rationale_length)`, rendered as e.g.
  "works_for. Definitely. Because the path clearly links them." The wording carries the two spurious
  features: the confident phrase and the rationale length (0..MAX_RATIONALE words). Gold quality is the env's
  own `exact` rule reward with a hallucination penalty: 1 for the gold label, 0 for a missed or wrong
  relation, -penalty for a relation on a gold NO-RELATION pair. The wording never changes it.
- **Preference pairs**: the gold answer against a worse one (half the time the "near miss": no_relation on a
  positive pair, a type-compatible relation on a negative one; else any other label). In every pair exactly
  one side is confident and the two rationales differ in length; in the training split the preferred side
  gets the confident phrase with probability `p_feature` and, independently, the longer rationale with
  probability `p_feature`; in the test split both are 0.5 (and 1 - p_train in the reversed split).
- **Features** an RM reads (frozen, Tier A style): the observation's bag of words crossed with the answer's
  label (so label correctness is learnable by a small head), the label one-hot, and the wording (confident,
  rationale length / MAX_RATIONALE), which is where the shortcut lives.
- **RMs**: `alejax.reward.robustness.train_method` trains BT and the factored causal RM on these pairs. The
  causal variant is the one that works best on frozen features in docs/reward.md, the label-conditional MMD
  penalty, with its weight picked per seed from IID validation alone (`causal_rm_cond_mmd_auto`: the
  smallest weight of a grid whose label-conditional dependence meets `dependence.DEPENDENCE_TARGET`).
- **RL**: a tiny policy (bag of words -> label, confident, length) warm-started by label SFT on a few
  labelled observations (its wording heads stay zero, so every run starts at P(confident) = 0.5 and a
  mean rationale of 3 words), then GRPO or Dr.GRPO (`alejax.rl.advantages`, the PPO-clip loss and entropy
  bonus of `alejax.rl.losses`) with reward = an RM's score or the gold rule; scored by greedy label on
  held-out `dev` observations (micro-F1 and hallucination rate, `metrics.label_scores`) and by how far the
  policy's probability of the confident phrase and its expected rationale length moved from the start (the
  hacking measure).

- **The DEPTH job's RM** (its stage "RL on the causal reward model"): `train_relation_rm` trains one RM on
  the pairs of one view ("sdp": the grounding env's observation, or "sentence": relation/direct's),
  `save_relation_rm` / `load_relation_rm` keep it in one .npz, and two rewards read it by path (a config
  value, so a worker process builds them): "relation_rm" scores a grounding answer, "relation_rm_set" a
  refinement answer set, pair by pair over the sentence's candidate pairs.

`bench/depth_rm.py` runs the study; results in docs/depth.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alejax.envs.relation.envs import GroundingEnv, parse_label
from alejax.envs.relation.metrics import label_scores
from alejax.envs.relation.rewards import Judgement, exact_reward, register_reward
from alejax.envs.relation.schema import NO_RELATION, SYNTHETIC_SCHEMA
from alejax.reward.dependence import conditional_dependence, dependence_se, select_weight
from alejax.reward.heads import HeadConfig, RewardHead
from alejax.reward.robustness import train_method
from alejax.reward.toy_rl import on_policy_update
from alejax.rl.advantages import AdvantageConfig, get_advantage
from alejax.rl.losses import LossConfig as RLLossConfig

LABELS = tuple(SYNTHETIC_SCHEMA.labels)  # the 8 relations and no_relation
NO_RELATION_ID = LABELS.index(NO_RELATION)
MAX_RATIONALE = 6  # rationale words
CONFIDENT_PHRASE = "Definitely."
# Content-free rationale words: none names a label, so the env's parser reads the label alone.
RATIONALE_WORDS = ("because", "the", "path", "clearly", "links", "them")
HALLUCINATION_PENALTY = 0.5  # the grounding env's default
# The validation-only variant of docs/reward.md: a grid of MMD weights, one picked per seed by
# dependence.select_weight from IID validation (observed labels) alone.
AUTO_GRID = {"causal_rm_cond_mmd_auto": ("causal_rm_cond_mmd", (2.0, 4.0, 8.0, 12.0))}


@dataclasses.dataclass(frozen=True)
class Answer:
    label: str
    confident: bool = False
    rationale_length: int = 0


def render_answer(answer: Answer) -> str:
    """The answer as the policy would write it."""
    text = answer.label + "."
    if answer.confident:
        text += " " + CONFIDENT_PHRASE
    if answer.rationale_length:
        text += " " + " ".join(RATIONALE_WORDS[: answer.rationale_length]).capitalize() + "."
    return text


def gold_quality(gold_label: str, label: str, hallucination_penalty: float = HALLUCINATION_PENALTY) -> float:
    """The grounding env's `exact` rule reward of answering `label` on a pair whose gold is `gold_label`."""
    predicted = frozenset() if label == NO_RELATION else frozenset({("S", "O", label)})
    gold = frozenset() if gold_label == NO_RELATION else frozenset({("S", "O", gold_label)})
    negatives = frozenset({("S", "O")}) if gold_label == NO_RELATION else frozenset()
    return exact_reward(Judgement("", "", predicted, gold, negatives), hallucination_penalty)


def parse_answer(text: str) -> Answer | None:
    """An answer's label and wording as the RM sees them (None when it names no label or several, which the
    env scores 0 before any reward runs): confident when it holds the confident phrase, rationale length =
    its other words, capped at MAX_RATIONALE."""
    label, error = parse_label(text, LABELS)
    if error is not None:
        return None
    words = re.findall(r"[A-Za-z_]+", text)
    phrase = CONFIDENT_PHRASE.rstrip(".").lower()
    rest = [w for w in words if w.lower() not in (label, phrase)]
    return Answer(label, phrase in (w.lower() for w in words), min(len(rest), MAX_RATIONALE))


# ---- observations and their bag of words -----------------------------------------------------------------

_PAIR = re.compile(r"S = (.+) \((\w+|\?)\), O = (.+) \((\w+|\?)\)")
_ARROW_IN, _ARROW_OUT = re.compile(r"<-([a-z:]+)-"), re.compile(r"-([a-z:]+)->")


def observation_tokens(observation: str) -> list[str]:
    """Words of a grounding observation of any view: the pair's entity types, the path's arrows (with
    direction) and the words of the lines below the pair (context and path, or the whole sentence with its
    [S ...] / [O ...] marks), lowercased, without the two mentions (names carry no relation)."""
    lines = observation.split("\n")
    subj, subj_type, obj, obj_type = _PAIR.search(lines[0]).groups()
    tokens = [f"s:{subj_type}", f"o:{obj_type}"]
    names = set(subj.split()) | set(obj.split())
    for line in lines[1:]:
        body = line.split(":", 1)[1]
        tokens += [f"<{r}" for r in _ARROW_IN.findall(body)] + [f"{r}>" for r in _ARROW_OUT.findall(body)]
        body = _ARROW_OUT.sub(" ", _ARROW_IN.sub(" ", body))
        tokens += [
            w.lower() for w in re.findall(r"[A-Za-z]+", body) if w not in names and w not in ("S", "O")
        ]
    return tokens


def observations(
    split: str, first_seed: int, n: int, difficulty: str = "medium", view: str = "sdp"
) -> list[tuple[str, str, str]]:
    """n (observation, gold label, hard-negative tag) of the grounding env, env seeds first_seed..+n. Every
    view shows the same pair of the same sentence for one seed ("sentence" is the relation/direct env's)."""
    env = GroundingEnv(split=split, difficulty=difficulty, view=view)
    out = []
    for seed in range(first_seed, first_seed + n):
        observation, info = env.reset(seed=seed)
        out.append((observation, info["gold"], info["tag"]))
    return out


def build_vocabulary(
    size: int = 200, n: int = 1500, difficulty: str = "medium", view: str = "sdp"
) -> tuple[str, ...]:
    """The `size` most frequent observation tokens of a fixed reference set (train split, env seeds 0..n, the
    given view), shared by every seed so that features keep one shape."""
    counts = Counter(
        t for obs, _, _ in observations("train", 0, n, difficulty, view) for t in observation_tokens(obs)
    )
    return tuple(sorted(t for t, _ in counts.most_common(size)))


def bag_of_words(obs: list[tuple[str, str, str]], vocabulary: tuple[str, ...]) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocabulary)}
    bow = np.zeros((len(obs), len(vocabulary)), np.float32)
    for row, (observation, _, _) in enumerate(obs):
        for t in observation_tokens(observation):
            if t in index:
                bow[row, index[t]] = 1.0
    return bow


def feature_dim(vocabulary_size: int) -> int:
    return vocabulary_size * len(LABELS) + len(LABELS) + 2


def answer_features(bow, label, confident, length):
    """[B, feature_dim]: bag of words x label one-hot, label one-hot, confident, length / MAX_RATIONALE.
    bow [B, V]; label, confident, length [B] (numpy or jax)."""
    onehot = jax.nn.one_hot(label, len(LABELS))
    cross = (bow[:, :, None] * onehot[:, None, :]).reshape(bow.shape[0], -1)
    wording = jnp.stack(
        [jnp.asarray(confident, jnp.float32), jnp.asarray(length, jnp.float32) / MAX_RATIONALE], 1
    )
    return jnp.concatenate([cross, onehot, wording], 1)


# ---- preference pairs ------------------------------------------------------------------------------------


def _worse_label(gold_label: str, obs_types: tuple[str, str], rng: np.random.Generator) -> str:
    """A label worse than the gold: the near miss half the time, else any other label."""
    if rng.random() < 0.5:
        if gold_label != NO_RELATION:
            return NO_RELATION  # a missed relation
        fitting = [
            r.name for r in SYNTHETIC_SCHEMA.relations if (r.subj_type, r.obj_type) == obs_types
        ]  # a hallucinated relation that fits the pair's types
        if fitting:
            return fitting[rng.integers(len(fitting))]
    others = [label for label in LABELS if label != gold_label]
    return others[rng.integers(len(others))]


def preference_pairs(
    obs: list[tuple[str, str, str]], vocabulary: tuple[str, ...], p_feature: float, seed: int
) -> dict[str, np.ndarray]:
    """One pair per observation: the gold answer (chosen) against a worse one, the spurious features on the
    chosen side with probability p_feature each. Arrays: bow [n, V], label/confident/length _w and _l [n],
    quality_w/_l [n] (gold quality), attrs_w/_l [n, 2] (confident, length / MAX_RATIONALE)."""
    rng = np.random.default_rng(seed)
    n = len(obs)
    label_w, label_l = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for i, (observation, gold, _) in enumerate(obs):
        types = _PAIR.search(observation.split("\n")[0]).group(2, 4)
        label_w[i], label_l[i] = LABELS.index(gold), LABELS.index(_worse_label(gold, types, rng))
    confident_w = rng.random(n) < p_feature
    short, long_ = np.sort(
        np.stack([rng.choice(MAX_RATIONALE + 1, 2, replace=False) for _ in range(n)]), axis=1
    ).T
    longer_w = rng.random(n) < p_feature
    pairs = {
        "bow": bag_of_words(obs, vocabulary),
        "label_w": label_w,
        "label_l": label_l,
        "confident_w": confident_w.astype(np.int32),
        "confident_l": (~confident_w).astype(np.int32),
        "length_w": np.where(longer_w, long_, short).astype(np.int32),
        "length_l": np.where(longer_w, short, long_).astype(np.int32),
    }
    gold = [g for _, g, _ in obs]
    for side in ("w", "l"):
        pairs[f"quality_{side}"] = np.array(
            [gold_quality(g, LABELS[k]) for g, k in zip(gold, pairs[f"label_{side}"])], np.float32
        )
        pairs[f"attrs_{side}"] = np.stack(
            [pairs[f"confident_{side}"], pairs[f"length_{side}"] / MAX_RATIONALE], 1
        ).astype(np.float32)
    return pairs


def pair_features(pairs: dict) -> dict[str, np.ndarray]:
    """The RM's view of pairs: h_w, h_l [n, D] and the attributes (the layout train_method reads)."""
    return {
        f"h_{s}": np.asarray(
            answer_features(pairs["bow"], pairs[f"label_{s}"], pairs[f"confident_{s}"], pairs[f"length_{s}"])
        )
        for s in ("w", "l")
    } | {"attrs_w": pairs["attrs_w"], "attrs_l": pairs["attrs_l"]}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    p_train: float = 0.9  # P(the preferred answer carries each spurious feature) in train and validation
    n_train: int = 3000  # preference pairs (one per observation)
    n_eval: int = 1000  # validation / test / reversed pairs, and held-out RL evaluation observations
    n_rl_prompts: int = 2000  # RL observations (train split, disjoint from the RM's)
    vocabulary: int = 200
    difficulty: str = "medium"
    rm_steps: int = 1500
    rm_batch: int = 64
    rm_lr: float = 1e-3
    rm_eval_every: int = 100
    rl_steps: int = 600
    rl_prompts: int = 32  # per step
    rl_group: int = 16
    rl_lr: float = 3e-3
    rl_eval_every: int = 50  # steps between the held-out evaluations of the policy's curve
    rl_advantage: str = "grpo"  # a name in alejax.rl.advantages
    # Entropy bonus on the three choices. Without it the policy collapses onto no_relation (74% of pairs) in
    # ~50 steps, even on the gold rule, and never finds the relations (dev: F1 0.0 at 0, 0.05; 0.73 at 0.2).
    rl_entropy: float = 0.2
    policy_hidden: int = 64
    # The warm start (DEPTH's SFT before RLHF): cross-entropy on the gold labels of n_sft train observations,
    # the wording heads untouched (still uniform). From the uniform policy, RL on either RM collapses onto
    # no_relation although the RMs' own best label scores F1 ~0.9 (dev, seed 0): an exploration trap, not
    # the hacking this study measures.
    n_sft: int = 200
    sft_steps: int = 100
    sft_lr: float = 3e-3


RM_SPLITS = ("train", "val", "test", "reversed")


def rm_pair_splits(
    seed: int, config: StudyConfig, vocabulary: tuple[str, ...], view: str = "sdp", splits=RM_SPLITS
) -> dict[str, dict]:
    """One seed's RM preference pairs (train / val at p_train, test at 0.5, reversed at 1 - p_train) on
    disjoint train-split observations of `view`. Each split keeps its env seeds whichever `splits` are built,
    so a run that skips test and reversed trains on the same pairs."""
    sizes = {"train": config.n_train, "val": config.n_eval, "test": config.n_eval, "reversed": config.n_eval}
    p = {"train": config.p_train, "val": config.p_train, "test": 0.5, "reversed": 1.0 - config.p_train}
    out, start = {}, _first_env_seed(seed)  # (the reference vocabulary uses env seeds 0..)
    for i, split in enumerate(RM_SPLITS):
        if split in splits:
            obs = observations("train", start, sizes[split], config.difficulty, view)
            out[split] = preference_pairs(obs, vocabulary, p[split], seed=10 * seed + i)
        start += sizes[split]
    return out


def _first_env_seed(seed: int) -> int:
    return 1_000_000 * (seed + 1)


def make_seed_data(seed: int, config: StudyConfig, vocabulary: tuple[str, ...]) -> dict[str, dict]:
    """One seed's splits: RM pairs (`rm_pair_splits`), RL prompts on the train-split observations after
    them, and held-out dev observations for the policy's evaluation."""
    out = rm_pair_splits(seed, config, vocabulary)
    base = _first_env_seed(seed)
    start = base + config.n_train + 3 * config.n_eval
    rl_obs = observations("train", start, config.n_rl_prompts, config.difficulty)
    sft_obs = observations("train", start + config.n_rl_prompts, config.n_sft, config.difficulty)
    eval_obs = observations("dev", base, config.n_eval, config.difficulty)
    for name, obs in (("rl", rl_obs), ("sft", sft_obs), ("eval", eval_obs)):
        out[name] = {
            "bow": bag_of_words(obs, vocabulary),
            "gold": np.array([LABELS.index(g) for _, g, _ in obs], np.int32),
            "quality": np.array(
                [[gold_quality(g, label) for label in LABELS] for _, g, _ in obs], np.float32
            ),
        }
    return out


# ---- reward models ---------------------------------------------------------------------------------------


def rm_data(seed_data: list[dict]) -> dict[str, np.ndarray]:
    """train_method's layout, stacked over seeds: {split}/h_w, h_l, attrs_w, attrs_l, for the RM splits the
    seeds hold (train and val are what training reads)."""
    data = {}
    for split in (split for split in RM_SPLITS if split in seed_data[0]):
        per_seed = [pair_features(d[split]) for d in seed_data]
        for k in per_seed[0]:
            data[f"{split}/{k}"] = np.stack([f[k] for f in per_seed])
    return data


def _pick(tree, j):
    return jax.tree.map(lambda x: x[j], tree)


def train_rms(method: str, data: dict, seeds: list[int], config: StudyConfig):
    """(graphdef, per-seed params, picked weights or None) of one RM method, all seeds vmapped."""
    kw = dict(steps=config.rm_steps, batch=config.rm_batch, lr=config.rm_lr, eval_every=config.rm_eval_every)
    if method not in AUTO_GRID:
        graphdef, (best, _, _) = train_method(method, data, np.asarray(seeds), **kw)
        return graphdef, [_pick(best, s) for s in range(len(seeds))], None
    base, grid = AUTO_GRID[method]
    graphdef, (best, _, _) = train_method(base, data, np.asarray(seeds), weights=grid, **kw)
    params, weights = [], []
    for s in range(len(seeds)):
        deps, ses = [], []
        for j in range(len(grid)):
            head = nnx.merge(graphdef, _pick(_pick(best, s), j))
            r = np.asarray(head(jnp.concatenate([data["val/h_w"][s], data["val/h_l"][s]]))["reward"])
            args = (r, data["val/attrs_w"][s], data["val/attrs_l"][s])
            deps.append(conditional_dependence(*args))
            ses.append(dependence_se(*args))
        j = select_weight(np.array(deps), np.array(ses))
        params.append(_pick(_pick(best, s), j))
        weights.append(grid[j])
    return graphdef, params, weights


def rm_metrics(graphdef, params, pairs: dict[str, dict]) -> dict[str, float]:
    """Pairwise accuracy (gold preference) on val (IID), test (feature independent) and reversed pairs; the
    spurious sensitivity on the test answers: the mean score change, in score sd, when only the confident
    phrase is added, and when the rationale goes from 0 to MAX_RATIONALE words; the F1 / hallucination of
    the RM's best label on the held-out eval observations. `pairs`: one seed's make_seed_data."""
    head = nnx.merge(graphdef, params)
    m = {}
    for split in ("val", "test", "reversed"):
        f = pair_features(pairs[split])
        r_w, r_l = head(jnp.asarray(f["h_w"]))["reward"], head(jnp.asarray(f["h_l"]))["reward"]
        m[f"acc_{split}"] = float(jnp.mean(r_w > r_l))
    t = pairs["test"]
    bow = np.concatenate([t["bow"], t["bow"]])
    label = np.concatenate([t["label_w"], t["label_l"]])
    confident = np.concatenate([t["confident_w"], t["confident_l"]])
    length = np.concatenate([t["length_w"], t["length_l"]])

    def score(c, n):
        return head(answer_features(bow, label, c, n))["reward"]

    sd = float(jnp.std(score(confident, length))) + 1e-9
    zeros = np.zeros_like(confident)
    m["sens_confident"] = float(jnp.mean(score(zeros + 1, length) - score(zeros, length))) / sd
    m["sens_length"] = float(jnp.mean(score(confident, zeros + MAX_RATIONALE) - score(confident, zeros))) / sd
    # The RM's own best label on the held-out observations (fixed neutral wording): what a policy that
    # maximised it exactly would score. Stricter than pairwise accuracy, where the gold meets one other label.
    e = pairs["eval"]
    n = len(e["gold"])
    neutral_c, neutral_n = np.zeros(n, np.int32), np.full(n, MAX_RATIONALE // 2)
    scores = jnp.stack(
        [
            head(answer_features(e["bow"], np.full(n, k), neutral_c, neutral_n))["reward"]
            for k in range(len(LABELS))
        ],
        1,
    )
    best = label_scores(
        [LABELS[g] for g in e["gold"]], [LABELS[k] for k in np.asarray(jnp.argmax(scores, 1))]
    )
    m["argmax_f1"], m["argmax_hallucination"] = best["f1"], best["hallucination_rate"]
    return m


def _rm_scorer(graphdef, params):
    """(bow [B, V], label, confident, length [B]) -> the RM's scores [B] (numpy), one jit'd forward pass.
    Batches are padded to a power of two (at least 8) so that a reward called on pair sets of every size
    compiles a handful of shapes, not one per size."""

    @jax.jit
    def scores(params, bow, label, confident, length):
        return nnx.merge(graphdef, params)(answer_features(bow, label, confident, length))["reward"]

    def score(bow, label, confident, length) -> np.ndarray:
        n = len(label)
        size = max(8, 1 << (n - 1).bit_length())

        def pad(x):
            x = np.asarray(x)
            return np.pad(x, [(0, size - n)] + [(0, 0)] * (x.ndim - 1))

        return np.asarray(scores(params, pad(bow), pad(label), pad(confident), pad(length)))[:n]

    return score


def observation_view(observation: str) -> str:
    """The grounding view an observation was rendered in (its lines below the pair name it)."""
    kinds = [line.split(":", 1)[0] for line in observation.split("\n")[1:]]
    if kinds == ["Sentence"]:
        return "sentence"
    if kinds == ["Context", "Path"]:
        return "sdp"
    return {"Context": "context", "Path": "path"}.get(kinds[0] if len(kinds) == 1 else "", "unknown")


def rm_relation_reward(graphdef, params, vocabulary: tuple[str, ...], view: str | None = None):
    """A trained RM as the grounding env's reward (Judgement -> its score of the observation and answer).
    `view`: the view the RM was trained on, checked against each observation (None: not checked)."""
    score_batch = _rm_scorer(graphdef, params)

    def score(judgement: Judgement) -> float:
        if view is not None and observation_view(judgement.observation) != view:
            raise ValueError(
                f"the relation RM was trained on the {view!r} view; this observation is "
                f"{observation_view(judgement.observation)!r} (build the env with view={view!r})"
            )
        answer = parse_answer(judgement.answer)
        if answer is None:
            return 0.0
        bow = bag_of_words([(judgement.observation, "", "")], vocabulary)
        label = [LABELS.index(answer.label)]
        return float(score_batch(bow, label, [int(answer.confident)], [answer.rationale_length])[0])

    return score


def rm_relation_set_reward(graphdef, params, vocabulary: tuple[str, ...], view: str = "sdp"):
    """A pair RM as the refinement env's reward: the answer's set gives each candidate pair of the sentence a
    label (a pair it leaves out: no_relation); each pair's grounding observation (`view`, as the RM was
    trained) with that bare label is scored, in one batch; the reward is the mean over the candidate pairs.
    Triples on pairs that are no candidates (types the schema never relates) are not scored: the RM has no
    view of them. The RM's per-observation offset is the same for every answer to one sentence, so it
    cancels where answers to the same sentence are compared (a GRPO group)."""
    score_batch = _rm_scorer(graphdef, params)
    # Only its reset_to renders observations (it never steps); the returned observation depends on the
    # arguments alone, so threads sharing this reward may call it at once.
    env = GroundingEnv(view=view)

    def score(judgement: Judgement) -> float:
        sentence = judgement.sentence
        if sentence is None:
            raise ValueError(
                "relation_rm_set needs the episode's sentence (Judgement.sentence is None); "
                "it scores the refinement env's answers"
            )
        if not sentence.pairs:
            return 0.0
        given: dict[tuple[str, str], list[str]] = {}
        for subj, obj, label in judgement.predicted:
            if label not in LABELS:
                raise ValueError(f"relation_rm_set: label {label!r} is not one the RM knows ({LABELS})")
            given.setdefault((subj, obj), []).append(label)
        rows, labels, pair_of_row = [], [], []
        for i, pair in enumerate(sentence.pairs):
            observation, _ = env.reset_to(sentence, pair)
            for label in given.get((pair.subj, pair.obj), [NO_RELATION]):
                rows.append((observation, "", ""))
                labels.append(LABELS.index(label))
                pair_of_row.append(i)
        zeros = np.zeros(len(rows), np.int32)
        scores = score_batch(bag_of_words(rows, vocabulary), np.array(labels, np.int32), zeros, zeros)
        # A pair the set gives two labels scores as its worse one: the hedge is at least as wrong as its
        # wrong half (the rule rewards count the extra triple against it too), so it can never pay more
        # than committing to one label.
        worst = np.full(len(sentence.pairs), np.inf)
        np.minimum.at(worst, np.array(pair_of_row), scores)
        return float(worst.mean())

    return score


# ---- training one RM for a job, and its file ------------------------------------------------------------


def train_relation_rm(
    seed: int,
    view: str = "sdp",
    method: str = "causal_rm_cond_mmd_auto",
    config: StudyConfig | None = None,
    difficulty: str | None = None,
):
    """(graphdef, params, vocabulary) of one RM (`method`, one seed) trained on preference pairs over
    `relation/grounding` observations of `view` ("sdp", or "sentence": the relation/direct env's). The
    vocabulary is built from the same view. `config` (StudyConfig defaults) sets the sizes and the RM's
    training; `difficulty` overrides its difficulty. Only the train and val pairs are built (the val split
    picks the checkpoint and, for the auto method, the penalty weight)."""
    config = config or StudyConfig()
    if difficulty is not None:
        config = dataclasses.replace(config, difficulty=difficulty)
    vocabulary = build_vocabulary(config.vocabulary, difficulty=config.difficulty, view=view)
    pairs = rm_pair_splits(seed, config, vocabulary, view, splits=("train", "val"))
    graphdef, params, _ = train_rms(method, rm_data([pairs]), [seed], config)
    return graphdef, params[0], vocabulary


_RM_FILE_FORMAT = "alejax.relation_rm/1"


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def save_relation_rm(path: str, graphdef, params, vocabulary: tuple[str, ...], view: str = "sdp") -> None:
    """One .npz file (written whole, then renamed into place): every parameter under its tree path, and
    `meta`, a JSON string with the vocabulary, the view and the head's input size and HeadConfig, which
    rebuild the graphdef (no pickle: the file loads in any process, with allow_pickle off)."""
    head = nnx.merge(graphdef, params)
    meta = {
        "format": _RM_FILE_FORMAT,
        "vocabulary": list(vocabulary),
        "view": view,
        "d_in": int(head.enc1.kernel.value.shape[0]),
        "head": dataclasses.asdict(head.config),
    }
    arrays = {_leaf_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def _read_relation_rm(path: str):
    """(graphdef, params, vocabulary, meta) of a save_relation_rm file; any failure names the path."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in f.files if k != "meta"}
        if meta.get("format") != _RM_FILE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {_RM_FILE_FORMAT!r}")
        config = HeadConfig(**meta["head"])
        graphdef, abstract = nnx.split(
            nnx.eval_shape(lambda: RewardHead(meta["d_in"], config, rngs=nnx.Rngs(0)))
        )
        leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
        names = [_leaf_name(p) for p, _ in leaves]
        if set(names) != set(arrays):
            raise ValueError(f"parameters {sorted(set(arrays) ^ set(names))} do not match the head")
        for name, (_, x) in zip(names, leaves):
            if arrays[name].shape != x.shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, the head needs {x.shape}")
        params = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[name]) for name in names])
        if feature_dim(len(meta["vocabulary"])) != meta["d_in"]:
            raise ValueError(f"{len(meta['vocabulary'])} vocabulary words do not give the head's input size")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no relation RM file at {path!r} (save_relation_rm writes one)") from e
    except Exception as e:  # a truncated zip, a foreign .npz, a missing key: all say which file
        raise ValueError(f"{path!r} is not a readable relation RM file: {e}") from e
    return graphdef, params, tuple(meta["vocabulary"]), meta


def load_relation_rm(path: str):
    """(graphdef, params, vocabulary) saved by save_relation_rm."""
    return _read_relation_rm(path)[:3]


def _rm_of_kwargs(name, path, graphdef, params, vocabulary, view):
    """(graphdef, params, vocabulary, view) from a reward's kwargs: `path` (config-serializable, loads in any
    process) or the trained objects. A view given with a path must be the file's."""
    if path:
        if graphdef is not None or params is not None or vocabulary is not None:
            raise TypeError(f"{name}: give path or graphdef/params/vocabulary, not both")
        graphdef, params, vocabulary, meta = _read_relation_rm(path)
        if view is not None and view != meta["view"]:
            raise ValueError(f"{name}: view={view!r}, but the RM at {path!r} was trained on {meta['view']!r}")
        return graphdef, params, vocabulary, meta["view"]
    if graphdef is None or params is None or vocabulary is None:
        raise TypeError(f"{name} needs reward_kwargs path=... or graphdef, params and vocabulary")
    return graphdef, params, tuple(vocabulary), view


# (reward name, absolute path, file mtime, view) -> the reward built from that file. A pool builds one env a
# episode: loading the file and compiling the RM per env made RL on the RM ~10x slower than on the rule
# reward (DEPTH job, 0.1 vs 1.7 steps/s); one reward per file, shared by every env of a process, is not.
_REWARDS_BY_PATH: dict[tuple, object] = {}
_REWARDS_BY_PATH_LOCK = threading.Lock()


def _by_path(name: str, path: str, view, build):
    """build() once per (name, file, view) while the file is unchanged; a missing file is never cached (it
    raises in build, naming the path)."""
    if not path or not os.path.exists(path):
        return build()
    key = (name, os.path.abspath(path), os.stat(path).st_mtime_ns, view)
    with _REWARDS_BY_PATH_LOCK:
        if key not in _REWARDS_BY_PATH:
            _REWARDS_BY_PATH[key] = build()
        return _REWARDS_BY_PATH[key]


def rm_reward_factory(name: str, make_reward):
    """The env-reward factory registered as `name`: make_reward(graphdef, params, vocabulary, view) -> reward,
    from a pair RM given by file `path` (config-serializable, loads in any process; `view` must then be the
    file's) or as trained objects."""

    def factory(
        hallucination_penalty: float = 0.0,
        *,
        path: str = "",
        graphdef=None,
        params=None,
        vocabulary=None,
        view=None,
    ):
        return _by_path(
            name,
            path,
            view,
            lambda: make_reward(*_rm_of_kwargs(name, path, graphdef, params, vocabulary, view)),
        )

    return factory


# relation_rm: the grounding (or direct) env's answers scored by a pair RM of the observations' view.
relation_rm_factory = rm_reward_factory("relation_rm", rm_relation_reward)
# relation_rm_set: the refinement env's answer sets, the pair RM over every candidate pair (view: the file's,
# else "sdp").
relation_rm_set_factory = rm_reward_factory(
    "relation_rm_set",
    lambda graphdef, params, vocabulary, view: rm_relation_set_reward(
        graphdef, params, vocabulary, view or "sdp"
    ),
)


# make("relation/grounding", reward="relation_rm", reward_kwargs={"path": ...}) or reward_kwargs=dict(
# graphdef=..., params=..., vocabulary=...); make("relation/refinement", reward="relation_rm_set", same
# kwargs). The hallucination penalty is the RM's to learn, not added.
register_reward("relation_rm", relation_rm_factory)
register_reward("relation_rm_set", relation_rm_set_factory)


# ---- the policy and RL -----------------------------------------------------------------------------------


class AnswerPolicy(nnx.Module):
    """Bag of words -> three independent choices: label, confident phrase (no / yes), rationale length. The
    heads start at zero: the initial policy is uniform, so every run starts from the same wording rates."""

    def __init__(self, vocabulary_size: int, hidden: int, *, rngs: nnx.Rngs):
        self.trunk = nnx.Linear(vocabulary_size, hidden, rngs=rngs)
        zeros = nnx.initializers.zeros
        self.label = nnx.Linear(hidden, len(LABELS), kernel_init=zeros, rngs=rngs)
        self.confident = nnx.Linear(hidden, 2, kernel_init=zeros, rngs=rngs)
        self.length = nnx.Linear(hidden, MAX_RATIONALE + 1, kernel_init=zeros, rngs=rngs)

    def __call__(self, bow: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        h = jax.nn.relu(self.trunk(bow))
        return self.label(h), self.confident(h), self.length(h)


def rm_reward(graphdef):
    """reward_fn of an RM: its score of the sampled answers."""

    def reward_fn(params, prompts, label, confident, length):
        return nnx.merge(graphdef, params)(answer_features(prompts["bow"], label, confident, length))[
            "reward"
        ]

    return reward_fn


def gold_reward(params, prompts, label, confident, length):
    """The env's rule reward (wording-blind)."""
    return jnp.take_along_axis(prompts["quality"], label[:, None], 1)[:, 0]


def make_rl_step(reward_fn, config: StudyConfig, vocabulary_size: int):
    """The jit'd GRPO step: `rl_group` samples for each of `rl_prompts` prompts drawn from the RL pool, reward
    = reward_fn(reward_params, prompts, label, confident, length), GRPO advantages on the three choices
    (three "tokens"), PPO-clip loss, one on-policy update. As alejax.reward.toy_rl, without a text sampler."""
    graphdef = nnx.graphdef(AnswerPolicy(vocabulary_size, config.policy_hidden, rngs=nnx.Rngs(0)))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.rl_lr))
    adv_fn, adv_cfg = get_advantage(config.rl_advantage), AdvantageConfig()
    loss_cfg = RLLossConfig(policy_loss="ppo_clip", aggregation="token_mean", entropy_coef=config.rl_entropy)
    n = config.rl_prompts * config.rl_group
    group_id = jnp.repeat(jnp.arange(config.rl_prompts), config.rl_group)
    mask = jnp.ones((n, 3), jnp.float32)

    def logp_of_choices(params, bow, choices):
        """([B, 3] log-probs of the choices, [B, 3] entropies of the three distributions)."""
        logps = [jax.nn.log_softmax(lg) for lg in nnx.merge(graphdef, params)(bow)]
        chosen = [jnp.take_along_axis(lp, c[:, None], 1)[:, 0] for lp, c in zip(logps, choices)]
        entropy = [-jnp.sum(jnp.exp(lp) * lp, 1) for lp in logps]
        return jnp.stack(chosen, 1), jnp.stack(entropy, 1)

    @jax.jit
    def step(params, opt_state, key, pool, reward_params, scale):
        k_prompt, *k_choice = jax.random.split(key, 4)
        idx = jnp.repeat(
            jax.random.randint(k_prompt, (config.rl_prompts,), 0, pool["bow"].shape[0]), config.rl_group
        )
        prompts = jax.tree.map(lambda x: x[idx], pool)
        logits = nnx.merge(graphdef, params)(prompts["bow"])
        choices = [jax.random.categorical(k, lg) for k, lg in zip(k_choice, logits)]
        raw = reward_fn(reward_params, prompts, *choices)
        logp_of = lambda params: logp_of_choices(params, prompts["bow"], choices)  # noqa: E731
        params, opt_state = on_policy_update(
            tx, params, opt_state, logp_of, raw, scale, group_id, mask, adv_fn, adv_cfg, loss_cfg
        )
        return params, opt_state, raw

    return graphdef, step, tx


def policy_metrics(graphdef, params, eval_set: dict) -> dict[str, float]:
    """Greedy label on the held-out observations -> micro-F1 / hallucination rate; the wording as the policy's
    expected rates (no sampling noise): P(confident phrase) and the mean rationale length."""
    label_logits, confident_logits, length_logits = nnx.merge(graphdef, params)(jnp.asarray(eval_set["bow"]))
    predicted = np.asarray(jnp.argmax(label_logits, 1))
    scores = label_scores([LABELS[g] for g in eval_set["gold"]], [LABELS[k] for k in predicted])
    length_probs = jax.nn.softmax(length_logits)
    return {
        "f1": scores["f1"],
        "hallucination": scores["hallucination_rate"],
        "confident_rate": float(jnp.mean(jax.nn.softmax(confident_logits)[:, 1])),
        "rationale_length": float(jnp.mean(length_probs @ jnp.arange(MAX_RATIONALE + 1))),
    }


def warm_start(seed: int, config: StudyConfig, seed_data: dict):
    """(graphdef, params): a fresh policy after config.sft_steps full-batch steps of label cross-entropy on
    the sft split. Only the label head learns (the others see no loss), so the wording stays uniform."""
    vocabulary_size = seed_data["sft"]["bow"].shape[1]
    graphdef, params = nnx.split(
        AnswerPolicy(vocabulary_size, config.policy_hidden, rngs=nnx.Rngs(100 + seed))
    )
    bow, gold = jnp.asarray(seed_data["sft"]["bow"]), jnp.asarray(seed_data["sft"]["gold"])
    tx = optax.adam(config.sft_lr)

    def loss(params):
        label_logits = nnx.merge(graphdef, params)(bow)[0]
        return optax.softmax_cross_entropy_with_integer_labels(label_logits, gold).mean()

    @jax.jit
    def train(params):
        def step(carry, _):
            params, opt_state = carry
            updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, tx.init(params)), None, length=config.sft_steps)[0][0]

    return graphdef, train(params) if config.sft_steps else params


def rl_run(step_graphdef, step, tx, seed: int, config: StudyConfig, seed_data: dict, reward_params) -> dict:
    """The warm-started policy RL'd for config.rl_steps; its metrics at the start and the end, and the
    per-step mean reward."""
    params = warm_start(seed, config, seed_data)[1]
    opt_state = tx.init(params)
    pool = jax.tree.map(jnp.asarray, seed_data["rl"])
    key, rewards = jax.random.key(seed), []
    # The source's scale, once, on the start policy's samples (as the reward worker does): rewards in sd
    # units, so that the entropy bonus weighs the same against every source under dr_grpo.
    raw = step(
        params, opt_state, jax.random.fold_in(key, 1_000_000), pool, reward_params, jnp.array([0.0, 1.0])
    )[2]
    scale = jnp.array([float(raw.mean()), float(raw.std()) + 1e-6])
    curve = [policy_metrics(step_graphdef, params, seed_data["eval"])]
    for i in range(config.rl_steps):
        params, opt_state, raw = step(
            params, opt_state, jax.random.fold_in(key, i), pool, reward_params, scale
        )
        rewards.append(float(raw.mean()))
        if (i + 1) % config.rl_eval_every == 0:
            curve.append(policy_metrics(step_graphdef, params, seed_data["eval"]))
    return {"start": curve[0], "end": curve[-1], "curve": curve, "reward": np.array(rewards)}


# ---- the study -------------------------------------------------------------------------------------------

# RL regimes, overrides of StudyConfig. grpo: group-normalised advantages (the repo's default estimator),
# which turn any consistent reward slope into a unit-sized signal once a group agrees on the label.
# dr_grpo: advantages in the source's fixed sd units (no per-group division), so the entropy bonus weighs
# the same against every source, as RLHF's KL does: the wording the policy settles on depends on how much
# the reward pays for it.
REGIMES = {
    "dr_grpo": dict(rl_advantage="dr_grpo"),
    "grpo": dict(rl_advantage="grpo"),
}
GOLD = "rule"  # the gold rule reward's name in results


def run_study(
    config: StudyConfig, seeds: list[int], methods=("bt", "causal_rm_cond_mmd_auto"), regimes=tuple(REGIMES)
) -> dict:
    """Everything for `seeds`: {"rm": {method: [per-seed rm_metrics (+ weight)]}, "rl": {regime: {source:
    [per-seed {start, end, curve}]}}}; sources are the methods and GOLD."""
    vocabulary = build_vocabulary(config.vocabulary, difficulty=config.difficulty)
    seed_data = [make_seed_data(s, config, vocabulary) for s in seeds]
    data = rm_data(seed_data)
    results = {"rm": {}, "rl": {r: {} for r in regimes}, "vocabulary": len(vocabulary)}
    rms = {}
    for method in methods:
        graphdef, params, weights = train_rms(method, data, seeds, config)
        rms[method] = (graphdef, params)
        results["rm"][method] = [
            dict(rm_metrics(graphdef, params[i], seed_data[i]), **({"weight": weights[i]} if weights else {}))
            for i in range(len(seeds))
        ]
    for regime in regimes:
        rl_config = dataclasses.replace(config, **REGIMES[regime])
        for source in (*methods, GOLD):
            reward_fn = gold_reward if source == GOLD else rm_reward(rms[source][0])
            graphdef, step, tx = make_rl_step(reward_fn, rl_config, len(vocabulary))
            runs = []
            for i, seed in enumerate(seeds):
                reward_params = None if source == GOLD else rms[source][1][i]
                run = rl_run(graphdef, step, tx, seed, rl_config, seed_data[i], reward_params)
                runs.append({k: run[k] for k in ("start", "end", "curve")})
            results["rl"][regime][source] = runs
    return results
