"""ShopSimulator on records in the released schema: the hand-written fixture in tests/data/shop_released/
(21 records, 7 leaf categories, standard and persona tasks, two- and three-axis options, both pricing
shapes, dirty personas) against its hand-written answer key, end to end through env actions; the goal-leak
scan (`alejax.envs.shop.leaks`) over every scenario x view x record x observation, and the leaks it must
catch; the failure tags; the published fixture table; the LLM shopper on stand-in and alejax policies."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from alejax.envs import make
from alejax.envs.shop import catalog, leaks, pages, persona
from alejax.envs.shop.actions import BUY, NEXT, SEP, parse_observation
from alejax.envs.shop.agents import ExpertAgent
from alejax.envs.shop.catalog import mentions
from alejax.envs.shop.evaluate import table
from alejax.envs.shop.leaks import channels, goal_forms, hidden_texts
from alejax.envs.shop.loader import load_jsonl, load_records
from alejax.envs.shop.metrics import failure_rates
from alejax.envs.shop.shopper import (
    HABIT,
    REFUSAL,
    LLMShopper,
    RuleShopper,
    families_in,
    sentence,
    shopper_prompt,
    text_policy,
)

DATA = Path(__file__).parent / "data" / "shop_released"
RECORDS = DATA / "records.jsonl"
KEY = json.loads((DATA / "answer_key.json").read_text(encoding="utf-8"))
SCENARIOS = list(pages.SCENARIOS)


@pytest.fixture(scope="module")
def worlds():
    return {mode: load_jsonl(RECORDS, mode) for mode in ("exclude", "no_price_term")}


def index_of(world, asin: str) -> int:
    return [p.asin for p in world.products].index(asin)


# ---- the report and the per-task answers -------------------------------------------------------------
def test_report_matches_the_answer_key(worlds, capsys):
    want = KEY["report"]
    for mode, world in worlds.items():
        report = world.report
        assert report.n_records == want["n_records"]
        assert report.n_tasks == want[f"n_tasks_{mode}"]
        assert report.n_budget_parsed == want["budget_parsed"]
        assert dict(report.budget_kinds) == want["budget_kinds"]
        assert sorted(report.budget_unparsed) == want["budget_unparsed"]
        assert sorted(report.issues["opening_names_goal"]) == want["opening_names_goal"]
        others = {
            k: v for k, v in report.issues.items() if k not in ("budget_unparsed", "opening_names_goal")
        }
        assert sum(map(len, others.values())) == want["other_issues"], others
        assert "FX-C3, FX-F2" in report.summary()
    with capsys.disabled():  # the budget-parse counts on the fixture
        print(f"\nfixture budgets: {worlds['exclude'].report.summary()}")
    excluded = worlds["exclude"]
    assert [excluded.task(index_of(excluded, a)) for a in want["budget_unparsed"]] == [None, None]
    with pytest.raises(ValueError, match=r"2 tasks state no budget.*FX-C3, FX-F2"):
        load_jsonl(RECORDS, "error")
    with pytest.raises(ValueError, match="unparsed_budget='maybe'"):
        load_jsonl(RECORDS, "maybe")


def test_budgets_options_families_and_clues_per_task(worlds):
    world = worlds["no_price_term"]
    for asin, want in KEY["tasks"].items():
        task = world.task(index_of(world, asin))
        if want["budget"] is None:
            assert task.price_upper is None and task.budget is None
            assert not any(s.kind == "budget" for s in task.slots)
        else:
            assert task.price_upper == pytest.approx(want["budget"]["upper"]), asin
            assert task.budget.kind == want["budget"]["kind"], asin
            assert task.budget.lower == want["budget"].get("lower")
            # The shopper states the budget in the instruction's own words.
            budget_slot = next(s for s in task.slots if s.kind == "budget")
            assert task.budget.text in budget_slot.phrase and task.budget.text in task.instruction
            reply = RuleShopper(task).reply("您的预算是多少？")
            assert task.budget.text in reply.text and reply.revealed == [budget_slot]
        assert task.options == want["options"], asin
        by_value = {s.value: s for s in task.slots}
        for value, family in want.get("families", {}).items():
            assert by_value[value].family == family, (asin, value)
        for axis, value in task.options.items():
            assert by_value[value].axis == axis
        if "clue" in want:
            assert task.reason_key == want["clue"]["path"] and task.clue.value == want["clue"]["value"]
            assert mentions(persona.text_of(persona.field(task.persona, task.reason_key)), task.clue.value)
            assert not mentions(task.instruction_persona, task.clue.value)
            assert world.has_persona(index_of(world, asin))
        else:
            assert task.clue is None and not world.has_persona(index_of(world, asin))


def test_options_listed_without_names_keep_their_axis(worlds):
    world = worlds["exclude"]
    task = world.task(index_of(world, "FX-A3"))  # instruction_options: ["绿色", "L"]
    shopper = RuleShopper(task)
    reply = shopper.reply("颜色有什么要求吗？")
    assert (
        [s.value for s in reply.revealed] == ["绿色"]
        and "绿色" in reply.text
        and not mentions(reply.text, "L")
    )
    reply = shopper.reply("尺码呢？")
    assert [s.value for s in reply.revealed] == ["L"]
    # A bare value offered on two axes goes to the axis its clause names (套餐选标准的就行); a value offered
    # nowhere is reported.
    record = json.loads(RECORDS.read_text(encoding="utf-8").splitlines()[6])  # FX-B3: 标准 on 规格 and 套餐
    record["instructions"][0]["instruction_options"] = ["灰色", "标准", "高配", "紫色"]
    loaded = load_records([record])
    assert loaded.task(0).options == {"颜色分类": "灰色", "套餐": "标准", "规格": "高配", "选项": "紫色"}
    assert loaded.report.issues["option_axis_ambiguous"] == []
    assert loaded.report.issues["option_not_offered"] == ["FX-B3"]
    assert RuleShopper(loaded.task(0)).reply("套餐呢？").revealed[0].value == "标准"
    # An attribute no bullet states keeps a family too: the axis offering it, or a colour word's.
    a1 = json.loads(RECORDS.read_text(encoding="utf-8").splitlines()[0])
    a1["instructions"][0]["attributes"] = ["纯棉", "蓝色", "奶白色", "收腰"]
    families = {s.value: s.family for s in load_records([a1]).task(0).slots if s.kind == "att"}
    assert families == {"纯棉": "材质", "蓝色": "颜色", "奶白色": "颜色", "收腰": "版型"}
    # Its clause names no axis: reported, and put on the first axis no other goal value holds.
    record["instructions"][0]["instruction"] = "要头戴式的主动降噪耳机，灰色，高配，标准，价格六百左右。"
    record["instructions"][0]["instruction_options"] = ["灰色", "标准", "高配"]
    loaded = load_records([record])
    assert loaded.task(0).options == {"颜色分类": "灰色", "规格": "高配", "套餐": "标准"}
    assert loaded.report.issues["option_axis_ambiguous"] == ["FX-B3"]


def test_personas_keep_their_sections_and_lose_hidden_keys(worlds):
    world = worlds["exclude"]
    raw = [json.loads(line) for line in RECORDS.read_text(encoding="utf-8").splitlines()]
    d1 = world.task(index_of(world, "FX-D1")).persona
    assert set(d1) == {"人口属性", "兴趣偏好", "行为特征"}  # nested sections kept; __reasoning__ gone
    # None dropped, padding stripped.
    assert d1["人口属性"] == {"性别": "女", "年龄段": "25-30岁", "所在城市": "杭州"}
    assert d1["兴趣偏好"]["品牌偏好"] == ["喵乐", "皇家"]  # JSON inside a string parsed
    assert d1["兴趣偏好"]["品类偏好"] == ["宠物", "家居"] and "购买频次" not in d1["行为特征"]
    f1 = world.task(index_of(world, "FX-F1")).persona  # the whole persona stored as a JSON string
    assert persona.field(f1, "行为特征-家居信息") == "卧室是1.8m床，次卧1.5m床"
    assert persona.field(f1, "行为特征-没有") is None and persona.field(f1, "") is None
    assert persona.field({"近14天-搜索词": ["a"]}, "近14天-搜索词") == ["a"]  # a key with the separator in it
    everyone = worlds["no_price_term"]  # every record's task, the two without a budget too
    for r in raw:
        shown = json.dumps(everyone.task(index_of(everyone, r["asin"])).persona, ensure_ascii=False)
        assert "__" not in shown and "NULL" not in shown and "null" not in shown
        assert not any(text in shown for text in hidden_texts(r["user_persona"]))
    assert len(hidden_texts(raw[index_of(world, "FX-D1")]["user_persona"])) == 1


def test_clue_problems_are_reported():
    d1 = json.loads(RECORDS.read_text(encoding="utf-8").splitlines()[10])
    assert d1["asin"] == "FX-D1"
    # instruction_sample still names the clue: its clause is dropped, the rest kept.
    left = {
        **d1,
        "instructions": [
            {**d1["instructions"][0], "instruction_sample": "给家里成猫买袋无谷的鸡肉味猫粮，2kg装。"}
        ],
    }
    loaded = load_records([left])
    assert loaded.report.issues["clue_left_in_instruction_sample"] == ["FX-D1"]
    assert loaded.task(0).instruction_persona == "2kg装。" and loaded.task(0).clue.value == "鸡肉味"
    # A path that names nothing, and a field that holds no goal piece (with a sample that drops none).
    lost = load_records([{**d1, "reason_key": "兴趣偏好-不存在"}])
    assert lost.report.issues["reason_key_unresolved"] == ["FX-D1"] and not lost.has_persona(0)
    spec = {**d1["instructions"][0], "instruction_sample": d1["instructions"][0]["instruction"]}
    empty = load_records([{**d1, "reason_key": "行为特征-消费水平", "instructions": [spec]}])
    assert empty.report.issues["clue_not_found"] == ["FX-D1"] and empty.task(0).clue is None


# ---- pages -------------------------------------------------------------------------------------------
def open_item(env, product: int) -> str:
    """Search the product's title and click it through the result pages; the item page's observation."""
    obs, *_ = env.step(f"search[{env.world.product(product).title}]")
    while True:
        _, _, clickables = parse_observation(obs)
        pid = env.display_id(product)
        if pid in clickables:
            obs, *_ = env.step(f"click[{pid}]")
            return obs
        assert NEXT in clickables, "product not found by its own title"
        obs, *_ = env.step(f"click[{NEXT}]")


def buy(env, task: int, product: int, selected: dict[str, str], scenario_seed: int = 0) -> dict:
    """Reset on `task`, buy `product` with `selected` through env actions only; the final info."""
    env.reset(scenario_seed, task=task)
    obs = open_item(env, product)
    for axis, value in selected.items():
        label = env.option_label(axis, value)
        if label is None:
            continue  # not offered on this product
        assert label in parse_observation(obs)[2]
        obs, _, _, _, info = env.step(f"click[{label}]")
        assert info["valid"]
    obs, reward, terminated, _, info = env.step(f"click[{BUY}]")
    assert terminated
    return info


def test_pages_show_prices_as_released(worlds):
    world = worlds["exclude"]
    env = pages.ShopEnv("single", world=world)
    for case in KEY["prices"]:
        product = index_of(world, case["asin"])
        env.reset(0, task=next(i for i, t in enumerate(world.tasks) if t is not None))
        obs = open_item(env, product)
        if not case["selected"]:
            results_env = pages.ShopEnv("single", world=world)
            results_env.reset(0, task=product if world.task(product) else 0)
            listing, *_ = results_env.step(f"search[{world.product(product).title}]")
            parts = listing.split("\n")[0].split(SEP)
            pid = results_env.display_id(product)
            assert parts[parts.index(pid) + 2] == case["shown"], case
        for axis, value in case["selected"].items():
            obs, *_ = env.step(f"click[{env.option_label(axis, value)}]")
        assert f"Price: {case['shown']}" in obs.split(SEP), (case, obs)
        assert env.selected == case["selected"]


def test_every_selection_prices_as_the_record_lists(worlds):
    """For every product and every selection (each axis unset or any value): the price is the listed price of
    the chosen value on the axis whose prices differ, else the record's lowest price; a ranged product shows
    its range until that value is chosen. Read from the raw records, not from the loader."""
    world = worlds["exclude"]
    n = 0
    for line in RECORDS.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        product = world.product(index_of(world, r["asin"]))
        axes = r["customization_options"]
        priced = [a for a, values in axes.items() if len({o["price"] for o in values}) > 1]
        assert len(priced) <= 1 and len(axes) >= 1
        for choice in itertools.product(*[[None] + [o["value"] for o in values] for values in axes.values()]):
            selected = {a: v for a, v in zip(axes, choice) if v is not None}
            listed = [o["price"] for a in priced for o in axes[a] if o["value"] == selected.get(a)]
            want = listed[0] if listed else min(r["pricing"])
            assert product.price_with(selected) == pytest.approx(want), (r["asin"], selected)
            if len(r["pricing"]) == 2 and not listed:
                shown = f"¥{min(r['pricing']):g} to ¥{max(r['pricing']):g}"
            else:
                shown = f"¥{want:g}"
            assert pages.price_text(product, selected) == shown, (r["asin"], selected)
            n += 1
    # prod(values + 1) per product, by leaf: 56 + 72 + 27 + 10 + 24 + 33 + 18.
    assert n == 240


def test_options_on_two_axes_are_clicked_by_axis(worlds):
    world = worlds["exclude"]
    env = pages.ShopEnv("single", world=world)
    b3 = index_of(world, "FX-B3")
    env.reset(0, task=b3)
    obs = open_item(env, b3)
    clickables = parse_observation(obs)[2]
    assert {"规格=标准", "套餐=标准", "高配", "礼盒装"} <= set(clickables) and "标准" not in clickables
    obs, _, _, _, info = env.step("click[标准]")
    assert not info["valid"] and "not clickable" in obs
    env.step("click[套餐=标准]")
    assert env.selected == {"套餐": "标准"}
    env.step("click[规格=标准]")
    env.step("click[高配]")
    assert env.selected == {"套餐": "标准", "规格": "高配"}


# ---- end to end: targets and siblings ---------------------------------------------------------------
def test_every_target_scores_one_and_every_sibling_zero(worlds):
    bought = siblings = 0
    for world in worlds.values():
        env = pages.ShopEnv("single", world=world)
        for i, task in enumerate(world.tasks):
            if task is None:
                continue
            info = buy(env, i, i, task.options)
            assert info["score"]["success"] == 1.0 and info["score"]["right"] == 1.0, task.asin
            bought += 1
            leaf = [j for j, p in enumerate(world.products) if p.category == task.category and j != i]
            assert leaf
            for j in leaf:
                info = buy(env, i, j, task.options)
                assert info["score"]["success"] == 0.0, (task.asin, world.products[j].asin)
                siblings += 1
    # Leaves of 4, 3, 3, 3, 3, 3, 2 products: 19 served tasks with 40 sibling pairs, then 21 with 44.
    assert (bought, siblings) == (19 + 21, 40 + 44)


def test_hand_scored_purchases_reproduce(worlds):
    for case in KEY["purchases"]:
        world = worlds[case.get("unparsed_budget", "exclude")]
        env = pages.ShopEnv("single", world=world)
        info = buy(env, index_of(world, case["task"]), index_of(world, case["buy"]), case["selected"])
        got = info["score"]
        for name, value in case["score"].items():
            assert got[name] == pytest.approx(value, abs=1e-6), (case["why"], name, got)


def test_failure_tags_of_hand_made_purchases(worlds):
    """The paper's failure tags on purchases made through env actions, as the answer key tags them by hand."""
    world = worlds["exclude"]
    for case in KEY["failure_tags"]:
        env = pages.ShopEnv(case["scenario"], world=world, split="all")
        env.reset(0, task=index_of(world, case["task"]))
        if case.get("propose"):
            obs, *_ = env.step("ask[现在就下单可以吗？]")
            assert REFUSAL in channels(obs)["shopper"][0]
        product = index_of(world, case["buy"])
        obs = open_item(env, product)
        for axis, value in case["selected"].items():
            obs, *_ = env.step(f"click[{env.option_label(axis, value)}]")
        if case["details"]:
            env.step("click[features]")
            env.step("click[< prev]")
        _, _, terminated, _, info = env.step(f"click[{BUY}]")
        assert terminated and info["bought"] and info["success"] == bool(case["success"]), case["why"]
        assert sorted(info["tags"]) == sorted(case["tags"]), (case["why"], info["tags"])
    # failure_rates: each tag as a share of the wrong purchases only.
    rates = failure_rates(
        [{"bought": True, "success": False, "tags": ["persona_under_use"]},
         {"bought": True, "success": False, "tags": []}, {"bought": True, "success": True, "tags": []},
         {"bought": False, "tags": ["step_cap"]}]
    )  # fmt: skip
    assert (rates["purchases"], rates["wrong_purchases"], rates["persona_under_use"]) == (3, 2, 0.5)


