"""Filters and composition of trajectory datasets: each a named function `records -> kept records`, and
`apply_filters`, which runs a list of them and says what each removed (the data card's table).

    kept, report = apply_filters(records, [
        ("success", {}),
        ("turn_bounds", {"min_turns": 1, "max_turns": 8}),
        ("valid_tool_calls", {}),
        ("no_loops", {"max_repeats": 3}),
        ("dedup_exact", {}),
        ("dedup_near", {"threshold": 0.8}),
        ("decontaminate", {"eval_texts": held_out_prompts, "n": 8}),
        ("mix", {"ratios": {"arithmetic/easy": 0.7, "arithmetic/hard": 0.3}}),
    ])

Every filter keeps the records' order and takes an optional `report` dict that it fills with details (why
records went, which eval tasks were hit); `FILTERS[name]` looks one up by the name a config uses. Text is
compared language-agnostically: Latin words and numbers are tokens, every other non-space character (a CJK
character, a bracket) is a token of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from alejax.agent.context import RepeatDetector
from alejax.data.records import TrajectoryRecord
from alejax.envs.toolcall import parse_action, validate_arguments
from alejax.rl.registry import Registry

FILTERS: Registry = Registry("data filter")
Records = list[TrajectoryRecord]

# ---------------------------------------------------------------------------------------------------
# Text of a record


def _calls_text(message: dict) -> str:
    calls = message.get("tool_calls") or []
    return "".join(json.dumps(c.get("function", c), sort_keys=True, ensure_ascii=False) for c in calls)


def record_text(record: TrajectoryRecord, roles: Sequence[str] | None = None) -> str:
    """The record's messages as one text (role-tagged, tool calls included), optionally only some roles."""
    parts = [
        f"{m['role']}: {m.get('content') or ''}{_calls_text(m)}"
        for m in record.messages
        if roles is None or m["role"] in roles
    ]
    return "\n".join(parts)


_WORD = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")


def words(text: str) -> list[str]:
    """Lower-cased tokens: Latin words / numbers, and each other non-space character on its own."""
    return _WORD.findall(text.lower())


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


# ---------------------------------------------------------------------------------------------------
# Success, length, turns


@FILTERS.register("success")
def success(records: Records, *, report: dict | None = None) -> Records:
    """Keep successful episodes (`success`, else reward > 0); ungraded records go."""
    kept = [r for r in records if r.is_success]
    if report is not None:
        report["ungraded"] = sum(r.success is None and r.reward is None for r in records)
    return kept


@FILTERS.register("min_reward")
def min_reward(records: Records, *, threshold: float, report: dict | None = None) -> Records:
    """Keep records whose reward is >= `threshold`; ungraded records go."""
    kept = [r for r in records if r.reward is not None and r.reward >= threshold]
    if report is not None:
        report["ungraded"] = sum(r.reward is None for r in records)
    return kept


def record_length(record: TrajectoryRecord, unit: str = "tokens", tokenizer=None) -> int:
    """A record's length: its token count (recorded tokens, else the tokenizer's encoding of its rendered
    chat), or its number of text characters (unit="chars")."""
    if unit == "chars":
        return sum(len(m.get("content") or "") + len(_calls_text(m)) for m in record.messages)
    if unit != "tokens":
        raise ValueError(f"unit must be 'tokens' or 'chars', got {unit!r}")
    if record.tokens:
        return len(record.tokens)
    if tokenizer is None:
        raise ValueError("record has no recorded tokens: pass a tokenizer to count them (or unit='chars')")
    return len(tokenizer.encode(tokenizer.apply_chat_template(record.messages, tools=record.tools or None)))


@FILTERS.register("length_bounds")
def length_bounds(
    records: Records,
    *,
    min_length: int = 0,
    max_length: int | None = None,
    unit: str = "tokens",
    tokenizer=None,
    report: dict | None = None,
) -> Records:
    """Keep records whose `record_length` is within [min_length, max_length]."""
    lengths = [record_length(r, unit, tokenizer) for r in records]
    keep = [min_length <= n and (max_length is None or n <= max_length) for n in lengths]
    if report is not None:
        report["too_short"] = sum(n < min_length for n in lengths)
        report["too_long"] = sum(max_length is not None and n > max_length for n in lengths)
    return [r for r, k in zip(records, keep) if k]


