"""Datasets people bring: chat data in the common `messages` format, from a JSONL file, a Hugging Face dataset
saved to disk (`Dataset.save_to_disk`), or an ATIF trajectory file, read into `TrajectoryRecord`s and turned
into SFT rows with the loss on the assistant turns (each weighted by its message's `weight`).

A JSONL line (the common format; only `messages` is required):

    {"tools": [<OpenAI function schemas>],
     "messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": null,
                   "tool_calls": [{"id": "call_1", "type": "function",
                                   "function": {"name": "calc", "arguments": {"expression": "2 + 2"}}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "4"},
                  {"role": "assistant", "content": "4.", "weight": 1}]}

`weight` (assistant messages only, default 1) scales that turn's loss; 0 keeps it as context only. A
malformed record raises a `RecordError` naming the file and line (or row) and the field. Nothing is downloaded:
every reader takes a local path.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from alejax.agent.chat import TemplateMismatch
from alejax.data.packing import pack_documents
from alejax.data.records import RecordError, TrajectoryRecord, jsonl_paths, read_jsonl, record_from_json
from alejax.data.tokenizer import DEFAULT_CHAT_TEMPLATE, Tokenizer, render_chat_template, train_bpe

ROLES = ("system", "user", "assistant", "tool")
_MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "weight", "reasoning_content"},
    "tool": {"role", "content", "name", "tool_call_id"},
}


# ---------------------------------------------------------------------------------------------------
# Validation


def _text_content(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of text parts (OpenAI's multi-part form)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                raise RecordError(
                    f"{where}.content[{j}]: only text parts ({{'type': 'text', 'text': ...}}) are supported"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise RecordError(f"{where}.content: must be a string, got {type(content).__name__}")


def _tool_call(call: Any, where: str) -> dict:
    """One tool call in the nested OpenAI form ({"id", "type": "function", "function": {name, arguments}});
    the flat form {"name", "arguments"} is accepted too. Arguments stay as given: an object or its JSON text."""
    if not isinstance(call, dict):
        raise RecordError(f"{where}: a tool call must be an object")
    call = {k: v for k, v in call.items() if v is not None}
    function = call.get("function", call)
    if not isinstance(function, dict):
        raise RecordError(f"{where}.function: must be an object with name and arguments")
    function = {k: v for k, v in function.items() if v is not None}
    prefix = f"{where}.function" if "function" in call else where
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise RecordError(f"{prefix}.name: missing or not a string")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise RecordError(f"{prefix}.arguments: not valid JSON: {e.msg} (at character {e.pos})") from None
        if not isinstance(parsed, dict):
            raise RecordError(f"{prefix}.arguments: must hold a JSON object")
    elif not isinstance(arguments, dict):
        raise RecordError(f"{prefix}.arguments: must be an object (or its JSON text)")
    if "id" in call and not isinstance(call["id"], str):
        raise RecordError(f"{where}.id: must be a string")
    out = {"id": call["id"]} if "id" in call else {}
    return {**out, "type": "function", "function": {"name": name, "arguments": arguments}}


def validate_messages(messages: Any, where: str) -> list[dict]:
    """The messages checked and normalized (None-valued keys dropped, text parts joined, tool calls in the
    nested form); the first problem raises a RecordError like "data.jsonl line 3: messages[2].role: ..."."""
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"{where}: messages: must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(message, dict):
            raise RecordError(f"{at}: a message must be an object")
        message = {k: v for k, v in message.items() if v is not None}
        role = message.get("role")
        if role not in ROLES:
            shown = "missing" if role is None else json.dumps(role)
            raise RecordError(f"{at}.role: {shown}; must be one of {', '.join(ROLES)}")
        unknown = sorted(set(message) - _MESSAGE_KEYS[role])
        if unknown:
            raise RecordError(
                f"{at}.{unknown[0]}: not a field of a {role} message (fields: {', '.join(sorted(_MESSAGE_KEYS[role]))})"
            )
        clean: dict[str, Any] = {"role": role}
        if "content" in message:
            clean["content"] = _text_content(message["content"], at)
        elif not (role == "assistant" and message.get("tool_calls")):
            raise RecordError(
                f"{at}.content: missing (only an assistant message with tool_calls may omit it)"
            )
        if "tool_calls" in message:
            calls = message["tool_calls"]
            if not isinstance(calls, list):
                raise RecordError(f"{at}.tool_calls: must be a list")
            if calls:
                clean["tool_calls"] = [_tool_call(c, f"{at}.tool_calls[{j}]") for j, c in enumerate(calls)]
        if "weight" in message:
            weight = message["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise RecordError(f"{at}.weight: must be a number >= 0, got {json.dumps(weight)}")
            clean["weight"] = float(weight)
        for key in ("tool_call_id", "name", "reasoning_content"):
            if key in message:
                if not isinstance(message[key], str):
                    raise RecordError(f"{at}.{key}: must be a string")
                clean[key] = message[key]
        out.append(clean)
    return out


def validated_record(data: Any, where: str) -> TrajectoryRecord:
    record = record_from_json(data, where)
    record.messages = validate_messages(record.messages, where)
    return record


# ---------------------------------------------------------------------------------------------------
# Readers


def read_chat_jsonl(path: str) -> list[TrajectoryRecord]:
    """A JSONL chat dataset (one record per line; trajectory records written by `write_records` read too):
    a file, a directory of *.jsonl shards (read in name order) or a glob."""
    records = [
        validated_record(data, f"{file} line {n}")
        for file in jsonl_paths(path)
        for n, data in read_jsonl(file)
    ]
    if not records:
        raise RecordError(f"{path}: no records")
    return records


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
    except ImportError:
        raise ImportError(
            "reading a Hugging Face dataset saved to disk needs pyarrow (`pip install pyarrow`); "
            "or export it to JSONL (`Dataset.to_json(path)`) and use data.source='jsonl'"
        ) from None
    return pyarrow


def _arrow_table(path: str):
    pa = _import_pyarrow()
    with pa.memory_map(path) as source:
        try:
            return pa.ipc.open_stream(source).read_all()  # what save_to_disk writes
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all()


def hf_disk_files(path: str, split: str | None = None) -> list[str]:
    """The Arrow files of a dataset `save_to_disk` wrote: a Dataset directory (state.json) or a DatasetDict
    directory (dataset_dict.json; `split` picks one, default "train" or the only one)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no dataset directory at {path!r}")
    dict_file = os.path.join(path, "dataset_dict.json")
    if os.path.exists(dict_file):
        with open(dict_file, encoding="utf-8") as f:
            splits = json.load(f).get("splits", [])
        if split is None or split == "":
            split = "train" if "train" in splits else (splits[0] if len(splits) == 1 else None)
            if split is None:
                raise ValueError(f"{path} holds splits {splits}: choose one (data.split)")
        if split not in splits:
            raise ValueError(f"{path} has no split {split!r}; splits: {', '.join(splits)}")
        path = os.path.join(path, split)
    elif split:
        raise ValueError(f"{path} is a single dataset (no dataset_dict.json); it has no split {split!r}")
    state_file = os.path.join(path, "state.json")
    if os.path.exists(state_file):
        with open(state_file, encoding="utf-8") as f:
            names = [entry["filename"] for entry in json.load(f).get("_data_files", [])]
    else:
        names = sorted(n for n in os.listdir(path) if n.endswith(".arrow"))
    if not names:
        raise FileNotFoundError(f"{path} holds no .arrow files (is it a `save_to_disk` directory?)")
    return [os.path.join(path, name) for name in names]


