"""Your own data: chat JSONL and Hugging Face datasets saved to disk into SFT rows (loss on the weighted assistant
turns), errors that name the line and field, named verifiers, and the prompt-set env that RL trains on."""

import json
import os
import sys

import pytest

from alejax.data.datasets import (
    chat_rows,
    chat_tokens,
    hf_disk_files,
    load_records,
    read_chat_jsonl,
    read_hf_disk,
    records_tokenizer,
)
from alejax.data.episodes import episode_tokens, expert_episodes
from alejax.data.records import RecordError, read_records, write_records
from alejax.envs import make, registered
from alejax.reward.verifiers import VERIFIERS, final_answer, parse_number

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "datasets")
CHAT = os.path.join(DATA, "chat.jsonl")
MATH = os.path.join(DATA, "prompts_math.jsonl")
CODE = os.path.join(DATA, "prompts_code.jsonl")


@pytest.fixture(scope="module")
def records():
    return read_chat_jsonl(CHAT)


@pytest.fixture(scope="module")
def tokenizer(records):
    return records_tokenizer(records, vocab_size=600)


def test_chat_jsonl_reads_every_role_tool_calls_and_weights(records):
    assert len(records) == 12
    roles = {m["role"] for r in records for m in r.messages}
    assert roles == {"system", "user", "assistant", "tool"}
    with_calls = [m for r in records for m in r.messages if m.get("tool_calls")]
    assert len(with_calls) == 5 and all(c["type"] == "function" for m in with_calls for c in m["tool_calls"])
    assert "content" not in records[2].messages[2]  # JSON null content of a tool-call turn is dropped
    assert [m.get("weight") for m in records[4].messages if m["role"] == "assistant"] == [0.0, 1.0]
    assert records[3].tools[0]["function"]["name"] == "get_weather" and records[0].tools is None


def test_chat_tokens_is_the_rollout_layout_for_env_episodes():
    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe

    tokenizer = train_bpe(generate_corpus(200, seed=0), vocab_size=400)
    env = make("arithmetic/easy")
    for chat in expert_episodes("arithmetic/easy", range(4)):
        tokens, mask = episode_tokens(tokenizer, chat, env.tools)
        assert chat_tokens(tokenizer, chat, env.tools) == (tokens, [float(m) for m in mask])


def test_chat_tokens_learn_weighted_assistant_turns_and_tool_calls(records, tokenizer):
    for record in records:
        tokens, weights = chat_tokens(tokenizer, record.messages, record.tools)
        trimmed = record.messages[
            : max(i for i, m in enumerate(record.messages) if m["role"] == "assistant") + 1
        ]
        assert tokenizer.decode(tokens) == tokenizer.apply_chat_template(trimmed, tools=record.tools)
        assert len(weights) == len(tokens) and set(weights) <= {0.0, 1.0}
    tokens, weights = chat_tokens(tokenizer, records[4].messages)  # first answer weight 0, second 1
    assert tokenizer.decode([t for t, w in zip(tokens, weights) if w]) == "tac<|im_end|>"
    assert "tac? no" in tokenizer.decode(tokens)  # still in the context
    tokens, weights = chat_tokens(tokenizer, records[2].messages, records[2].tools)
    learned = tokenizer.decode([t for t, w in zip(tokens, weights) if w])
    assert learned == (
        '<tool_call>\n{"name": "calc", "arguments": {"expression": "17 * 23"}}\n</tool_call><|im_end|>'
        "17 * 23 = 391.<|im_end|>"
    )
    half = [dict(m, weight=0.5) if m["role"] == "assistant" else m for m in records[0].messages]
    assert set(chat_tokens(tokenizer, half)[1]) == {0.0, 0.5}
    with pytest.raises(ValueError, match="at least one assistant"):
        chat_tokens(tokenizer, [{"role": "user", "content": "hi"}])