@FILTERS.register("turn_bounds")
def turn_bounds(
    records: Records, *, min_turns: int = 1, max_turns: int | None = None, report: dict | None = None
) -> Records:
    """Keep records with min_turns..max_turns assistant turns."""
    kept = [r for r in records if min_turns <= r.n_turns and (max_turns is None or r.n_turns <= max_turns)]
    if report is not None:
        report["too_few"] = sum(r.n_turns < min_turns for r in records)
        report["too_many"] = sum(max_turns is not None and r.n_turns > max_turns for r in records)
    return kept


# ---------------------------------------------------------------------------------------------------
# Tool calls, loops


def tool_call_problem(record: TrajectoryRecord, tools: list[dict] | None = None) -> str | None:
    """The first malformed tool call of the record's assistant turns (parsed as the envs parse them, checked
    against `tools` or the record's own), or None. Without any tool schemas only the calls' JSON is checked."""
    tools = tools if tools is not None else record.tools
    by_name = {t.get("function", t)["name"]: t for t in tools or []}
    for turn, message in enumerate(m for m in record.messages if m["role"] == "assistant"):
        for call in message.get("tool_calls") or []:
            function = call.get("function", call)
            arguments = function.get("arguments", {})
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    return f"turn {turn + 1}: arguments of {function.get('name')!r} are not valid JSON"
            if by_name:
                if function.get("name") not in by_name:
                    return f"turn {turn + 1}: unknown tool {function.get('name')!r}"
                problem = validate_arguments(by_name[function["name"]], arguments)
                if problem:
                    return f"turn {turn + 1}: {problem}"
        content = message.get("content") or ""
        if by_name:
            parsed = parse_action(content, list(by_name.values()), max_calls=None)
            if parsed.error:
                return f"turn {turn + 1}: {parsed.error}"
        elif "<tool_call>" in content or "</tool_call>" in content:
            problem = _json_calls_problem(content)
            if problem:
                return f"turn {turn + 1}: {problem}"
    return None


def _json_calls_problem(text: str) -> str | None:
    """Without schemas: every <tool_call> block holds a JSON object with a string name."""
    pos = 0
    while (start := text.find("<tool_call>", pos)) >= 0:
        end = text.find("</tool_call>", start)
        if end < 0:
            return "unterminated <tool_call>"
        try:
            payload = json.loads(text[start + len("<tool_call>") : end])
        except (json.JSONDecodeError, RecursionError):
            return "bad JSON in a tool call"
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            return 'a tool call must be a JSON object {"name": ..., "arguments": {...}}'
        pos = end + len("</tool_call>")
    if text.count("</tool_call>") > text.count("<tool_call>"):
        return "</tool_call> without a matching <tool_call>"
    return None


@FILTERS.register("valid_tool_calls")
def valid_tool_calls(
    records: Records, *, tools: list[dict] | None = None, report: dict | None = None
) -> Records:
    """Keep records whose every tool call parses and validates (see `tool_call_problem`)."""
    kept, problems = [], Counter()
    for r in records:
        problem = tool_call_problem(r, tools)
        if problem is None:
            kept.append(r)
        else:
            problems[problem.split(": ", 1)[1][:80]] += 1
    if report is not None:
        report["problems"] = dict(problems.most_common(10))
    return kept


def repeated_ngram_fraction(text: str, n: int = 4) -> float:
    """The share of a text's word n-grams that repeat an earlier one (0: none; near 1: a loop)."""
    tokens = words(text)
    if len(tokens) < n + 1:
        return 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def loop_problem(
    record: TrajectoryRecord,
    max_repeats: int = 3,
    max_cycle: int = 3,
    ngram: int = 4,
    max_repeated_fraction: float = 0.5,
    min_words: int = 40,
) -> str | None:
    """Why a record looks like a loop, or None: the same action `max_repeats` times in a row (the agent's
    RepeatDetector), a cycle of 2..max_cycle actions repeated `max_repeats` times, or one assistant turn of
    >= `min_words` words whose word n-grams mostly repeat (degenerate text)."""
    actions = [
        " ".join(((m.get("content") or "") + _calls_text(m)).split())
        for m in record.messages
        if m["role"] == "assistant"
    ]
    detector = RepeatDetector(max_repeats)
    for action in actions:
        if detector.observe(action) >= max_repeats:
            return f"the same action {max_repeats} times in a row"
    for period in range(2, max_cycle + 1):
        span = period * max_repeats
        for start in range(0, len(actions) - span + 1):
            window = actions[start : start + span]
            if len(set(window[:period])) > 1 and all(window[i] == window[i % period] for i in range(span)):
                return f"a cycle of {period} actions repeated {max_repeats} times"
    for action in actions:
        if len(words(action)) >= min_words and repeated_ngram_fraction(action, ngram) > max_repeated_fraction:
            return f"a turn whose {ngram}-grams mostly repeat"
    return None


