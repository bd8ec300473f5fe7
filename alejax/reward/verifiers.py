"""Rule rewards behind names: a verifier grades a model's response against a task's reference.

    verdict = VERIFIERS["numeric"].verify("... so the total is 1,234.5", 1234.5, rel_tol=1e-6)
    verdict.reward, verdict.detail                  # 1.0, "correct"

| name          | reference (record field)       | reward 1 when                                                   |
|---------------|--------------------------------|-----------------------------------------------------------------|
| exact_match   | answer: text or list of texts  | the final answer equals one, after normalization                |
| numeric       | answer: a number (or its text) | the final answer's last number is within rel_tol / abs_tol      |
| regex         | pattern: a Python regex        | the pattern matches the final answer (search; full_match=True)  |
| python_tests  | tests: Python test code        | the tests exit 0 against the response's code, in the sandbox    |

The final answer of a response is the content of its last `\\boxed{...}`, else of its last `<answer>` tag,
else what follows its last "Answer:", else the whole response. Each verifier also has `check(reference,
options)`, which names what is wrong with a reference (run on every record when a prompt set loads, so a
bad record fails at load time with its line number, not mid-training).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, NamedTuple

from alejax.rl.registry import Registry


class Verdict(NamedTuple):
    reward: float
    detail: str  # why: "correct", or what was wrong (shown to the model as feedback; never the answer)


@dataclasses.dataclass(frozen=True)
class Verifier:
    name: str
    reference_field: str  # the prompt-set record field that holds the reference
    verify: Callable[..., Verdict]  # (response, reference, **options) -> Verdict
    check: Callable[[Any, dict], str | None]  # (reference, options) -> a problem, or None
    options: tuple[str, ...] = ()  # the keyword options `verify` takes


VERIFIERS: Registry = Registry("verifier")

# ---------------------------------------------------------------------------------------------------
# Final answers

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_LINE = re.compile(r"\banswer\s*(?:is)?\s*[:：]\s*", re.IGNORECASE)
_MAX_RESPONSE_CHARS = 20_000  # what a regex sees of a response (bounds the time of a bad pattern)


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def final_answer(response: str) -> str:
    """The part of a response that states its answer (see the module doc)."""
    boxed = _last_boxed(response)
    if boxed is not None:
        return boxed.strip()
    tags = _ANSWER_TAG.findall(response)
    if tags:
        return tags[-1].strip()
    markers = list(_ANSWER_LINE.finditer(response))
    if markers:
        return response[markers[-1].end() :].strip()
    return response.strip()


def normalize(text: str) -> str:
    """Case-folded, whitespace collapsed, surrounding quotes / markdown / end punctuation dropped."""
    text = " ".join(str(text).split()).casefold()
    return text.strip(" .,;:!?。，！？\"'`*$")


# ---------------------------------------------------------------------------------------------------
# exact_match


def _answers(reference: Any) -> list[str]:
    return [str(a) for a in reference] if isinstance(reference, list) else [str(reference)]


def exact_match(response: str, reference: Any, case_sensitive: bool = False) -> Verdict:
    given = final_answer(response)
    norm = (lambda t: " ".join(str(t).split()).strip(" .。")) if case_sensitive else normalize
    ok = norm(given) in {norm(a) for a in _answers(reference)}
    return Verdict(float(ok), "correct" if ok else "incorrect")


def _check_exact(reference: Any, options: dict) -> str | None:
    values = reference if isinstance(reference, list) else [reference]
    if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        return "must be a text (or number), or a non-empty list of them"
    if not all(normalize(str(v)) for v in values):
        return "an accepted answer is empty after normalization"
    return None


VERIFIERS.register("exact_match")(
    Verifier("exact_match", "answer", exact_match, _check_exact, ("case_sensitive",))
)

# ---------------------------------------------------------------------------------------------------
# numeric

_NUMBER = re.compile(
    r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|[-+−]?\.\d+"
)


def parse_number(text: str) -> float | None:
    """The last number written in `text` (1,234.5; -3; 2.5e-3; 3/4), or None."""
    matches = _NUMBER.findall(str(text))
    if not matches:
        return None
    value = matches[-1].replace(",", "").replace("−", "-").replace(" ", "")
    try:
        if "/" in value:
            numerator, denominator = value.split("/")
            return float(numerator) / float(denominator) if float(denominator) else None
        return float(value)
    except ValueError:
        return None


def _reference_number(reference: Any) -> float | None:
    if isinstance(reference, bool):
        return None
    if isinstance(reference, (int, float)):
        return float(reference)
    if isinstance(reference, str):
        matches = _NUMBER.fullmatch(reference.strip())
        return parse_number(reference) if matches else None
    return None


def numeric(response: str, reference: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Verdict:
    value = parse_number(final_answer(response))
    if value is None:
        return Verdict(0.0, "no number found in the answer")
    expected = _reference_number(reference)
    ok = expected is not None and math.isclose(value, expected, rel_tol=rel_tol, abs_tol=abs_tol)
    return Verdict(float(ok), "correct" if ok else "incorrect")


def _check_numeric(reference: Any, options: dict) -> str | None:
    value = _reference_number(reference)
    if value is None or not math.isfinite(value):
        return f"must be a finite number (or its text), got {reference!r}"
    for key in ("rel_tol", "abs_tol"):
        tol = options.get(key, 0.0)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
            return f"option {key} must be a number >= 0, got {tol!r}"
    return None


VERIFIERS.register("numeric")(Verifier("numeric", "answer", numeric, _check_numeric, ("rel_tol", "abs_tol")))

# ---------------------------------------------------------------------------------------------------
# regex

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _compiled(pattern: str, flags: str) -> re.Pattern:
    value = 0
    for flag in flags:
        value |= _FLAGS[flag]
    return re.compile(pattern, value)


def regex(
    response: str, reference: str, flags: str = "", full_match: bool = False, on_answer: bool = True
) -> Verdict:
    """`reference` is a pattern; it is searched for in (or, full_match, must match all of) the final answer
    (`on_answer`; False: the whole response). `flags`: any of i, m, s, x."""
    text = (final_answer(response) if on_answer else response)[:_MAX_RESPONSE_CHARS]
    pattern = _compiled(reference, flags)
    ok = (pattern.fullmatch(text) if full_match else pattern.search(text)) is not None
    return Verdict(float(ok), "correct" if ok else "incorrect")


def _check_regex(reference: Any, options: dict) -> str | None:
    if not isinstance(reference, str) or not reference:
        return "must be a non-empty regular expression"
    flags = options.get("flags", "")
    if not isinstance(flags, str) or set(flags) - set(_FLAGS):
        return f"option flags must be letters of {''.join(_FLAGS)}, got {flags!r}"
    try:
        _compiled(reference, flags)
    except re.error as e:
        return f"is not a valid regular expression: {e}"
    return None


VERIFIERS.register("regex")(
    Verifier("regex", "pattern", regex, _check_regex, ("flags", "full_match", "on_answer"))
)

# ---------------------------------------------------------------------------------------------------
# python_tests

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(response: str) -> str:
    """The last fenced code block of a response (```python ... ```), else the whole response."""
    blocks = _FENCE.findall(response)
    return blocks[-1] if blocks else response


def python_tests(
    response: str, reference: str, timeout_s: float = 10.0, python: str = "python3", output_chars: int = 600
) -> Verdict:
    """Runs `reference` (test code: asserts, or a unittest module that calls unittest.main()) against the
    response's code in a fresh sandbox (alejax.envs.terminal.sandbox: no network, resource limits, killed on
    timeout). The code is `solution.py`; the tests run as `test_solution.py`, which starts with
    `from solution import *`. Reward 1 iff they exit 0 within `timeout_s`."""
    from alejax.envs.terminal.sandbox import Limits, Sandbox

    limits = Limits(timeout_s=timeout_s, cpu_s=max(1, math.ceil(timeout_s)))
    with Sandbox(limits) as sandbox:
        sandbox.write_file("solution.py", extract_code(response))
        sandbox.write_file("test_solution.py", "from solution import *  # noqa\n" + reference)
        result = sandbox.run(f"{python} test_solution.py")
    if result.timed_out:
        return Verdict(0.0, f"tests timed out after {timeout_s:g} s")
    if result.exit_code == 0:
        return Verdict(1.0, "tests passed")
    tail = result.output[-output_chars:].strip()
    return Verdict(0.0, f"tests failed (exit code {result.exit_code}):\n{tail}")


def _check_python(reference: Any, options: dict) -> str | None:
    if not isinstance(reference, str) or not reference.strip():
        return "must be Python test code"
    try:
        compile(reference, "<tests>", "exec")
    except SyntaxError as e:
        return f"is not valid Python: {e.msg} (line {e.lineno})"
    timeout = options.get("timeout_s", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        return f"option timeout_s must be a number > 0, got {timeout!r}"
    return None


VERIFIERS.register("python_tests")(
    Verifier("python_tests", "tests", python_tests, _check_python, ("timeout_s", "python", "output_chars"))
)


def get_verifier(name: str) -> Verifier:
    """The verifier registered under `name` (a KeyError lists the known ones)."""
    return VERIFIERS[name]