def test_two_priced_axes_add_up_to_the_listed_max():
    """Three option axes, two of which change the price: each selection prices as base + the chosen values'
    surcharges (capped at the listed max); the range shows until both priced axes are chosen."""
    record = json.loads(RECORDS.read_text(encoding="utf-8").splitlines()[4])  # FX-B1: 颜色分类, 规格, 套餐
    record = {**record, "pricing": [299, 449]}
    record["customization_options"] = {
        "颜色分类": [{"value": "黑色", "price": 299}, {"value": "白色", "price": 299}],
        "规格": [{"value": "标准版", "price": 299}, {"value": "Pro版", "price": 399}],
        "套餐": [{"value": "官方标配", "price": 299}, {"value": "标配+保护套", "price": 349}],
    }
    product = load_records([record]).product(0)
    assert sorted(product.price_axes()) == ["套餐", "规格"]
    want = {
        (): "¥299 to ¥449",
        (("颜色分类", "白色"),): "¥299 to ¥449",
        (("规格", "Pro版"),): "¥299 to ¥449",  # the price still depends on 套餐
        (("规格", "Pro版"), ("套餐", "官方标配")): "¥399",
        (("规格", "标准版"), ("套餐", "标配+保护套")): "¥349",
        (("规格", "Pro版"), ("套餐", "标配+保护套"), ("颜色分类", "黑色")): "¥449",
    }
    for selection, shown in want.items():
        assert pages.price_text(product, dict(selection)) == shown, selection
    capped = load_records([{**record, "pricing": [299, 419]}]).product(0)
    # Never above the shop's own max.
    assert capped.price_with({"规格": "Pro版", "套餐": "标配+保护套"}) == 419


