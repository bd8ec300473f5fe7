"""The price bound a shopper states in words: parsed from an instruction, never invented.

    parse_budget("想要一条连衣裙，预算两百以内")  -> Budget(upper=200.0, kind="upper", text="预算两百以内")
    parse_budget("价格一千五到两千块之间")        -> Budget(upper=2000.0, lower=1500.0, kind="range", ...)
    parse_budget("3千左右")                      -> Budget(upper=3300.0, kind="around", amount=3000.0, ...)

Numbers are Arabic (`200`, `1.5`, `1,500`, full-width `２００`), Chinese (`两百`, `一千五` = 1500, `三百五十`,
`一千零五`), or mixed (`3千`, `1.5万`, `3k`). A number counts as a budget only next to a cue: a currency word
(元, 块, 块钱, ¥, 人民币 ...), a bound word before it (预算, 价格, 不超过, 最多, 低于 ...) or after it (以内,
以下, 左右, 之间 ...), so `1.5m`, `500g以内`, `39码` and `0-6个月` are not budgets. "About" (左右, 上下,
大概, 出头, and `三百多` / `两百来块`) gives `AROUND_TOLERANCE` of headroom above the amount; a range (`a到b`,
`a-b元`, and the Chinese `三四百` = 300 to 400, `一两千`) gives its upper end. A lower bound (`1000元以上`,
`300元起`) states no upper one: it is not a budget. The first budget phrase of the text wins.
"""

from __future__ import annotations

import dataclasses
import re

# "3千左右" buys a 3,100-yuan product: "about" means a little either side, and the score's bound is an upper one.
AROUND_TOLERANCE = 0.1

_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
           "八": 8, "九": 9}  # fmt: skip
_UNITS = {"十": 10, "百": 100, "千": 1000, "k": 1000, "K": 1000}
_MYRIAD = {"万": 10000, "w": 10000, "W": 10000}
# Full-width digits and yen sign, mapped one character to one character (spans stay valid).
_WIDTH = str.maketrans("０１２３４５６７８９．￥", "0123456789.¥")

_NUM = r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[kKwW](?![A-Za-z]))?[零〇一二两三四五六七八九十百千万\d]*|[零〇一二两三四五六七八九十百千万]+)"
_CURRENCY = r"(?:块钱|块|元|圆|人民币|rmb|RMB)"
_BEFORE = (
    r"(?:预算|价格|价位|价钱|售价|花费|不超过|不高于|不要超过|别超过|不能超过|不要高于|最多|最高|最贵|低于|"
    r"少于|不到|控制在|上限|封顶|大概|大约|约|差不多)"
)
_FILLER = (
    r"(?:是|在|为|要|大概|大约|约|差不多|控制在|最多|最好|不超过|不要超过|别超过|不能超过|不高于|区间|范围|"
    r"能接受|接受|可以|能花|花|[:：]|\s)*"
)
_AFTER = r"(?:以内|以下|之内|内|左右|上下|出头|封顶|之间)"
_RANGE = r"(?:到|至|-|~|～|—)"
# What may follow a budget: anything but more digits/letters or a measure word (then the number counted things).
_END = r"(?![0-9A-Za-z.]|[个件条只双套张台米码号岁月天年周斤克升毫寸尺层瓶盒包袋支本片粒度倍期款色英厘分])"
# 三百多, 两百来块: "a little over" (an amount, not a count: 多个 / 来件 are stopped by _END).
_AMOUNT = rf"(?:¥\s*)?{_NUM}(?:多|来)?(?:\s*{_CURRENCY})?"
# A lower bound follows: 1000元以上, 300块起 (no upper bound stated).
_LOWER_BOUND = re.compile(r"\s*(?:以上|起|往上|打底)")
# 三四百 = 300 to 400, 一两千 = 1000 to 2000, 五六十 = 50 to 60: two neighbouring digits before the unit.
_APPROX_RANGE = re.compile(r"([一二两三四五六七八九])([二两三四五六七八九])([十百千万]+)")
_PATTERN = re.compile(
    rf"(?P<before>{_BEFORE}{_FILLER})?(?P<first>{_AMOUNT})(?:\s*{_RANGE}\s*(?P<second>{_AMOUNT}))?"
    rf"(?P<after>{_AFTER})?{_END}"
)
_AROUND_WORDS = ("左右", "上下", "大概", "大约", "约", "差不多", "出头")


@dataclasses.dataclass(frozen=True)
class Budget:
    upper: float  # the bound the purchase is scored against (r_price = 1[price <= upper])
    kind: str  # "upper" (以内, 不超过 ...), "around" (左右 ...), "range" (a到b), "amount" (just "200元")
    text: str  # the words of the instruction that state it
    start: int  # where they are in the instruction
    end: int
    amount: float  # the number the user said (a range's upper end)
    lower: float | None = None  # a range's lower end


