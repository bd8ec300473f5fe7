"""Launching runs: sweeps (`sweep.py`, the DSL a sweep file uses; `runner.py`, which runs them locally or on
TPU VMs and gathers the results). `python -m alejax.launch --sweep=sweeps/X.py` is the command. The gcloud
TPU VM scripts it drives are the top-level `launch/` (`python -m launch.tpu`)."""
