"""ShopSimulator datasets as seqio Tasks (optional extra: `pip install -r requirements-seqio.txt`).

    from alejax.integrations import seqio_shop
    names = seqio_shop.register_shop_tasks(seqio_shop.get_config("tiny"))
    ds = seqio.get_dataset(names["sft"][0], {"targets": 1024, "loss_mask": 1024}, split="train",
                           feature_converter=seqio_shop.SFTFeatureConverter(pack=True))

Registered, per scenario S of ShopSimulator (single, single_persona, multi, multi_persona):

- `alejax_shop_S_sft` (splits train / validation): one example per successful scripted-expert episode,
  `targets` = the chat's tokens exactly as `alejax.data.episodes.episode_tokens` lays them out (so exactly as
  rollout renders them) and `loss_mask` = 1 on the model's own turns. `SFTFeatureConverter` packs them and
  turns `loss_mask` into `decoder_loss_weights`. The mixture `alejax_shop_sft` mixes the four scenarios.
- `alejax_shop_S_eval` (split validation): held-out episodes (the world's eval products), one example per
  expert step: `inputs` = the context through the generation prompt, `targets` = the expert's next action
  (+ end-of-turn), plus the episode `seed`, `step`, `n_steps` and its `goal` (JSON; never rendered). The
  metric replays each episode's predicted actions in the env: full success, R_strict, R_loose (percent),
  and the exact-match step accuracy.

TensorFlow and seqio are imported only when something here is called; `import alejax` never needs them.
Examples are generated in memory (tf.data.Dataset.from_generator); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from ml_collections import ConfigDict

from alejax.data.tokenizer import Tokenizer

__all__ = [
    "SCENARIOS",
    "get_config",
    "make_vocabulary",
    "register_shop_tasks",
    "packed_sft_rows",
    "shop_replay_metric",
    "sft_task_name",
    "eval_task_name",
    # seqio subclasses, created on first access (they need seqio): AlejaxVocabulary, SFTFeatureConverter
]

SCENARIOS = ("single", "single_persona", "multi", "multi_persona")
EXTRA_HINT = "pip install -r requirements-seqio.txt"


@contextlib.contextmanager
def _quiet_native_stderr():
    """TF's C++ start-up lines (CUDA probing, the oneDNN notice) go straight to fd 2 before absl logging is
    set up, so TF_CPP_MIN_LOG_LEVEL does not silence them: point fd 2 at /dev/null while TF starts."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.cache
