"""The trajectory record: one played (or collected) episode as data, the unit that datasets, filters, ATIF export
and a synthesis job share.

A record holds the chat (`messages`, in the common chat format: system / user / assistant / tool roles,
optional `tool_calls` and per-message `weight`), the tool schemas it was played with, where it came from
(env id and kwargs, task seed, policy id), its rewards, and, when a sampler produced it, its token layout
exactly as the trainer sees it (`alejax.rollout.trajectory`: tokens, loss_mask, chunk_id, behaviour_logp,
prefix_chunk_id, il_weight). One record is one JSON object, so a dataset of them is JSONL, sharded or not:

    write_records("out/trajectories-00000.jsonl", records)
    records = read_records("out/")            # a file, a directory of *.jsonl, or a glob

Only `messages` is required when reading: a plain chat dataset line is a record with no provenance, and any
top-level key a record does not have is kept in its `info`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Iterable, Iterator, Sequence

TOKEN_FIELDS = ("tokens", "loss_mask", "chunk_id", "behaviour_logp", "prefix_chunk_id", "il_weight")


class RecordError(ValueError):
    """A malformed record; the message names where (file and line, or row) and which field."""


@dataclasses.dataclass
class TrajectoryRecord:
    messages: list[dict]
    tools: list[dict] | None = None
    env: str = ""  # env registry name (or the dataset a chat came from)
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    seed: int | None = None  # the task seed the env was reset with
    policy: str = ""  # which policy played it (a checkpoint path, "scripted", a model name, ...)
    id: str = ""  # a stable id (e.g. env:seed:policy:sample), for resuming and de-duplication
    reward: float | None = None  # the episode's return; None: not graded
    success: bool | None = None
    turn_rewards: list[float] = dataclasses.field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    # The token layout (empty when the record was not sampled by alejax): see alejax.rollout.trajectory.
    tokens: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[int] = dataclasses.field(default_factory=list)
    chunk_id: list[int] = dataclasses.field(default_factory=list)
    behaviour_logp: list[float] = dataclasses.field(default_factory=list)
    prefix_chunk_id: list[int] = dataclasses.field(default_factory=list)
    il_weight: list[float] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)  # anything else JSON-serializable (difficulty, task)

    @property
    def n_turns(self) -> int:
        return sum(m.get("role") == "assistant" for m in self.messages)

    @property
    def is_success(self) -> bool:
        """`success` when graded with one, else a positive reward."""
        if self.success is not None:
            return bool(self.success)
        return self.reward is not None and self.reward > 0


_FIELDS = {f.name: f for f in dataclasses.fields(TrajectoryRecord)}


def record_to_json(record: TrajectoryRecord) -> dict:
    """A JSON object of the record; empty token lists and unset optional fields are left out."""
    out: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(record, name)
        if name != "messages" and value in (None, "", [], {}):
            continue
        out[name] = value
    return out


def _check_type(where: str, name: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in kinds:
        raise RecordError(f"{where}: field {name!r} must be {what}, got {json.dumps(value)}")
    if not isinstance(value, kinds):
        shown = json.dumps(value)[:80] if _jsonable(value) else type(value).__name__
        raise RecordError(f"{where}: field {name!r} must be {what}, got {shown}")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


_SCALARS = {
    "env": ((str,), "a string"),
    "policy": ((str,), "a string"),
    "id": ((str,), "a string"),
    "seed": ((int,), "an integer"),
    "reward": ((int, float), "a number"),
    "success": ((bool,), "true or false"),
    "terminated": ((bool,), "true or false"),
    "truncated": ((bool,), "true or false"),
    "env_kwargs": ((dict,), "an object"),
    "info": ((dict,), "an object"),
}


def record_from_json(data: Any, where: str = "record") -> TrajectoryRecord:
    """The record of a JSON object (`where` names it in errors, e.g. "data.jsonl line 3"). Message contents
    are not validated here (`alejax.data.datasets.validate_messages` does that); types and token-array
    lengths are. Keys that are not record fields go to `info`."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(data).__name__}")
    if "messages" not in data:
        raise RecordError(f"{where}: field 'messages' is missing")
    messages = data["messages"]
    if not isinstance(messages, list):
        raise RecordError(f"{where}: field 'messages' must be a list of messages")
    values: dict[str, Any] = {"messages": messages}
    extra = {k: v for k, v in data.items() if k not in _FIELDS}
    for name, value in data.items():
        if name not in _FIELDS or name == "messages" or value is None:
            continue
        if name in _SCALARS:
            kinds, what = _SCALARS[name]
            _check_type(where, name, value, kinds, what)
            values[name] = float(value) if name == "reward" else value
        elif name == "tools":
            if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                raise RecordError(f"{where}: field 'tools' must be a list of tool schemas (objects)")
            values[name] = value
        else:  # the per-token and per-turn number lists
            integer = name in ("tokens", "loss_mask", "chunk_id", "prefix_chunk_id")
            if not isinstance(value, list):
                raise RecordError(f"{where}: field {name!r} must be a list of numbers")
            for i, x in enumerate(value):
                ok = isinstance(x, int) if integer else isinstance(x, (int, float))
                if not ok or isinstance(x, bool):
                    kind = "an integer" if integer else "a number"
                    raise RecordError(f"{where}: field {name!r}[{i}] must be {kind}, got {json.dumps(x)}")
            values[name] = value if integer else [float(x) for x in value]
    record = TrajectoryRecord(**values)
    if extra:
        record.info = {**extra, **record.info}
    check_token_layout(record, where)
    return record


