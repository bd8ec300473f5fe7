"""The tool-call parser against hostile model output: every case ends as an error that names the problem,
within a generous wall-clock budget (a hang fails the test; no speed is asserted), and never raises."""

import random
import threading

import pytest

from alejax.envs.toolcall import (
    MAX_NESTING,
    ParsedAction,
    error_observation,
    format_tool_call,
    parse_action,
    tool_schema,
    validate_arguments,
)

TOOLS = [
    tool_schema("bash", "run", {"command": {"type": "string", "minLength": 1, "maxLength": 1000}}),
    tool_schema(
        "wait",
        "sleep",
        {
            "seconds": {"type": "number", "minimum": 0, "maximum": 60},
            "retries": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5},
        },
        required=["seconds"],
    ),
    tool_schema(
        "tag",
        "label",
        {
            "labels": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 2},
            "flag": {"enum": [1, "x"]},
            "opts": {
                "type": "object",
                "properties": {"depth": {"type": "integer", "minimum": 1}},
                "required": ["depth"],
            },
        },
        required=[],
    ),
    tool_schema("submit", "done"),
]
BUDGET_S = 20.0  # generous: every case below parses in milliseconds; the old regex took minutes on some


def parse_within_budget(text, **kwargs) -> ParsedAction:
    """parse_action on a thread: the test fails (instead of hanging) if it does not return in BUDGET_S."""
    out: dict = {}

    def run():
        try:
            out["result"] = parse_action(text, TOOLS, **kwargs)
        except BaseException as e:  # noqa: BLE001 - reported below as the failure it is
            out["raised"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BUDGET_S)
    assert not thread.is_alive(), f"parse_action did not return within {BUDGET_S}s"
    assert "raised" not in out, f"parse_action raised {out.get('raised')!r}"
    return out["result"]


def assert_clean_message(error: str) -> None:
    """Short, printable, encodable text: it becomes the model's next observation."""
    observation = error_observation(error)
    observation.encode("utf-8")  # no lone surrogates
    assert "\x00" not in observation and len(error) < 400, error


def call(arguments_json: str, name: str = "bash") -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {arguments_json}}}</tool_call>'


