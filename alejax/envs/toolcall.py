"""The tool-call protocol: JSON calls inside `<tool_call>...</tool_call>` (Qwen2.5 / Hermes style).

`parse_action` turns the model's text into validated calls, or into an error message meant to be shown to
the model as its next observation (unknown tool, bad JSON, missing / extra / mistyped / out-of-range
arguments, several calls when one is allowed). Environments call it, so malformed actions are graded the
same everywhere.

Model output is adversarial input: the parser never raises and runs in time linear in the text, whatever
it is given. It scans for tags once (no backtracking regex over the whole text), decodes each block's JSON
where it starts (so a `</tool_call>` inside a JSON string is just text), and refuses, with a message that
names the problem: nesting deeper than `MAX_NESTING`, numbers longer than `MAX_NUMBER_CHARS` or not finite
(NaN, Infinity, 1e999), duplicate keys, NUL characters and lone surrogates in strings, non-string tool names,
and tags that are near misses of `<tool_call>` (`<tool-call>`, `<toolcall>`, `<function_call>`, ...).
Values quoted back in messages are escaped and cut to `SHOWN_CHARS`, so an error observation is always
short, printable text.

Tiny policies may also use a compact form, one line `NAME ARGUMENT` (e.g. `calc 3 + 4`), where ARGUMENT
fills the tool's single required argument (or is a JSON object of arguments).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import Any, NamedTuple

OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"
MAX_NESTING = 32  # levels of arrays / objects in one call (tool arguments need a few)
MAX_NUMBER_CHARS = 100  # a JSON number's text; longer ones are refused before Python converts them
SHOWN_CHARS = 60  # of a model-written value quoted back in an error message

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
_WHITESPACE = re.compile(r"\s*")
# Tags a model may write when it means <tool_call>: other spellings, other templates' call tags, fake
# tool responses. Quantifiers are bounded, so a scan costs O(length) whatever the text.
# A tag must be closed (`>`, or `=` as in `<function=name>`), or be <tool_call with JSON right after it, so
# shell text like `cat < tool.log` in a compact action is not taken for one.
_NEAR_MISS_TAG = re.compile(
    r"<\s{0,3}/?\s{0,3}\|?\s{0,3}(?:tool|function)s?(?:[\s_\-]{0,2}(?:calls?|use|code|response|result))?"
    r"(?:\s{0,3}\|?\s{0,3}>|=)|<tool_call(?=\s{0,3}[{\[])",
    re.IGNORECASE,
)


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


# -- quoting model text back safely ----------------------------------------------------------------------
def _show(value: Any) -> str:
    """`value` as short, printable text (escaped, cut to SHOWN_CHARS) for an error message."""
    if isinstance(value, str):
        text = repr(value[: SHOWN_CHARS + 1])  # escapes NUL, lone surrogates and other unprintables
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            text = f"<{type(value).__name__}>"
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _got(value: Any) -> str:
    """How a wrong value is named in a message: its JSON type and (short) text."""
    return "null" if value is None else f"{_json_type(value)} {_show(value)}"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for name in ("string", "integer", "number", "object", "array", "null"):
        if isinstance(value, _JSON_TYPES[name]):
            return name
    return type(value).__name__


def _text_problem(text: str) -> str | None:
    """What makes `text` unusable as a tool argument (NUL, lone surrogates), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate ({_show(text[e.start])}), which is not valid Unicode text"
    return None


# -- JSON, refusing what JSON libraries accept but tools must not ------------------------------------------
class _Refused(ValueError):
    """JSON refused while decoding: a duplicate key, NaN / Infinity, a number too long or out of range."""


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Refused(f"duplicate key {_show(key)}")
        obj[key] = value
    return obj


def _bounded_number(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")


def _parse_int(text: str) -> int:
    _bounded_number(text)
    return int(text)


def _parse_float(text: str) -> float:
    _bounded_number(text)
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {_show(text)[1:-1]} is out of range")
    return value


def _parse_constant(name: str):
    raise _Refused(f"{name} is not a JSON number (numbers must be finite)")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_parse_constant,
)


