"""Learning rate x warmup on the tiny LM (configs/lm.py:tiny): 3 x 2 = 6 runs of ~1 minute each on CPU.

Run:   python -m alejax.launch --sweep=sweeps/lm_lr.py --parallel 2
Quick: python -m alejax.launch --sweep=sweeps/lm_lr.py --config.steps=20 --workdir=/tmp/lm_lr_quick
Results: runs/sweeps/lm_lr/results.{csv,md,png} (eval_loss against each swept key).
"""

from alejax.launch.sweep import Sweep, product


def get_sweep() -> Sweep:
    return Sweep(
        config="configs/lm.py:tiny",
        runs=product(
            {"optim.learning_rate": [1e-3, 3e-3, 1e-2]},
            {"optim.warmup_steps": [0, 30]},
        ),
        fixed={"checkpoint_every": 1000},  # sweeps compare final numbers; one checkpoint at the end is enough
        metric="eval_loss",
        goal="min",
        columns=("loss", "grad_norm", "tokens_per_s"),
    )
