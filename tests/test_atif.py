"""ATIF export and import: alejax records (chats, tool calls, sampled token layouts with μ, replayed turns) go
out as valid ATIF and read back equal; trajectories other agents wrote read into chats and token layouts."""

import json
import os

import numpy as np
import pytest

from alejax.data.atif import atif_to_record, read_atif, record_to_atif, write_atif
from alejax.data.datasets import chat_rows, load_records, read_chat_jsonl, records_tokenizer
from alejax.data.records import RecordError, TrajectoryRecord, record_from_episode, record_from_trajectory
from alejax.envs import make
from alejax.reward.verifiers import VERIFIERS
from alejax.rollout.trajectory import Trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "datasets")
CHAT = os.path.join(DATA, "chat.jsonl")
MATH = os.path.join(DATA, "prompts_math.jsonl")


def assert_valid_atif(doc: dict) -> None:
    """The RFC's structural rules (v1.6): required root and step fields, sequential step ids, fields only where
    the RFC allows them, every observation's source_call_id naming a tool call of its own step."""
    assert doc["schema_version"] == "ATIF-v1.6" and isinstance(doc["session_id"], str) and doc["session_id"]
    assert (
        {"name", "version"}
        <= set(doc["agent"])
        <= {"name", "version", "model_name", "tool_definitions", "extra"}
    )
    assert set(doc) <= {"schema_version", "session_id", "agent", "steps", "notes", "final_metrics", "extra"}
    assert [s["step_id"] for s in doc["steps"]] == list(range(1, len(doc["steps"]) + 1))
    for step in doc["steps"]:
        assert step["source"] in ("system", "user", "agent") and isinstance(step["message"], str)
        agent_only = {"model_name", "reasoning_effort", "reasoning_content", "tool_calls", "metrics"}
        if step["source"] != "agent":
            assert not agent_only & set(step), step
        call_ids = set()
        for call in step.get("tool_calls", []):
            assert set(call) == {"tool_call_id", "function_name", "arguments"} and isinstance(
                call["arguments"], dict
            )
            call_ids.add(call["tool_call_id"])
        for result in step.get("observation", {}).get("results", []):
            assert set(result) <= {"source_call_id", "content", "subagent_trajectory_ref"}
            assert result.get("source_call_id", next(iter(call_ids), None)) in call_ids | {None}
        metrics = step.get("metrics", {})
        if "logprobs" in metrics:
            assert (
                len(metrics["logprobs"])
                == len(metrics["completion_token_ids"])
                == metrics["completion_tokens"]
            )
        if "prompt_token_ids" in metrics:
            assert len(metrics["prompt_token_ids"]) == metrics["prompt_tokens"]
    json.dumps(doc)  # plain JSON


def roundtrip(record: TrajectoryRecord) -> TrajectoryRecord:
    doc = json.loads(json.dumps(record_to_atif(record)))
    assert_valid_atif(doc)
    return atif_to_record(doc)


def test_chat_dataset_records_round_trip(tmp_path):
    records = read_chat_jsonl(CHAT)
    for record in records:
        assert roundtrip(record) == record
    path = str(tmp_path / "chats.jsonl")
    assert write_atif(path, records) == 12
    assert read_atif(path) == records
    single = str(tmp_path / "one" / "trajectory.json")
    write_atif(single, records[3:4])
    assert read_atif(single) == records[3:4] and read_atif(str(tmp_path / "one")) == records[3:4]
    with pytest.raises(ValueError, match="holds one trajectory"):
        write_atif(str(tmp_path / "two.json"), records[:2])
    # Tool calls are ATIF's structured calls, their answers the step's observation.
    doc = record_to_atif(records[5])
    agent = doc["steps"][1]
    assert [c["function_name"] for c in agent["tool_calls"]] == ["calc", "get_weather"]
    assert [r["source_call_id"] for r in agent["observation"]["results"]] == ["call_1", "call_2"]
    assert doc["agent"]["tool_definitions"] == records[5].tools


