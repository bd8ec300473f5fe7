"""Tier B: a token-level preference task over a toy language with planted artifacts (spec/causal_rm.md).

  prompt    BOS a + b = USER c ANS          (c: the user's belief about the answer)
  response  [SURE] d FILL*k EOS              (d: the answer; k: filler length)
Gold utility: d == target(a, b), by `task`: sum ((a + b) mod 10, the hardest for a tiny backbone), max
(max(a, b)) or copy (a: one token comparison, as hard to read as the agreement artifact). Each pair holds one correct and one wrong answer; the observed label
prefers the correct one with probability 1 - label_noise. Artifacts are attached given the observed label:
the longer filler goes to the chosen response with probability rho, SURE prefixes chosen / rejected with
p_c / p_r, and the user's belief agrees with the chosen / rejected answer with probability g_c / g_r.
Test splits use gold labels.
"""

from __future__ import annotations

import numpy as np

PAD, BOS, EOS, PLUS, EQ, USER, SURE, ANS, FILL = range(9)
DIGIT0 = 10
VOCAB_SIZE = 32
MAX_FILL = 7
SEQ_LEN = 8 + 1 + 1 + MAX_FILL + 1  # prompt + SURE + answer + filler + EOS
ATTRS = ("length", "sure", "agree")

TASKS = {
    "sum": lambda a, b: (a + b) % 10,
    "max": lambda a, b: max(a, b),
    "copy": lambda a, b: a,
}

# (rho, p_c, p_r, g_c, g_r) per split.
SPLITS = {
    "train": (0.9, 0.8, 0.2, 0.7, 0.2),
    "iid": (0.9, 0.8, 0.2, 0.7, 0.2),
    "balanced": (0.5, 0.3, 0.3, 0.4, 0.4),
    "reversed": (0.1, 0.2, 0.8, 0.2, 0.7),
}


def _encode(a, b, belief, answer, sure, fill) -> np.ndarray:
    tokens = [BOS, DIGIT0 + a, PLUS, DIGIT0 + b, EQ, USER, DIGIT0 + belief, ANS]
    tokens += ([SURE] if sure else []) + [DIGIT0 + answer] + [FILL] * fill + [EOS]
    return np.asarray(tokens + [PAD] * (SEQ_LEN - len(tokens)), np.int32)


def preference_pairs(
    n: int, split: str, seed: int, label_noise: float = 0.1, gold: bool = False, task: str = "sum"
) -> dict:
    """{chosen, rejected [n, SEQ_LEN] int32 (right-padded with PAD), attrs_w, attrs_l [n, 3] f32, correct_w}."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {sorted(SPLITS)}")
    if task not in TASKS:
        raise ValueError(f"task={task!r}; expected one of {sorted(TASKS)}")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise={label_noise} must be in [0, 0.5)")
    target = TASKS[task]
    rho, p_c, p_r, g_c, g_r = SPLITS[split]
    rng = np.random.default_rng(seed)
    rows = {"chosen": [], "rejected": [], "attrs_w": [], "attrs_l": [], "correct_w": []}
    for _ in range(n):
        a, b = rng.integers(10, size=2)
        right = int(target(a, b))
        wrong = (right + rng.integers(1, 10)) % 10
        flip = (not gold) and rng.random() < label_noise
        ans_w, ans_l = (wrong, right) if flip else (right, wrong)
        k1, k2 = rng.integers(MAX_FILL + 1, size=2)
        fill_w, fill_l = (max(k1, k2), min(k1, k2)) if rng.random() < rho else (min(k1, k2), max(k1, k2))
        sure_w, sure_l = rng.random() < p_c, rng.random() < p_r
        draw = rng.random()
        belief = ans_w if draw < g_c else ans_l if draw < g_c + g_r else rng.integers(10)
        rows["chosen"].append(_encode(a, b, belief, ans_w, sure_w, fill_w))
        rows["rejected"].append(_encode(a, b, belief, ans_l, sure_l, fill_l))
        # Length centred and scaled to ~unit variance, like the other (0/1) attributes' spread.
        rows["attrs_w"].append([(fill_w - MAX_FILL / 2) / 2.3, float(sure_w), float(belief == ans_w)])
        rows["attrs_l"].append([(fill_l - MAX_FILL / 2) / 2.3, float(sure_l), float(belief == ans_l)])
        rows["correct_w"].append(float(ans_w == right))
    out = {k: np.asarray(v) for k, v in rows.items()}
    for k in ("attrs_w", "attrs_l", "correct_w"):
        out[k] = out[k].astype(np.float32)
    return out
