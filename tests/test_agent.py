"""Agent framework: tool-call parsing, context engineering, the episode loop and the CLI."""

import os
import subprocess
import sys

import pytest

from alejax.agent.context import ContextConfig, ContextManager, RepeatDetector, truncate_middle
from alejax.agent.loop import run_episode
from alejax.agent.policy import scripted_policy
from alejax.envs import make
from alejax.envs.toolcall import format_tool_call, parse_action, tool_schema

TOOLS = [
    tool_schema("bash", "run", {"command": {"type": "string"}}),
    tool_schema(
        "move",
        "move",
        {"direction": {"type": "string", "enum": ["left", "right"]}, "steps": {"type": "integer"}},
        required=["direction"],
    ),
    tool_schema("submit", "done"),
]


def test_valid_call_and_content():
    parsed = parse_action("I will look.\n" + format_tool_call("bash", {"command": "ls -la"}), TOOLS)
    assert parsed.error is None and parsed.content == "I will look."
    assert parsed.calls[0].name == "bash" and parsed.calls[0].arguments == {"command": "ls -la"}
    assert parse_action("The answer is 4.", TOOLS) == (
        [],
        "The answer is 4.",
        None,
    )  # no call is not an error


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '<tool_call>{"name": "rm", "arguments": {}}</tool_call>',
            "unknown tool 'rm'; available tools: bash, move, submit",
        ),
        ('<tool_call>{"name": "bash", "arguments": {"command": "ls"</tool_call>', "bad JSON"),
        ('<tool_call>{"name": "bash", "arguments": {}}</tool_call>', "missing required argument(s): command"),
        (
            '<tool_call>{"name": "bash", "arguments": {"command": "ls", "sudo": true}}</tool_call>',
            "unexpected argument(s): sudo",
        ),
        (
            '<tool_call>{"name": "move", "arguments": {"direction": "up"}}</tool_call>',
            "must be one of ['left', 'right']",
        ),
        (
            '<tool_call>{"name": "move", "arguments": {"direction": "left", "steps": "2"}}</tool_call>',
            "must be integer",
        ),
        (
            '<tool_call>{"name": "move", "arguments": {"direction": "left", "steps": true}}</tool_call>',
            "must be integer",
        ),
        (
            format_tool_call("submit") + format_tool_call("submit"),
            "2 tool calls in one turn; at most 1 allowed",
        ),
        ('<tool_call>{"name": "submit", "arguments": {}}', "unterminated <tool_call>"),
        ('<tool_call>["submit"]</tool_call>', "must be a JSON object"),
        ('<tool_call>{"name": "submit", "args": {}}</tool_call>', "unexpected key(s) in tool call: args"),
        ("bash {not json", "bad JSON arguments for bash"),
    ],
)
def test_malformed_calls_explain_what_is_wrong(text, message):
    parsed = parse_action(text, TOOLS)
    assert parsed.calls == [] and message in parsed.error


def test_several_calls_when_allowed_and_compact_form():
    two = format_tool_call("bash", {"command": "a"}) + format_tool_call("submit")
    assert [c.name for c in parse_action(two, TOOLS, max_calls=None).calls] == ["bash", "submit"]
    assert parse_action("bash echo hi there", TOOLS).calls[0].arguments == {"command": "echo hi there"}
    assert parse_action('move {"direction": "left", "steps": 2}', TOOLS).calls[0].arguments["steps"] == 2
    assert parse_action("bash ls", TOOLS, compact=False).calls == []
    # Arguments given as a JSON string (some models do this) are accepted.
    text = '<tool_call>{"name": "bash", "arguments": "{\\"command\\": \\"ls\\"}"}</tool_call>'
    assert parse_action(text, TOOLS).calls[0].arguments == {"command": "ls"}


def _long_episode(n_turns, observation_chars):
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "GOAL: find the flag"}]
    for i in range(n_turns):
        messages += [
            {"role": "assistant", "content": f"act {i}"},
            {"role": "tool", "content": f"obs{i} " + "x" * observation_chars},
        ]
    return messages


def test_context_compression_under_budget():
    manager = ContextManager(ContextConfig(token_budget=1000, keep_recent=2, compressed_chars=100))
    messages = _long_episode(10, 1000)  # ~2600 tokens
    view = manager.view(messages)
    assert messages[3]["content"].endswith("x")  # the record itself is untouched
    assert sum(len(m["content"]) for m in view) < 0.4 * sum(len(m["content"]) for m in messages)
    assert "characters omitted" in view[3]["content"] and view[3]["content"].startswith("obs0")
    assert view[-1]["content"].startswith("obs9 " + "x" * 100) and view[-3]["content"].startswith(
        "obs8 " + "x" * 100
    )
    assert "[Reminder] Your goal: GOAL: find the flag" in view[-1]["content"]
    assert [m["content"] for m in view if m["role"] == "assistant"] == [f"act {i}" for i in range(10)]
    assert view[1]["content"] == "GOAL: find the flag"
    # Small episodes are not touched and get no reminder.
    small = _long_episode(2, 10)
    assert manager.view(small) == small


