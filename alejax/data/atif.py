"""Trajectories to and from ATIF, Harbor's Agent Trajectory Interchange Format (RFC 0001, written as v1.6):
a root {schema_version, session_id, agent, steps, final_metrics, extra} whose steps are system / user / agent
turns; an agent step carries the model's message, its structured `tool_calls`, the `observation` the
environment answered with, and `metrics` with the turn's `prompt_token_ids`, `completion_token_ids` and
per-token `logprobs` (the sampler's behaviour log-probs, μ).

    write_atif("run/trajectories.jsonl", records)     # .jsonl: one trajectory per line; .json: exactly one
    records = read_atif("run/trajectories.jsonl")     # also a .json file (one or a list) or a directory

What ATIF has no field for (env id and seed, policy id, rewards, alejax's tool-call text, replayed turns,
per-message loss weights) travels in `extra.alejax` objects, so an alejax record exported and read back is
equal to the original, token layout included. Trajectories written by other agents read too: their steps
become chat messages (tool calls structured, observations as tool messages) and their token ids become the
token layout when each step's prompt extends the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

import numpy as np

import alejax
from alejax.data.records import (
    TOKEN_FIELDS,
    RecordError,
    TrajectoryRecord,
    check_token_layout,
    jsonl_paths,
    read_jsonl,
    record_to_json,
)
from alejax.envs.toolcall import parse_action

ATIF_VERSION = "ATIF-v1.6"
READABLE_VERSIONS = tuple(f"ATIF-v1.{minor}" for minor in range(8))
_PROVENANCE = ("env", "env_kwargs", "seed", "policy", "id", "reward", "success", "turn_rewards")
_PROVENANCE += ("terminated", "truncated", "info")


# ---------------------------------------------------------------------------------------------------
# Export


def _turn_spans(record: TrajectoryRecord) -> dict[int, tuple[int, int, bool]]:
    """Assistant turn k (1-based) -> (start, end, replayed) of its tokens: chunk k if sampled, prefix chunk k
    if replayed (alejax.rollout.trajectory's layout). A turn's tokens must be contiguous."""
    spans: dict[int, tuple[int, int, bool]] = {}
    for ids, replayed in ((record.chunk_id, False), (record.prefix_chunk_id, True)):
        ids = np.asarray(ids, np.int64)
        for k in np.unique(ids[ids > 0]).tolist():
            where = np.flatnonzero(ids == k)
            if where[-1] - where[0] + 1 != len(where):
                raise RecordError(f"record {record.id!r}: the tokens of turn {k} are not contiguous")
            spans[int(k)] = (int(where[0]), int(where[-1]) + 1, replayed)
    return spans


def _embedded_calls(text: str, tools: list[dict] | None) -> list[tuple[str, dict]]:
    """The tool calls written in an assistant turn's text (<tool_call> JSON, or compact `NAME ARG` when the
    tools are known); malformed ones are left out (the text itself stays the message)."""
    if tools:
        parsed = parse_action(text, tools, max_calls=None)
        if parsed.error is None:
            return [(c.name, dict(c.arguments)) for c in parsed.calls]
    calls, pos = [], 0
    while (start := text.find("<tool_call>", pos)) >= 0:
        end = text.find("</tool_call>", start)
        if end < 0:
            break
        pos = end + len("</tool_call>")
        try:
            payload = json.loads(text[start + len("<tool_call>") : end])
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(payload, dict) and isinstance(payload.get("name"), str):
            arguments = payload.get("arguments", {})
            calls.append((payload["name"], arguments if isinstance(arguments, dict) else {}))
    return calls


def _others(message: dict, known: set[str]) -> dict:
    return {k: v for k, v in message.items() if k not in known}


def _agent_step(step_id: int, message: dict, observations: list[dict], tools) -> dict:
    step: dict[str, Any] = {"step_id": step_id, "source": "agent", "message": message.get("content") or ""}
    mine: dict[str, Any] = {}  # what ATIF has no field for
    if "content" not in message:
        mine["no_content"] = True
    elif message["content"] is None:
        mine["content"] = None
    if "reasoning_content" in message:
        step["reasoning_content"] = message["reasoning_content"]
    fields = _others(message, {"role", "content", "reasoning_content", "tool_calls"})
    if fields:
        mine["message_fields"] = fields
    calls = []
    if message.get("tool_calls"):
        ids_missing, text_arguments, flat = [], {}, []
        for j, call in enumerate(message["tool_calls"]):
            function = call.get("function", call)
            arguments = function.get("arguments", {})
            if isinstance(arguments, str):
                text_arguments[str(j)] = arguments
                arguments = json.loads(arguments)
            if "id" not in call:
                ids_missing.append(j)
            if "function" not in call:
                flat.append(j)
            call_id = call.get("id", f"call_{step_id}_{j}")
            calls.append({"tool_call_id": call_id, "function_name": function["name"], "arguments": arguments})
        extra_calls = {
            k: v
            for k, v in (("ids_added", ids_missing), ("arguments_text", text_arguments), ("flat", flat))
            if v
        }
        if any(set(c) - {"id", "type", "function", "name", "arguments"} for c in message["tool_calls"]):
            extra_calls["raw"] = message["tool_calls"]  # a shape of its own: keep it as it was
        if extra_calls:
            mine["tool_calls"] = extra_calls
    elif message.get("content"):
        embedded = _embedded_calls(message["content"], tools)
        calls = [
            {"tool_call_id": f"call_{step_id}_{j}", "function_name": name, "arguments": arguments}
            for j, (name, arguments) in enumerate(embedded)
        ]
        if calls:
            mine["tool_calls_in_message"] = True  # the text is what the model wrote; calls are a parse of it
    if calls:
        step["tool_calls"] = calls
    if observations:
        results, observation_fields, paired = [], [], False
        for j, obs in enumerate(observations):
            result: dict[str, Any] = {"content": obs.get("content", "")}
            if "tool_call_id" in obs:
                result["source_call_id"] = obs["tool_call_id"]
            elif len(observations) == len(calls):  # one answer per call, in order
                result["source_call_id"] = calls[j]["tool_call_id"]
                paired = True
            results.append(result)
            observation_fields.append(_others(obs, {"role", "content", "tool_call_id"}))
        step["observation"] = {"results": results}
        if paired:
            mine["paired_by_order"] = True
        if any(observation_fields):
            mine["observation_fields"] = observation_fields
        if any("content" not in obs for obs in observations):
            mine["observation_no_content"] = [j for j, obs in enumerate(observations) if "content" not in obs]
    if mine:
        step["extra"] = {"alejax": mine}
    return step


def _session_id(record: TrajectoryRecord) -> str:
    if record.id:
        return record.id
    digest = hashlib.sha1(json.dumps(record_to_json(record), sort_keys=True).encode()).hexdigest()[:16]
    return f"alejax-{digest}"


def record_to_atif(
    record: TrajectoryRecord, *, agent_name: str = "alejax", agent_version: str = alejax.__version__
) -> dict:
    """The record as an ATIF trajectory (a JSON-ready dict)."""
    messages = record.messages
    spans = _turn_spans(record) if record.tokens else {}
    steps: list[dict] = []
    turn = 0
    i = 0
    while i < len(messages):
        message = messages[i]
        role = message.get("role")
        step_id = len(steps) + 1
        if role == "assistant":
            j = i + 1
            while j < len(messages) and messages[j].get("role") == "tool":
                j += 1
            step = _agent_step(step_id, message, messages[i + 1 : j], record.tools)
            turn += 1
            if turn in spans:
                start, end, replayed = spans[turn]
                metrics: dict[str, Any] = {
                    "prompt_tokens": start,
                    "completion_tokens": end - start,
                    "prompt_token_ids": record.tokens[:start],
                    "completion_token_ids": record.tokens[start:end],
                }
                if replayed:
                    metrics["extra"] = {"alejax": {"replayed": True}}
                else:
                    metrics["logprobs"] = record.behaviour_logp[start:end]
                step["metrics"] = metrics
            steps.append(step)
            i = j
        elif role == "tool":  # observations no agent turn owns (a chat that opens with one)
            j = i
            while j < len(messages) and messages[j].get("role") == "tool":
                j += 1
            step = _agent_step(step_id, {"content": ""}, messages[i:j], None)
            step["source"] = "system"  # ATIF (v1.2+) lets a system step carry an observation
            step.setdefault("extra", {}).setdefault("alejax", {})["observations_only"] = True
            steps.append(step)
            i = j
        elif role in ("system", "user"):
            step = {"step_id": step_id, "source": role, "message": message.get("content", "")}
            fields = _others(message, {"role", "content"})
            if fields or "content" not in message:
                step["extra"] = {"alejax": {"message_fields": fields, "no_content": "content" not in message}}
            steps.append(step)
            i += 1
        else:
            raise RecordError(f"record {record.id!r}: message {i} has role {role!r}; ATIF has no step for it")

    mine: dict[str, Any] = {k: getattr(record, k) for k in _PROVENANCE}
    if record.tokens:
        last_end = max((end for _, end, _ in spans.values()), default=0)
        mine["trailing_token_ids"] = record.tokens[last_end:]
        mine["prefix_chunk_id"] = bool(record.prefix_chunk_id)
        if record.il_weight:
            mine["il_weight"] = record.il_weight
    doc: dict[str, Any] = {
        "schema_version": ATIF_VERSION,
        "session_id": _session_id(record),
        "agent": {"name": agent_name, "version": agent_version},
        "steps": steps,
        "final_metrics": {"total_steps": len(steps)},
        "extra": {"alejax": mine},
    }
    if record.policy:
        doc["agent"]["model_name"] = record.policy
    if record.tools:
        doc["agent"]["tool_definitions"] = record.tools
    with_metrics = [s["metrics"] for s in steps if "metrics" in s]
    if with_metrics:
        doc["final_metrics"]["total_prompt_tokens"] = sum(m["prompt_tokens"] for m in with_metrics)
        doc["final_metrics"]["total_completion_tokens"] = sum(m["completion_tokens"] for m in with_metrics)
    if record.tokens:
        # ATIF's fields cannot say everything a layout can (e.g. a sampled token outside the loss): verify,
        # and keep the arrays themselves when the steps do not rebuild them exactly.
        layout = {k: getattr(record, k) for k in TOKEN_FIELDS}
        if _layout_from_steps(doc, "export") != layout:
            mine["token_layout"] = layout
    return doc


# ---------------------------------------------------------------------------------------------------
# Import


def _text(value: Any, where: str) -> str:
    """A step message: a string, or (v1.6) a list of content parts of which only text is supported."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RecordError(f"{where}[{j}]: a {kind!r} content part; only text parts are supported")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise RecordError(f"{where}: must be a string or a list of content parts")