def _tree_problem(value: Any, where: str) -> str | None:
    """Walks a decoded value (iteratively): too deep, or a string / key unusable as text; None if fine."""
    stack: list[tuple[Any, int, str]] = [(value, 0, where)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            problem = _text_problem(node)
            if problem:
                return f"the string at {path} {problem}"
        elif isinstance(node, (dict, list)):
            if depth >= MAX_NESTING:
                return f"{path} is nested more than {MAX_NESTING} levels deep"
            if isinstance(node, dict):
                for key, child in node.items():
                    problem = _text_problem(key)
                    if problem:
                        return f"a key in {path} {problem}"
                    if isinstance(child, (str, dict, list)):  # numbers, booleans and null need no check
                        stack.append((child, depth + 1, f"{path}.{_show(key)[1:-1]}"[:200]))
            else:
                stack.extend(
                    (child, depth + 1, f"{path}[{i}]"[:200])
                    for i, child in enumerate(node)
                    if isinstance(child, (str, dict, list))
                )
    return None


def _decode(text: str, start: int, where: str) -> tuple[Any, int, str | None]:
    """The JSON value that starts at `text[start]`: (value, end, None) or (None, where it failed, error)."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except _Refused as e:
        return None, start, str(e)
    except json.JSONDecodeError as e:
        what = "a raw NUL character" if text[e.pos : e.pos + 1] == "\x00" else e.msg.removesuffix(" at")
        return None, e.pos, f"{what} (at character {e.pos - start})"
    except RecursionError:
        return None, start, f"nested more than {MAX_NESTING} levels deep"
    except ValueError as e:  # anything else the decoder refuses: say what, briefly
        return None, start, _show(str(e))[1:-1]
    problem = _tree_problem(value, where)
    return (None, start, problem) if problem else (value, end, None)


def load_json(text: str, where: str = "the JSON") -> tuple[Any, str | None]:
    """`text` as one JSON value under the parser's rules (finite, bounded, no duplicate keys, clean
    strings): (value, None), or (None, an error that names the problem). Never raises."""
    start = _WHITESPACE.match(text).end()
    value, end, error = _decode(text, start, where)
    if error is None and _WHITESPACE.match(text, end).end() != len(text):
        error = f"extra text after the JSON value (at character {end})"
    return (None, error) if error else (value, None)


# -- schema checks ----------------------------------------------------------------------------------------
def _is_type(value: Any, type_name: str) -> bool:
    if type_name in ("integer", "number") and isinstance(value, bool):
        return False  # bool is an int subclass in Python, not in JSON
    return isinstance(value, _JSON_TYPES.get(type_name, (object,)))


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    return (isinstance(a, bool) == isinstance(b, bool)) and a == b


def _value_problem(spec: dict, value: Any, path: str, tool: str) -> str | None:
    """Checks `value` (the argument at `path` of `tool`) against a property schema: type, enum, const,
    string lengths and pattern, number bounds, array items and sizes, nested object properties; None if
    it conforms."""
    what = f"argument {path!r} of {tool}"
    types = spec.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in types):
            return f"{what} must be {' or '.join(types)}, got {_got(value)}"
    if "enum" in spec and not any(_json_equal(value, option) for option in spec["enum"]):
        return f"{what} must be one of {list(spec['enum'])}, got {_show(value)}"
    if "const" in spec and not _json_equal(value, spec["const"]):
        return f"{what} must be {_show(spec['const'])}, got {_show(value)}"
    if isinstance(value, str):
        if "minLength" in spec and len(value) < spec["minLength"]:
            return f"{what} must have at least {spec['minLength']} characters, got {len(value)}"
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            return f"{what} must have at most {spec['maxLength']} characters, got {len(value)}"
        if "pattern" in spec and re.search(spec["pattern"], value) is None:
            return f"{what} must match the pattern {_show(spec['pattern'])}, got {_show(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, fails, words in (
            ("minimum", lambda v, b: v < b, "at least"),
            ("maximum", lambda v, b: v > b, "at most"),
            ("exclusiveMinimum", lambda v, b: v <= b, "more than"),
            ("exclusiveMaximum", lambda v, b: v >= b, "less than"),
        ):
            bound = spec.get(key)
            if isinstance(bound, (int, float)) and not isinstance(bound, bool) and fails(value, bound):
                return f"{what} must be {words} {bound}, got {_show(value)}"
    if isinstance(value, list):
        if "minItems" in spec and len(value) < spec["minItems"]:
            return f"{what} must have at least {spec['minItems']} items, got {len(value)}"
        if "maxItems" in spec and len(value) > spec["maxItems"]:
            return f"{what} must have at most {spec['maxItems']} items, got {len(value)}"
        if isinstance(spec.get("items"), dict):
            for i, item in enumerate(value):
                problem = _value_problem(spec["items"], item, f"{path}[{i}]", tool)
                if problem:
                    return problem
    if isinstance(value, dict) and ("properties" in spec or "required" in spec):
        return _object_problem(spec, value, path, tool)
    return None


def _object_problem(schema: dict, obj: dict, path: str, tool: str) -> str | None:
    """`obj` (the arguments of `tool`, or the object argument at `path`) against an object schema."""
    what = f"argument {path!r} of {tool}" if path else tool
    properties = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in obj]
    if missing:
        return f"{what} is missing required argument(s): {', '.join(missing)}"
    extra = [k for k in obj if k not in properties]
    if extra and schema.get("additionalProperties", False) is False:
        shown = ", ".join(_show(k)[1:-1] for k in extra[:5]) + (", ..." if len(extra) > 5 else "")
        allowed = ", ".join(properties) or "none"
        return f"{what} got unexpected argument(s): {shown} (allowed: {allowed})"
    for key, value in obj.items():
        spec = properties.get(key)
        if isinstance(spec, dict):
            key = _show(key)[1:-1]
            problem = _value_problem(spec, value, f"{path}.{key}" if path else key, tool)
            if problem:
                return problem
    return None


def validate_arguments(tool: dict, arguments: Any) -> str | None:
    """Check `arguments` against the tool's JSON schema (required, additionalProperties, and per argument
    type, enum, const, minLength / maxLength / pattern, minimum / maximum / exclusive bounds, items /
    minItems / maxItems, nested properties); None if valid, else a message naming the problem."""
    fn = _function(tool)
    name = fn["name"]
    if not isinstance(arguments, dict):
        return f'"arguments" of {name} must be a JSON object, got {_got(arguments)}.'
    problem = _object_problem(fn.get("parameters", {}), arguments, "", name)
    return None if problem is None else problem + "."


# -- parsing ------------------------------------------------------------------------------------------------
def _blocks(text: str) -> tuple[list[Any], str, str | None]:
    """One pass over `text`: the decoded JSON of each <tool_call> block, the text outside them, an error."""
    payloads, outside, pos = [], [], 0
    while True:
        start = text.find(OPEN_TAG, pos)
        stop = len(text) if start < 0 else start
        outside.append(text[pos:stop])
        stray = text.find(CLOSE_TAG, pos, stop)
        if stray >= 0:  # a close tag with no open one: often an open tag spelt wrong
            error = _near_miss_error(text[pos:stray]) or f"found {CLOSE_TAG} without a matching {OPEN_TAG}."
            return payloads, "".join(outside), error
        if start < 0:
            return payloads, "".join(outside), None
        body = _WHITESPACE.match(text, start + len(OPEN_TAG)).end()
        n = len(payloads) + 1
        value, end, error = _decode(text, body, f"tool call {n}")
        if error is None:
            after = _WHITESPACE.match(text, end).end()
            if text.startswith(CLOSE_TAG, after):
                payloads.append(value)
                pos = after + len(CLOSE_TAG)
                continue
        close = text.find(CLOSE_TAG, body)
        if close < 0:
            error = f"unterminated {OPEN_TAG}: close it with {CLOSE_TAG}."
        elif close == body:
            error = f"empty tool call: put one JSON object between {OPEN_TAG} and {CLOSE_TAG}."
        elif text.startswith(OPEN_TAG, body):
            error = f"{OPEN_TAG} inside {OPEN_TAG}: put one JSON object between {OPEN_TAG} and {CLOSE_TAG}."
        elif error is None:
            error = (
                f"unexpected text after the JSON object in tool call {n}: {_show(text[after:close])}; put "
                f"one JSON object between {OPEN_TAG} and {CLOSE_TAG}."
            )
        else:
            error = f"bad JSON in tool call: {error}."
        return payloads, "".join(outside), error


def _near_miss_error(text: str) -> str | None:
    match = _NEAR_MISS_TAG.search(text)
    if match is None:
        return None
    return (
        f"{_show(match.group())} is not a tool-call tag; write "
        f'{OPEN_TAG}{{"name": ..., "arguments": {{...}}}}{CLOSE_TAG}.'
    )


def _call_of(payload: Any, by_name: dict[str, dict]) -> ToolCall | str:
    """A decoded block -> a validated call, or an error."""
    if not isinstance(payload, dict) or "name" not in payload:
        return 'a tool call must be a JSON object {"name": ..., "arguments": {...}}.'
    extra_keys = set(payload) - {"name", "arguments"}
    if extra_keys:
        shown = ", ".join(_show(k)[1:-1] for k in sorted(extra_keys)[:5])
        return f"unexpected key(s) in tool call: {shown}."
    name = payload["name"]
    if not isinstance(name, str):
        return f'the tool "name" must be a string, got {_got(name)}.'
    if name not in by_name:
        return _unknown_tool(name, by_name)
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):  # some models emit arguments as a JSON string
        arguments, error = load_json(arguments, "arguments")
        if error:
            return f"bad JSON in arguments of {name}: {error}."
    error = validate_arguments(by_name[name], arguments)
    return error or ToolCall(name, arguments)


def _unknown_tool(name: str, by_name: dict[str, dict]) -> str:
    known = ", ".join(by_name) or "none"
    close = difflib.get_close_matches(name, list(by_name), n=1) if len(name) <= 64 else []
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown tool {_show(name)}{hint}; available tools: {known}."


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
        arguments, error = load_json(rest, "arguments")
        return f"bad JSON arguments for {name}: {error}." if error else ToolCall(name, arguments)
    if not rest:
        return ToolCall(name, {})
    required = params.get("required", []) or list(properties)
    if len(required) != 1:
        return f"{name} takes {len(required)} arguments; pass them as a JSON object."
    problem = _text_problem(rest)
    if problem:
        return f"the argument of {name} {problem}."
    return ToolCall(name, {required[0]: rest})


def parse_action(
    text: str, tools: list[dict], max_calls: int | None = 1, compact: bool = True
) -> ParsedAction:
    """Parse the model's turn into tool calls validated against `tools`. Never raises; see the module doc.

    No tool call is not an error (the turn may be a final answer): callers decide what that means. A tag
    that looks like a misspelt <tool_call> is an error, so the model learns the right one.
    """
    by_name = {_function(t)["name"]: t for t in tools}
    if not isinstance(text, str):
        return ParsedAction([], "", f"the action must be text, got {type(text).__name__}.")
    payloads, content, error = _blocks(text)
    content = content.strip()
    if error:
        return ParsedAction([], content, error)
    if not payloads:
        near_miss = _near_miss_error(content)
        if near_miss:
            return ParsedAction([], content, near_miss)
        parsed = _parse_compact(text, by_name) if compact and "\n" not in content else None
        if isinstance(parsed, str):
            return ParsedAction([], "", parsed)
        if parsed is not None:
            error = validate_arguments(by_name[parsed.name], parsed.arguments)
            return ParsedAction([] if error else [parsed], "", error)
        return ParsedAction([], content, None)
    if max_calls is not None and len(payloads) > max_calls:
        return ParsedAction(
            [], content, f"{len(payloads)} tool calls in one turn; at most {max_calls} allowed."
        )
    calls = []
    for payload in payloads:
        call = _call_of(payload, by_name)
        if isinstance(call, str):
            return ParsedAction([], content, call)
        calls.append(call)
    return ParsedAction(calls, content, None)


def error_observation(error: str) -> str:
    """How a malformed action is reported back to the model."""
    return f'Error: {error} Reply with one call: <tool_call>{{"name": ..., "arguments": {{...}}}}</tool_call>'
