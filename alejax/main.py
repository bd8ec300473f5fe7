"""One entry point for every job.

  python -m alejax.main --config=configs/X.py[:preset] [--config.a.b=value ...]

Without --config it runs the embedded default (configs/lm.py, tiny preset). An unknown key or a value of
the wrong type stops at once with a message naming it (ml_collections checks overrides against the config).
"""

from __future__ import annotations

import importlib
import os
import sys

from absl import app, flags
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "lm.py")

# A job name -> the module whose run(config) carries it out.
JOBS = {
    "pretrain": "alejax.train.pretrain",
}

_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file (path[:preset]).",
                                          lock_config=True)


def run_job(config) -> object:
  job = config.get("job")
  if job not in JOBS:
    raise ValueError(f"config.job={job!r} is not a known job; known: {sorted(JOBS)}")
  return importlib.import_module(JOBS[job]).run(config)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; use --config.key=value for overrides")
  run_job(_CONFIG.value)


def cli():
  app.run(main)


if __name__ == "__main__":
  sys.exit(cli())