def _step_extra(step: dict) -> dict:
    extra = step.get("extra")
    return (
        extra.get("alejax", {}) if isinstance(extra, dict) and isinstance(extra.get("alejax"), dict) else {}
    )


def _assistant_message(step: dict, mine: dict, where: str) -> dict:
    message: dict[str, Any] = {"role": "assistant"}
    if "content" in mine:
        message["content"] = mine["content"]
    elif not mine.get("no_content"):
        message["content"] = _text(step.get("message"), f"{where}.message")
    if "reasoning_content" in step:
        message["reasoning_content"] = step["reasoning_content"]
    calls = step.get("tool_calls") or []
    if not isinstance(calls, list):
        raise RecordError(f"{where}.tool_calls: must be a list")
    call_extra = mine.get("tool_calls", {})
    if calls and not mine.get("tool_calls_in_message"):
        if "raw" in call_extra:
            message["tool_calls"] = call_extra["raw"]
        else:
            structured = []
            for j, call in enumerate(calls):
                if not isinstance(call, dict) or not isinstance(call.get("function_name"), str):
                    raise RecordError(f"{where}.tool_calls[{j}].function_name: missing or not a string")
                arguments = call_extra.get("arguments_text", {}).get(str(j), call.get("arguments", {}))
                function = {"name": call["function_name"], "arguments": arguments}
                if j in call_extra.get("flat", []):
                    out: dict[str, Any] = dict(function)
                else:
                    out = {"type": "function", "function": function}
                if j not in call_extra.get("ids_added", []):
                    out = {"id": call.get("tool_call_id", f"call_{j}"), **out}
                structured.append(out)
            message["tool_calls"] = structured
    message.update(mine.get("message_fields", {}))
    return message