@FILTERS.register("no_loops")
def no_loops(records: Records, *, report: dict | None = None, **options: Any) -> Records:
    """Drop records with repeated actions, action cycles or degenerate repeated text (`loop_problem`)."""
    kept, reasons = [], Counter()
    for r in records:
        problem = loop_problem(r, **options)
        if problem is None:
            kept.append(r)
        else:
            reasons[problem] += 1
    if report is not None:
        report["reasons"] = dict(reasons)
    return kept


# ---------------------------------------------------------------------------------------------------
# Duplicates


@FILTERS.register("dedup_exact")
def dedup_exact(
    records: Records, *, roles: Sequence[str] | None = None, report: dict | None = None
) -> Records:
    """Keep the first of records whose text (case and whitespace normalized; `roles` to compare only some
    messages, e.g. ["user"] for one record per prompt) is identical."""
    seen, kept = set(), []
    for r in records:
        digest = hashlib.sha1(_normalized(record_text(r, roles)).encode()).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(r)
    if report is not None:
        report["distinct"] = len(kept)
    return kept


_PRIME = np.uint64(4294967291)  # the largest prime below 2**32: (a * x + b) % p stays exact in uint64


def shingles(text: str, size: int = 5) -> np.ndarray:
    """The distinct character `size`-grams of a normalized text, hashed to uint64 values below 2**32."""
    text = _normalized(text)
    grams = {text[i : i + size] for i in range(max(1, len(text) - size + 1))}
    return (
        np.array(
            sorted(
                int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little") for g in grams
            ),
            np.uint64,
        )
        % _PRIME
    )


