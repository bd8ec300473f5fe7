"""Train a Bradley-Terry scalar reward model on the toy token-level preference task (the baseline).

Run:   python -m alejax.main --config=configs/rm_bt.py       # tiny preset, CPU, ~1 minute
Oracle (decorrelated training data): --config.data.train_split=balanced
"""

import importlib.util
import os

from ml_collections import ConfigDict

_spec = importlib.util.spec_from_file_location(
    "_rm_causal", os.path.join(os.path.dirname(__file__), "rm_causal.py")
)
_rm_causal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rm_causal)


def get_config(preset: str | None = None) -> ConfigDict:
    return _rm_causal.get_config(preset, kind="bt")
