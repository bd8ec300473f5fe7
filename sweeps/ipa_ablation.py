"""IPA ablation on the RL job's tiny preset (configs/rl.py): the chunk discount γ, the mismatch cap H, and the
chunk-level ratio (ipa_chunk) against token-level ratios (ppo_clip with its sampler-mismatch filter at the
same cap H, per token or per chunk).

Run:   python -m alejax.sweep --sweep=sweeps/ipa_ablation.py --parallel 2
Look:  python -m alejax.sweep --sweep=sweeps/ipa_ablation.py --dry-run
Results: runs/sweeps/ipa_ablation/results.{csv,md,png} (final reward against each swept key).
"""

from alejax.sweep import Sweep, chain, product

CAPS = [2.0, 5.0]  # H: a chunk (or token) whose π_old / μ exceeds H is dropped


def get_sweep() -> Sweep:
    return Sweep(
        config="configs/rl.py:tiny",
        runs=chain(
            # IPA: chunk-level ratio, chunk returns G_k = γ^(K−k)·R; γ x H.
            product(
                {"loss.policy_loss": ["ipa_chunk"]},
                {"loss.ipa_gamma": [0.8, 0.95, 1.0]},
                {"loss.ipa_mismatch_cap": CAPS},
            ),
            # Token-level ratio baseline (GRPO + PPO clip) with the same cap as an MIS filter, at token or chunk
            # level: what the chunk-level ratio buys over the token-level one.
            product(
                {"loss.policy_loss": ["ppo_clip"]},
                {"loss.mismatch_level": ["token", "chunk"]},
                {"loss.mis_high": CAPS},
            ),
        ),
        metric="reward",
        goal="max",
        columns=("success", "kept_fraction", "loss", "grad_norm", "time_train_s"),
    )
