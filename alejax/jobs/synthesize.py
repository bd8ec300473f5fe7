"""The synthesize job (`job = "synthesize"`, configs/synthesize.py): any policy plays an env mix; the episodes
become a sharded JSONL trajectory dataset with a data card. Rollout only.

  1. the plan: `n_episodes` apportioned over the mix's ratios; env e plays seeds first_seed .. first_seed + n_e - 1,
     interleaved so any prefix of the plan is in the mix's ratios. An episode is (env, seed): its record id.
  2. resume: episodes already in <workdir>/raw are skipped (a shard is written whole or not at all, so a killed
     run loses at most the shard it was playing); <workdir>/synthesis.json pins what made them
  3. play the rest, `shard_size` at a time, each chunk written as one shard raw/part-NNNNN.jsonl:
     scripted / callable policies play each env directly (agent.loop.run_episode); a model plays through the
     rollout scheduler (one per env, one shared sampler), which records token ids and behaviour log-probs
  4. the configured filters (alejax.data.filters) over every raw episode -> <workdir>/data/part-NNNNN.jsonl
  5. the data card: data_card.json / .md (counts, success with 95% intervals, per-env composition, length and
     turn histograms, what each filter removed) and lengths.png / turns.png
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import time
import zlib
from collections import Counter
from typing import Any, Callable

import numpy as np
from ml_collections import ConfigDict

from alejax.agent.loop import run_episode
from alejax.data.filters import (
    FILTERS,
    apply_filters,
    apportion,
    composition,
    env_eval_texts,
    filter_table,
    record_length,
)
from alejax.data.records import (
    TrajectoryRecord,
    read_records,
    record_from_episode,
    record_from_trajectory,
    record_to_json,
)
from alejax.envs.base import make, registered
from alejax.stats import bootstrap_ci
from alejax.train.metrics import Progress

SCRIPTED = "scripted"
# What must match for a rerun to add to <workdir>/raw rather than mix two datasets.
PINNED = (
    "policy",
    "env_kwargs",
    "expert",
    "system_prompts",
    "render_tools",
    "sampling",
    "rollout",
    "max_length",
)


def run(config: ConfigDict) -> dict[str, Any]:
    t_start = time.time()
    # 1. What to play and filter (a bad mix, policy or filter name stops here, before anything is played).
    mix = parse_mix(config.mix)
    policy = resolve_policy(config.policy)
    plan = plan_episodes(mix, config.n_episodes, config.first_seed)
    steps = filter_steps(config, mix)
    workdir = config.workdir
    raw_dir, data_dir = os.path.join(workdir, "raw"), os.path.join(workdir, "data")
    os.makedirs(raw_dir, exist_ok=True)

    # 2. What is already played (a rerun of a killed job), and that it came from this same policy and envs.
    manifest = pin_manifest(workdir, config)
    manifest["runs"] = manifest.get("runs", 0) + 1
    # Written before playing, so the shards of a run killed mid-way are pinned too.
    _write_json(os.path.join(workdir, "synthesis.json"), manifest)
    done = read_shards(raw_dir)
    pending = [episode for episode in plan if episode_id(*episode) not in done]
    before = len(plan) - len(pending)
    print(
        f"synthesize: {policy.id} on {format_mix(mix)}, {len(plan)} episodes "
        f"({before} already in {raw_dir}, {len(pending)} to play)",
        flush=True,
    )

    # 3. Play, one shard per chunk.
    rollout_stats: dict[str, float] = {}
    if pending:
        progress = Progress(len(plan), start=before, every_s=config.progress_every_s, label="synthesize")
        with contextlib.ExitStack() as stack:
            play = (
                model_player(config, policy, stack, rollout_stats)
                if policy.kind == "model"
                else text_player(config, policy)
            )
            played, successes = before, 0
            for start in range(0, len(pending), config.shard_size):
                chunk = pending[start : start + config.shard_size]
                records = play(chunk)
                write_shard(raw_dir, records)
                played += len(records)
                successes += sum(r.is_success for r in records)
                done.update((r.id, r) for r in records)
                n_run = start + len(chunk)
                progress.update(played, {"episodes": n_run, "success": successes / n_run})

    # 4. Filters over this plan's episodes (in plan order; raw/ may hold more, from a larger earlier plan).
    records = [done[episode_id(*e)] for e in plan]
    kept, report = apply_filters(records, steps)
    write_dataset(data_dir, kept, config.shard_size)

    # 5. The card.
    card = data_card(
        config,
        mix,
        plan,
        records,
        kept,
        report,
        policy,
        resume={
            "episodes_before_this_run": before,
            "played_this_run": len(pending),
            "runs": manifest["runs"],
        },
        rollout_stats=rollout_stats,
    )
    write_card(workdir, card, records, kept)
    final = card["final"]
    print(
        f"done in {time.time() - t_start:.0f}s: {len(records)} episodes (success {card['raw']['success_rate']:.3f}), "
        f"{final['count']} kept by the filters -> {data_dir}; card {os.path.join(workdir, 'data_card.md')}",
        flush=True,
    )
    return {
        "episodes": len(records),
        "played_this_run": len(pending),
        "kept": final["count"],
        "success_rate": card["raw"]["success_rate"],
        "data_dir": data_dir,
        "card": os.path.join(workdir, "data_card.json"),
    }


# ---------------------------------------------------------------------------------------------------
# The plan


def parse_mix(spec: str) -> dict[str, float]:
    """A mix such as "shop/single:2,relation/grounding:1" as {env: ratio}; a missing ratio is 1. Every env must
    be registered and every ratio a positive number."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        name, _, ratio = part.partition(":")
        name = name.strip()
        try:
            value = float(ratio) if ratio.strip() else 1.0
        except ValueError:
            raise ValueError(f"mix entry {part!r}: the ratio {ratio!r} is not a number (env:ratio)") from None
        if not value > 0:
            raise ValueError(f"mix entry {part!r}: the ratio must be > 0")
        if name in mix:
            raise ValueError(f"mix names {name!r} twice")
        mix[name] = value
    if not mix:
        raise ValueError(f"mix {spec!r} names no env; expected e.g. 'shop/single:2,relation/grounding:1'")
    known = registered()
    unknown = [name for name in mix if name not in known]
    if unknown:
        raise ValueError(f"mix names unknown env(s) {unknown}; registered: {', '.join(known)}")
    return mix