def minhash_signatures(shingle_sets: Sequence[np.ndarray], num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """[N, num_perm] MinHash signatures: for each of `num_perm` hash functions h(x) = (a x + b) mod p, the
    minimum over a set's shingles; two sets' signatures agree at a position with probability = Jaccard."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, int(_PRIME), num_perm, dtype=np.uint64)[:, None]
    b = rng.integers(0, int(_PRIME), num_perm, dtype=np.uint64)[:, None]
    out = np.empty((len(shingle_sets), num_perm), np.uint64)
    for i, values in enumerate(shingle_sets):
        signature = np.full(num_perm, _PRIME, np.uint64)
        for chunk in range(0, len(values), 4096):  # bounded memory for long trajectories
            block = values[None, chunk : chunk + 4096]
            signature = np.minimum(signature, ((a * block + b) % _PRIME).min(axis=1))
        out[i] = signature
    return out


def lsh_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands * rows == num_perm whose S-curve threshold (1/bands)**(1/rows) is the
    closest at or below `threshold` (a pair that similar becomes a candidate with high probability)."""
    options = [(b, num_perm // b) for b in range(1, num_perm + 1) if num_perm % b == 0]
    below = [(b, r) for b, r in options if (1 / b) ** (1 / r) <= threshold] or options[-1:]
    return max(below, key=lambda br: (1 / br[0]) ** (1 / br[1]))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


@FILTERS.register("dedup_near")
def dedup_near(
    records: Records,
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 5,
    roles: Sequence[str] | None = None,
    seed: int = 0,
    report: dict | None = None,
) -> Records:
    """Drop a record whose character-shingle Jaccard similarity to an earlier kept one is >= `threshold`.
    Candidates come from MinHash LSH (banded signatures); each candidate pair is then decided by its exact
    Jaccard, so a kept pair is never a false positive."""
    sets = [shingles(record_text(r, roles), shingle_size) for r in records]
    signatures = minhash_signatures(sets, num_perm, seed)
    bands, rows = lsh_bands(num_perm, threshold)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    kept_index: list[int] = []
    removed_pairs = []
    for i, signature in enumerate(signatures):
        keys = [signature[band * rows : (band + 1) * rows].tobytes() for band in range(bands)]
        candidates = {j for band, key in enumerate(keys) for j in buckets[band].get(key, ())}
        duplicate_of = next((j for j in sorted(candidates) if jaccard(sets[i], sets[j]) >= threshold), None)
        if duplicate_of is not None:
            removed_pairs.append((i, duplicate_of))
            continue
        kept_index.append(i)
        for band, key in enumerate(keys):
            buckets[band].setdefault(key, []).append(i)
    if report is not None:
        report.update(
            bands=bands, rows=rows, examples=[{"removed": i, "kept": j} for i, j in removed_pairs[:5]]
        )
    return [records[i] for i in kept_index]


# ---------------------------------------------------------------------------------------------------
# Decontamination


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def contamination(
    records: Records, eval_texts: Sequence[str], n: int = 13, roles: Sequence[str] | None = None
) -> list[tuple[int, int, str]]:
    """(record index, eval task index, the shared text) for each record that shares a word n-gram with an
    eval task (an eval text shorter than n words counts when it appears whole)."""
    index: dict[tuple[str, ...], int] = {}
    short: dict[int, dict[tuple[str, ...], int]] = {}
    for k, text in enumerate(eval_texts):
        tokens = words(text)
        if not tokens:
            continue
        if len(tokens) < n:
            short.setdefault(len(tokens), {}).setdefault(tuple(tokens), k)
        for gram in _ngrams(tokens, n):
            index.setdefault(gram, k)
    hits = []
    for i, record in enumerate(records):
        tokens = words(record_text(record, roles))
        found = next(((g, index[g]) for g in _ngrams(tokens, n) if g in index), None)
        if found is None:
            for length, grams in short.items():
                found = next(((g, grams[g]) for g in _ngrams(tokens, length) if g in grams), None)
                if found:
                    break
        if found is not None:
            hits.append((i, found[1], " ".join(found[0])))
    return hits


@FILTERS.register("decontaminate")
def decontaminate(
    records: Records,
    *,
    eval_texts: Sequence[str],
    n: int = 13,
    roles: Sequence[str] | None = None,
    report: dict | None = None,
) -> Records:
    """Drop records that share a word n-gram with any eval task (`contamination`); the report says how
    many eval tasks were hit and shows a few overlaps."""
    hits = contamination(records, eval_texts, n, roles)
    removed = {i for i, _, _ in hits}
    if report is not None:
        report.update(
            n=n,
            eval_tasks=len(eval_texts),
            eval_tasks_hit=len({k for _, k, _ in hits}),
            examples=[{"record": i, "eval_task": k, "overlap": text[:120]} for i, k, text in hits[:5]],
        )
    return [r for i, r in enumerate(records) if i not in removed]


def env_eval_texts(env_name: str, seeds: Iterable[int], env_kwargs: dict | None = None) -> list[str]:
    """The first observations (task statements) of an env's held-out tasks: what `decontaminate` compares."""
    from alejax.envs.base import make

    env = make(env_name, **(env_kwargs or {}))
    return [env.reset(seed)[0] for seed in seeds]


# ---------------------------------------------------------------------------------------------------
# Mixing


def group_key(by: str | Callable[[TrajectoryRecord], str]) -> Callable[[TrajectoryRecord], str]:
    """A record's group: its env ("env"), its policy ("policy"), an `info` field (e.g. "difficulty"), a
    "+"-joined combination ("env+difficulty" -> "arithmetic/easy+hard"), or any function."""
    if callable(by):
        return by
    fields = by.split("+")

    def key(record: TrajectoryRecord) -> str:
        values = []
        for field in fields:
            value = getattr(record, field) if field in ("env", "policy") else record.info.get(field)
            values.append(str(value))
        return "+".join(values)

    return key


@FILTERS.register("mix")
def mix(
    records: Records,
    *,
    ratios: dict[str, float],
    by: str | Callable = "env",
    total: int | None = None,
    seed: int = 0,
    report: dict | None = None,
) -> Records:
    """A sample whose groups (`group_key(by)`) are in the given ratios (normalized; groups not named go),
    without replacement: `total` records, or as many as the scarcest group allows. Which records of a group
    are kept is a seeded draw; the output keeps the input order."""
    if not ratios or any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
        raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios}")
    key = group_key(by)
    share = {g: v / sum(ratios.values()) for g, v in ratios.items() if v > 0}
    members: dict[str, list[int]] = {g: [] for g in share}
    for i, r in enumerate(records):
        g = key(r)
        if g in members:
            members[g].append(i)
    empty = [g for g, idx in members.items() if not idx]
    if empty:
        present = sorted({key(r) for r in records})
        raise ValueError(f"no records in group(s) {empty} (by={by!r}); groups present: {present}")
    feasible = int(min(len(idx) / share[g] for g, idx in members.items()) + 1e-9)
    if total is not None and total > feasible:
        scarce = min(members, key=lambda g: len(members[g]) / share[g])
        raise ValueError(
            f"cannot draw {total} records in ratios {ratios}: group {scarce!r} has {len(members[scarce])}, "
            f"enough for {feasible}"
        )
    target = total if total is not None else feasible
    counts = apportion(share, target)
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for g, idx in members.items():
        chosen.update(rng.choice(idx, counts[g], replace=False).tolist())
    if report is not None:
        report.update(
            available={g: len(idx) for g, idx in members.items()},
            drawn=counts,
            other_groups_dropped=len(records) - sum(len(idx) for idx in members.values()),
        )
    return [r for i, r in enumerate(records) if i in chosen]


def apportion(share: dict[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to `total` in proportion to `share` (largest remainders)."""
    exact = {g: s * total for g, s in share.items()}
    counts = {g: int(v) for g, v in exact.items()}
    for g in sorted(exact, key=lambda g: exact[g] - counts[g], reverse=True)[: total - sum(counts.values())]:
        counts[g] += 1
    return counts


def composition(records: Records, by: str | Callable = "env") -> dict[str, dict[str, float]]:
    """Per group: how many records and their success rate (the data card's per-env composition)."""
    key = group_key(by)
    groups: dict[str, list[TrajectoryRecord]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return {
        g: {
            "count": len(rs),
            "share": len(rs) / len(records),
            "success_rate": float(np.mean([r.is_success for r in rs])),
        }
        for g, rs in sorted(groups.items())
    }


# ---------------------------------------------------------------------------------------------------
# A pipeline of filters


def apply_filters(
    records: Records, steps: Sequence[tuple[str, dict] | dict | str | Callable]
) -> tuple[Records, dict]:
    """Run filters in order. A step is a name, (name, params), {"name": ..., **params}, or a function
    `records -> records`. Returns the kept records and a report: input / output counts and, per filter, its
    params, how many it saw, removed and kept, and its own details."""
    report: dict[str, Any] = {"input": len(records), "filters": []}
    for step in steps:
        if callable(step):
            name, params, fn = getattr(step, "__name__", "custom"), {}, step
        else:
            if isinstance(step, str):
                name, params = step, {}
            elif isinstance(step, dict):
                params = dict(step)
                name = params.pop("name")
            else:
                name, params = step
            fn = FILTERS[name]
        details: dict[str, Any] = {}
        before = len(records)
        records = fn(records, report=details, **params) if not callable(step) else fn(records)
        report["filters"].append(
            {
                "name": name,
                "params": {k: _describe(v) for k, v in params.items()},
                "before": before,
                "removed": before - len(records),
                "after": len(records),
                "details": details,
            }
        )
    report["output"] = len(records)
    return records, report


def _describe(value: Any) -> Any:
    """A parameter as it goes in a report: long lists (eval texts) by their length, functions by name."""
    if callable(value):
        return getattr(value, "__name__", "function")
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"<{len(value)} items>"
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:80]


def filter_table(report: dict) -> str:
    """The report as a markdown table (for a data card)."""
    lines = [
        f"{report['input']} records in, {report['output']} out.",
        "",
        "| filter | params | before | removed | after |",
        "|---|---|---:|---:|---:|",
    ]
    for f in report["filters"]:
        params = ", ".join(f"{k}={v}" for k, v in f["params"].items())
        lines.append(f"| {f['name']} | {params} | {f['before']} | {f['removed']} | {f['after']} |")
    return "\n".join(lines)