def test_pluggable_summarizer_and_periodic_reminder():
    manager = ContextManager(ContextConfig(token_budget=500, keep_recent=1), summarize=lambda text: text[:4])
    view = manager.view(_long_episode(5, 1000))
    assert view[3]["content"] == "[summary] obs0"
    periodic = ContextManager(ContextConfig(remind_every=2))
    assert "[Reminder]" in periodic.view(_long_episode(2, 10))[-1]["content"]
    assert "[Reminder]" not in periodic.view(_long_episode(3, 10))[-1]["content"]
    assert truncate_middle("abcdefghij" * 10, 20).startswith("abcdefghij\n[... 80 characters omitted")


def test_repeat_detection_in_loop():
    detector = RepeatDetector(3)
    assert [detector.observe(a) for a in ["a", "a ", "b", "b", "b"]] == [1, 2, 1, 2, 3]
    assert "same action 3 times" in detector.warning()
    env = make("keydoor/corridor", n_rooms=10)
    episode = run_episode(env, lambda messages: "take", seed=0, max_turns=5)
    assert episode.truncated and episode.reward == 0
    notes = [m["content"] for m in episode.messages if "[Note]" in m["content"]]
    assert len(notes) == 3 and "same action 3 times" in notes[0]


@pytest.mark.parametrize("name", ["arithmetic/calc", "keydoor/long", "terminal/csv_sum"])
def test_run_episode_with_scripted_policy(name):
    env = make(name)
    episode = run_episode(env, scripted_policy, seed=1, policy_needs_env=True)
    assert episode.reward == 1.0 and episode.terminated
    roles = [m["role"] for m in episode.messages]
    assert roles[:2] == ["system", "user"] and roles[2::2] == ["assistant"] * episode.turns
    getattr(env, "close", lambda: None)()


def _cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "alejax.agent", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_cli_scripted():
    result = _cli("--env", "keydoor/corridor", "--policy", "scripted", "--seed", "3", "--color", "always")
    assert result.returncode == 0, result.stderr
    assert "\033[32m── assistant ──" in result.stdout and "the door opens" in result.stdout
    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .endswith("reward=1 turns=" + result.stdout.split("turns=")[1].split()[0] + " terminated\033[0m")
    )


def test_cli_human_from_stdin():
    lines = (
        "calc 3 + 4\n\nnot a call\n" + format_tool_call("answer", {"value": 1}).replace("\n", "\\\n") + "\n"
    )
    result = _cli("--env", "arithmetic/calc", "--policy", "human", "--color", "never", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert "= 7" in result.stdout and "no tool call; use calc or answer" in result.stdout
    assert "\033[" not in result.stdout and "turns=3" in result.stdout.splitlines()[-1]


def test_cli_human_end_of_input_and_terminal():
    result = _cli(
        "--env",
        "terminal/hello_file",
        "--policy",
        "human",
        "--color",
        "never",
        stdin="bash echo 'Hello, world!' > hello.txt\nsubmit\n",
    )
    assert result.returncode == 0 and "Tests passed." in result.stdout and "reward=1" in result.stdout
    result = _cli("--env", "keydoor/short", "--policy", "human", stdin="left\n")
    assert result.returncode == 0 and "truncated" in result.stdout


def test_cli_plays_a_task_dir(tmp_path):
    # Harbor and Terminal-Bench 1 layouts: the oracle solves each; a bad path is an error line, not a trace.
    data = os.path.join(os.path.dirname(__file__), "data", "harbor")
    for task in ("count-lines", "tb1-greeting"):
        result = _cli("--task-dir", os.path.join(data, task), "--policy", "scripted", "--color", "never")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "reward=1 turns=2 terminated"
    result = _cli("--task-dir", str(tmp_path / "missing"), "--policy", "scripted")
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr


def test_cli_checkpoint_policy_reports_a_missing_checkpoint(tmp_path):
    result = _cli("--env", "arithmetic/calc", "--policy", str(tmp_path))
    assert result.returncode == 2 and "config.json" in result.stderr


def test_cli_plays_an_episode_with_a_saved_model(tmp_path):
    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe
    from alejax.models import ModelConfig, create_model, save_pretrained

    tokenizer = train_bpe(generate_corpus(200, seed=0), vocab_size=400)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        head_dim=16,
        mlp_dim=64,
        max_position_embeddings=2048,
    )
    save_pretrained(create_model(config), tmp_path)
    tokenizer.save(tmp_path)
    result = _cli("--env", "keydoor/short", "--policy", str(tmp_path), "--max-turns", "2")
    assert result.returncode == 0, result.stderr
    assert "assistant" in result.stdout.lower()