def format_mix(mix: dict[str, float]) -> str:
    return ",".join(f"{name}:{ratio:g}" for name, ratio in mix.items())


def plan_episodes(mix: dict[str, float], n_episodes: int, first_seed: int) -> list[tuple[str, int]]:
    """(env, seed) of every episode: counts by the mix's ratios (largest remainders), interleaved so that
    each prefix of the plan keeps the ratios (a killed run's shards are a fair sample of the mix)."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    total = sum(mix.values())
    counts = apportion({name: ratio / total for name, ratio in mix.items()}, n_episodes)
    order = list(mix)
    slots = [
        ((j + 0.5) / n, order.index(name), name, first_seed + j)
        for name, n in counts.items()
        for j in range(n)
    ]
    return [(name, seed) for _, _, name, seed in sorted(slots)]


def episode_id(env: str, seed: int) -> str:
    return f"{env}:{seed}"


# ---------------------------------------------------------------------------------------------------
# Policies


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    kind: str  # scripted | callable | model
    id: str  # what records carry as `policy`
    target: Any = None  # the callable, or the model spec for load_model_and_tokenizer


def resolve_policy(spec: str) -> PolicySpec:
    """What `config.policy` names: "scripted", a model ("smollm2", a model directory or a job workdir holding
    model/, a .gguf file) or "module:function" (a callable messages -> reply text). Anything else is an error
    that lists these forms."""
    from alejax.rollout.model_policy import SMOLLM2

    spec = str(spec).strip()
    forms = (
        "expected 'scripted', 'smollm2', a model directory (config.json + weights, e.g. <sft workdir>/model), "
        "a .gguf file, or 'module:function' naming a callable messages -> reply"
    )
    if spec == SCRIPTED:
        return PolicySpec("scripted", SCRIPTED)
    if spec == SMOLLM2:
        return PolicySpec("model", SMOLLM2, SMOLLM2)
    if spec.endswith(".gguf"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"policy {spec!r}: no such .gguf file")
        return PolicySpec("model", f"model:{os.path.abspath(spec)}", spec)
    if os.path.isdir(spec):
        for candidate in (spec, os.path.join(spec, "model")):
            if os.path.exists(os.path.join(candidate, "config.json")):
                return PolicySpec("model", f"model:{os.path.abspath(candidate)}", candidate)
        raise ValueError(
            f"policy {spec!r} is a directory without a model (no config.json in it or in its model/); an orbax "
            "checkpoints/ directory is not loadable as a policy: the sft job exports <workdir>/model"
        )
    if ":" in spec and "/" not in spec.split(":")[0]:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"policy {spec!r}: {forms}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"policy {spec!r}: cannot import module {module_name!r} ({e})") from None
        fn = module
        for part in attribute.split("."):
            if not hasattr(fn, part):
                raise ValueError(f"policy {spec!r}: module {module_name!r} has no attribute {attribute!r}")
            fn = getattr(fn, part)
        if not callable(fn):
            raise ValueError(f"policy {spec!r}: {attribute!r} is a {type(fn).__name__}, not a callable")
        return PolicySpec("callable", f"callable:{spec}", fn)
    if os.path.sep in spec or spec.startswith("."):
        raise FileNotFoundError(f"policy {spec!r}: no such model directory or file; {forms}")
    raise ValueError(f"policy {spec!r} is not a policy: {forms}")


def _env_kwargs(config: ConfigDict, name: str) -> dict:
    return dict(config.env_kwargs.get(name, {}) or {})


def _system_prompt(config: ConfigDict, name: str, env) -> str:
    prompts = config.system_prompts
    return prompts[name] if name in prompts else env.system_prompt


def text_player(config: ConfigDict, policy: PolicySpec) -> Callable[[list], list[TrajectoryRecord]]:
    """Plays (env, seed) episodes with a scripted or callable policy, one env instance per env of the mix."""
    envs: dict[str, Any] = {}
    max_turns = config.rollout.max_turns

    def env_of(name: str):
        if name not in envs:
            env = envs[name] = make(name, **_env_kwargs(config, name))
            env.system_prompt = _system_prompt(config, name, env)  # run_episode renders the env's own
        return envs[name]

    if policy.kind == "scripted":

        def policy_for(name: str):
            kwargs = dict(config.expert.get(name, {}) or {})
            return lambda env: env.scripted_policy(**kwargs)
    else:

        def policy_for(name: str):
            return lambda env: _checked_reply(policy)

    def play(chunk: list[tuple[str, int]]) -> list[TrajectoryRecord]:
        records = []
        for name, seed in chunk:
            env = env_of(name)
            episode = run_episode(env, policy_for(name), seed, max_turns=max_turns, policy_needs_env=True)
            tools = env.tools if config.render_tools and env.tools else None
            records.append(
                record_from_episode(
                    episode,
                    env=name,
                    seed=seed,
                    policy=policy.id,
                    tools=tools,
                    env_kwargs=_env_kwargs(config, name),
                    id=episode_id(name, seed),
                )
            )
        return records

    return play


def _checked_reply(policy: PolicySpec) -> Callable[[list[dict]], str]:
    def act(messages: list[dict]) -> str:
        reply = policy.target(messages)
        if not isinstance(reply, str):
            raise TypeError(
                f"policy {policy.id[len('callable:') :]!r} returned a {type(reply).__name__}; a policy maps "
                "messages to the reply text (str)"
            )
        return reply

    return act


def model_player(config, policy: PolicySpec, stack: contextlib.ExitStack, stats_out: dict):
    """Plays (env, seed) episodes with a model through the rollout scheduler: one env pool and scheduler per
    env of the mix (each with its system prompt and tools), one sampler for all. Each chunk's scheduler is
    seeded from the chunk's first episode, so a rerun replays a lost chunk with the same sampling keys."""
    import jax

    from alejax.config import from_section
    from alejax.envs.pools import env_pool_from_config
    from alejax.parallel.mesh import make_mesh
    from alejax.rollout.model_policy import load_model_and_tokenizer
    from alejax.rollout.sampler import Sampler, SamplingConfig
    from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, RolloutScheduler

    devices = jax.devices() if config.num_devices == -1 else jax.devices()[: config.num_devices]
    mesh = make_mesh(config.mesh.to_dict(), devices)
    model, tokenizer = load_model_and_tokenizer(policy.target, mesh)
    max_length = min(config.max_length, model.config.max_position_embeddings)
    sampling = from_section(SamplingConfig, config.sampling)
    rollout = from_section(RolloutConfig, config.rollout)
    sampler = Sampler(
        model,
        min(config.batch_size, config.shard_size),
        max_length,
        sampling,
        stop_ids=[tokenizer.eos_id],
        mesh=mesh,
    )
    pools, prompts, tools = {}, {}, {}

    def setup(name: str) -> None:
        env = make(name, **_env_kwargs(config, name))
        prompts[name] = _system_prompt(config, name, env)
        tools[name] = env.tools if config.render_tools and env.tools else None
        pools[name] = stack.enter_context(
            contextlib.closing(env_pool_from_config(config.env_pool, name, _env_kwargs(config, name)))
        )

    def play(chunk: list[tuple[str, int]]) -> list[TrajectoryRecord]:
        by_id = {}
        for name in dict.fromkeys(name for name, _ in chunk):
            if name not in pools:
                setup(name)
            seeds = [seed for env_name, seed in chunk if env_name == name]
            scheduler = RolloutScheduler(
                sampler,
                tokenizer,
                pools[name],
                system_prompt=prompts[name],
                tools=tools[name],
                config=rollout,
                seed=zlib.crc32(f"{config.seed}:{episode_id(name, seeds[0])}".encode()),
            )
            trajectories, stats = scheduler.collect([EpisodeRequest(seed, i) for i, seed in enumerate(seeds)])
            for key, value in stats.as_dict().items():
                if key in (
                    "episodes",
                    "generated_tokens",
                    "wall_s",
                    "time_decode_s",
                    "time_prefill_s",
                    "time_env_wait_s",
                    "aborted_episodes",
                    "env_aborts",
                ):
                    stats_out[key] = stats_out.get(key, 0) + value
            for seed, trajectory in zip(seeds, trajectories):
                record = record_from_trajectory(
                    trajectory,
                    env=name,
                    policy=policy.id,
                    tools=tools[name],
                    env_kwargs=_env_kwargs(config, name),
                    id=episode_id(name, seed),
                    info={"temperature": sampling.temperature, "aborted": trajectory.aborted},
                )
                if trajectory.aborted:
                    record.success = False
                by_id[record.id] = record
        return [by_id[episode_id(*e)] for e in chunk]

    return play