def _observation_messages(step: dict, mine: dict, where: str) -> list[dict]:
    observation = step.get("observation")
    if not observation:
        return []
    results = observation.get("results") if isinstance(observation, dict) else None
    if not isinstance(results, list):
        raise RecordError(f"{where}.observation.results: missing or not a list")
    fields = mine.get("observation_fields", [])
    no_content = set(mine.get("observation_no_content", []))
    messages = []
    for j, result in enumerate(results):
        if not isinstance(result, dict):
            raise RecordError(f"{where}.observation.results[{j}]: must be an object")
        message: dict[str, Any] = {"role": "tool"}
        if j not in no_content:
            content = result.get("content")
            if content is None and result.get("subagent_trajectory_ref"):
                content = json.dumps(result["subagent_trajectory_ref"], ensure_ascii=False)
            message["content"] = _text(content, f"{where}.observation.results[{j}].content")
        if "source_call_id" in result and not mine.get("paired_by_order"):
            message["tool_call_id"] = result["source_call_id"]
        if j < len(fields):
            message.update(fields[j])
        messages.append(message)
    return messages


def _layout_from_steps(doc: dict, where: str) -> dict[str, list] | None:
    """The token layout the agent steps' metrics describe, or None when they do not give a whole one
    (no token ids, or a prompt that does not extend the previous step's: e.g. a context was compressed)."""
    tokens: list[int] = []
    loss_mask: list[int] = []
    chunk_id: list[int] = []
    logp: list[float] = []
    prefix: list[int] = []
    turn = 0
    for step in doc["steps"]:
        if step.get("source") != "agent":
            continue
        turn += 1
        metrics = step.get("metrics") or {}
        completion = metrics.get("completion_token_ids")
        if completion is None:
            continue
        prompt = metrics.get("prompt_token_ids")
        if prompt is None or prompt[: len(tokens)] != tokens:
            return None
        context = prompt[len(tokens) :]
        replayed = bool((metrics.get("extra") or {}).get("alejax", {}).get("replayed"))
        logprobs = metrics.get("logprobs")
        if logprobs is not None and len(logprobs) != len(completion):
            raise RecordError(
                f"{where} step {step.get('step_id')}: {len(logprobs)} logprobs for {len(completion)} tokens"
            )
        n = len(completion)
        tokens += context + completion
        loss_mask += [0] * len(context) + [0 if replayed else 1] * n
        chunk_id += [0] * len(context) + [0 if replayed else turn] * n
        logp += [0.0] * len(context) + (
            [float(x) for x in logprobs] if logprobs and not replayed else [0.0] * n
        )
        prefix += [0] * len(context) + [turn if replayed else 0] * n
    if not tokens:
        return None
    mine = (doc.get("extra") or {}).get("alejax", {})
    trailing = mine.get("trailing_token_ids", [])
    tokens += trailing
    loss_mask += [0] * len(trailing)
    chunk_id += [0] * len(trailing)
    logp += [0.0] * len(trailing)
    prefix += [0] * len(trailing)
    layout = {"tokens": tokens, "loss_mask": loss_mask, "chunk_id": chunk_id, "behaviour_logp": logp}
    layout["prefix_chunk_id"] = prefix if mine.get("prefix_chunk_id", any(prefix)) else []
    layout["il_weight"] = [float(w) for w in mine.get("il_weight", [])]
    return layout