def read_hf_disk(
    path: str, split: str | None = None, messages_field: str = "messages"
) -> list[TrajectoryRecord]:
    """A Hugging Face dataset saved with `save_to_disk`, read with pyarrow (no `datasets` needed). Each row
    needs a `messages_field` column; a `tools` column (schemas, or their JSON text) is used when present;
    the other columns go to each record's `info`."""
    records = []
    for file in hf_disk_files(path, split):
        for row_number, row in enumerate(_arrow_table(file).to_pylist()):
            where = f"{file} row {row_number}"
            if messages_field not in row:
                raise RecordError(f"{where}: no {messages_field!r} column; columns: {', '.join(row)}")
            data = {k: v for k, v in row.items() if k != messages_field and v is not None}
            data["messages"] = row[messages_field]
            if isinstance(data.get("tools"), str):
                try:
                    data["tools"] = json.loads(data["tools"]) or None
                except json.JSONDecodeError as e:
                    raise RecordError(f"{where}: field 'tools': not valid JSON: {e.msg}") from None
                if data["tools"] is None:
                    del data["tools"]
            records.append(validated_record(data, where))
    if not records:
        raise RecordError(f"{path}: no rows")
    return records


def read_atif_records(path: str) -> list[TrajectoryRecord]:
    from alejax.data.atif import read_atif

    records = read_atif(path)
    for i, record in enumerate(records):
        record.messages = validate_messages(record.messages, f"{path} trajectory {i}")
    return records