def _require_seqio():
    """(seqio, tf), or an ImportError that says how to install the extra."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _quiet_native_stderr():
            import seqio
            import tensorflow as tf

            # TF must not take the accelerators JAX trains on; tf.data only needs the host.
            for kind in ("GPU", "TPU"):
                try:
                    tf.config.set_visible_devices([], kind)
                except (RuntimeError, ValueError):  # already initialized, or no such device type
                    pass
    except ImportError as e:
        raise ImportError(
            f"alejax.integrations.seqio_shop needs the seqio extra (seqio + TensorFlow), which is not installed "
            f"(missing module {e.name!r}): {EXTRA_HINT}"
        ) from e
    return seqio, tf


# -- config ------------------------------------------------------------------------------------------------
def get_config(preset: str | None = None) -> ConfigDict:
    """What `register_shop_tasks` generates. `tiny`: a few hundred episodes (seconds); `default`: 2000."""
    preset = preset or "tiny"
    c = ConfigDict()
    c.prefix = "alejax_shop"
    c.scenarios = SCENARIOS
    c.env_kwargs = ConfigDict({"world_seed": 0, "n_products": 500, "page_size": 5})
    c.expert = ConfigDict({"check_details": False})  # kwargs of ShopEnv.scripted_policy
    c.system_prompt = "env"  # "env": the env's own system prompt; "": none; else this text
    c.render_tools = False  # the shop's actions are plain text; tool schemas are optional
    c.max_turns = 50
    c.vocab_size = 2000  # of the BPE trained on expert chats when no tokenizer is given
    c.tokenizer_episodes = 50  # train-split episodes per scenario the BPE is trained on
    c.n_train = 200  # SFT train split: env split "train", episode seeds 0..n_train-1
    c.n_validation = 20  # SFT validation split: env split "eval" (held-out products)
    c.n_eval = 20  # eval task: held-out episodes (env split "eval"), seeds 0..n_eval-1
    if preset == "default":
        c.n_train, c.n_validation, c.n_eval, c.tokenizer_episodes = 2000, 200, 200, 200
    elif preset != "tiny":
        raise ValueError(f"unknown preset {preset!r} for seqio_shop.get_config; expected tiny or default")
    return c


def sft_task_name(scenario: str, prefix: str = "alejax_shop") -> str:
    return f"{prefix}_{scenario}_sft"


def eval_task_name(scenario: str, prefix: str = "alejax_shop") -> str:
    return f"{prefix}_{scenario}_eval"


def _text(value) -> str:
    """A string from what tf.numpy_function hands over (bytes, or a 0-d object array of bytes)."""
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- vocabulary --------------------------------------------------------------------------------------------
@functools.cache
def _vocabulary_class():
    seqio, tf = _require_seqio()

    class AlejaxVocabulary(seqio.Vocabulary):
        """An alejax `Tokenizer` as a seqio Vocabulary (python and tf.data paths).

        `eos_id` is the tokenizer's end-of-turn token (what the sampler stops on), so seqio's `decode`, made
        for predictions, stops at the first one; decode a whole multi-turn chat with `vocab.tokenizer`.
        Decoding drops pad and end-of-turn ids. Byte-level BPE has no unknown token (`unk_id` None). seqio
        pads with 0 whatever `pad_id` is; alejax's BPE puts `<|pad|>` at 0, and masks cover padding anyway.
        The tf path calls the Rust tokenizer through `tf.numpy_function`: fine in tf.data, not exportable
        into a SavedModel graph.
        """

        def __init__(self, tokenizer: Tokenizer):
            if not isinstance(tokenizer, Tokenizer):
                raise TypeError(f"AlejaxVocabulary wraps an alejax Tokenizer, got {type(tokenizer).__name__}")
            self.tokenizer = tokenizer
            self._eos, self._pad = tokenizer.eos_id, tokenizer.pad_id
            super().__init__(extra_ids=0)

        @property
        def eos_id(self) -> int:
            return self._eos

        @property
        def pad_id(self) -> int:
            return self._pad

        @property
        def bos_id(self) -> int | None:
            return self.tokenizer.bos_id

        @property
        def unk_id(self) -> None:
            return None

        @property
        def _base_vocab_size(self) -> int:
            return self.tokenizer.vocab_size

        def _text_ids(self, ids) -> list[int]:
            # Model vocabularies are often padded past the tokenizer's: ids out of range decode to nothing.
            n = self.tokenizer.vocab_size
            return [int(i) for i in ids if 0 <= int(i) < n and int(i) not in (self._pad, self._eos)]

        def _encode(self, s: str) -> list[int]:
            return self.tokenizer.encode(s)

        def _decode(self, ids) -> str:
            return self.tokenizer.decode(self._text_ids(ids))

        def _encode_tf(self, s):
            s = tf.convert_to_tensor(s, tf.string)
            if s.shape.rank == 0:
                ids = tf.numpy_function(lambda b: np.asarray(self._encode(_text(b)), np.int32), [s], tf.int32)
                return tf.ensure_shape(ids, [None])
            if s.shape.rank != 1:
                raise ValueError(f"encode_tf takes a scalar or a vector of strings, got rank {s.shape.rank}")

            def encode_many(texts):
                encoded = self.tokenizer.encode_batch([_text(t) for t in texts])
                flat = np.asarray([i for e in encoded for i in e], np.int32)
                return flat, np.asarray([len(e) for e in encoded], np.int64)

            flat, lengths = tf.numpy_function(encode_many, [s], (tf.int32, tf.int64))
            return tf.RaggedTensor.from_row_lengths(
                tf.ensure_shape(flat, [None]), tf.ensure_shape(lengths, [None])
            )

        def _decode_tf(self, ids):
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank is None or ids.shape.rank < 1:
                raise ValueError(f"decode_tf takes ids of rank >= 1, got shape {ids.shape}")
            leading = tf.shape(ids)[:-1]
            rows = tf.reshape(ids, [-1, tf.shape(ids)[-1]])

            def decode_rows(batch):
                return np.asarray([self._decode(row).encode("utf-8") for row in batch], object)

            text = tf.numpy_function(decode_rows, [rows], tf.string)
            return tf.reshape(text, leading)

        def __eq__(self, other) -> bool:
            return isinstance(other, AlejaxVocabulary) and other.tokenizer.backend.to_str() == (
                self.tokenizer.backend.to_str()
            )

        def __hash__(self) -> int:
            return hash((self.tokenizer.vocab_size, self._eos, self._pad))

        def __repr__(self) -> str:
            return f"AlejaxVocabulary({self.tokenizer!r})"

    AlejaxVocabulary.__module__ = __name__
    return AlejaxVocabulary


def make_vocabulary(tokenizer: Tokenizer):
    """`AlejaxVocabulary(tokenizer)`: the seqio Vocabulary of an alejax Tokenizer."""
    return _vocabulary_class()(tokenizer)


@functools.cache
def _sft_converter_class():
    seqio, tf = _require_seqio()

    class SFTFeatureConverter(seqio.LMFeatureConverter):
        """LMFeatureConverter whose loss weights are the task's `loss_mask` (the model's turns only).

        Packed rows map one-to-one onto alejax's: tokens = decoder_target_tokens, loss_mask =
        decoder_loss_weights, segment_ids = decoder_segment_ids, positions = decoder_positions.
        """

        TASK_FEATURES = {
            "targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
            "loss_mask": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
        }

        def _convert_features(self, ds, task_feature_lengths):
            # seqio's packer measures a feature by its nonzero entries, so the 0s of a mask would be cut
            # away: pack the mask shifted to {1, 2} (padding stays 0) and shift it back per example.
            ds = ds.map(lambda ex: {**ex, "loss_mask": ex["loss_mask"] + 1})
            return super()._convert_features(ds, task_feature_lengths)

        def _convert_example(self, features):
            d = dict(super()._convert_example(features))
            d["decoder_loss_weights"] = tf.maximum(features["loss_mask"] - 1, 0)
            return d

    SFTFeatureConverter.__module__ = __name__
    return SFTFeatureConverter


def __getattr__(name: str):
    # The seqio subclasses exist only once seqio is importable: build them on first access.
    if name == "AlejaxVocabulary":
        return _vocabulary_class()
    if name == "SFTFeatureConverter":
        return _sft_converter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- episodes ----------------------------------------------------------------------------------------------
def _env_name(scenario: str) -> str:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown ShopSimulator scenario {scenario!r}; expected one of {SCENARIOS}")
    return f"shop/{scenario}"


def _system_prompt(config: ConfigDict) -> str | None:
    return None if config.system_prompt == "env" else config.system_prompt


def expert_chat(env, seed: int, config: ConfigDict) -> tuple[list[dict] | None, dict]:
    """(chat, info) of the scripted expert on episode `seed` of `env`; chat is None when it failed.
    The chat gets the configured system prompt, as `alejax.train.sft` does."""
    from alejax.agent.loop import run_episode
    from alejax.data.episodes import with_system_prompt

    policy = lambda env: env.scripted_policy(**config.expert.to_dict())  # noqa: E731
    episode = run_episode(env, policy, seed, max_turns=config.max_turns, policy_needs_env=True)
    if episode.reward <= 0 or episode.info.get("score", {}).get("success", 0.0) != 1.0:
        return None, episode.info
    return with_system_prompt([episode.messages], _system_prompt(config))[0], episode.info


def _make_env(scenario: str, split: str, config: ConfigDict):
    from alejax.envs import make

    return make(_env_name(scenario), split=split, **config.env_kwargs.to_dict())


def _tools(env, config: ConfigDict) -> list[dict] | None:
    return env.tools if config.render_tools else None


def _goal(task) -> str:
    """The privileged goal of an episode, for inspection and metrics (never shown to the policy)."""
    return json.dumps(
        {
            "task": int(task.index),
            "asin": task.asin,
            "attributes": list(task.attributes),
            "options": dict(task.options),
            "price_upper": None
            if task.price_upper is None
            else float(task.price_upper),  # None: no budget stated
            "instruction": task.instruction,
        },
        ensure_ascii=False,
    )


def _rendered(tokenizer: Tokenizer, chat: list[dict], tools) -> str:
    """The chat template's rendering through the last assistant turn (what episode_tokens tokenizes)."""
    last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
    return tokenizer.apply_chat_template(chat[: last + 1], tools=tools)