def test_persona_paths_and_nested_hidden_keys():
    raw = {
        "人口属性": {"性别": "女", "__why__": "解释", "年龄": None},
        "兴趣偏好": {"颜色偏好": "  豆沙色 ", "品牌偏好": {"口红": "朱颜", "__label__": "朱颜"}},
        "__reasoning__": "颜色偏好",
    }
    view = persona.visible(raw)
    assert view == {
        "人口属性": {"性别": "女"},
        "兴趣偏好": {"颜色偏好": "豆沙色", "品牌偏好": {"口红": "朱颜"}},
    }
    assert persona.field(view, "兴趣偏好-颜色偏好") == "豆沙色"
    assert persona.field(view, "颜色偏好") == "豆沙色"  # a bare field name held by one section
    assert persona.field({"a": {"x": 1}, "b": {"x": 2}}, "x") is None  # ambiguous: names nothing
    assert persona.field(view, "兴趣偏好-口红") is None


def test_the_published_fixture_table_reproduces(monkeypatch):
    """docs/shop.md's table of the scripted agents on this fixture is what the evaluation prints now; the
    privileged expert's row is the hand-known one (100 everywhere, no wrong purchase)."""
    root = Path(__file__).parent.parent
    monkeypatch.chdir(root)
    docs = (root / "docs" / "shop.md").read_text(encoding="utf-8")
    published = re.search(
        r"<!-- shop-table:records -->\n(.*?)\n<!-- /shop-table:records -->", docs, re.DOTALL
    )
    assert published, "docs/shop.md has no fixture table"
    assert table(0, split="all", data_path="tests/data/shop_released/records.jsonl") == published[1]
    experts = [line for line in published[1].splitlines() if line.split(" | ")[1:2] == ["expert"]]
    assert len(experts) == 4 and all(line.count("100.0 [100.0, 100.0]") == 4 for line in experts)
    assert all(f" 0 / {n} " in line for line, n in zip(experts, (19, 5, 19, 5)))


