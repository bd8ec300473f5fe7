"""ShopSimulator: world generation, page machine, search, shopper, scoring, agents, metrics, loader."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from alejax.envs import make
from alejax.envs.shop import catalog, leaks, pages
from alejax.envs.shop.actions import SEP, Action, parse_action
from alejax.envs.shop.agents import AGENTS, ExpertAgent, run_episode
from alejax.envs.shop.evaluate import evaluate_all, markdown, rows, write_section
from alejax.envs.shop.loader import load_jsonl, write_jsonl
from alejax.envs.shop.metrics import aggregate, pass_hat_k_mean
from alejax.envs.shop.scoring import Score, score_purchase
from alejax.envs.shop.search import get_index
from alejax.envs.shop.shopper import HABIT, REFUSAL, RuleShopper, families_in
from alejax.envs.shop.world import Product, Task, generate_world, get_world
from alejax.stats import bootstrap_ci, pass_hat_k

SCENARIOS = list(pages.SCENARIOS)


@pytest.fixture(scope="module")
def world():
    return get_world(0, 500)


def test_registry_and_shared_index(world):
    envs = [make(f"shop/{s}") for s in SCENARIOS]
    assert all(isinstance(e, pages.ShopEnv) for e in envs)
    assert all(e.index is envs[0].index and e.world is world for e in envs)  # one index per world
    assert [e.scenario.max_steps for e in envs] == [30, 30, 40, 40]
    assert any(t["name"] == "ask" for t in envs[2].tools) and not any(
        t["name"] == "ask" for t in envs[0].tools
    )


def test_world_is_a_function_of_the_seed():
    a, b, c = generate_world(3, 600), generate_world(3, 600), generate_world(4, 600)
    for field in ("leaf_of", "slot_value", "brand", "offered", "price", "stuffing", "is_eval"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert [leaf.name for leaf in a.leaves] != [leaf.name for leaf in c.leaves]
    assert a.product(17) == b.product(17) and a.task(17) == b.task(17)
    assert len({leaf.domain for leaf in a.leaves}) >= 10
    env1, env2 = pages.ShopEnv("single"), pages.ShopEnv("single")
    assert env1.reset(5) == env2.reset(5)


def test_sft_and_rl_splits_divide_train_and_never_touch_eval(world):
    train, held_out = pages.split_pool(world, "train"), pages.split_pool(world, "eval")
    sft, rl = pages.split_pool(world, "sft"), pages.split_pool(world, "rl")
    assert not set(sft) & set(rl) and sorted(np.concatenate([sft, rl])) == sorted(train)
    assert not (set(sft) | set(rl)) & set(held_out)
    assert 0.15 < len(rl) / len(train) < 0.35  # RL_FRACTION = 0.25
    env = pages.ShopEnv("single", split="rl")
    targets = set()
    for seed in range(30):
        env.reset(seed)
        targets.add(env.task.target)
    assert targets <= set(rl.tolist()) and len(targets) > 10
    assert list(pages.split_pool(world, "all")) == list(range(world.n_products))
    with pytest.raises(ValueError, match="split='test'"):
        pages.ShopEnv("single", split="test")


def test_world_scales_and_leaves_hold_about_120():
    big = generate_world(0, 20000)
    sizes = np.diff(big.leaf_start)
    assert sizes.sum() == 20000 and 100 <= sizes.min() and sizes.max() <= 130
    assert sum(big.task(i) is None for i in range(0, 20000, 97)) < 0.1 * len(range(0, 20000, 97))


def _satisfies(p: Product, task: Task) -> bool:
    text = " ".join([p.title, *p.attributes, *p.bullets, p.description])
    offered = {a: {v for v, _ in vals} for a, vals in p.options.items()}
    return all(a in text for a in task.attributes) and all(
        v in offered.get(a, ()) for a, v in task.options.items()
    )


def test_goal_is_unique_within_the_leaf(world):
    checked = 0
    for i in range(0, 500, 7):
        task = world.task(i)
        if task is None:
            continue
        leaf = world.leaf_of[i]
        siblings = [world.product(j) for j in range(world.leaf_start[leaf], world.leaf_start[leaf + 1])]
        assert [p.index for p in siblings if _satisfies(p, task)] == [i]
        assert world.product(i).price_with(task.options) <= task.price_upper
        checked += 1
    assert checked > 50


def test_instructions_paraphrase_and_carry_a_budget(world):
    tasks = [t for t in (world.task(i) for i in range(200)) if t is not None]
    synonyms_used = 0
    for t in tasks:
        title = world.product(t.target).title
        assert title not in t.instruction and title not in t.instruction_persona
        assert str(int(t.price_upper)) in t.instruction
        assert not any(f in t.instruction_persona for f in t.clue.forms), (t.clue, t.instruction_persona)
        assert t.reason_key in t.persona and any(
            f in json.dumps(t.persona, ensure_ascii=False) for f in t.clue.forms
        )
        synonyms_used += any(s.kind == "att" and s.forms[0] not in t.instruction for s in t.slots)
    assert synonyms_used > 0.5 * len(tasks)


def test_search_index_matches_a_linear_scan(world):
    index = get_index(world)
    for i in (3, 40, 99):
        query = world.task(i).instruction
        fast = index.retriever.get_scores_from_ids(index.query_ids(query))
        np.testing.assert_allclose(fast, index.brute_force_scores(query), rtol=1e-4, atol=1e-5)
        top = index.search(query)
        assert 0 < len(top) <= 150 and list(np.argsort(-fast, kind="stable")[: len(top)][:1]) == top[:1]
    assert index.search("完全不存在的词语") == []


def test_parse_action():
    assert parse_action("click[B7K2QX]") == Action("click", "B7K2QX")
    assert parse_action("Action: search[纯棉 连衣裙] ") == Action("search", "纯棉 连衣裙")
    assert parse_action("ask[颜色呢？]") == Action("ask", "颜色呢？")
    assert parse_action("buy it") is None and parse_action("jump[x]") is None


def test_invalid_actions_are_reported_no_ops():
    env = pages.ShopEnv("single")
    obs0, _ = env.reset(1)
    for bad in ("buy it", "click[buy now]", "ask[颜色？]", "click[BZZZZZ]"):
        obs, reward, term, trunc, info = env.step(bad)
        assert obs.startswith("Invalid action") and obs.split(SEP, 1)[1] == obs0
        assert (reward, term, trunc, info["valid"]) == (0.0, False, False, False)
    env.step("search[连衣裙]")
    obs, *_ = env.step("search[again]")
    assert "no search bar" in obs


def test_step_cap_truncates():
    env = pages.ShopEnv("single")
    env.reset(0)
    for k in range(30):
        obs, reward, term, trunc, info = env.step("click[nothing]")
        assert trunc == (k == 29) and not term
    assert "step_cap" in info["tags"] and "invalid_action" in info["tags"] and "loop" in info["tags"]
    assert info["score"]["success"] == 0.0
    with pytest.raises(RuntimeError):
        env.step("click[nothing]")


def test_display_ids_are_redrawn_per_episode():
    env = pages.ShopEnv("single")
    seen = []
    for seed in (0, 1):
        env.reset(seed)
        env.step("search[新款 正品 包邮]")
        seen.append(dict(env._ids))
    common = set(seen[0]) & set(seen[1])
    assert common and all(seen[0][i] != seen[1][i] for i in common)


def _leaks(texts: list[str], task: Task) -> list[str]:
    """Goal-only strings found in what the agent saw."""
    found = []
    for text in texts:
        for secret in (task.asin, "reason_key", "price_upper", "instruction_options"):
            if secret in text:
                found.append(secret)
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_goal_never_leaks(scenario):
    env = pages.ShopEnv(scenario)
    for seed in range(8):
        episode = run_episode(env, ExpertAgent(), seed)
        task = env.task
        seen = episode["observations"] + [env.system_prompt, json.dumps(env.tools)]
        assert _leaks(seen, task) == []
        assert _leaks(seen + [f"x {task.asin} y"], task) == [task.asin]  # the detector can fail
        first = (
            episode["observations"][0].split("Persona:")[0] + episode["observations"][0].split("WebShop")[-1]
        )
        if env.scenario.multi_turn:
            # The opening says the type only: no goal value, synonym or budget before anything is asked.
            for slot in task.slots:
                assert not any(f in first for f in slot.forms if len(f) > 1), (slot, first)
            # Each reply reveals only the families asked about (a generic question reveals one slot).
            for action, obs in zip(episode["actions"], episode["observations"][1:]):
                if action.startswith("ask["):
                    reply = obs.split(SEP)[1]
                    said = [s for s in task.slots if any(f in reply for f in s.forms if len(f) > 1)]
                    asked = families_in(action)
                    assert all(s.family in asked for s in said) or (not asked and len(said) <= 1), (
                        action,
                        reply,
                    )
        if scenario == "single_persona":
            assert not any(f in first for f in task.clue.forms)
    # Before the episode ends, info carries no part of the goal.
    env.reset(3)
    _, _, _, _, info = env.step("search[连衣裙]")
    assert set(info) == {"step", "valid", "page"}


def test_the_leak_scan_passes_on_generated_tasks(world):
    """alejax.envs.shop.leaks over 12 held-out generated tasks per scenario, every agent, both views."""
    report = leaks.scan(world, split="eval", limit=12)
    assert report.findings == [], "\n".join(map(str, report.findings[:10]))
    assert [c["episodes"] for c in report.coverage.values()] == [12 * 2 * 4] * 4
    assert all(c["replayed"] == c["observations"] for c in report.coverage.values())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_expert_reaches_full_success(scenario):
    env = pages.ShopEnv(scenario, split="eval")
    results = [run_episode(env, ExpertAgent(), seed) for seed in range(40)]
    agg = aggregate(results)
    assert agg["success"][0] >= 0.95 and agg["right"][0] >= 0.95
    assert all(a.startswith(("search[", "click[", "ask[")) for r in results for a in r["actions"])
    assert not any(r["tags"] for r in results)


def test_baselines_score_below_the_expert():
    env = pages.ShopEnv("single", split="eval")
    for name in ("first_result", "random"):
        agg = aggregate([run_episode(env, AGENTS[name](), seed) for seed in range(30)])
        assert agg["success"][0] < 0.5
    first = [run_episode(env, AGENTS["first_result"](), s) for s in range(30)]
    assert all("bought_without_checking_details" in r["tags"] for r in first)


def _task(**kw) -> Task:
    base = dict(index=0, target=0, asin="A1", attributes=["纯棉", "韩版"], options={"颜色分类": "红色", "尺码": "M"},
                price_upper=100.0, instruction="", instruction_persona="", opening="", persona={}, reason_key="",
                clue=None, slots=[], split="train", type_nouns=("连衣裙", "裙子"), category=("女装", "连衣裙", "x"))  # fmt: skip
    base.update(kw)
    return Task(**base)


def _product(**kw) -> Product:
    base = dict(index=0, asin="A1", title="纯棉 碎花连衣裙", category=("女装", "连衣裙", "x"), type_nouns=("连衣裙",),
                shop_name="", price=90.0, attributes=["纯棉", "韩版"], bullets=[], description="",
                options={"颜色分类": [("红色", 0.0), ("蓝色", 0.0)], "尺码": [("M", 0.0), ("L", 20.0)]},
                reviews=[])  # fmt: skip
    base.update(kw)
    return Product(**base)


def test_scoring_by_hand():
    task = _task()
    perfect = score_purchase(_product(), {"颜色分类": "红色", "尺码": "M"}, task)
    assert (perfect.loose, perfect.strict, perfect.success, perfect.right) == (1.0, 1.0, 1.0, 1.0)
    # Wrong size (L costs 20 more: 110 > 100 budget), one attribute missing, another product.
    p = _product(asin="A2", attributes=["纯棉"], title="纯棉 裙")
    s = score_purchase(p, {"颜色分类": "红色", "尺码": "L"}, task)
    assert (s.r_type, s.r_att, s.r_opt, s.r_price) == (1.0, 0.5, 0.5, 0.0)
    assert (
        s.loose == pytest.approx((1 + 1 + 0) / 5) and s.strict == 0.0 and s.success == 0.0 and s.right == 0.0
    )
    # Another category and type: r_type = 0.5 halves R_loose; no options selected.
    other = _product(category=("数码", "耳机", "y"), type_nouns=("耳机",), asin="A3")
    s = score_purchase(other, {}, task)
    assert (s.r_type, s.n_att, s.n_opt, s.r_price) == (0.5, 2, 0, 1.0)
    assert s.loose == pytest.approx(0.5 * 3 / 5) and s.strict == 0.0
    assert Score().loose == 0.0  # no purchase scores zero


def test_shopper_reveals_and_refuses(world):
    task = next(t for t in (world.task(i) for i in range(100)) if t is not None and t.clue.family != "预算")
    shopper = RuleShopper(task)
    assert shopper.opening() == task.opening
    reply = shopper.propose = shopper.reply("这款可以下单吗？")
    assert reply.refused and REFUSAL in reply.text and task.slots[0].family in reply.text
    reply = shopper.reply("您的预算是多少？")
    assert [s.family for s in reply.revealed] == ["预算"] and str(int(task.price_upper)) in reply.text
    assert shopper.reply("您的预算是多少？").revealed == []
    hidden = shopper.hidden()
    reply = shopper.reply("还有其他要求吗？")
    assert reply.revealed == [hidden[0]]
    for slot in shopper.hidden():
        shopper.reply(f"{slot.family}呢？")
    assert shopper.reply("还有别的吗？").text == "没有其他要求了。"
    assert shopper.reply("就这款，可以下单吗？").accepted
    # With a persona the clue is never said; questions about it get the habit line.
    persona_shopper = RuleShopper(task, persona=True)
    reply = persona_shopper.reply(f"{catalog.FAMILY_KEYWORDS[task.clue.family][0]}有要求吗？")
    assert task.clue not in reply.revealed and not any(f in reply.text for f in task.clue.forms if len(f) > 1)
    if not any(s.family == task.clue.family for s in persona_shopper.slots):
        assert HABIT in reply.text


def test_rule_shopper_replies_are_well_formed_on_generated_tasks(world):
    doubled = re.compile(r"[，。；！？、,.;!?]{2,}")
    questions = [f"{words[0]}呢？" for words in catalog.FAMILY_KEYWORDS.values()] + ["还有其他要求吗？"] * 3
    for task in [t for t in (world.task(i) for i in range(60)) if t is not None]:
        for persona in (False, True):
            shopper = RuleShopper(task, persona)
            texts = [shopper.reply(q).text for q in questions + ["可以下单吗？"]]
            assert not any(doubled.search(t) for t in texts) and all(t[-1] in "。？！" for t in texts), texts


def test_bought_after_refusal_is_tagged():
    env = pages.ShopEnv("multi")
    env.reset(2)
    env.step("ask[现在就下单吗？]")
    env.step(f"search[{env.world.product(env.task.target).title}]")
    obs = env.step("click[" + obs_ids(env)[0] + "]")[0]
    _, _, term, _, info = env.step("click[buy now]")
    assert (
        term and "bought_after_refusal" in info["tags"] and "bought_without_checking_details" in info["tags"]
    )
    assert "buy now" in obs


def obs_ids(env) -> list[str]:
    return [env.display_id(i) for i in env._page_results()]


def test_bootstrap_and_pass_hat_k():
    mean, low, high = bootstrap_ci([1, 0, 1, 1], n_boot=4000, seed=1)
    assert mean == 0.75 and 0.0 <= low < 0.75 < high <= 1.0 and (low, high) == (0.25, 1.0)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)
    assert (
        pass_hat_k(4, 2, 1) == 0.5
        and pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)
        and pass_hat_k(4, 4, 3) == 1
    )
    assert pass_hat_k_mean({"a": [True, True], "b": [True, False]}, 2) == 0.5
    agg = aggregate([{"success": 1.0, "task": 1, "tags": ["loop"]}, {"success": 0.0, "task": 1, "tags": []},
                     {"success": 1.0, "task": 2, "tags": []}, {"success": 1.0, "task": 2, "tags": []}])  # fmt: skip
    assert agg["pass^k"] == {1: 0.75, 2: 0.5} and agg["tags"] == {"loop": 0.25}


def test_loader_round_trip(world, tmp_path):
    path = tmp_path / "shop.jsonl"
    indices = list(range(0, 500, 5))
    n = write_jsonl(world, path, indices)
    loaded = load_jsonl(path)
    assert loaded.n_products == n > 80
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert {"asin", "title", "category", "pricing", "attribute", "customization_options", "instructions",
            "user_persona", "reason_key"} <= set(first)  # fmt: skip
    for k, i in enumerate([i for i in indices if world.task(i) is not None][:20]):
        p, q = world.product(i), loaded.product(k)
        assert (q.asin, q.title, q.category, q.price, q.options, q.attributes) == (
            p.asin, p.title, p.category, p.price, p.options, p.attributes)  # fmt: skip
        t, u = world.task(i), loaded.task(k)
        assert (u.instruction, u.attributes, u.options, u.price_upper, u.persona) == (
            t.instruction, t.attributes, t.options, t.price_upper, t.persona)  # fmt: skip
    # Without the alejax extension fields, a released-style record still loads and plays.
    bare = {key: v for key, v in first.items() if not key.startswith(("alejax", "price_upper", "type_nouns"))}
    (tmp_path / "bare.jsonl").write_text(json.dumps(bare, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_jsonl(tmp_path / "bare.jsonl").task(0).price_upper >= bare["pricing"][0]
    env = pages.ShopEnv("multi", world=loaded)
    results = [run_episode(env, ExpertAgent(), seed) for seed in range(10)]
    assert np.mean([r["success"] for r in results]) >= 0.9


def test_compact_view_is_shorter_and_clicks_results_by_position():
    standard = pages.ShopEnv("single", split="eval", page_size=5)
    compact = pages.ShopEnv("single", split="eval", page_size=5, view="compact")
    results = [run_episode(compact, ExpertAgent(check_details=False), seed) for seed in range(30)]
    assert aggregate(results)["success"][0] == 1.0
    assert all(r["actions"][1] in {f"click[{k}]" for k in range(1, 6)} for r in results)  # the first click
    obs_s, _ = standard.reset(4)
    obs_c, _ = compact.reset(4)
    assert len(obs_c) < len(obs_s)
    page, *_ = compact.step(f"search[{compact.world.product(compact.task.target).title}]")
    assert page.splitlines()[1].startswith("[1] ") and "[clickables]" not in page
    first = compact.display_id(compact._page_results()[0])
    item, *_ = compact.step("click[1]")
    assert compact.item == compact._by_id[first] and item.splitlines()[0].startswith(
        compact.world.product(compact.item).title
    )
    compact.step("click[< prev]")
    _, _, _, _, info = compact.step("click[9]")  # no ninth result on a page of five
    assert not info["valid"]
    with pytest.raises(ValueError, match="view"):
        pages.ShopEnv("single", view="tiny")


def test_evaluation_table_has_every_scenario_agent_and_failure_tag(tmp_path):
    results = evaluate_all(5, n_products=500, split="eval")
    text = markdown(results)
    assert text.count("\n") == 1 + len(SCENARIOS) * len(AGENTS)
    assert "persona under-use %" in text and "after refusal %" in text
    data = rows(results)
    assert data["single"]["expert"]["success"] == 1.0 and data["single"]["expert"]["wrong_purchases"] == 0
    assert data["single"]["first_result"]["bought_without_checking_details"] == 1.0
    assert data["single"]["random"]["bought_after_refusal"] is None  # cannot happen without a shopper
    assert data["multi"]["random"]["persona_under_use"] is None
    assert data["multi_persona"]["random"]["persona_under_use"] is not None
    # --write refreshes only its own block of a markdown file.
    doc = tmp_path / "doc.md"
    doc.write_text("# head\n\n<!-- shop-table:generated -->\nold\n<!-- /shop-table:generated -->\n\ntail\n")
    write_section(str(doc), "generated", "new table")
    write_section(str(doc), "records", "records table")
    assert doc.read_text() == (
        "# head\n\n<!-- shop-table:generated -->\nnew table\n<!-- /shop-table:generated -->\n\ntail\n\n"
        "<!-- shop-table:records -->\nrecords table\n<!-- /shop-table:records -->\n"
    )