DATASET_SOURCES: dict[str, Callable[..., list[TrajectoryRecord]]] = {
    "jsonl": lambda path, split=None: read_chat_jsonl(path),
    "hf_disk": lambda path, split=None: read_hf_disk(path, split),
    "atif": lambda path, split=None: read_atif_records(path),
}


def load_records(source: str, path: str, split: str | None = None) -> list[TrajectoryRecord]:
    """Records of a dataset: `source` is jsonl, hf_disk or atif; `path` a local file or directory."""
    if source not in DATASET_SOURCES:
        raise ValueError(f"unknown data source {source!r}; known: env, {', '.join(DATASET_SOURCES)}")
    if not path:
        raise ValueError(f"data.source={source!r} needs data.path (a local file or directory)")
    return DATASET_SOURCES[source](path, split)


# ---------------------------------------------------------------------------------------------------
# Tokens


def _for_template(messages: Sequence[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages]


def chat_tokens(
    tokenizer: Tokenizer, messages: list[dict], tools: list[dict] | None = None
) -> tuple[list[int], list[float]]:
    """(tokens, loss weights) of a chat rendered with the tokenizer's chat template: each assistant turn
    (content, tool calls and its end-of-turn token) carries its message's weight (default 1), everything else
    0. Messages after the last assistant turn are dropped. For chats of plain-text turns this is exactly
    `episodes.episode_tokens` (the rollout's layout); turns are tokenized piece by piece, as rollout does."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError("a chat to train on needs at least one assistant message")
    weights_of = [m.get("weight", 1.0) for m in messages[: last + 1]]
    messages = _for_template(messages[: last + 1])
    eos_text = tokenizer.decode([tokenizer.eos_id])
    tokens: list[int] = []
    weights: list[float] = []

    def emit(text: str, weight: float) -> None:
        ids = tokenizer.encode(text)
        tokens.extend(ids)
        weights.extend([weight] * len(ids))

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages[:upto], add_generation_prompt=generation_prompt, tools=tools or None
        )

    done = ""  # the rendered text already emitted
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt, full = render(i, True), render(i + 1, False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise TemplateMismatch(
                f"the chat template is not prefix-stable at message {i}: rendering a later turn changed the "
                "text before it, so the turns cannot be given their own loss weights"
            )
        turn = full[len(prompt) :]
        end = turn.find(eos_text)
        if end < 0:
            raise TemplateMismatch(
                f"the chat template does not end assistant message {i} with the end-of-turn token {eos_text!r}"
            )
        end += len(eos_text)
        emit(prompt[len(done) :], 0.0)
        emit(turn[:end], float(weights_of[i]))
        done = prompt + turn[:end]
    emit(full[len(done) :], 0.0)  # what the template puts after the last turn (ChatML: a newline)
    return tokens, weights


def chat_rows(
    tokenizer: Tokenizer, records: Sequence[TrajectoryRecord], seq_len: int
) -> tuple[dict[str, np.ndarray], int]:
    """Packed SFT rows of the records' chats (each with its own tools) and how many had to be split."""
    encoded = [chat_tokens(tokenizer, r.messages, r.tools) for r in records]
    too_long = sum(len(tokens) > seq_len for tokens, _ in encoded)
    rows = pack_documents([t for t, _ in encoded], seq_len, loss_masks=[w for _, w in encoded])
    return rows, too_long


def records_tokenizer(records: Sequence[TrajectoryRecord], vocab_size: int) -> Tokenizer:
    """A byte-level BPE trained on the chats as the model will see them (the default chat template)."""
    rendered = (
        render_chat_template(DEFAULT_CHAT_TEMPLATE, _for_template(r.messages), tools=r.tools or None)
        for r in records
    )
    return train_bpe(rendered, vocab_size=vocab_size)


def split_eval(
    records: Sequence[TrajectoryRecord], eval_fraction: float, seed: int
) -> tuple[list[TrajectoryRecord], list[TrajectoryRecord]]:
    """(train, eval): a seeded random `eval_fraction` (at least one record) held out for the eval loss."""
    if len(records) < 2:
        raise ValueError(f"{len(records)} record(s): need at least 2 (one to train on, one to evaluate)")
    order = np.random.default_rng(seed).permutation(len(records))
    n_eval = min(len(records) - 1, max(1, int(len(records) * eval_fraction)))
    held_out = set(order[:n_eval].tolist())
    train = [r for i, r in enumerate(records) if i not in held_out]
    return train, [records[i] for i in sorted(held_out)]