# ---- nothing that names the goal reaches the agent ------------------------------------------------
def scan_both(worlds, **kwargs) -> leaks.LeakReport:
    """The leak scan over both budget modes' worlds (the no_price_term one serves the two budgetless tasks)."""
    records = [json.loads(line) for line in RECORDS.read_text(encoding="utf-8").splitlines()]
    reports = [leaks.scan(world, records, **kwargs) for world in worlds.values()]
    coverage = {}
    for report in reports:
        for scenario, cell in report.coverage.items():
            into = coverage.setdefault(
                scenario, {"records": set(), "episodes": 0, "observations": 0, "replayed": 0}
            )
            into["records"] |= cell["records"]
            for key in ("episodes", "observations", "replayed"):
                into[key] += cell[key]
    return leaks.LeakReport(coverage, [f for r in reports for f in r.findings])


LEAK_COVERAGE: dict = {}  # filled by test_no_observation_names_the_goal (records x scenarios x observations)


def test_no_observation_names_the_goal(worlds, capsys):
    report = scan_both(worlds)
    LEAK_COVERAGE.update(report.as_dict())
    assert report.findings == [], "\n".join(map(str, report.findings[:10]))
    coverage = report.coverage
    raw_ids = {json.loads(line)["asin"] for line in RECORDS.read_text(encoding="utf-8").splitlines()}
    assert report.records == raw_ids  # every record's task, the two without a budget too (no_price_term)
    # Tasks served (19 + 21 standard, 5 + 5 persona) x 4 agents x 2 views.
    assert [coverage[s]["episodes"] for s in SCENARIOS] == [8 * (19 + 21), 8 * (5 + 5)] * 2
    assert [len(coverage[s]["records"]) for s in SCENARIOS] == [21, 5, 21, 5]
    assert all(c["replayed"] == c["observations"] for c in coverage.values())
    assert report.observations > 10000
    with capsys.disabled():
        print(f"\n{report.summary()}")


