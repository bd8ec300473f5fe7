"""python -m alejax.launch --sweep=sweeps/X.py [...]: see alejax/launch/runner.py."""

import sys

from alejax.launch.runner import cli

sys.exit(cli())