BAD_LINES = [
    ('{"messages": [{"role": "user", "content": "hi"}]', "line 2: not valid JSON"),
    ('{"chat": []}', "line 2: field 'messages' is missing"),
    (
        '{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}',
        r"line 2: messages\[1\]\.role: \"bot\"",
    ),
    (
        '{"messages": [{"role": "user", "content": "a", "tool_calls": []}]}',
        r"messages\[0\]\.tool_calls: not a field of a user",
    ),
    ('{"messages": [{"role": "assistant"}]}', r"messages\[0\]\.content: missing"),
    (
        '{"messages": [{"role": "assistant", "content": "x", "weight": -1}]}',
        r"messages\[0\]\.weight: must be a number >= 0",
    ),
    ('{"messages": [{"role": "assistant", "content": 7}]}', r"messages\[0\]\.content: must be a string"),
    (
        '{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}',
        r"messages\[0\]\.tool_calls\[0\]\.function\.arguments: not valid JSON",
    ),
    (
        '{"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]}',
        r"messages\[0\]\.tool_calls\[0\]\.function\.name: missing",
    ),
    (
        '{"messages": [{"role": "user", "content": "a"}], "seed": "x"}',
        "line 2: field 'seed' must be an integer",
    ),
]


@pytest.mark.parametrize("line, error", BAD_LINES)
def test_a_malformed_record_names_its_line_and_field(tmp_path, line, error):
    path = tmp_path / "data.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match=error):
        read_chat_jsonl(str(path))


def test_trajectory_records_read_as_a_chat_dataset(tmp_path, records):
    path = str(tmp_path / "shard-00000.jsonl")
    records[0].env, records[0].reward = "mine", 1.0
    assert write_records(path, records) == 12
    again = read_chat_jsonl(path)
    assert again == records == read_records(str(tmp_path))
    with_extra = tmp_path / "extra.jsonl"
    with_extra.write_text('{"messages": [{"role": "user", "content": "q"}], "topic": "geo"}\n')
    assert read_chat_jsonl(str(with_extra))[0].info == {"topic": "geo"}  # other keys are kept as info


def test_hf_dataset_saved_to_disk_reads_like_its_jsonl(records, tokenizer):
    pytest.importorskip("pyarrow")  # the fixture is a real `DatasetDict.save_to_disk` (datasets 5.2)
    path = os.path.join(DATA, "hf_chat")
    train = read_hf_disk(path)  # default split: train
    assert len(train) == 9 and len(read_hf_disk(path, "test")) == 3
    assert train[0].info == {"source": "sample"} and train[2].tools[0]["function"]["name"] == "calc"
    # The arguments are JSON text in the Arrow file; rendered, every token is the same as from the JSONL.
    assert (
        chat_rows(tokenizer, train, 256)[0]["tokens"].tolist()
        == chat_rows(tokenizer, records[:9], 256)[0]["tokens"].tolist()
    )
    assert load_records("hf_disk", path, "test")[0].messages == read_hf_disk(path, "test")[0].messages


def test_hf_disk_layout_errors_and_missing_pyarrow(tmp_path, monkeypatch):
    path = os.path.join(DATA, "hf_chat")
    assert [os.path.basename(f) for f in hf_disk_files(path, "test")] == ["data-00000-of-00001.arrow"]
    with pytest.raises(ValueError, match="no split 'dev'; splits: train, test"):
        hf_disk_files(path, "dev")
    with pytest.raises(FileNotFoundError, match="no .arrow files"):
        hf_disk_files(str(tmp_path))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as on a machine without it
    with pytest.raises(ImportError, match="needs pyarrow"):
        read_hf_disk(path)


def test_load_records_names_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 'csv'; known: env, jsonl, hf_disk, atif"):
        load_records("csv", CHAT)
    with pytest.raises(ValueError, match="needs data.path"):
        load_records("jsonl", "")
    with pytest.raises(FileNotFoundError):
        load_records("jsonl", str(tmp_path / "missing.jsonl"))