@pytest.mark.parametrize(
    "leak, what",
    [
        ("opening", "the opening names a goal piece"),
        ("persona_key", "a hidden persona key or its explanation"),
        ("page_marks_target", "the page depends on the task"),
        ("clue_in_reply", "the shopper says the persona's clue"),
        ("option_preselected", "the page depends on the task"),
    ],
)
def test_the_leak_scan_catches_leaks(worlds, monkeypatch, leak, what):
    """Each kind of leak, planted on purpose, is found (so a clean scan means something)."""
    world = worlds["exclude"]
    if leak == "opening":  # a simplified instruction naming the target options used as the opening line
        monkeypatch.setattr(world.task(index_of(world, "FX-A4")), "opening", "想买一条碎花连衣裙，XL码的。")
    elif leak == "persona_key":  # the persona shown raw, `__reasoning__` and all
        raw = json.loads(RECORDS.read_text(encoding="utf-8").splitlines()[10])  # FX-D1
        monkeypatch.setattr(world.task(index_of(world, "FX-D1")), "persona", raw["user_persona"])
        monkeypatch.setattr(pages.persona, "visible", lambda p: p)
    elif leak in ("page_marks_target", "option_preselected"):
        real_reset, real_click, real_price = pages.ShopEnv.reset, pages.ShopEnv._click, pages.price_text
        target = {}

        def reset(self, seed, task=None):
            out = real_reset(self, seed, task=task)
            target["task"] = self.task
            return out

        def click(self, value):  # opening the target's item page selects the goal options
            real_click(self, value)
            if self.page == "item" and self.item == target["task"].target and not self.selected:
                self.selected = dict(target["task"].options)

        monkeypatch.setattr(pages.ShopEnv, "reset", reset)
        if leak == "option_preselected":
            monkeypatch.setattr(pages.ShopEnv, "_click", click)
        else:  # results pages star the target: no goal word, no id
            monkeypatch.setattr(
                pages,
                "price_text",
                lambda product, selected=None: (
                    real_price(product, selected) + (" ★" if product.index == target["task"].target else "")
                ),
            )
    else:  # the persona shopper says the clue when asked about its family
        real_reply = RuleShopper.reply

        def blurt(self, utterance):
            reply = real_reply(self, utterance)
            if self.persona and self.task.clue is not None and "口味" in utterance:
                reply.text = self.task.clue.phrase + "。"
            return reply

        monkeypatch.setattr(RuleShopper, "reply", blurt)
    records = [json.loads(line) for line in RECORDS.read_text(encoding="utf-8").splitlines()]
    agents = {"expert": ExpertAgent, "prober": leaks.ProberAgent}
    report = leaks.scan(world, records, agents=agents, views=("standard",))
    assert any(f.what.startswith(what) for f in report.findings), report.summary()
    assert what in report.summary()