# ---------------------------------------------------------------------------------------------------
# Shards and the manifest


def read_shards(raw_dir: str) -> dict[str, TrajectoryRecord]:
    """id -> record of every complete shard in raw_dir (leftover partial writes, *.tmp, are removed)."""
    for name in os.listdir(raw_dir):
        if name.endswith(".tmp"):
            os.remove(os.path.join(raw_dir, name))
    if not any(name.endswith(".jsonl") for name in os.listdir(raw_dir)):
        return {}
    out: dict[str, TrajectoryRecord] = {}
    for record in read_records(raw_dir):
        out.setdefault(record.id, record)
    return out


def _next_shard_path(directory: str) -> str:
    numbers = [int(n[5:10]) for n in os.listdir(directory) if n.startswith("part-") and n.endswith(".jsonl")]
    return os.path.join(directory, f"part-{max(numbers, default=-1) + 1:05d}.jsonl")


def write_shard(directory: str, records: list[TrajectoryRecord]) -> str:
    """One shard, written whole or not at all (a temp file renamed into place): a kill never leaves half."""
    path = _next_shard_path(directory)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record_to_json(r), ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, path)
    return path


def write_dataset(directory: str, records: list[TrajectoryRecord], shard_size: int) -> list[str]:
    """The filtered dataset, rewritten from scratch each run (it is a function of raw/ and the filters)."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.startswith("part-") and name.endswith((".jsonl", ".tmp")):
            os.remove(os.path.join(directory, name))
    return [write_shard(directory, records[i : i + shard_size]) for i in range(0, len(records), shard_size)]


def pin_manifest(workdir: str, config: ConfigDict) -> dict:
    """The settings that made <workdir>/raw (synthesis.json): a rerun with other ones stops with an error,
    since adding to raw/ would mix two datasets under one card."""
    path = os.path.join(workdir, "synthesis.json")
    pinned = {key: _plain(config[key]) for key in PINNED}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        changed = [key for key in PINNED if manifest["pinned"].get(key) != pinned[key]]
        if changed:
            key = changed[0]
            raise ValueError(
                f"{workdir} holds episodes made with {key}={json.dumps(manifest['pinned'].get(key))}, not "
                f"{json.dumps(pinned[key])}: use another workdir (or remove {os.path.join(workdir, 'raw')})"
            )
        return manifest
    return {"pinned": pinned, "runs": 0}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value.to_dict() if isinstance(value, ConfigDict) else value))


def _write_json(path: str, obj: Any) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------------
# Filters and the card


def filter_steps(config: ConfigDict, mix: dict[str, float]) -> list[tuple[str, dict]]:
    """The configured filters as apply_filters steps; decontaminate gets the held-out tasks of every env."""
    names = [n.strip() for n in config.filters.split(",") if n.strip()]
    steps = []
    for name in names:
        FILTERS[name]  # an unknown name: a KeyError listing the known ones
        params = dict(config.filter_params.get(name, {}) or {})
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        if name == "decontaminate":
            held = config.heldout
            seeds = range(held.first_seed, held.first_seed + held.n_tasks)
            params["eval_texts"] = [
                text
                for env in mix
                for text in env_eval_texts(
                    env, seeds, {**_env_kwargs(config, env), **dict(held.env_kwargs.get(env, {}))}
                )
            ]
        steps.append((name, params))
    return steps


def length_unit(records: list[TrajectoryRecord]) -> str:
    """Token counts when every record has them (a model played), else characters."""
    return "tokens" if records and all(r.tokens for r in records) else "chars"


def record_stats(records: list[TrajectoryRecord], unit: str) -> dict[str, Any]:
    """Counts, success (95% bootstrap interval over episodes), reward, turns and lengths, per-env composition."""
    if not records:
        return {"count": 0, "success_rate": 0.0, "composition": {}}
    success = np.array([r.is_success for r in records], np.float64)
    _, low, high = bootstrap_ci(success)
    turns = [r.n_turns for r in records]
    lengths = np.array([record_length(r, unit) for r in records])
    return {
        "count": len(records),
        "success_rate": float(success.mean()),
        "success_ci": [float(low), float(high)],
        "reward_mean": float(np.mean([r.reward or 0.0 for r in records])),
        "truncated": int(sum(r.truncated for r in records)),
        "aborted": int(sum(bool(r.info.get("aborted")) for r in records)),
        "turns": {
            "mean": float(np.mean(turns)),
            "histogram": {str(k): v for k, v in sorted(Counter(turns).items())},
        },
        "length": {
            "unit": unit,
            "mean": float(lengths.mean()),
            "p50": float(np.percentile(lengths, 50)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "composition": composition(records),
    }


def data_card(config, mix, plan, records, kept, report, policy, *, resume, rollout_stats) -> dict[str, Any]:
    unit = length_unit(records)
    planned = Counter(name for name, _ in plan)
    return {
        "policy": policy.id,
        "mix": {"spec": format_mix(mix), "ratios": mix, "planned": dict(planned)},
        "seeds": {name: [config.first_seed, config.first_seed + n - 1] for name, n in planned.items()},
        "raw": record_stats(records, unit),
        "filters": report,
        "final": record_stats(kept, unit),
        "resume": resume,
        "rollout": rollout_stats,
        "files": {
            "raw": os.path.join(config.workdir, "raw"),
            "data": os.path.join(config.workdir, "data"),
            "lengths_png": "lengths.png",
            "turns_png": "turns.png",
        },
    }


def write_card(workdir: str, card: dict, records, kept) -> None:
    _write_json(os.path.join(workdir, "data_card.json"), card)
    with open(os.path.join(workdir, "data_card.md"), "w", encoding="utf-8") as f:
        f.write(card_markdown(card))
    unit = card["raw"].get("length", {}).get("unit", "chars")
    _histograms(
        os.path.join(workdir, "lengths.png"),
        [[record_length(r, unit) for r in records], [record_length(r, unit) for r in kept]],
        f"episode length ({unit})",
    )
    _histograms(
        os.path.join(workdir, "turns.png"),
        [[r.n_turns for r in records], [r.n_turns for r in kept]],
        "assistant turns",
        integer=True,
    )


def card_markdown(card: dict) -> str:
    raw, final = card["raw"], card["final"]
    lines = [
        "# Data card",
        "",
        f"Policy `{card['policy']}` on the mix `{card['mix']['spec']}`; seeds per env: "
        + ", ".join(f"{env} {a}..{b}" for env, (a, b) in card["seeds"].items())
        + ".",
        "",
        "| set | episodes | success (95% CI) | mean reward | mean turns | mean length | truncated | aborted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in (("played (raw)", raw), ("kept (data)", final)):
        if not s["count"]:
            lines.append(f"| {name} | 0 | | | | | | |")
            continue
        lines.append(
            f"| {name} | {s['count']} | {100 * s['success_rate']:.1f}% [{100 * s['success_ci'][0]:.1f}, "
            f"{100 * s['success_ci'][1]:.1f}] | {s['reward_mean']:.3f} | {s['turns']['mean']:.2f} | "
            f"{s['length']['mean']:.0f} {s['length']['unit']} | {s['truncated']} | {s['aborted']} |"
        )
    lines += [
        "",
        "## Composition",
        "",
        "| env | planned | played | success | kept | share kept |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for env, n in card["mix"]["planned"].items():
        r, k = raw["composition"].get(env, {}), final["composition"].get(env, {})
        lines.append(
            f"| {env} | {n} | {r.get('count', 0)} | {100 * r.get('success_rate', 0):.1f}% | {k.get('count', 0)} | "
            f"{100 * k.get('share', 0):.1f}% |"
        )
    steps = card["filters"]["filters"]
    lines += ["", "## Filters", "", filter_table(card["filters"]) if steps else "No filters configured.", ""]
    for f in steps:
        if f["details"]:
            lines.append(f"- {f['name']}: {json.dumps(f['details'], ensure_ascii=False)[:300]}")
    turns = raw.get("turns", {}).get("histogram", {})
    lines += [
        "",
        "## Turns (played)",
        "",
        "| turns | " + " | ".join(turns) + " |",
        "|---" * (len(turns) + 1) + "|",
        "| episodes | " + " | ".join(str(v) for v in turns.values()) + " |",
        "",
        "Histograms: lengths.png, turns.png (played vs kept).",
        f"Resume: {card['resume']['episodes_before_this_run']} episodes were already played, "
        f"{card['resume']['played_this_run']} played in this run (run {card['resume']['runs']}).",
        "",
    ]
    return "\n".join(lines)


def _histograms(path: str, series: list[list[int]], xlabel: str, integer: bool = False) -> None:
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    values = [v for s in series for v in s] or [0]
    if integer:
        bins = np.arange(min(values) - 0.5, max(values) + 1.5)
    else:
        bins = np.histogram_bin_edges(values, bins=min(30, max(1, len(set(values)))))
    for label, s in zip(("played", "kept"), series):
        ax.hist(s, bins=bins, alpha=0.6, label=f"{label} ({len(s)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("episodes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