def test_sft_job_trains_on_the_sample_jsonl(tmp_path):
    """configs/sft.py's tiny preset with data.source=jsonl: a few steps lower the loss."""
    from alejax.config import load_config_file
    from alejax.train.metrics import read_metrics
    from alejax.train.sft import train_sft

    c = load_config_file(os.path.join(ROOT, "configs", "sft.py"))
    c.workdir = str(tmp_path / "sft")
    c.data.source, c.data.path = "jsonl", CHAT
    c.data.seq_len, c.data.batch_size, c.data.eval_fraction = 128, 4, 0.2
    c.model.vocab_size = 300
    c.steps, c.log_every, c.eval_every, c.checkpoint_every, c.optim.warmup_steps = 10, 1, 10, 10, 2
    _, _, tokenizer, last = train_sft(c)
    losses = [m["loss"] for m in read_metrics(os.path.join(c.workdir, "metrics.jsonl"))]
    assert len(losses) == 10 and last["loss"] < 0.85 * losses[0], losses
    assert os.path.exists(os.path.join(c.workdir, "tokenizer", "tokenizer.json"))
    assert tokenizer.encode("17 * 23") == records_tokenizer(read_chat_jsonl(CHAT), 300).encode("17 * 23")


# ---------------------------------------------------------------------------------------------------
# Verifiers


def test_final_answer_and_numbers():
    assert final_answer("so \\boxed{\\frac{1}{2}} it is") == "\\frac{1}{2}"
    assert final_answer("<answer> 7 </answer> trailing") == "7"
    assert final_answer("Thinking... Answer: 12\nfinal answer: 13") == "13"
    assert final_answer("  just this ") == "just this"
    assert parse_number("total 1,234.5 dollars") == 1234.5
    assert parse_number("it is -3/4") == -0.75 and parse_number("2.5e-3") == 0.0025
    assert parse_number("none here") is None and parse_number("1/0") is None


def test_exact_match_numeric_and_regex():
    exact, numeric, regex = VERIFIERS["exact_match"], VERIFIERS["numeric"], VERIFIERS["regex"]
    assert exact.verify("Answer: PARIS.", "Paris").reward == 1.0
    assert exact.verify("Answer: Lyon", ["Paris", "paris, france"]).reward == 0.0
    assert exact.verify("Answer:  Paris,  France", ["Paris", "paris, france"]).reward == 1.0
    assert exact.verify("Answer: paris", "Paris", case_sensitive=True).reward == 0.0
    assert numeric.verify("The total is 1,000.00001", 1000, rel_tol=1e-6).reward == 1.0
    assert numeric.verify("The total is 1,001", "1000", rel_tol=1e-6).reward == 0.0
    assert numeric.verify("Answer: 3/4", 0.75).reward == 1.0
    assert numeric.verify("no idea", 3) == (0.0, "no number found in the answer")
    assert regex.verify("Answer: Yes", r"^(yes|no)$", flags="i").reward == 1.0
    assert regex.verify("Answer: yes indeed", r"yes|no", full_match=True).reward == 0.0
    assert regex.verify("the word yes is early; Answer: no", r"yes", on_answer=False).reward == 1.0
    assert numeric.check("abc", {}) and numeric.check(float("inf"), {}) and numeric.check(2, {"rel_tol": -1})
    assert regex.check("(", {}).startswith("is not a valid regular expression")
    assert exact.check([], {}) and exact.check("ok", {}) is None


def test_python_tests_run_in_the_sandbox():
    verifier = VERIFIERS["python_tests"]
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    good = "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert verifier.verify(good, tests) == (1.0, "tests passed")
    wrong = verifier.verify("```python\ndef add(a, b):\n    return a - b\n```", tests)
    assert wrong.reward == 0.0 and "AssertionError" in wrong.detail and "exit code 1" in wrong.detail
    assert verifier.verify("def add(a, b): return a + b", tests).reward == 1.0  # no fence: the whole text
    hang = verifier.verify("```python\nimport time\ntime.sleep(30)\n```", tests, timeout_s=1.0)
    assert hang == (0.0, "tests timed out after 1 s")
    assert verifier.check("assert (", {}).startswith("is not valid Python")