def test_shopper_openings_withhold_the_goal(worlds):
    world = worlds["exclude"]
    raw = {
        json.loads(line)["asin"]: json.loads(line)
        for line in RECORDS.read_text(encoding="utf-8").splitlines()
    }
    for asin in KEY["report"]["opening_names_goal"]:
        task = world.task(index_of(world, asin))
        simple = raw[asin]["instructions"][0]["instruction_simple"]
        assert task.opening != simple and any(mentions(simple, f) for f in goal_forms(task)["opt"])
        assert task.opening.startswith("我想买") and task.opening.endswith("。")
    kept = world.task(index_of(world, "FX-A1"))
    assert kept.opening == raw["FX-A1"]["instructions"][0]["instruction_simple"]


# ---- the shopper's words ----------------------------------------------------------------------------
DOUBLED = re.compile(r"[，。；！？、,.;!?：:]{2,}")


def test_rule_shopper_replies_are_well_formed(worlds):
    questions = [f"{words[0]}呢？" for words in catalog.FAMILY_KEYWORDS.values()]
    questions += [
        "颜色和尺码呢？",
        "还有其他要求吗？",
        "还有别的吗？",
        "可以下单吗？",
        "你好",
        "预算和品牌呢？",
    ]
    n = 0
    for world in worlds.values():
        for task in (t for t in world.tasks if t is not None):
            for with_persona in (False, True):
                shopper = RuleShopper(task, with_persona)
                for q in questions * 2:
                    text = shopper.reply(q).text
                    assert not DOUBLED.search(text) and text[-1] in "。？！" and text.count("。") == 1, text
                    n += 1
    assert n > 1000
    assert sentence(["预算两百以内。", "颜色要红色，", "", "颜色要红色"]) == "预算两百以内；颜色要红色。"


