"""Every job on one floor, each read top to bottom (build, loop, evaluate, save); `alejax.main` dispatches to
`alejax.jobs.<config.job>.run(config)`. Library packages never import a job (tests/test_imports.py)."""

JOBS = ("lm", "sft", "rl", "rm", "quickstart", "depth", "dpo", "synthesize")
