"""Filters and composition: each filter removes exactly what it names, near-duplicate removal agrees with an
exact-Jaccard reference, decontamination finds held-out tasks, mixing hits its ratios, and the report adds up."""

import random

import numpy as np
import pytest

from alejax.agent.loop import run_episode
from alejax.data.filters import (
    FILTERS,
    apply_filters,
    composition,
    contamination,
    env_eval_texts,
    filter_table,
    jaccard,
    lsh_bands,
    minhash_signatures,
    record_length,
    shingles,
    tool_call_problem,
)
from alejax.data.records import TrajectoryRecord, record_from_episode
from alejax.envs import make


def _episodes(env_name, seeds, guess_fraction=0.0, difficulty=None):
    env = make(env_name)
    out = []
    for seed in seeds:
        policy = lambda e: e.scripted_policy(compact=True, guess_fraction=guess_fraction)  # noqa: E731
        episode = run_episode(env, policy, seed, policy_needs_env=True)
        record = record_from_episode(episode, env=env_name, seed=seed, policy="scripted", tools=env.tools)
        record.info["difficulty"] = difficulty or env_name.split("/")[1]
        out.append(record)
    return out


def _chat(*turns, **fields):
    messages = [{"role": "user", "content": "task"}]
    for turn in turns:
        messages += [{"role": "assistant", "content": turn}, {"role": "tool", "content": "ok"}]
    return TrajectoryRecord(messages=messages, **fields)


@pytest.fixture(scope="module")
def mixed():
    return _episodes("arithmetic/easy", range(40), guess_fraction=0.5)


def test_success_and_reward_thresholds(mixed):
    wins = [r for r in mixed if r.reward == 1.0]
    assert 5 < len(wins) < 35  # the mixed expert guesses about half the time
    assert FILTERS["success"](mixed) == wins
    assert FILTERS["min_reward"](mixed, threshold=0.5) == wins
    ungraded = _chat("x")
    report = {}
    assert FILTERS["success"]([ungraded], report=report) == [] and report == {"ungraded": 1}
    assert (
        FILTERS["min_reward"]([_chat("x", reward=0.3), _chat("y", reward=0.7)], threshold=0.5)[0].reward
        == 0.7
    )


def test_length_and_turn_bounds(mixed):
    turns = [r.n_turns for r in mixed]
    assert set(turns) == {1, 3}  # a guess answers at once; the expert reduces 2 operations then answers
    assert all(r.n_turns == 3 for r in FILTERS["turn_bounds"](mixed, min_turns=2))
    report = {}
    assert all(r.n_turns == 1 for r in FILTERS["turn_bounds"](mixed, max_turns=1, report=report))
    assert report["too_many"] == turns.count(3) and report["too_few"] == 0
    chars = [record_length(r, "chars") for r in mixed]
    cut = sorted(chars)[20]
    kept = FILTERS["length_bounds"](mixed, max_length=cut, unit="chars")
    assert len(kept) == sum(c <= cut for c in chars) and all(record_length(r, "chars") <= cut for r in kept)
    with_tokens = TrajectoryRecord(
        messages=[], tokens=[1, 2, 3], loss_mask=[0, 1, 1], chunk_id=[0, 1, 1], behaviour_logp=[0, -1, -1]
    )
    assert record_length(with_tokens) == 3 and FILTERS["length_bounds"]([with_tokens], min_length=4) == []
    with pytest.raises(ValueError, match="pass a tokenizer"):
        record_length(mixed[0])