# ---------------------------------------------------------------------------------------------------
# The prompt-set env


def test_prompt_set_env_is_registered_and_its_expert_solves_every_task():
    assert "prompt_set/jsonl" in registered()
    env = make("prompt_set/jsonl", path=MATH, verifier="numeric", verifier_options={"rel_tol": 1e-9})
    assert len(env) == 6 and env.system_prompt.endswith("'Answer: <number>'.")
    chats = expert_episodes("prompt_set/jsonl", range(6), env_kwargs={"path": MATH, "verifier": "numeric"})
    assert len(chats) == 6  # successful_only: every task's reference answer passes its verifier
    observation, info = env.reset(4 + 6 * 1000)  # seed % n
    assert observation.startswith("What fraction") and info["id"] == "frac" and info["difficulty"] == "hard"
    assert "answer" not in info and "solution" not in info  # the reference is not handed out
    assert env.step("Answer: 0.7") == (
        "incorrect",
        0.0,
        True,
        False,
        {"success": False, "verdict": "incorrect", "attempts": 1},
    )
    env.reset(5)  # this record names its own verifier: exact_match, with two accepted answers
    assert env.step("Answer: tōkyō")[1] == 1.0


def test_prompt_set_env_gives_retries_and_runs_code_tests():
    env = make("prompt_set/jsonl", path=MATH, verifier="numeric", max_attempts=2)
    env.reset(0)
    observation, reward, terminated, _, info = env.step("Answer: 41")
    assert (observation, reward, terminated, info["attempts"]) == ("incorrect. Try again.", 0.0, False, 1)
    assert env.step("Answer: 42")[1:3] == (1.0, True)
    code = make("prompt_set/jsonl", path=CODE, verifier="python_tests")
    for seed in range(2):
        code.reset(seed)
        assert code.step(code.reference_answer())[1] == 1.0
    code.reset(1)
    reward, detail = code.step("```python\ndef reverse_words(s):\n    return s\n```")[1], code.record["id"]
    assert reward == 0.0 and detail == "reverse"


BAD_TASKS = [
    ({"answer": 1}, "field 'prompt': missing"),
    ({"prompt": "q"}, "field 'answer' is missing"),
    ({"prompt": "q", "answer": "many"}, "field 'answer' must be a finite number"),
    ({"prompt": "q", "answer": 1, "verifier": "fuzzy"}, "field 'verifier': 'fuzzy' is not one of"),
    (
        {"prompt": "q", "verifier": "regex", "pattern": "(("},
        "field 'pattern' is not a valid regular expression",
    ),
    ({"prompt": "q", "verifier": "python_tests", "tests": "assert ("}, "field 'tests' is not valid Python"),
    ({"prompt": "q", "answer": 1, "solution": 1}, "field 'solution' must be a string"),
]


@pytest.mark.parametrize("task, error", BAD_TASKS)
def test_a_malformed_prompt_set_names_its_line_and_field(tmp_path, task, error):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "fine", "answer": 2}) + "\n\n" + json.dumps(task) + "\n")
    with pytest.raises(RecordError, match=f"prompts.jsonl line 3: {error}"):
        make("prompt_set/jsonl", path=str(path), verifier="numeric")


def test_prompt_set_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['tolerance'\] for verifier 'numeric'"):
        make("prompt_set/jsonl", path=MATH, verifier="numeric", verifier_options={"tolerance": 0.1})
    with pytest.raises(KeyError, match="unknown verifier"):
        VERIFIERS["fuzzy"]
    env = make("prompt_set/jsonl", path=CODE, verifier="python_tests")
    path = tmp_path / "no_solution.jsonl"
    path.write_text(json.dumps({"prompt": "p", "verifier": "regex", "pattern": "x"}) + "\n")
    env = make("prompt_set/jsonl", path=str(path), verifier="numeric")
    env.reset(0)
    with pytest.raises(ValueError, match="has no 'solution' field"):
        env.scripted_policy()