def check_token_layout(record: TrajectoryRecord, where: str = "record") -> None:
    """Every present token array has one entry per token; loss_mask, chunk_id and behaviour_logp come with
    tokens (prefix_chunk_id and il_weight may be empty)."""
    n = len(record.tokens)
    for name in TOKEN_FIELDS[1:]:
        values = getattr(record, name)
        required = name in ("loss_mask", "chunk_id", "behaviour_logp")
        if (values or (required and n)) and len(values) != n:
            raise RecordError(f"{where}: field {name!r} has {len(values)} entries for {n} tokens")


def record_from_trajectory(
    trajectory,
    *,
    env: str,
    policy: str,
    tools: list[dict] | None = None,
    env_kwargs: dict | None = None,
    id: str = "",
    info: dict | None = None,
) -> TrajectoryRecord:
    """A rollout `Trajectory` (alejax.rollout.trajectory) as a record: chat, token layout, μ, rewards."""
    traj_info = {k: v for k, v in trajectory.info.items() if _jsonable(v)}
    success = traj_info.pop("success", None)
    return TrajectoryRecord(
        messages=[dict(m) for m in trajectory.messages],
        tools=list(tools) if tools else None,
        env=env,
        env_kwargs=dict(env_kwargs or {}),
        seed=int(trajectory.task_seed),
        policy=policy,
        id=id,
        reward=float(trajectory.reward),
        success=bool(success) if success is not None else trajectory.reward > 0,
        turn_rewards=[float(r) for r in trajectory.turn_rewards],
        terminated=bool(trajectory.terminated),
        truncated=bool(trajectory.truncated),
        tokens=[int(t) for t in trajectory.tokens],
        loss_mask=[int(m) for m in trajectory.loss_mask],
        chunk_id=[int(c) for c in trajectory.chunk_id],
        behaviour_logp=[float(x) for x in trajectory.behaviour_logp],
        prefix_chunk_id=[int(c) for c in trajectory.prefix_chunk_id] if trajectory.prefix_turns else [],
        il_weight=[float(w) for w in trajectory.il_weight],
        info={**traj_info, **(info or {})},
    )


def record_from_episode(
    episode, *, env: str, seed: int, policy: str, tools: list[dict] | None = None, **fields: Any
) -> TrajectoryRecord:
    """An `agent.loop.Episode` (a scripted or text policy's play, no token layout) as a record."""
    info = {k: v for k, v in episode.info.items() if _jsonable(v)}
    success = info.pop("success", None)
    return TrajectoryRecord(
        messages=[dict(m) for m in episode.messages],
        tools=list(tools) if tools else None,
        env=env,
        seed=seed,
        policy=policy,
        reward=float(episode.reward),
        success=bool(success) if success is not None else episode.reward > 0,
        terminated=episode.terminated,
        truncated=episode.truncated,
        info=info,
        **fields,
    )


def write_records(path: str, records: Iterable[TrajectoryRecord], append: bool = False) -> int:
    """Write records as JSONL (one per line, UTF-8); returns how many were written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record_to_json(record), ensure_ascii=False) + "\n")
            n += 1
    return n


def jsonl_paths(path: str, suffixes: Sequence[str] = (".jsonl",)) -> list[str]:
    """The files `path` names: itself, the sorted *.jsonl files of a directory, or a glob's matches."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, name) for name in os.listdir(path) if name.endswith(tuple(suffixes))
        )
    elif os.path.exists(path):
        files = [path]
    else:
        files = sorted(glob.glob(path))
    if not files:
        raise FileNotFoundError(f"no data file at {path!r} (a file, a directory of *.jsonl, or a glob)")
    return files


def read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line; a bad line raises a RecordError naming it."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(
                    f"{path} line {number}: not valid JSON: {e.msg} (column {e.colno})"
                ) from None


def read_records(path: str) -> list[TrajectoryRecord]:
    """Records from JSONL files (see `jsonl_paths`); errors name the file, line and field."""
    return [
        record_from_json(data, f"{file} line {number}")
        for file in jsonl_paths(path)
        for number, data in read_jsonl(file)
    ]