def standin_shopper(messages: list[dict]) -> str:
    """A deterministic stand-in for a model: answers from the requirement lines of its system turn when
    the question names their family, refuses a proposal until every family was asked."""
    wants = {}
    for line in messages[0]["content"].splitlines():
        if line.startswith("- "):
            family, _, phrase = line[2:].partition("：")
            wants[family] = phrase
    asked = [m["content"] for m in messages if m["role"] == "user"]
    question = asked[-1]
    if any(w in question for w in catalog.PROPOSAL_KEYWORDS):
        missing = [f for f in wants if not any(f in families_in(q, tuple(wants)) for q in asked[:-1])]
        return f"{REFUSAL}，还没问{missing[0]}。" if missing else "好的，就买这款吧。"
    said = [p for f, p in wants.items() if f in families_in(question, tuple(wants))]
    return "；".join(said) if said else "顾客：没有其他要求了。"


def test_llm_shopper_on_a_stand_in_model(worlds):
    world = worlds["exclude"]
    task = world.task(index_of(world, "FX-E1"))
    prompt = shopper_prompt(task, persona=True)
    assert task.asin not in prompt and "豆沙色" not in prompt and HABIT in prompt and "丝绒哑光" in prompt
    assert "豆沙色" in shopper_prompt(task, persona=False)
    shopper = LLMShopper(task, standin_shopper)
    assert shopper.opening() == task.opening
    reply = shopper.reply("这款可以下单吗？")
    assert reply.refused and not reply.accepted and REFUSAL in reply.text
    reply = shopper.reply("颜色有要求吗？")
    assert reply.text == "豆沙色。" and [s.value for s in reply.revealed] == ["豆沙色"]
    assert [m["role"] for m in shopper.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert shopper.reply("还有吗？").text == "没有其他要求了。"  # a "顾客：" prefix is stripped
    doubled = LLMShopper(task, lambda messages: "好的，，预算两百块以内！！")
    assert doubled.reply("预算呢？").text == "好的，预算两百块以内！"
    # A reply naming what the scenario withholds is replaced by the habit line.
    leaky = LLMShopper(task, lambda messages: "您可以选豆沙色", persona=True)
    assert leaky.reply("颜色呢？").text == HABIT + "。"
    # A text -> text model works through text_policy.
    prompts = []
    completion = LLMShopper(task, text_policy(lambda p: prompts.append(p) or "颜色要豆沙色"))
    assert completion.reply("颜色呢？").text == "颜色要豆沙色。"
    assert prompts[0].endswith("导购：颜色呢？\n顾客：")


@pytest.mark.parametrize("scenario", ["multi", "multi_persona"])
def test_env_runs_on_an_llm_shopper(worlds, scenario):
    world = worlds["exclude"]
    env = pages.ShopEnv(scenario, world=world, shopper="llm", shopper_policy=standin_shopper)
    successes = []
    for i in env._pool:
        obs, _ = env.reset(0, task=int(i))
        assert isinstance(env.shopper, LLMShopper)
        agent = ExpertAgent()
        agent.reset(env, obs)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(agent.act(obs))
            done = term or trunc
        successes.append(info["score"]["success"])
        assert "bought_after_refusal" not in info["tags"]
    assert len(successes) == len(env._pool) and np.mean(successes) == 1.0


def test_llm_shopper_backed_by_an_alejax_policy(worlds):
    from alejax.agent.policy import human_policy

    lines = iter(["颜色要豆沙色", "信息还不完整，还没问预算", "好的，就买这款吧"])
    policy = human_policy(read_line=lambda: next(lines), prompt_out=io.StringIO())
    env = pages.ShopEnv("multi", world=worlds["exclude"], shopper="llm", shopper_policy=policy)
    env.reset(0, task=index_of(env.world, "FX-E1"))
    obs, *_ = env.step("ask[颜色呢？]")
    assert channels(obs)["shopper"] == ["颜色要豆沙色。"]
    env.step("ask[可以下单吗？]")
    assert env.refused_pending
    env.step("ask[就这款，可以下单吗？]")
    assert not env.refused_pending
    with pytest.raises(ValueError, match="shopper_policy"):
        pages.ShopEnv("multi", world=worlds["exclude"], shopper="llm")
    with pytest.raises(FileNotFoundError, match="neither a model directory"):
        pages.ShopEnv("multi", world=worlds["exclude"], shopper="llm", shopper_policy="/no/such/model")
    with pytest.raises(ValueError, match="shopper='gpt'"):
        pages.ShopEnv("multi", world=worlds["exclude"], shopper="gpt")


@pytest.mark.slow
def test_llm_shopper_on_an_alejax_model_checkpoint(worlds, tmp_path):
    """`shopper_policy` as a model spec: a (tiny, untrained) checkpoint loaded by alejax's model_policy plays
    the shopper. Whatever it says, a reply is one sentence and never names the target id or the clue."""
    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe
    from alejax.models import ModelConfig, create_model, save_pretrained

    tokenizer = train_bpe(generate_corpus(100, seed=0), vocab_size=400)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                         head_dim=16, mlp_dim=64, max_position_embeddings=2048)  # fmt: skip
    save_pretrained(create_model(config), tmp_path / "shopper")
    tokenizer.save(tmp_path / "shopper")
    env = pages.ShopEnv(
        "multi_persona", world=worlds["exclude"], shopper="llm", shopper_policy=str(tmp_path / "shopper")
    )
    env.reset(0, task=index_of(env.world, "FX-E1"))
    assert isinstance(env.shopper, LLMShopper)
    for question in ("颜色有要求吗？", "可以下单吗？"):
        obs, _, _, _, info = env.step(f"ask[{question}]")
        said = channels(obs)["shopper"]
        assert info["valid"] and len(said) == 1 and said[0] and said[0][-1] in "。！？!?", said
        assert not DOUBLED.search(said[0]) and not mentions(said[0], "豆沙色") and "FX-E1" not in said[0]
    assert [m["role"] for m in env.shopper.messages] == ["system", "user", "assistant", "user", "assistant"]


