"""`shop/mix` (the four ShopSimulator scenarios in one env) and the quickstart's `four_scenarios` preset."""

import json
import os
from collections import Counter

import pytest

from alejax.config import load_config_file
from alejax.envs.base import make
from alejax.envs.shop.mix import parse_scenarios, scenario_cycle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scenario_weights_parse_and_bad_ones_are_named():
    assert parse_scenarios("single, multi") == {"single": 1, "multi": 1}
    assert parse_scenarios("single:2,multi_persona:1") == {"single": 2, "multi_persona": 1}
    assert parse_scenarios(["multi", "single"]) == {"multi": 1, "single": 1}
    for bad, message in (
        ("single,shopping", "'shopping' is not a scenario"),
        ("single:0", "positive integer"),
        ("single:1.5", "positive integer"),
        ("single,single", "given twice"),
        (" , ", "none given"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_scenarios(bad)


def test_the_cycle_interleaves_by_weight():
    assert scenario_cycle({"a": 1, "b": 1, "c": 1}) == ["a", "b", "c"]
    assert scenario_cycle({"a": 2, "b": 1}) == ["a", "b", "a"]
    assert Counter(scenario_cycle({"a": 3, "b": 1, "c": 2})) == {"a": 3, "b": 1, "c": 2}


def test_the_seed_picks_the_scenario_and_replays_it():
    env = make("shop/mix", world_seed=0, n_products=200, split="eval")
    seen = []
    for seed in range(8):
        observation, info = env.reset(seed)
        assert info["scenario"] == env.scenario_of(seed) == env.scenario_name
        again, _ = env.reset(seed)
        assert again == observation  # a replay from the seed (IPA, an RL group) plays the same episode
        seen.append(info["scenario"])
    assert Counter(seen) == {"single": 2, "single_persona": 2, "multi": 2, "multi_persona": 2}
    assert "ask[" in env.system_prompt and any(t["name"] == "ask" for t in env.tools)
    single_only = make("shop/mix", scenarios="single,single_persona", world_seed=0, n_products=200)
    assert "ask[" not in single_only.system_prompt


def test_the_expert_succeeds_in_every_scenario_of_the_mix():
    env = make("shop/mix", world_seed=0, n_products=200, split="eval")
    wins = Counter()
    for seed in range(8):
        observation, info = env.reset(seed)
        policy, messages = env.scripted_policy(), [{"role": "user", "content": observation}]
        for _ in range(40):
            action = policy(messages)
            observation, reward, terminated, truncated, info = env.step(action)
            messages += [{"role": "assistant", "content": action}, {"role": "user", "content": observation}]
            if terminated or truncated:
                break
        wins[info["scenario"]] += bool(info.get("success"))
    assert wins == {"single": 2, "single_persona": 2, "multi": 2, "multi_persona": 2}


def test_the_mix_serves_released_records_in_every_scenario():
    records = os.path.join(ROOT, "tests", "data", "shop_released", "records.jsonl")
    env = make("shop/mix", data_path=records, split="all", view="compact")
    wins = Counter()
    for seed in range(8):
        observation, info = env.reset(seed)
        assert env.world.report.n_records == 21
        assert not env.scenario.persona or env.world.has_persona(env.task.index)
        policy = env.scripted_policy()
        for _ in range(40):
            observation, reward, terminated, truncated, info = env.step(policy([]))
            if terminated or truncated:
                break
        wins[info["scenario"]] += bool(info.get("success"))
    assert wins == {"single": 2, "single_persona": 2, "multi": 2, "multi_persona": 2}


def test_the_four_scenarios_preset_mixes_every_stage():
    c = load_config_file(os.path.join(ROOT, "configs", "quickstart.py:four_scenarios"))
    assert c.env.name == "shop/mix"
    scenarios = parse_scenarios(c.env.kwargs.scenarios)
    assert set(scenarios) == {"single", "single_persona", "multi", "multi_persona"}
    assert c.rl.env.kwargs.scenarios == c.rl.sft.env.kwargs.scenarios == c.env.kwargs.scenarios
    assert c.rl.sft.expert.check_details and c.rl.max_length == 1024
    with pytest.raises(ValueError, match="unknown preset 'four'"):
        load_config_file(os.path.join(ROOT, "configs", "quickstart.py:four"))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_four_scenarios_preset_trains_and_reports_every_scenario(tmp_path):
    """SFT, RL and the held-out evaluation of the four_scenarios_test preset: every scenario is trained on and
    evaluated, with full success, R_strict, R_loose and the failure tags per scenario and policy."""
    from alejax.envs.shop.metrics import FAILURE_TAGS
    from alejax.envs.shop.pages import SCENARIOS
    from alejax.main import run_job

    c = load_config_file(os.path.join(ROOT, "configs", "quickstart.py:four_scenarios_test"))
    c.unlock()
    c.workdir = str(tmp_path)
    c.rl.steps, c.eval.policies = 2, "sft,sft_rl"  # the preset's stages, shorter
    out = run_job(c)
    assert set(out["results"]) == {"sft", "sft_rl"}
    for summary in out["results"].values():
        assert summary["scenario_per_task"] == list(SCENARIOS)  # held-out task i plays scenario i mod 4
        assert set(summary["by_scenario"]) == set(SCENARIOS)
        for row in summary["by_scenario"].values():
            assert {"success", "score/strict", "score/loose"} <= set(row) and row["tasks"] == 1
            assert set(FAILURE_TAGS) <= set(row["failures"])
    assert set(out["rl_gain_by_scenario"]) == set(SCENARIOS)
    table = open(tmp_path / "results.md", encoding="utf-8").read()
    assert "By scenario" in table and all(f"| {s} | sft_rl |" in table for s in SCENARIOS)
    assert "persona under-use" in table and "after refusal" in table
    rl_rows = [json.loads(line) for line in open(tmp_path / "rl" / "metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in rl_rows if "reward" in r] == [1, 2]
