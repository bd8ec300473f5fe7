"""IPA ablation on the RL job's tiny preset (configs/rl.py): the chunk discount γ, the mismatch cap H, and the
chunk-level ratio (ipa_chunk) against token-level ratios (ppo_clip with its sampler-mismatch filter at the
same cap H, per token or per chunk).

Run:   python -m alejax.launch --sweep=sweeps/ipa_ablation.py --parallel 2
Look:  python -m alejax.launch --sweep=sweeps/ipa_ablation.py --dry-run
Results: runs/sweeps/ipa_ablation/results.{csv,md,png} (final reward against each swept key).
"""

from alejax.launch.sweep import Sweep, chain, product

CAPS = [2.0, 5.0]  # H: a chunk (or token) whose π_old / μ exceeds H is dropped


def get_sweep() -> Sweep:
    return Sweep(
        config="configs/rl.py:tiny",
        runs=chain(
            # IPA: chunk-level ratio on the chunk returns G_k = γ^(K−k)·R (the chunk_discounted advantage); γ x H.
            product(
                {"rl.loss.policy_loss": ["ipa_chunk"], "rl.advantage": ["chunk_discounted"]},
                {"rl.advantage_config.chunk_gamma": [0.8, 0.95, 1.0]},
                {"rl.loss.ipa_mismatch_cap": CAPS},
            ),
            # Token-level ratio baseline (GRPO + PPO clip) with the same cap as an MIS filter, at token or chunk
            # level: what the chunk-level ratio buys over the token-level one.
            product(
                {"rl.loss.policy_loss": ["ppo_clip"]},
                {"rl.loss.mismatch_level": ["token", "chunk"]},
                {"rl.loss.mis_high": CAPS},
            ),
        ),
        metric="reward",
        goal="max",
        columns=("success", "kept_fraction", "loss", "grad_norm", "time_train_s"),
    )