def chinese_number(text: str) -> float | None:
    """`两百` -> 200, `一千五` -> 1500, `三百零五` -> 305, `3千5` -> 3500, `1.5万` -> 15000, `3k` -> 3000;
    None when `text` is not a number."""
    text = text.translate(_WIDTH)
    tokens = re.findall(r"\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千万kKwW]", text)
    if not tokens or "".join(tokens) != text:
        return None
    total, section, current = 0.0, 0.0, None
    last_unit, after_zero = 0, False
    for token in tokens:
        if token in _DIGITS or token[0].isdigit():
            value = float(_DIGITS[token]) if token in _DIGITS else float(token)
            if token in ("零", "〇"):
                after_zero = True
                continue
            if current is not None:  # two digits in a row ("二五"): not a number a price is written as
                return None
            current = value
        elif token in _UNITS:
            unit = _UNITS[token]
            section += (1.0 if current is None else current) * unit
            current, last_unit, after_zero = None, unit, False
        else:  # 万
            section += current or 0.0
            if section == 0:
                return None
            total += section * _MYRIAD[token]
            section, current, last_unit, after_zero = 0.0, None, _MYRIAD[token], False
    if current is not None:
        # "一千五" is 1500, not 1005: a trailing digit right after 百/千/万 counts one place lower.
        section += current * (last_unit / 10) if last_unit >= 100 and not after_zero else current
    return total + section


def _digits(text: str) -> str:
    """An amount's number alone: without currency, sign, spaces, thousands commas or a trailing 多 / 来."""
    number = re.sub(rf"{_CURRENCY}|¥|\s|,", "", text)
    return re.sub(r"(?<=.)[多来]$", "", number)


def _amount(text: str) -> tuple[float | None, bool]:
    """(the number in an amount such as `¥200`, `两百块`), whether it carried a currency word or sign."""
    currency = bool(re.search(_CURRENCY, text)) or "¥" in text
    return chinese_number(_digits(text)), currency


def approx_range(text: str) -> tuple[float, float] | None:
    """`三四百` -> (300, 400), `一两千` -> (1000, 2000), `五六十` -> (50, 60); None for anything else."""
    match = _APPROX_RANGE.fullmatch(_digits(text))
    if match is None:
        return None
    low, high = _DIGITS[match[1]], _DIGITS[match[2]]
    if high != low + 1:
        return None
    unit = chinese_number("一" + match[3])
    return (low * unit, high * unit) if unit else None


def _plain_chinese_digit(text: str) -> bool:
    """A lone Chinese digit (一, 两 ...), as in 预算一般, 一块蛋糕, 张一元."""
    return bool(re.fullmatch(r"[零〇一二两三四五六七八九]", re.sub(rf"{_CURRENCY}|¥|\s", "", text)))


def parse_budget(text: str) -> Budget | None:
    """The first budget phrase in `text` (see the module docstring), or None when it states none."""
    normalized = text.translate(_WIDTH)
    for match in _PATTERN.finditer(normalized):
        if _LOWER_BOUND.match(normalized, match.end()):
            continue  # 1000元以上: a lower bound, no budget
        first, first_currency = _amount(match["first"])
        second, second_currency = _amount(match["second"]) if match["second"] else (None, False)
        spread = approx_range(match["first"]) if not match["second"] else None
        if spread is not None:  # 三四百: a range in one word
            first, second = spread
        if first is None or (match["second"] and second is None):
            continue
        cued = bool(match["before"] or match["after"]) or first_currency or second_currency
        # A lone Chinese digit needs a bound word and a unit: 一块 is also "one piece", 张一元 is a brand,
        # 预算一般 is "a normal budget".
        lone = _plain_chinese_digit(match["first"]) and second is None
        if not cued or (
            lone and not ((match["before"] or match["after"]) and (first_currency or match["after"]))
        ):
            continue
        if match["second"] and not (second_currency or first_currency or match["before"] or match["after"]):
            continue
        words = text[match.start() : match.end()]
        if second is not None:
            lower, amount = min(first, second), max(first, second)
            if amount <= 0:
                continue
            return Budget(amount, "range", words, match.start(), match.end(), amount, lower)
        if first <= 0:
            continue
        if any(w in words for w in _AROUND_WORDS) or re.search(
            r"[\d零〇一二两三四五六七八九十百千万kKwW](?:多|来)", words
        ):
            return Budget(
                round(first * (1 + AROUND_TOLERANCE), 2), "around", words, match.start(), match.end(), first
            )
        kind = "upper" if match["before"] or match["after"] else "amount"
        return Budget(first, kind, words, match.start(), match.end(), first)
    return None
