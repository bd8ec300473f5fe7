"""Train a Bradley-Terry scalar reward model on the toy token-level preference task (the baseline).

Run:   python -m alejax.main --config=configs/rm_bt.py       # tiny preset, CPU, ~1 minute
Oracle (decorrelated training data): --config.data.train_split=balanced
"""

import os

from ml_collections import ConfigDict

from alejax.config import config_module

_rm_causal = config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "rm_causal.py"))


def get_config(preset: str | None = None) -> ConfigDict:
    return _rm_causal.get_config(preset, kind="bt")