def test_valid_tool_calls(mixed):
    tools = make("arithmetic/easy").tools
    assert FILTERS["valid_tool_calls"](mixed) == mixed  # the expert's compact calls all validate
    bad_json = _chat('<tool_call>{"name": "calc", "arguments": {</tool_call>', tools=tools)
    unknown = _chat('<tool_call>\n{"name": "sqrt", "arguments": {"x": 4}}\n</tool_call>', tools=tools)
    missing = _chat('<tool_call>{"name": "calc", "arguments": {}}</tool_call>', tools=tools)
    structured = TrajectoryRecord(
        messages=[
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"type": "function", "function": {"name": "calc", "arguments": {"expr": "1"}}}
                ],
            },
        ],
        tools=tools,
    )
    report = {}
    assert (
        FILTERS["valid_tool_calls"](mixed[:3] + [bad_json, unknown, missing, structured], report=report)
        == mixed[:3]
    )
    assert sum(report["problems"].values()) == 4 and len(report["problems"]) == 3
    assert "unknown tool" in tool_call_problem(unknown) and "missing required" in tool_call_problem(missing)
    # Without schemas only the JSON of <tool_call> blocks is checked.
    assert tool_call_problem(_chat('<tool_call>{"name": "anything"}</tool_call>')) is None
    assert tool_call_problem(_chat("<tool_call>{nope}</tool_call>")) == "turn 1: bad JSON in a tool call"


def test_loop_detection():
    clean = _chat("calc 1 + 2", "calc 3 * 3", "answer 9")
    repeated = _chat("calc 1 + 2", "calc 1 + 2", "calc  1 + 2")
    cycle = _chat("look", "back", "look", "back", "look", "back")
    babble = _chat(" ".join(["the shop is open"] * 15))
    report = {}
    assert FILTERS["no_loops"]([clean, repeated, cycle, babble], report=report) == [clean]
    assert report["reasons"] == {
        "the same action 3 times in a row": 1,
        "a cycle of 2 actions repeated 3 times": 1,
        "a turn whose 4-grams mostly repeat": 1,
    }
    assert FILTERS["no_loops"]([repeated], max_repeats=4) == [repeated]  # the threshold is a parameter


def test_exact_duplicates_keep_the_first():
    a, b, c = _chat("Answer 7"), _chat("answer   7"), _chat("answer 8")
    report = {}
    assert FILTERS["dedup_exact"]([a, b, c], report=report) == [a, c] and report == {"distinct": 2}
    # One record per prompt: compare the user messages only.
    assert len(FILTERS["dedup_exact"]([a, c], roles=["user"])) == 1