HOSTILE = [
    ("deep nesting", "<tool_call>" + "[" * 100_000 + "</tool_call>", f"more than {MAX_NESTING} levels"),
    (
        "deep arguments",
        call('{"command": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}"),
        f"nested more than {MAX_NESTING} levels",
    ),
    ("100k-digit integer", call('{"command": ' + "9" * 100_000 + "}"), "a number of 100000 characters"),
    ("100k-digit float", call('{"command": 0.' + "1" * 100_000 + "}"), "a number of 100002 characters"),
    ("overflowing float", call('{"seconds": 1e999}', "wait"), "number 1e999 is out of range"),
    ("NaN", call('{"seconds": NaN}', "wait"), "NaN is not a JSON number"),
    ("Infinity", call('{"seconds": Infinity}', "wait"), "Infinity is not a JSON number"),
    ("-Infinity", call('{"seconds": -Infinity}', "wait"), "-Infinity is not a JSON number"),
    ("list as name", '<tool_call>{"name": ["bash"], "arguments": {}}</tool_call>', '"name" must be a string'),
    ("object as name", '<tool_call>{"name": {"x": 1}}</tool_call>', "got object"),
    ("number as name", '<tool_call>{"name": 7}</tool_call>', "got integer 7"),
    ("null as name", '<tool_call>{"name": null}</tool_call>', "got null"),
    ("escaped lone surrogate", call('{"command": "ls \\ud800"}'), "lone surrogate"),
    ("raw lone surrogate", call('{"command": "ls \ud800"}'), "lone surrogate"),
    ("surrogate in a key", call('{"\\udc00": "ls"}'), "a key in tool call 1.arguments contains a lone"),
    ("escaped NUL", call('{"command": "ls\\u0000 -la"}'), "NUL character"),
    ("raw NUL", call('{"command": "ls\x00"}'), "raw NUL character"),
    ("NUL in compact form", "bash ls\x00", "NUL character"),
    ("surrogate in compact form", "bash ls \ud800", "lone surrogate"),
    ("duplicate name", '<tool_call>{"name": "submit", "name": "bash"}</tool_call>', "duplicate key 'name'"),
    ("duplicate argument", call('{"command": "ls", "command": "rm -rf /"}'), "duplicate key 'command'"),
    ("thousands of unclosed tags", "<tool_call>" * 50_000, "unterminated <tool_call>"),
    ("unclosed tags with braces", "<tool_call>{" * 20_000, "unterminated <tool_call>"),
    ("nested open tags", "<tool_call>" * 3 + format_tool_call("submit"), "<tool_call> inside <tool_call>"),
    ("empty call", "<tool_call> \n</tool_call>", "empty tool call"),
    ("thousands of close tags", "</tool_call>" * 50_000, "without a matching <tool_call>"),
    ("dash", '<tool-call>{"name": "submit"}</tool-call>', "'<tool-call>' is not a tool-call tag"),
    ("no separator", '<toolcall>{"name": "submit"}</toolcall>', "'<toolcall>' is not a tool-call tag"),
    ("upper case", '<TOOL_CALL>{"name": "submit"}</TOOL_CALL>', "'<TOOL_CALL>' is not"),
    ("plural", '<tool_calls>[{"name": "submit"}]</tool_calls>', "'<tool_calls>' is not"),
    ("missing >", '<tool_call{"name": "submit"}</tool_call>', "'<tool_call' is not a tool-call tag"),
    ("special-token style", '<|tool_call|>{"name": "submit"}<|/tool_call|>', "'<|tool_call|>' is not"),
    ("another template's tag", '<function_call>{"name": "submit"}</function_call>', "'<function_call>'"),
    ("llama style", "<function=submit>{}</function>", "'<function=' is not a tool-call tag"),
    ("fake tool response", "<tool_response>done</tool_response>", "'<tool_response>' is not"),
    ("text after the JSON", '<tool_call>{"name": "submit"} and more</tool_call>', "'and more'"),
    ("unknown tool, close", call("{}", "Bash"), "unknown tool 'Bash' (did you mean bash?)"),
    ("huge unknown name", call("{}", "x" * 100_000), "unknown tool 'xxxx"),
    ("arguments null", '<tool_call>{"name": "submit", "arguments": null}</tool_call>', "got null"),
    ("arguments a list", '<tool_call>{"name": "submit", "arguments": [1]}</tool_call>', "got array [1]"),
    ("deep JSON-string arguments", call('"' + "[" * 10_000 + '"'), "bad JSON in arguments of bash: nested"),
    ("string arguments with NaN", call('"{\\"seconds\\": NaN}"', "wait"), "NaN is not a JSON number"),
    ("not text", None, "the action must be text, got NoneType"),
]


@pytest.mark.parametrize("name, text, expected", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_output_is_an_error_observation_that_names_the_problem(name, text, expected):
    parsed = parse_within_budget(text)
    assert parsed.calls == [] and parsed.error is not None, parsed
    assert expected in parsed.error, parsed.error
    assert_clean_message(parsed.error)


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ('{"command": ""}', "argument 'command' of bash must have at least 1 characters, got 0"),
        ('{"command": "' + "x" * 1001 + '"}', "must have at most 1000 characters, got 1001"),
    ],
)
def test_string_length_bounds(arguments, expected):
    parsed = parse_within_budget(call(arguments))
    assert parsed.calls == [] and expected in parsed.error


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ('{"seconds": -0.5}', "argument 'seconds' of wait must be at least 0, got -0.5"),
        ('{"seconds": 61}', "argument 'seconds' of wait must be at most 60, got 61"),
        ('{"seconds": 1, "retries": 0}', "argument 'retries' of wait must be more than 0, got 0"),
        ('{"seconds": 1, "retries": 5}', "argument 'retries' of wait must be less than 5, got 5"),
        ('{"seconds": true}', "must be number, got boolean true"),
        ('{"seconds": "3"}', "must be number, got string '3'"),
    ],
)
def test_number_bounds_and_types(arguments, expected):
    parsed = parse_within_budget(call(arguments, "wait"))
    assert parsed.calls == [] and expected in parsed.error


def test_bounds_accept_the_values_they_allow():
    for arguments in ('{"seconds": 0}', '{"seconds": 60}', '{"seconds": 2.5, "retries": 4}'):
        parsed = parse_within_budget(call(arguments, "wait"))
        assert parsed.error is None and parsed.calls[0].name == "wait", arguments
    assert parse_within_budget(call('{"command": "x"}')).calls[0].arguments == {"command": "x"}


