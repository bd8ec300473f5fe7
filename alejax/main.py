"""One entry point for every job.

  python -m alejax.main --config=configs/X.py[:preset] [--config.a.b=value ...]

Without --config it runs the embedded default (configs/lm.py, tiny preset). An unknown key or a value of
the wrong type stops at once with a message naming it (ml_collections checks overrides against the config).
"""

from __future__ import annotations

import importlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from alejax.config import DEFAULT_CONFIG, check_override_keys
from alejax.jobs import JOBS


def run_job(config) -> object:
    """`alejax.jobs.<config.job>.run(config)`."""
    job = config.get("job")
    if job not in JOBS:
        raise ValueError(f"config.job={job!r} is not a known job; known: {sorted(JOBS)}")
    return importlib.import_module(f"alejax.jobs.{job}").run(config)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; use --config.key=value for overrides")
    # Multi-host: join the job (jax.distributed) before any JAX computation; a no-op on one process.
    from alejax.parallel.distributed import maybe_initialize

    maybe_initialize(flags.FLAGS.config)
    run_job(flags.FLAGS.config)


def cli(argv: list[str] | None = None):
    argv = list(sys.argv if argv is None else argv)
    check_override_keys(argv)
    # Defined here, after the key check: config_flags applies argv overrides as soon as it is defined.
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file(
            "config", DEFAULT_CONFIG, "Config file (path[:preset]).", lock_config=True
        )
    logging.set_verbosity(logging.WARNING)  # orbax and absl chat at INFO; our progress lines say enough
    app.run(main, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
