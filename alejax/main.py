"""One entry point for every job.

  python -m alejax.main --config=configs/X.py[:preset] [--config.a.b=value ...]

Without --config it runs the embedded default (configs/lm.py, tiny preset). An unknown key or a value of
the wrong type stops at once with a message naming it (ml_collections checks overrides against the config).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "lm.py")

# A job name -> the module whose run(config) carries it out.
JOBS = {
    "pretrain": "alejax.train.pretrain",
    "sft": "alejax.train.sft",
    "quickstart": "alejax.quickstart",
    "rm": "alejax.reward.train",
    "rl": "alejax.rl.train",
}


def run_job(config) -> object:
    job = config.get("job")
    if job not in JOBS:
        raise ValueError(f"config.job={job!r} is not a known job; known: {sorted(JOBS)}")
    return importlib.import_module(JOBS[job]).run(config)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; use --config.key=value for overrides")
    # Multi-host: join the job (jax.distributed) before any JAX computation; a no-op on one process.
    from alejax.parallel.distributed import maybe_initialize

    maybe_initialize(flags.FLAGS.config)
    run_job(flags.FLAGS.config)


def load_config_file(spec: str):
    """`path[:preset]` -> the ConfigDict its get_config(preset) returns (as --config would load it)."""
    path, _, preset = spec.partition(":")
    if not os.path.exists(path):
        raise SystemExit(f"error: config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location("_alejax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset or None) if preset else module.get_config()


def check_override_keys(argv: list[str]) -> None:
    """Stop before anything runs if an override names a key the config does not have."""
    spec = DEFAULT_CONFIG
    for arg in argv[1:]:
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
    config = load_config_file(spec)
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config.") :].split("=", 1)[0]
        node, walked = config, []
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                known = sorted(node.keys()) if hasattr(node, "keys") else []
                close = difflib.get_close_matches(part, known, n=3)
                where = ".".join(walked) or "the top level"
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SystemExit(
                    f"error: unknown config key {key!r} in {spec}: {part!r} is not a key of {where}{hint}\n"
                    f"keys of {where}: {', '.join(known)}"
                )
            node, walked = node[part], walked + [part]


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