def atif_to_record(doc: Any, where: str = "trajectory") -> TrajectoryRecord:
    """A record from an ATIF trajectory (any v1.x); errors name the step and field."""
    if not isinstance(doc, dict):
        raise RecordError(f"{where}: an ATIF trajectory must be a JSON object")
    for key in ("schema_version", "steps"):
        if key not in doc:
            raise RecordError(f"{where}: field {key!r} is missing (is this an ATIF trajectory?)")
    if doc["schema_version"] not in READABLE_VERSIONS:
        raise RecordError(
            f"{where}: schema_version {doc['schema_version']!r}; readable: {', '.join(READABLE_VERSIONS)}"
        )
    if not isinstance(doc["steps"], list):
        raise RecordError(f"{where}: field 'steps' must be a list")
    messages: list[dict] = []
    for n, step in enumerate(doc["steps"]):
        at = f"{where} steps[{n}]"
        if not isinstance(step, dict):
            raise RecordError(f"{at}: a step must be an object")
        source = step.get("source")
        mine = _step_extra(step)
        if source in ("system", "user"):
            if mine.get("observations_only"):
                messages += _observation_messages(step, mine, at)
                continue
            message: dict[str, Any] = {"role": source}
            if not mine.get("no_content"):
                message["content"] = _text(step.get("message"), f"{at}.message")
            message.update(mine.get("message_fields", {}))
            messages.append(message)
            messages += _observation_messages(step, mine, at)  # a system step's event results
        elif source == "agent":
            messages.append(_assistant_message(step, mine, at))
            messages += _observation_messages(step, mine, at)
        else:
            raise RecordError(f"{at}.source: {source!r}; must be system, user or agent")

    root = doc.get("extra") if isinstance(doc.get("extra"), dict) else {}
    agent = doc.get("agent") if isinstance(doc.get("agent"), dict) else {}
    mine = root.get("alejax") if isinstance(root.get("alejax"), dict) else None
    if mine is not None:  # written by alejax: everything back as it was
        fields = {k: mine[k] for k in _PROVENANCE if k in mine}
        record = TrajectoryRecord(messages=messages, tools=agent.get("tool_definitions"), **fields)
    else:
        reward = ((doc.get("final_metrics") or {}).get("extra") or {}).get("reward", root.get("reward"))
        record = TrajectoryRecord(
            messages=messages,
            tools=agent.get("tool_definitions") or None,
            policy=str(agent.get("model_name") or agent.get("name") or ""),
            id=str(doc.get("session_id", "")),
            reward=float(reward)
            if isinstance(reward, (int, float)) and not isinstance(reward, bool)
            else None,
            info={"atif_agent": {k: agent[k] for k in ("name", "version") if k in agent}},
        )
    layout = (mine or {}).get("token_layout") or _layout_from_steps(doc, where)
    if layout:
        for key, values in layout.items():
            setattr(record, key, list(values))
    check_token_layout(record, where)
    return record