# ---- construction by name, for training later, and bad input ----------------------------------------
def test_every_scenario_is_made_by_name_on_released_data():
    for scenario in SCENARIOS:
        env = make(f"shop/{scenario}", data_path=str(RECORDS), split="train", view="compact", reward="strict")
        obs, _ = env.reset(3)
        assert env.task is not None and env.world.report.n_records == 21
        if env.scenario.persona:
            assert all(env.world.has_persona(i) for i in env._pool) and len(env._pool) == 4
        episode_policy = env.scripted_policy(check_details=False)
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(episode_policy([]))
            done = term or trunc
        assert info["success"] and reward == 1.0
    a, b = make("shop/single", data_path=str(RECORDS)), make("shop/multi", data_path=str(RECORDS))
    assert a.world is b.world and a.index is b.index  # one load and one index per file
    assert make("shop/single", data_path=str(RECORDS), unparsed_budget="no_price_term").world is not a.world
    standard_only = load_records([json.loads(RECORDS.read_text(encoding="utf-8").splitlines()[0])])
    with pytest.raises(ValueError, match="no persona task to serve in split 'train'"):
        pages.ShopEnv("single_persona", world=standard_only)
    with pytest.raises(ValueError, match="scenario='duo'"):
        pages.ShopEnv("duo")
    with pytest.raises(ValueError, match="has no task to serve"):
        a.reset(0, task=index_of(a.world, "FX-C3"))


def test_malformed_records_give_clear_errors(tmp_path):
    good = json.loads(RECORDS.read_text(encoding="utf-8").splitlines()[0])
    cases = [
        ({k: v for k, v in good.items() if k != "pricing"}, "record 1 \\(FX-A1\\): record has no pricing"),
        ({**good, "pricing": [1, 2, 3]}, "pricing must be"),
        ({**good, "pricing": ["abc"]}, "pricing is not a number"),
        ({**good, "customization_options": {"尺码": [{"value": "M", "price": "free"}]}}, "option price"),
        ([1, 2], "must be a JSON object"),
    ]
    for record, message in cases:
        with pytest.raises(ValueError, match=message):
            load_records([record])
    with pytest.raises(ValueError, match="repeats record 1"):
        load_records([good, good])
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.jsonl:2: not a JSON line"):
        load_jsonl(path)
    # Task-level gaps are reported, not fatal.
    no_task = {
        **good,
        "asin": "X2",
        "instructions": [],
        "reason_key": "兴趣偏好-不存在",
        "user_persona": {"a": 1},
    }
    loaded = load_records([good, no_task])
    assert loaded.task(1) is None and loaded.report.issues["no_instruction"] == ["X2"]