def test_env_episode_with_tool_calls_in_its_text_round_trips():
    env = make("arithmetic/easy")
    from alejax.agent.loop import run_episode

    episode = run_episode(env, lambda e: e.scripted_policy(), 3, policy_needs_env=True)
    record = record_from_episode(episode, env="arithmetic/easy", seed=3, policy="scripted", tools=env.tools)
    doc = record_to_atif(record)
    agent_steps = [s for s in doc["steps"] if s["source"] == "agent"]
    assert [s["tool_calls"][0]["function_name"] for s in agent_steps] == ["calc", "calc", "answer"]
    assert agent_steps[-1]["observation"]["results"][0]["content"] == "correct"
    assert doc["extra"]["alejax"]["env"] == "arithmetic/easy" and doc["extra"]["alejax"]["seed"] == 3
    assert roundtrip(record) == record


def _sampled_trajectories():
    """Real rollouts: a tiny random model answering the prompt set, up to 3 attempts (3 turns)."""
    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe
    from alejax.envs.pools import ThreadEnvPool
    from alejax.models import ModelConfig, create_model
    from alejax.rollout.sampler import Sampler, SamplingConfig
    from alejax.rollout.scheduler import EpisodeRequest, RolloutConfig, RolloutScheduler

    tokenizer = train_bpe(generate_corpus(200, seed=0), vocab_size=400)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
    )
    sampler = Sampler(
        create_model(config, seed=3), 4, 256, SamplingConfig(1.0), stop_ids=[tokenizer.eos_id], segment=6
    )
    factory = lambda: make("prompt_set/jsonl", path=MATH, verifier="numeric", max_attempts=3)  # noqa: E731
    pool = ThreadEnvPool(factory, max_concurrency=4)
    env = factory()
    scheduler = RolloutScheduler(
        sampler,
        tokenizer,
        pool,
        system_prompt=env.system_prompt,
        config=RolloutConfig(max_turns=3, max_new_tokens_per_turn=8),
        seed=0,
    )
    trajectories, _ = scheduler.collect([EpisodeRequest(task_seed=s, group_id=s) for s in range(4)])
    pool.close()
    return trajectories, tokenizer


def test_sampled_trajectories_round_trip_with_token_ids_and_behaviour_logprobs():
    trajectories, tokenizer = _sampled_trajectories()
    assert max(t.n_turns for t in trajectories) > 1  # wrong answers were retried: multi-turn layouts
    for traj in trajectories:
        record = record_from_trajectory(
            traj, env="prompt_set/jsonl", policy="random-32", env_kwargs={"path": MATH}
        )
        # RL on the prompt set: the reward is the verifier's grade of the last answer; a retry follows a wrong one.
        env = make("prompt_set/jsonl", path=MATH, verifier="numeric")
        env.reset(traj.task_seed)
        grades = [VERIFIERS["numeric"].verify(a, env.record["answer"]).reward for a in traj.actions()]
        assert traj.terminated and traj.reward == grades[-1] and not any(grades[:-1])
        doc = record_to_atif(record)
        agent_steps = [s for s in doc["steps"] if s["source"] == "agent"]
        chunks = np.asarray(traj.chunk_id)
        for k, step in enumerate(agent_steps, start=1):
            metrics = step["metrics"]
            where = np.flatnonzero(chunks == k)
            assert metrics["completion_token_ids"] == [traj.tokens[i] for i in where]
            assert metrics["logprobs"] == [float(traj.behaviour_logp[i]) for i in where]
            assert metrics["prompt_token_ids"] == traj.tokens[: where[0]]
            assert tokenizer.decode(metrics["completion_token_ids"]).startswith(step["message"])
        assert "token_layout" not in doc["extra"]["alejax"]  # ATIF's own fields carried the whole layout
        back = roundtrip(record)
        assert back == record and back.behaviour_logp == [float(x) for x in traj.behaviour_logp]


def test_replayed_turns_and_il_weights_round_trip():
    traj = Trajectory(episode_id=0, task_seed=7, group_id=0)
    traj.add_context([5, 6, 7])
    traj.add_replayed([8, 9])  # an IPA prefix turn: context, not sampled
    traj.add_context([10])
    traj.add_generated([11, 12, 1], [-0.5, -1.25, -0.125], chunk=2)
    traj.add_context([13])
    traj.il_weight = [0.0] * 3 + [0.5, 0.5] + [0.0] * 5
    traj.turn_rewards = [0.0, 1.0]
    traj.messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "a"},
        {"role": "tool", "content": "ok"},
        {"role": "assistant", "content": "b"},
    ]
    record = record_from_trajectory(traj, env="toy/echo", policy="p")
    doc = record_to_atif(record)
    first, second = [s for s in doc["steps"] if s["source"] == "agent"]
    assert first["metrics"]["extra"]["alejax"]["replayed"] and "logprobs" not in first["metrics"]
    assert second["metrics"]["logprobs"] == [-0.5, -1.25, -0.125]
    assert doc["extra"]["alejax"]["trailing_token_ids"] == [13]
    assert roundtrip(record) == record
    # A layout ATIF's fields cannot express (a sampled token outside the loss) travels as arrays.
    record.loss_mask[6] = 0
    assert "token_layout" in record_to_atif(record)["extra"]["alejax"] and roundtrip(record) == record