# ---------------------------------------------------------------------------------------------------
# Files


def write_atif(path: str, records: Iterable[TrajectoryRecord], **agent: str) -> int:
    """Write ATIF: a .jsonl path gets one trajectory per line, a .json path exactly one trajectory (Harbor's
    `trajectory.json`). Returns how many were written."""
    docs = [record_to_atif(r, **agent) for r in records]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".jsonl"):
        with open(path, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    elif path.endswith(".json"):
        if len(docs) != 1:
            raise ValueError(f"{path}: a .json ATIF file holds one trajectory, got {len(docs)}; use .jsonl")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(docs[0], f, ensure_ascii=False, indent=2)
    else:
        raise ValueError(f"{path}: an ATIF path ends in .json (one trajectory) or .jsonl (many)")
    return len(docs)


def read_atif(path: str) -> list[TrajectoryRecord]:
    """Records from ATIF: a .jsonl file (one trajectory per line), a .json file (one trajectory or a list),
    or a directory (every .json / .jsonl under it, sorted, e.g. a Harbor job's `*/agent/trajectory.json`)."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.endswith((".json", ".jsonl"))
        )
        if not files:
            raise FileNotFoundError(f"no .json or .jsonl ATIF files under {path!r}")
    else:
        files = jsonl_paths(path, (".json", ".jsonl"))
    records = []
    for file in files:
        if file.endswith(".jsonl"):
            records += [atif_to_record(doc, f"{file} line {n}") for n, doc in read_jsonl(file)]
            continue
        with open(file, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise RecordError(f"{file}: not valid JSON: {e.msg} (line {e.lineno})") from None
        docs = data if isinstance(data, list) else [data]
        records += [
            atif_to_record(doc, f"{file}" + (f" [{k}]" if isinstance(data, list) else ""))
            for k, doc in enumerate(docs)
        ]
    return records
