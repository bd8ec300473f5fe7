"""The synthesize job: shards and the data card, mix ratios, resuming a killed run without duplicates, callable
and model policies, clear errors for a bad policy or mix."""

import json
import os
import re
from collections import Counter

import pytest

from alejax.config import load_config_file
from alejax.data.datasets import read_chat_jsonl
from alejax.data.records import read_records
from alejax.jobs import synthesize

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "synthesize.py")


def tiny(tmp_path, **overrides):
    c = load_config_file(CONFIG + ":tiny")
    c.workdir = str(tmp_path / "synth")
    c.n_episodes, c.shard_size, c.progress_every_s = 30, 8, 0.0
    c.heldout.n_tasks = 50
    for key, value in overrides.items():
        c[key] = value
    return c


def shard_lines(directory):
    return {
        name: open(os.path.join(directory, name), encoding="utf-8").read().splitlines()
        for name in sorted(os.listdir(directory))
        if name.endswith(".jsonl")
    }


def test_shards_card_and_filters(tmp_path):
    c = tiny(tmp_path)
    out = synthesize.run(c)
    raw_dir = os.path.join(c.workdir, "raw")
    assert len(shard_lines(raw_dir)) == 4  # 30 episodes, 8 per shard
    records = read_records(raw_dir)
    assert len(records) == out["episodes"] == 30
    assert all(
        r.policy == "scripted" and r.id == f"{r.env}:{r.seed}" and r.reward is not None for r in records
    )
    assert {r.env for r in records} == {"arithmetic/easy", "relation/grounding"}

    card = json.load(open(out["card"]))
    for key in ("policy", "mix", "seeds", "raw", "filters", "final", "resume", "files"):
        assert key in card
    raw = card["raw"]
    assert raw["count"] == 30 and raw["composition"]["arithmetic/easy"]["count"] == 20
    assert raw["success_rate"] == pytest.approx(sum(r.is_success for r in records) / 30)
    assert raw["success_ci"][0] <= raw["success_rate"] <= raw["success_ci"][1]
    assert sum(raw["turns"]["histogram"].values()) == 30 and raw["length"]["unit"] == "chars"
    # Each configured filter is reported, in order; what they removed adds up to what the data holds.
    steps = card["filters"]["filters"]
    assert [f["name"] for f in steps] == c.filters.split(",")
    assert steps[0]["removed"] == sum(not r.is_success for r in records) > 0  # the guessing expert's failures
    assert 30 - sum(f["removed"] for f in steps) == card["final"]["count"] == out["kept"]
    # The filtered shards are an SFT dataset (data.source=jsonl reads the directory).
    kept = read_chat_jsonl(out["data_dir"])
    assert len(kept) == out["kept"] and all(r.is_success for r in kept)
    for name in ("data_card.md", "lengths.png", "turns.png"):
        assert os.path.getsize(os.path.join(c.workdir, name)) > 0
    assert "| decontaminate |" in open(os.path.join(c.workdir, "data_card.md")).read()


def test_mix_ratios_are_honoured(tmp_path):
    mix = synthesize.parse_mix("arithmetic/easy:3, relation/grounding:1.5,toy/echo")
    assert mix == {"arithmetic/easy": 3.0, "relation/grounding": 1.5, "toy/echo": 1.0}
    plan = synthesize.plan_episodes(mix, 22, first_seed=7)
    assert Counter(env for env, _ in plan) == {"arithmetic/easy": 12, "relation/grounding": 6, "toy/echo": 4}
    assert len(set(plan)) == 22 and {s for env, s in plan if env == "toy/echo"} == {7, 8, 9, 10}
    assert Counter(env for env, _ in plan[:11]) == {
        "arithmetic/easy": 6,
        "relation/grounding": 3,
        "toy/echo": 2,
    }
    c = tiny(tmp_path, mix="arithmetic/easy:1,relation/grounding:3", n_episodes=20, filters="")
    card = json.load(open(synthesize.run(c)["card"]))
    assert card["mix"]["planned"] == {"arithmetic/easy": 5, "relation/grounding": 15}
    assert {env: g["count"] for env, g in card["raw"]["composition"].items()} == card["mix"]["planned"]
    assert card["filters"]["filters"] == [] and card["final"]["count"] == 20


