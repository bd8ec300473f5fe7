"""The budget parser: Arabic and Chinese numerals, units, bound words, ranges, and numbers that are not
budgets; and every generated instruction's budget read back exactly."""

import pytest

from alejax.envs.shop.budget import AROUND_TOLERANCE, approx_range, chinese_number, parse_budget
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
        ("预算1,500元", 1500, "upper", "预算1,500元"),
        ("价位三四百", 400, "range", "价位三四百"),
        ("两三百块的就行", 300, "range", "两三百块"),
        ("一两千块", 2000, "range", "一两千块"),
        ("三百多块", 300 * UP, "around", "三百多块"),
        ("两百来块钱", 200 * UP, "around", "两百来块钱"),
        ("价格区间200-300", 300, "range", "价格区间200-300"),
        ("最多能接受两百", 200, "upper", "最多能接受两百"),
        ("一千块以上的不要，预算八百以内", 800, "upper", "预算八百以内"),
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
     "张一元的茶叶", "价格十分实惠", "价位三五百", "价格合适就行", "近14天搜索过", "500ml以内的瓶子", "360行车记录仪",
     "预算1000以上", "1000元以上的", "300元起", "买三百多个", "一千多"],
)  # fmt: skip
def test_numbers_that_are_not_budgets(text):
    assert parse_budget(text) is None


def test_a_range_keeps_both_ends_and_the_first_phrase_wins():
    budget = parse_budget("预算两百到三百，不超过五百")
    assert (budget.lower, budget.upper, budget.amount) == (200, 300, 300)
    budget = parse_budget("价位三四百")  # a Chinese range in one word
    assert (budget.lower, budget.upper) == (300, 400)
    assert (
        approx_range("五六十") == (50, 60) and approx_range("三五百") is None and approx_range("两百") is None
    )


def test_every_generated_instruction_states_its_own_budget():
    world = get_world(0, 500)
    tasks = [t for t in (world.task(i) for i in range(world.n_products)) if t is not None]
    assert len(tasks) > 400
    for task in tasks:
        assert parse_budget(task.instruction).upper == task.price_upper, task.instruction