def test_array_items_sizes_and_json_equality_in_enums():
    ok = parse_within_budget(call('{"labels": ["a", "b"], "flag": 1}', "tag"))
    assert ok.error is None and ok.calls[0].arguments == {"labels": ["a", "b"], "flag": 1}
    assert "argument 'labels[1]' of tag must be one of ['a', 'b'], got 'c'" in (
        parse_within_budget(call('{"labels": ["a", "c"]}', "tag")).error
    )
    assert (
        "must have at most 2 items, got 3"
        in parse_within_budget(call('{"labels": ["a", "a", "b"]}', "tag")).error
    )
    # JSON's true is not 1, though Python's True == 1.
    assert "must be one of [1, 'x'], got true" in parse_within_budget(call('{"flag": true}', "tag")).error
    assert validate_arguments(TOOLS[1], {"seconds": 3, "retries": 2}) is None
    # Nested object arguments are checked against their own properties.
    assert "argument 'opts.depth' of tag must be at least 1, got 0" in (
        parse_within_budget(call('{"opts": {"depth": 0}}', "tag")).error
    )
    assert "argument 'opts' of tag is missing required argument(s): depth" in (
        parse_within_budget(call('{"opts": {}}', "tag")).error
    )
    assert parse_within_budget(call('{"opts": {"depth": 2}}', "tag")).calls[0].arguments["opts"]["depth"] == 2


def test_tags_inside_json_strings_are_text():
    command = "echo '</tool_call>' && echo '<tool_call>' && echo '<tool-call>'"
    text = "Let me check.\n" + format_tool_call("bash", {"command": command})
    parsed = parse_within_budget(text)
    assert parsed.error is None and parsed.content == "Let me check."
    assert parsed.calls[0].arguments == {"command": command}
    # Prose around a valid call is content: only a turn without calls is checked for near-miss tags.
    parsed = parse_within_budget("I will not use <tool-call> here. " + format_tool_call("submit"))
    assert parsed.error is None and [c.name for c in parsed.calls] == ["submit"]


def test_plain_answers_are_not_near_misses():
    for text in ("The answer is 4.", "a <toolbox> and a <b>bold</b> move", "x < y and tools > 3", "a < tool"):
        parsed = parse_within_budget(text, compact=False)
        assert parsed.error is None and parsed.calls == [] and parsed.content == text


def test_shell_redirections_in_compact_actions_are_not_tags():
    assert parse_within_budget("bash sort < tool.log > tools_sorted").calls[0].arguments == {
        "command": "sort < tool.log > tools_sorted"
    }


def test_many_valid_calls_are_counted_not_parsed_quadratically():
    parsed = parse_within_budget(format_tool_call("submit") * 20_000)
    assert parsed.error == "20000 tool calls in one turn; at most 1 allowed."
    assert len(parse_within_budget(format_tool_call("submit") * 3, max_calls=None).calls) == 3


def test_random_soup_of_fragments_never_raises():
    """Seeded random strings glued from the pieces that break parsers: the result is always a ParsedAction
    whose error (if any) is clean text."""
    fragments = [
        "<tool_call>", "</tool_call>", "<tool-call>", "{", "}", "[", "]", '"', "\\", "\\u0000", "\\ud800",
        "\ud800", "\x00", "NaN", "-Infinity", "1e999", "9" * 200, ":", ",", '"name"', '"arguments"',
        '"bash"', '"command"', "null", "true", " ", "\n", "bash ", "submit", "<|", "|>", "<", ">",
    ]  # fmt: skip
    rng = random.Random(0)
    errors = 0
    for _ in range(3000):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(1, 40)))
        parsed = parse_within_budget(text) if _ % 500 == 0 else parse_action(text, TOOLS)
        assert isinstance(parsed, ParsedAction)
        if parsed.error is not None:
            errors += 1
            assert_clean_message(parsed.error)
        for c in parsed.calls:
            assert (
                validate_arguments(next(t for t in TOOLS if t["function"]["name"] == c.name), c.arguments)
                is None
            )
    assert errors > 1000  # the soup is mostly malformed: the parser said so