def test_a_killed_run_resumes_without_duplicates(tmp_path, monkeypatch):
    c = tiny(tmp_path)
    raw_dir = os.path.join(c.workdir, "raw")
    real_write, calls = synthesize.write_shard, []

    def killed_after_two(directory, records):
        if len(calls) == 2:
            with open(_half := os.path.join(directory, "part-00002.jsonl.tmp"), "w") as f:
                f.write('{"messages": [')  # a write the kill cut short
            raise KeyboardInterrupt
        calls.append(1)
        return real_write(directory, records)

    monkeypatch.setattr(synthesize, "write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        synthesize.run(c)
    first = shard_lines(raw_dir)
    assert len(first) == 2 and sum(map(len, first.values())) == 16

    monkeypatch.setattr(synthesize, "write_shard", real_write)
    out = synthesize.run(c)
    assert out["played_this_run"] == 30 - 16 and out["episodes"] == 30
    again = shard_lines(raw_dir)
    assert {name: again[name] for name in first} == first  # the finished shards are left as they were
    ids = [json.loads(line)["id"] for lines in again.values() for line in lines]
    assert len(ids) == len(set(ids)) == 30
    assert set(ids) == {
        synthesize.episode_id(*e) for e in synthesize.plan_episodes(synthesize.parse_mix(c.mix), 30, 0)
    }
    assert not any(name.endswith(".tmp") for name in os.listdir(raw_dir))
    # A third run plays nothing; the card says what each run did.
    assert synthesize.run(c)["played_this_run"] == 0
    assert json.load(open(out["card"]))["resume"] == {
        "episodes_before_this_run": 30,
        "played_this_run": 0,
        "runs": 3,
    }
    # Other settings in the same workdir would mix two datasets: an error naming the setting.
    with pytest.raises(ValueError, match="expert"):
        c.expert["arithmetic/easy"]["guess_fraction"] = 0.5
        synthesize.run(c)


def test_a_callable_policy(tmp_path, monkeypatch):
    (tmp_path / "my_policies.py").write_text(
        "SEEN = []\n"
        "def always_located_in(messages):\n"
        "    SEEN.append(messages)\n"
        "    return 'located_in'\n"
        "def not_text(messages):\n"
        "    return {'content': 'located_in'}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    c = tiny(tmp_path, policy="my_policies:always_located_in", mix="relation/grounding", n_episodes=12)
    c.filters = "success"
    out = synthesize.run(c)
    import my_policies

    records = read_records(os.path.join(c.workdir, "raw"))
    assert len(my_policies.SEEN) == 12 and my_policies.SEEN[0][0]["role"] == "system"
    assert all(r.policy == "callable:my_policies:always_located_in" for r in records)
    assert all(
        [m["content"] for m in r.messages if m["role"] == "assistant"] == ["located_in"] for r in records
    )
    assert [r.success for r in records] == [r.info["gold"] == "located_in" for r in records]
    assert out["kept"] == sum(r.info["gold"] == "located_in" for r in records) < 12
    with pytest.raises(TypeError, match="returned a dict"):
        synthesize.run(
            tiny(tmp_path / "b", policy="my_policies:not_text", mix="relation/grounding", n_episodes=2)
        )


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("no_such_module_xyz:act", ValueError, "cannot import module 'no_such_module_xyz'"),
        ("json:no_such_function", ValueError, "has no attribute 'no_such_function'"),
        ("json:__doc__", ValueError, "is a str, not a callable"),
        ("expert", ValueError, "'expert' is not a policy: expected 'scripted', 'smollm2'"),
        ("runs/no/such/model", FileNotFoundError, "no such model directory"),
        ("missing.gguf", FileNotFoundError, "no such .gguf file"),
    ],
)
def test_a_bad_policy_spec_is_a_clear_error(tmp_path, spec, error, message):
    with pytest.raises(error, match=re.escape(message)):
        synthesize.run(tiny(tmp_path, policy=spec))
    assert not os.path.exists(os.path.join(tmp_path, "synth", "raw", "part-00000.jsonl"))


def test_a_directory_without_a_model_and_a_bad_mix(tmp_path):
    os.makedirs(tmp_path / "ckpt" / "checkpoints")
    with pytest.raises(ValueError, match="no config.json"):
        synthesize.resolve_policy(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="ratio 'x' is not a number"):
        synthesize.parse_mix("arithmetic/easy:x")
    with pytest.raises(ValueError, match="unknown env.*'shop/nope'"):
        synthesize.parse_mix("arithmetic/easy:1,shop/nope:2")
    with pytest.raises(KeyError, match="unknown data filter 'dedup_fuzzy'"):  # before anything is played
        synthesize.run(tiny(tmp_path, filters="success,dedup_fuzzy"))
    assert not os.path.exists(tmp_path / "synth" / "raw")


def test_a_model_policy_records_tokens_and_behaviour_logprobs(tmp_path):
    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe
    from alejax.models import ModelConfig, create_model, save_pretrained

    tokenizer = train_bpe(generate_corpus(100, seed=0), vocab_size=300)
    model_dir = tmp_path / "sft" / "model"  # as the sft job leaves it: the job workdir names the policy
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        head_dim=16,
        mlp_dim=64,
        max_position_embeddings=256,
    )
    save_pretrained(create_model(config), model_dir)
    tokenizer.save(model_dir)
    c = tiny(
        tmp_path, policy=str(tmp_path / "sft"), mix="toy/echo:1,arithmetic/easy:1", n_episodes=4, filters=""
    )
    # One turn and one device keep it to a prefill and a decode compile per env.
    c.rollout.max_turns, c.rollout.max_new_tokens_per_turn, c.rollout.share_prefixes = 1, 8, False
    c.max_length, c.batch_size, c.num_devices = 256, 4, 1
    out = synthesize.run(c)
    records = read_records(os.path.join(c.workdir, "raw"))
    assert out["episodes"] == 4 and all(r.policy == f"model:{model_dir}" for r in records)
    for r in records:
        assert len(r.tokens) == len(r.behaviour_logp) == len(r.loss_mask) > 0
        sampled = [lp for lp, m in zip(r.behaviour_logp, r.loss_mask) if m]
        assert sampled and all(lp <= 0 for lp in sampled)
        assert r.n_turns == 1 and r.truncated  # cut by max_turns
    card = json.load(open(out["card"]))
    assert card["raw"]["length"]["unit"] == "tokens" and card["rollout"]["episodes"] == 4
