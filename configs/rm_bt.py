"""Train a Bradley-Terry scalar reward model on the toy token-level preference task (the baseline).

Run:   python -m alejax.main --config=configs/rm_bt.py       # tiny preset, CPU, ~1 minute
Oracle (decorrelated training data): --config.data.train_split=balanced

Expected (tiny, seed 0, 400 steps, gold labels): IID 0.91, balanced 0.56, reversed 0.13 pairwise accuracy: the
train split's planted artifacts carry it (measured 2026-12-01).
"""

import os

from ml_collections import ConfigDict

from alejax.config import config_module

_rm_causal = config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "rm_causal.py"))


def get_config(preset: str | None = None) -> ConfigDict:
    return _rm_causal.get_config(preset, kind="bt")
