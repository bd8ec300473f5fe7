"""The budget parser: Arabic and Chinese numerals, units, bound words, ranges, and numbers that are not
budgets; and every generated instruction's budget read back exactly."""

import pytest

from alejax.envs.shop.budget import AROUND_TOLERANCE, chinese_number, parse_budget
from alejax.envs.shop.world import get_world


@pytest.mark.parametrize(
    "text, value",
    [("两百", 200), ("一千五", 1500), ("3千", 3000), ("三百五十", 350), ("一千零五", 1005), ("1.5万", 15000),
     ("3k", 3000), ("一万二", 12000), ("十五", 15), ("二十", 20), ("一百二", 120), ("两万五", 25000),
     ("3千5", 3500), ("一千二百五十", 1250), ("２００", 200), ("99.9", 99.9), ("千", 1000)],
)  # fmt: skip
def test_chinese_and_arabic_numerals(text, value):
    assert chinese_number(text) == pytest.approx(value)


def test_not_numbers():
    assert [chinese_number(t) for t in ("", "三四百", "万", "abc", "两百块")] == [None] * 5


UP = 1 + AROUND_TOLERANCE


@pytest.mark.parametrize(
    "text, upper, kind, words",
    [
        ("想要一条连衣裙，预算两百以内。", 200, "upper", "预算两百以内"),
        ("价格不超过一千五", 1500, "upper", "价格不超过一千五"),
        ("3千左右的手表", 3000 * UP, "around", "3千左右"),
        ("预算在300元左右", 300 * UP, "around", "预算在300元左右"),
        ("两百出头就行", 200 * UP, "around", "两百出头"),
        ("价格100块上下", 100 * UP, "around", "价格100块上下"),
        ("价格一千五到两千块之间", 2000, "range", "价格一千五到两千块之间"),
        ("150-300块", 300, "range", "150-300块"),
        ("价格100到200", 200, "range", "价格100到200"),
        ("¥199以内", 199, "upper", "¥199以内"),
        ("￥１９９以内", 199, "upper", "￥１９９以内"),
        ("200块钱以下", 200, "upper", "200块钱以下"),
        ("别超过129元", 129, "upper", "别超过129元"),
        ("价格不超过99.9元。", 99.9, "upper", "价格不超过99.9元"),
        ("预算：800", 800, "upper", "预算：800"),
        ("最多五百", 500, "upper", "最多五百"),
        ("3k以内", 3000, "upper", "3k以内"),
        ("控制在2千以内", 2000, "upper", "控制在2千以内"),
        ("预算千元以内", 1000, "upper", "预算千元以内"),
        ("预算五块以内", 5, "upper", "预算五块以内"),
        ("一百块的就行", 100, "amount", "一百块"),
        ("两块手表，预算一千", 1000, "upper", "预算一千"),
    ],
)
def test_budget_phrasings(text, upper, kind, words):
    budget = parse_budget(text)
    assert budget is not None, text
    assert (budget.upper, budget.kind, budget.text) == (pytest.approx(upper), kind, words)
    assert text[budget.start : budget.end] == words


@pytest.mark.parametrize(
    "text",
    ["预算一般，别太贵", "1.5m的床，500g以内", "39码的鞋，0-6个月", "要两米的", "买两条", "1-3岁宝宝", "一块蛋糕",
     "张一元的茶叶", "价格十分实惠", "价位三四百", "价格合适就行", "近14天搜索过", "500ml以内的瓶子", "360行车记录仪"],
)  # fmt: skip
def test_numbers_that_are_not_budgets(text):
    assert parse_budget(text) is None


def test_a_range_keeps_both_ends_and_the_first_phrase_wins():
    budget = parse_budget("预算两百到三百，不超过五百")
    assert (budget.lower, budget.upper, budget.amount) == (200, 300, 300)


def test_every_generated_instruction_states_its_own_budget():
    world = get_world(0, 500)
    tasks = [t for t in (world.task(i) for i in range(world.n_products)) if t is not None]
    assert len(tasks) > 400
    for task in tasks:
        assert parse_budget(task.instruction).upper == task.price_upper, task.instruction