def _turn_spans(loss_mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of 1s: one per assistant turn (its tokens and end-of-turn token)."""
    spans, start = [], None
    for i, m in enumerate(list(loss_mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def sft_examples(scenario: str, split: str, seeds: Sequence[int], tokenizer: Tokenizer, config: ConfigDict):
    """Python dicts of the SFT task (one per successful expert episode)."""
    from alejax.data.episodes import episode_tokens

    env = _make_env(scenario, split, config)
    for seed in seeds:
        chat, _ = expert_chat(env, seed, config)
        if chat is None:
            continue
        tokens, mask = episode_tokens(tokenizer, chat, _tools(env, config))
        yield {
            "targets": np.asarray(tokens, np.int32),
            "loss_mask": np.asarray(mask, np.int32),
            "targets_pretokenized": _rendered(tokenizer, chat, _tools(env, config)),
            "seed": np.int32(seed),
            "goal": _goal(env.task),
        }


def eval_examples(scenario: str, seeds: Sequence[int], tokenizer: Tokenizer, config: ConfigDict):
    """Python dicts of the eval task: per held-out episode, one example per expert step."""
    from alejax.data.episodes import episode_tokens

    env = _make_env(scenario, "eval", config)
    for seed in seeds:
        chat, _ = expert_chat(env, seed, config)
        if chat is None:
            continue
        tokens, mask = episode_tokens(tokenizer, chat, _tools(env, config))
        actions = [m["content"] for m in chat if m["role"] == "assistant"]
        spans = _turn_spans(mask)
        if len(spans) != len(actions):
            raise RuntimeError(f"episode {seed}: {len(spans)} masked turns for {len(actions)} actions")
        goal = _goal(env.task)
        for step, ((start, _), action) in enumerate(zip(spans, actions)):
            yield {
                "inputs": np.asarray(tokens[:start], np.int32),
                "inputs_pretokenized": tokenizer.decode(tokens[:start]),
                "targets": action,
                "seed": np.int32(seed),
                "step": np.int32(step),
                "n_steps": np.int32(len(actions)),
                "goal": goal,
            }


def train_tokenizer(config: ConfigDict) -> Tokenizer:
    """A byte-level BPE trained on train-split expert chats of every configured scenario."""
    from alejax.data.episodes import episodes_tokenizer

    chats, tools = [], None
    for scenario in config.scenarios:
        env = _make_env(scenario, "train", config)
        tools = tools or _tools(env, config)
        for seed in range(config.tokenizer_episodes):
            chat, _ = expert_chat(env, seed, config)
            if chat is not None:
                chats.append(chat)
    if not chats:
        raise RuntimeError("the scripted expert succeeded on no episode; cannot train a tokenizer")
    return episodes_tokenizer(chats, config.vocab_size, tools)


# -- metrics -----------------------------------------------------------------------------------------------
def _postprocess(output: str, example: dict | None = None, is_target: bool = False):
    """Targets carry their episode (seed, step) so the metric can replay; predictions are one action."""
    text = output.decode("utf-8") if isinstance(output, bytes) else output
    if not is_target:
        return text.strip()
    if example is None:
        raise ValueError("eval targets need their example (seed, step) to be postprocessed")
    return {"action": text.strip(), "seed": int(example["seed"]), "step": int(example["step"]),
            "n_steps": int(example["n_steps"])}  # fmt: skip


def shop_replay_metric(targets: Sequence[dict], predictions: Sequence[str], *, scenario: str,
                       env_kwargs: dict[str, Any]) -> dict[str, float]:  # fmt: skip
    """Replays each episode's predicted actions (in step order) in a fresh held-out env from its seed.

    Returns percent: full_success, r_strict, r_loose (an episode that never buys scores 0), step_accuracy
    (exact match with the expert's action), and the number of episodes. Every step of an episode must be
    present: a partial episode cannot be replayed.
    """
    from alejax.envs import make
    from alejax.envs.shop.metrics import aggregate

    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    episodes: dict[int, dict[int, str]] = defaultdict(dict)
    n_steps, correct = {}, 0
    for target, prediction in zip(targets, predictions):
        episodes[target["seed"]][target["step"]] = prediction
        n_steps[target["seed"]] = target["n_steps"]
        correct += prediction == target["action"]
    env = make(_env_name(scenario), split="eval", **env_kwargs)
    results = []
    for seed, steps in sorted(episodes.items()):
        missing = sorted(set(range(n_steps[seed])) - set(steps))
        if missing:
            raise ValueError(
                f"episode seed {seed} lacks the predictions of steps {missing}; cannot replay it"
            )
        env.reset(seed)
        info: dict = {}
        for step in range(n_steps[seed]):
            _, _, terminated, truncated, info = env.step(steps[step])
            if terminated or truncated:
                break
        results.append(info.get("score", {}))  # no purchase: no score, every metric 0
    agg = aggregate(results)
    return {
        "full_success": 100 * agg["success"][0],
        "r_strict": 100 * agg["strict"][0],
        "r_loose": 100 * agg["loose"][0],
        "step_accuracy": 100 * correct / max(1, len(targets)),
        "episodes": float(len(results)),
    }


# -- registration ------------------------------------------------------------------------------------------
def _from_generator(tf, make_examples, signature):
    return tf.data.Dataset.from_generator(make_examples, output_signature=signature)


def register_shop_tasks(
    config: ConfigDict | None = None, tokenizer: Tokenizer | str | None = None, overwrite: bool = False
) -> dict[str, list[str]]:
    """Registers the SFT and eval Tasks of every configured scenario and the `<prefix>_sft` mixture.

    `tokenizer`: an alejax Tokenizer, a tokenizer directory (e.g. an SFT run's `model/`), or None to train
    a BPE on train-split expert chats (`config.vocab_size`). Registering a name that exists raises unless
    `overwrite`. Returns {"sft": [task names], "eval": [task names], "mixture": [name]}.
    """
    seqio, tf = _require_seqio()
    config = config or get_config()
    for scenario in config.scenarios:
        _env_name(scenario)
    if tokenizer is None:
        tokenizer = train_tokenizer(config)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.from_dir(tokenizer)
    vocab = make_vocabulary(tokenizer)
    mask_vocab = seqio.PassThroughVocabulary(size=2)
    sft_features = {
        "targets": seqio.Feature(vocab, add_eos=False),  # the chat already ends with an end-of-turn token
        "loss_mask": seqio.Feature(mask_vocab, add_eos=False),
    }
    eval_features = {
        "inputs": seqio.Feature(vocab, add_eos=False),
        "targets": seqio.Feature(vocab, add_eos=True),
    }
    ids, text, scalar = (
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([], tf.string),
        tf.TensorSpec([], tf.int32),
    )
    sft_signature = {
        "targets": ids,
        "loss_mask": ids,
        "targets_pretokenized": text,
        "seed": scalar,
        "goal": text,
    }
    eval_signature = {"inputs": ids, "inputs_pretokenized": text, "targets": text, "seed": scalar,
                      "step": scalar, "n_steps": scalar, "goal": text}  # fmt: skip
    sft_splits = {
        "train": ("train", range(config.n_train)),
        "validation": ("eval", range(config.n_validation)),
    }

    names: dict[str, list[str]] = {"sft": [], "eval": [], "mixture": []}

    def add(name, **kwargs):
        if name in seqio.TaskRegistry.names():
            if not overwrite:
                raise ValueError(
                    f"seqio task {name!r} is already registered; pass overwrite=True to replace it"
                )
            seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(name, **kwargs)

    for scenario in config.scenarios:

        def sft_dataset(split, shuffle_files=False, seed=None, scenario=scenario):
            if split not in sft_splits:
                raise ValueError(f"split {split!r} of the {scenario} SFT task; expected {sorted(sft_splits)}")
            env_split, seeds = sft_splits[split]
            make = lambda: sft_examples(scenario, env_split, seeds, tokenizer, config)  # noqa: E731
            return _from_generator(tf, make, sft_signature)

        name = sft_task_name(scenario, config.prefix)
        add(
            name,
            source=seqio.FunctionDataSource(sft_dataset, splits=list(sft_splits)),
            output_features=sft_features,
        )
        names["sft"].append(name)

        def eval_dataset(split, shuffle_files=False, seed=None, scenario=scenario):
            if split != "validation":
                raise ValueError(f"split {split!r} of the {scenario} eval task; expected 'validation'")
            make = lambda: eval_examples(scenario, range(config.n_eval), tokenizer, config)  # noqa: E731
            return _from_generator(tf, make, eval_signature)

        name = eval_task_name(scenario, config.prefix)
        metric = functools.partial(
            shop_replay_metric, scenario=scenario, env_kwargs=config.env_kwargs.to_dict()
        )
        add(
            name,
            source=seqio.FunctionDataSource(eval_dataset, splits=["validation"]),
            output_features=eval_features,
            preprocessors=[_tokenize_targets, seqio.preprocessors.append_eos_after_trim],
            postprocess_fn=_postprocess,
            metric_fns=[metric],
        )
        names["eval"].append(name)

    mixture = f"{config.prefix}_sft"
    if mixture in seqio.MixtureRegistry.names():
        if not overwrite:
            raise ValueError(f"seqio mixture {mixture!r} is already registered; pass overwrite=True")
        seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(mixture, names["sft"], default_rate=1.0)
    names["mixture"].append(mixture)
    return names


def _tokenize_targets(dataset, output_features):
    """Tokenizes the action text through the vocabulary's tf path (the contexts come pre-tokenized: rollout
    tokenizes a chat piece by piece, and re-encoding the joined text could merge across the pieces)."""
    vocab = output_features["targets"].vocabulary

    def tokenize(example):
        out = dict(example)
        out["targets_pretokenized"] = example["targets"]
        out["targets"] = vocab.encode_tf(example["targets"])
        return out

    return dataset.map(tokenize)


def packed_sft_rows(task_or_mixture: str, split: str, seq_len: int, *, shuffle: bool = False,
                    seed: int | None = None, max_rows: int | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """A registered SFT task (or mixture) packed by seqio into alejax's row format (`pack_documents`'
    keys: tokens, segment_ids, positions, loss_mask), ready for `alejax.data.batches.batched_rows`.
    seqio trims an episode longer than `seq_len` (alejax's packer splits it instead); a mixture samples its
    tasks by rate and, with one epoch, ends when its first task runs out (seqio's sampling)."""
    seqio, _ = _require_seqio()
    ds = seqio.get_dataset(
        task_or_mixture,
        task_feature_lengths={"targets": seq_len, "loss_mask": seq_len},
        dataset_split=split,
        shuffle=shuffle,
        seed=seed,
        num_epochs=1,
        feature_converter=_sft_converter_class()(pack=True),
    )
    if max_rows is not None:
        ds = ds.take(max_rows)
    keys = {"decoder_target_tokens": ("tokens", np.int32), "decoder_segment_ids": ("segment_ids", np.int32),
            "decoder_positions": ("positions", np.int32), "decoder_loss_weights": ("loss_mask", np.float32)}  # fmt: skip
    rows: dict[str, list] = {k: [] for k, _ in keys.values()}
    for example in ds.as_numpy_iterator():
        for key, (name, _) in keys.items():
            rows[name].append(example[key])
    if not rows["tokens"]:
        raise ValueError(f"{task_or_mixture!r} split {split!r} produced no rows")
    return {name: np.stack(rows[name]).astype(dtype) for name, dtype in keys.values()}