def _texts(n, seed=0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)] + list("的一是在了有和人这中")
    base = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(n)]
    texts = list(base)
    for text in base[: n // 2]:  # near copies: a few words changed
        words = text.split()
        for _ in range(rng.randint(1, 4)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    rng.shuffle(texts)
    return texts


def test_minhash_estimates_jaccard():
    texts = _texts(20)
    sets = [shingles(t) for t in texts]
    signatures = minhash_signatures(sets, num_perm=256)
    errors = [
        abs(np.mean(signatures[i] == signatures[j]) - jaccard(sets[i], sets[j]))
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
    ]
    assert np.mean(errors) < 0.02 and max(errors) < 0.12  # std of the estimate <= 0.5/sqrt(256) = 0.03
    bands, rows = lsh_bands(128, 0.8)
    assert bands * rows == 128 and (1 / bands) ** (1 / rows) <= 0.8


def test_near_duplicate_removal_matches_the_exact_reference():
    texts = _texts(40, seed=1)
    records = [TrajectoryRecord(messages=[{"role": "user", "content": t}]) for t in texts]
    sets = [shingles(f"user: {t}") for t in texts]
    reference = []  # greedy over exact Jaccard: drop a record similar to an earlier kept one
    for i in range(len(records)):
        if all(jaccard(sets[i], sets[j]) < 0.7 for j in reference):
            reference.append(i)
    report = {}
    kept = FILTERS["dedup_near"](records, threshold=0.7, report=report)
    assert kept == [records[i] for i in reference]
    assert 15 <= len(records) - len(kept) <= 20 and len(report["examples"]) == 5


def test_decontamination_against_held_out_env_tasks():
    train = _episodes("arithmetic/easy", range(60))
    held_out = env_eval_texts("arithmetic/easy", range(1000, 1040))
    contaminated = {i for i, r in enumerate(train) if r.messages[1]["content"] in held_out}
    for i in range(5):  # plant five held-out tasks in the training set
        train[i].messages[1]["content"] = held_out[i]
    contaminated |= set(range(5))
    report = {}
    kept = FILTERS["decontaminate"](train, eval_texts=held_out, n=13, roles=["user"], report=report)
    assert len(kept) == len(train) - len(contaminated)
    assert report["eval_tasks_hit"] >= 5 and report["examples"][0]["overlap"].startswith("compute")
    # Long texts: 13 consecutive shared words are contamination, 12 are not.
    passage = " ".join(f"word{i}" for i in range(30))
    near = TrajectoryRecord(
        messages=[{"role": "user", "content": "intro " + " ".join(passage.split()[5:18])}]
    )
    far = TrajectoryRecord(messages=[{"role": "user", "content": "intro " + " ".join(passage.split()[5:17])}])
    assert [i for i, _, _ in contamination([near, far], [passage], n=13)] == [0]


def test_mixing_by_env_and_difficulty():
    records = _episodes("arithmetic/easy", range(40)) + _episodes("arithmetic/hard", range(20))
    report = {}
    mixed = FILTERS["mix"](records, ratios={"arithmetic/easy": 3, "arithmetic/hard": 1}, report=report)
    counts = composition(mixed)
    assert counts["arithmetic/easy"]["count"] == 40 and counts["arithmetic/hard"]["count"] == 13
    assert report["available"] == {"arithmetic/easy": 40, "arithmetic/hard": 20}
    assert [r.seed for r in mixed if r.env == "arithmetic/easy"] == list(range(40))  # input order kept
    again = FILTERS["mix"](records, ratios={"arithmetic/easy": 3, "arithmetic/hard": 1})
    assert again == mixed  # seeded
    by_level = FILTERS["mix"](records, ratios={"easy": 0.5, "hard": 0.5}, by="difficulty", total=30)
    assert composition(by_level, "difficulty") == {
        "easy": {"count": 15, "share": 0.5, "success_rate": 1.0},
        "hard": {"count": 15, "share": 0.5, "success_rate": 1.0},
    }
    joint = FILTERS["mix"](records, ratios={"arithmetic/hard+hard": 1}, by="env+difficulty")
    assert len(joint) == 20
    with pytest.raises(ValueError, match="group 'arithmetic/hard' has 20, enough for 40"):
        FILTERS["mix"](records, ratios={"arithmetic/easy": 1, "arithmetic/hard": 1}, total=60)
    with pytest.raises(ValueError, match=r"no records in group\(s\) \['medium'\]"):
        FILTERS["mix"](records, ratios={"medium": 1}, by="difficulty")


def test_apply_filters_reports_what_each_removed(mixed):
    duplicated = mixed + mixed[:5]
    held_out = env_eval_texts("arithmetic/easy", range(0, 3))  # seeds 0..2 are in the data
    kept, report = apply_filters(
        duplicated,
        [
            "success",
            ("turn_bounds", {"min_turns": 1, "max_turns": 8}),
            {"name": "valid_tool_calls"},
            "no_loops",
            "dedup_exact",
            ("dedup_near", {"threshold": 0.95}),
            ("decontaminate", {"eval_texts": held_out, "n": 13}),
        ],
    )
    wins = [r for r in mixed if r.reward == 1.0 and r.seed not in (0, 1, 2)]
    assert [r.seed for r in kept] == [r.seed for r in wins]
    assert report["input"] == 45 and report["output"] == len(kept)
    assert sum(f["removed"] for f in report["filters"]) == 45 - len(kept)
    by_name = {f["name"]: f for f in report["filters"]}
    assert by_name["success"]["removed"] == 45 - sum(r.reward == 1.0 for r in duplicated)
    assert by_name["dedup_exact"]["removed"] == sum(r.reward == 1.0 for r in mixed[:5])
    assert by_name["decontaminate"]["details"]["eval_tasks"] == 3
    table = filter_table(report)
    assert "| dedup_exact |" in table and table.startswith("45 records in")
    with pytest.raises(KeyError, match="unknown data filter 'shuffle'"):
        apply_filters(mixed, ["shuffle"])
