"""The tool-call protocol: JSON calls inside `<tool_call>...</tool_call>` (Qwen2.5 / Hermes style).

`parse_action` turns the model's text into validated calls, or into an error message meant to be shown to
the model as its next observation (unknown tool, bad JSON, missing / extra / mistyped arguments, several
calls when one is allowed). Environments call it, so malformed actions are graded the same everywhere.

Tiny policies may also use a compact form, one line `NAME ARGUMENT` (e.g. `calc 3 + 4`), where ARGUMENT
fills the tool's single required argument (or is a JSON object of arguments).
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class ToolCall(NamedTuple):
    name: str
    arguments: dict[str, Any]


class ParsedAction(NamedTuple):
    calls: list[ToolCall]
    content: str  # the text outside tool calls (the model's reasoning or its final answer)
    error: str | None  # set when the action is malformed: show it to the model


def tool_schema(name: str, description: str, properties: dict | None = None, required=None) -> dict:
    """An OpenAI-style function schema, the form chat templates render inside <tools>."""
    properties = properties or {}
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties) if required is None else list(required),
            },
        },
    }


def format_tool_call(name: str, arguments: dict[str, Any] | None = None) -> str:
    """The text a model emits for one call (what the chat template renders for `tool_calls`)."""
    payload = json.dumps({"name": name, "arguments": arguments or {}}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def _function(tool: dict) -> dict:
    return tool.get("function", tool)


def _is_type(value: Any, type_name: str) -> bool:
    if type_name in ("integer", "number") and isinstance(value, bool):
        return False  # bool is an int subclass in Python, not in JSON
    return isinstance(value, _JSON_TYPES.get(type_name, (object,)))


def validate_arguments(tool: dict, arguments: Any) -> str | None:
    """Check `arguments` against the tool's JSON schema (the subset tools use); None if valid."""
    fn = _function(tool)
    name = fn["name"]
    if not isinstance(arguments, dict):
        return f'"arguments" of {name} must be a JSON object, got {type(arguments).__name__}.'
    params = fn.get("parameters", {})
    properties = params.get("properties", {})
    missing = [k for k in params.get("required", []) if k not in arguments]
    if missing:
        return f"{name} is missing required argument(s): {', '.join(missing)}."
    extra = [k for k in arguments if k not in properties]
    if extra and params.get("additionalProperties", False) is False:
        allowed = ", ".join(properties) or "none"
        return f"{name} got unexpected argument(s): {', '.join(extra)} (allowed: {allowed})."
    for key, value in arguments.items():
        spec = properties.get(key, {})
        types = spec.get("type")
        if types is not None:
            types = [types] if isinstance(types, str) else types
            if not any(_is_type(value, t) for t in types):
                return f"argument {key!r} of {name} must be {' or '.join(types)}, got {json.dumps(value)}."
        if "enum" in spec and value not in spec["enum"]:
            return f"argument {key!r} of {name} must be one of {spec['enum']}, got {json.dumps(value)}."
    return None


def _parse_compact(text: str, by_name: dict[str, dict]) -> ToolCall | str | None:
    """`NAME [ARGUMENT]` on one line -> a call; an error string; or None if it is not compact form."""
    stripped = text.strip()
    if not stripped:
        return None
    name, _, rest = stripped.partition(" ")
    if name not in by_name:
        return None
    rest = rest.strip()
    params = _function(by_name[name]).get("parameters", {})
    properties = params.get("properties", {})
    if rest.startswith("{"):
        try:
            return ToolCall(name, json.loads(rest))
        except json.JSONDecodeError as e:
            return f"bad JSON arguments for {name}: {e.msg} (at character {e.pos})."
    if not rest:
        return ToolCall(name, {})
    required = params.get("required", []) or list(properties)
    if len(required) != 1:
        return f"{name} takes {len(required)} arguments; pass them as a JSON object."
    return ToolCall(name, {required[0]: rest})


def parse_action(
    text: str, tools: list[dict], max_calls: int | None = 1, compact: bool = True
) -> ParsedAction:
    """Parse the model's turn into tool calls validated against `tools`.

    No tool call is not an error (the turn may be a final answer): callers decide what that means.
    """
    by_name = {_function(t)["name"]: t for t in tools}
    blocks = TOOL_CALL_RE.findall(text)
    content = TOOL_CALL_RE.sub("", text).strip()
    if text.count("<tool_call>") > len(blocks):
        return ParsedAction([], content, "unterminated <tool_call>: close it with </tool_call>.")
    if not blocks:
        if "</tool_call>" in text:
            return ParsedAction([], content, "found </tool_call> without a matching <tool_call>.")
        parsed = _parse_compact(text, by_name) if compact and "\n" not in text.strip() else None
        if isinstance(parsed, str):
            return ParsedAction([], "", parsed)
        if parsed is not None:
            error = validate_arguments(by_name[parsed.name], parsed.arguments)
            return ParsedAction([] if error else [parsed], "", error)
        return ParsedAction([], content, None)
    if max_calls is not None and len(blocks) > max_calls:
        return ParsedAction(
            [], content, f"{len(blocks)} tool calls in one turn; at most {max_calls} allowed."
        )
    calls = []
    for block in blocks:
        try:
            payload = json.loads(block.strip())
        except json.JSONDecodeError as e:
            return ParsedAction([], content, f"bad JSON in tool call: {e.msg} (at character {e.pos}).")
        if not isinstance(payload, dict) or "name" not in payload:
            return ParsedAction(
                [], content, 'a tool call must be a JSON object {"name": ..., "arguments": {...}}.'
            )
        extra_keys = set(payload) - {"name", "arguments"}
        if extra_keys:
            return ParsedAction(
                [], content, f"unexpected key(s) in tool call: {', '.join(sorted(extra_keys))}."
            )
        name = payload["name"]
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            return ParsedAction([], content, f"unknown tool {name!r}; available tools: {known}.")
        arguments = payload.get("arguments", {})
        if isinstance(arguments, str):  # some models emit arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as e:
                return ParsedAction([], content, f"bad JSON in arguments of {name}: {e.msg}.")
        error = validate_arguments(by_name[name], arguments)
        if error:
            return ParsedAction([], content, error)
        calls.append(ToolCall(name, arguments))
    return ParsedAction(calls, content, None)


def error_observation(error: str) -> str:
    """How a malformed action is reported back to the model."""
    return f'Error: {error} Reply with one call: <tool_call>{{"name": ..., "arguments": {{...}}}}</tool_call>'
