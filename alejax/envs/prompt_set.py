"""RL on your own prompts: an env over a JSONL prompt set, graded by a named verifier (alejax.reward.verifiers).

    make("prompt_set/jsonl", path="prompts.jsonl", verifier="numeric", verifier_options={"rel_tol": 1e-4})

One line per task: {"prompt": "...", "answer": 42} (exact_match, numeric), {"prompt": ..., "pattern": "..."}
(regex) or {"prompt": ..., "tests": "assert f(2) == 4"} (python_tests); optional "id", "solution" (what the
scripted policy answers: the SFT warm start's expert), "verifier" (this record's own verifier) and any other
fields (kept in the reset info). `reset(seed)` poses task `seed % n`; the model answers in one turn (or up to
`max_attempts`, each wrong one answered with the verifier's feedback); reward = the verifier's. Every record is
checked when the file loads: a bad one raises a RecordError naming its line and field.
"""

from __future__ import annotations

import json
import os
from typing import Any

from alejax.data.records import RecordError, read_jsonl
from alejax.envs.base import register
from alejax.reward.verifiers import VERIFIERS, Verifier

SYSTEM_PROMPTS = {
    "exact_match": "Answer the question. End with a line 'Answer: <your answer>'.",
    "numeric": "Solve the problem. End with a line 'Answer: <number>'.",
    "regex": "Answer the question. End with a line 'Answer: <your answer>'.",
    "python_tests": "Write the Python code asked for in one ```python code block.",
}

_CACHE: dict[tuple, tuple[dict, ...]] = {}


def _verifier(name: Any, where: str) -> Verifier:
    if not isinstance(name, str) or name not in VERIFIERS:
        raise RecordError(f"{where} {name!r} is not one of {', '.join(sorted(VERIFIERS))}")
    return VERIFIERS[name]


def load_prompt_set(
    path: str, verifier: str, prompt_field: str = "prompt", options: dict | None = None
) -> tuple[dict, ...]:
    """The checked records of a prompt-set file (cached per file version)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no prompt-set file at {path!r}")
    stat = os.stat(path)
    key = (
        os.path.abspath(path),
        stat.st_mtime_ns,
        stat.st_size,
        verifier,
        prompt_field,
        json.dumps(options, sort_keys=True),
    )
    if key in _CACHE:
        return _CACHE[key]
    default = _verifier(verifier, f"prompt_set {path}: verifier")
    unknown = sorted(set(options or {}) - set(default.options))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for verifier {verifier!r}; options: {list(default.options)}"
        )
    records = []
    for line, record in read_jsonl(path):
        where = f"{path} line {line}"
        if not isinstance(record, dict):
            raise RecordError(f"{where}: a task must be a JSON object")
        prompt = record.get(prompt_field)
        if not isinstance(prompt, str) or not prompt.strip():
            raise RecordError(f"{where}: field {prompt_field!r}: missing or not a non-empty string")
        own = (
            _verifier(record["verifier"], f"{where}: field 'verifier':") if "verifier" in record else default
        )
        field = own.reference_field
        if field not in record:
            raise RecordError(f"{where}: field {field!r} is missing (verifier {own.name} grades against it)")
        problem = own.check(record[field], (options or {}) if own is default else {})
        if problem:
            raise RecordError(f"{where}: field {field!r} {problem}")
        if "solution" in record and not isinstance(record["solution"], str):
            raise RecordError(f"{where}: field 'solution' must be a string")
        records.append(record)
    if not records:
        raise RecordError(f"{path}: no tasks")
    _CACHE[key] = tuple(records)
    return _CACHE[key]


class PromptSetEnv:
    tools: list[dict] = []

    def __init__(
        self,
        path: str,
        verifier: str = "exact_match",
        verifier_options: dict | None = None,
        prompt_field: str = "prompt",
        system_prompt: str | None = None,
        max_attempts: int = 1,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.options = dict(verifier_options or {})
        self.records = load_prompt_set(path, verifier, prompt_field, self.options)
        self.verifier_name, self.prompt_field, self.max_attempts = verifier, prompt_field, max_attempts
        self.system_prompt = SYSTEM_PROMPTS[verifier] if system_prompt is None else system_prompt
        self.record: dict = {}
        self.attempts = 0
        self.done = True

    def __len__(self) -> int:
        return len(self.records)

    def _verifier(self) -> Verifier:
        return VERIFIERS[self.record.get("verifier", self.verifier_name)]

    def reset(self, seed: int) -> tuple[str, dict]:
        index = seed % len(self.records)
        self.record, self.attempts, self.done = self.records[index], 0, False
        hidden = {"id", "solution", self.prompt_field, self._verifier().reference_field}
        info = {k: v for k, v in self.record.items() if k not in hidden}  # e.g. difficulty, topic
        info.update(index=index, id=self.record.get("id", index))
        return self.record[self.prompt_field], info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.attempts += 1
        verifier = self._verifier()
        options = self.options if verifier.name == self.verifier_name else {}
        verdict = verifier.verify(action, self.record[verifier.reference_field], **options)
        success = verdict.reward >= 1.0
        self.done = success or self.attempts >= self.max_attempts
        info = {"success": success, "verdict": verdict.detail, "attempts": self.attempts}
        if self.done:
            return verdict.detail, verdict.reward, True, False, info
        return f"{verdict.detail}. Try again.", 0.0, False, False, info

    def reference_answer(self) -> str:
        """What the scripted policy answers: the record's `solution`, else its answer as a final line."""
        if "solution" in self.record:
            return self.record["solution"]
        verifier = self._verifier()
        if verifier.name in ("exact_match", "numeric"):
            answer = self.record[verifier.reference_field]
            return f"Answer: {answer[0] if isinstance(answer, list) else answer}"
        raise ValueError(
            f"task {self.record.get('id', '?')!r} has no 'solution' field: a {verifier.name} task needs one "
            "for the scripted policy (the SFT expert)"
        )

    def scripted_policy(self):
        """The reference answer for the current task, as a Policy (messages -> assistant text)."""
        answer = self.reference_answer()
        return lambda messages: answer


register("prompt_set/jsonl", PromptSetEnv)