def test_foreign_atif_reads_into_a_chat_and_a_token_layout():
    (record,) = read_atif(os.path.join(DATA, "atif_foreign.json"))
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant", "tool", "assistant"]
    call = record.messages[2]["tool_calls"][0]
    assert call == {
        "id": "tc-1",
        "type": "function",
        "function": {"name": "bash", "arguments": {"command": "echo hello > notes.txt"}},
    }
    assert record.messages[2]["reasoning_content"] == "One echo is enough."
    assert record.messages[3] == {"role": "tool", "content": "[exit code 0]", "tool_call_id": "tc-1"}
    assert record.policy == "demo-model" and record.id == "demo-terminal-0001" and record.reward == 1.0
    assert record.tools[0]["function"]["name"] == "bash"
    assert record.tokens == [11, 12, 13, 14, 15, 16, 21, 22, 23, 2, 31, 32, 33, 41, 42, 2]
    assert record.loss_mask == [0] * 6 + [1] * 4 + [0] * 3 + [1] * 3
    assert record.chunk_id == [0] * 6 + [1] * 4 + [0] * 3 + [2] * 3
    assert (
        record.behaviour_logp[6:10] == [-0.5, -0.25, -0.125, -0.0625] and record.behaviour_logp[-1] == -0.01
    )
    # ...and SFT reads it like any chat (rendered with its tools; the loss on the two agent turns).
    records = load_records("atif", os.path.join(DATA, "atif_foreign.json"))
    rows, _ = chat_rows(records_tokenizer(records, 300), records, 256)
    assert rows["loss_mask"].sum() > 0


def test_sft_rows_from_atif_equal_those_from_the_jsonl(tmp_path):
    records = read_chat_jsonl(CHAT)
    path = str(tmp_path / "chats.jsonl")
    write_atif(path, records)
    tokenizer = records_tokenizer(records, 500)
    from_jsonl, _ = chat_rows(tokenizer, records, 256)
    from_atif, _ = chat_rows(tokenizer, load_records("atif", path), 256)
    for key in from_jsonl:
        np.testing.assert_array_equal(from_jsonl[key], from_atif[key])


BAD_DOCS = [
    ({"steps": []}, "field 'schema_version' is missing"),
    ({"schema_version": "ATIF-v2.0", "steps": []}, "schema_version 'ATIF-v2.0'"),
    (
        {"schema_version": "ATIF-v1.4", "steps": [{"source": "robot", "message": ""}]},
        r"steps\[0\]\.source: 'robot'",
    ),
    (
        {
            "schema_version": "ATIF-v1.4",
            "steps": [{"source": "agent", "message": "", "tool_calls": [{"arguments": {}}]}],
        },
        r"steps\[0\]\.tool_calls\[0\]\.function_name",
    ),
    (
        {
            "schema_version": "ATIF-v1.6",
            "steps": [{"source": "user", "message": [{"type": "image", "source": {}}]}],
        },
        r"steps\[0\]\.message\[0\]: a 'image' content part",
    ),
    (
        {
            "schema_version": "ATIF-v1.4",
            "steps": [
                {
                    "step_id": 1,
                    "source": "agent",
                    "message": "x",
                    "metrics": {"prompt_token_ids": [1], "completion_token_ids": [2, 3], "logprobs": [-1.0]},
                }
            ],
        },
        "step 1: 1 logprobs for 2 tokens",
    ),
]


@pytest.mark.parametrize("doc, error", BAD_DOCS)
def test_malformed_atif_names_the_step_and_field(tmp_path, doc, error):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"schema_version": "ATIF-v1.6", "steps": []}) + "\n" + json.dumps(doc) + "\n")
    with pytest.raises(RecordError, match=f"bad.jsonl line 2.*{error}"):
        read_atif(str(path))
