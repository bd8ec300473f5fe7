"""DEPTH relation extraction, baselines and pipeline side by side (`job = "depth"`, docs/depth.md).

    python -m alejax.main --config=configs/depth.py              # tiny: three tiny policies, 2-core CPU, minutes
    python bench/depth.py                                        # the same over 3 seeds, mean ± SE

Three policies, each the SFT stage (configs/sft.py, on its env's scripted expert) then RL on the env's rule
reward (configs/rl.py, GRPO): `direct` (relation/direct: the whole sentence -> one label per pair, the
baseline), `grounding` (relation/grounding: SDP context + verbalised path -> one label per pair) and
`refinement` (relation/refinement: the sentence + all local predictions -> the revised set; trained on the
env's noisy local predictor, evaluated on the grounding policy's own predictions). The held-out table scores
three variants on every candidate pair of `eval.n_sentences` held-out sentences of `eval.split` (dev: the
training distribution; test: unseen entity names and templates): direct, grounding only, grounding + refinement (`pipeline`), each untrained / SFT / SFT+RL:
micro-F1, hallucination rate, per-hard-negative-type error, and the recall lost by simplification.
`seed` and the data keys at the top reach every stage (ml_collections references).

Expected: not yet measured for the whole tiny preset (docs/depth.md: its grounding SFT stage alone scores
F1 12-28 on the unseen-name/template splits; the `test` preset, 30 easy dev sentences: direct SFT F1 38.5,
grounding SFT F1 56.0, untrained 0).
"""

import os

from ml_collections import ConfigDict

from alejax.config import load_config_file

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = ("tiny", "test")
# role -> (env, its rule reward); the refinement env scores a set of triples, so micro-F1 of the set.
ROLES = {
    "direct": ("relation/direct", "exact"),
    "grounding": ("relation/grounding", "exact"),
    "refinement": ("relation/refinement", "f1"),
}


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "tiny"
    if preset not in PRESETS:
        raise ValueError(
            f"unknown preset {preset!r} for configs/depth.py; expected one of {', '.join(PRESETS)}"
        )
    c = ConfigDict()
    c.job = "depth"
    c.seed = 0
    c.workdir = f"runs/depth_{preset}"
    c.wandb_project = ""
    c.xla_cache_dir = "runs/xla_cache"  # compiled programs kept across roles, reruns and seeds ("": off)
    c.data = ConfigDict()
    c.data.difficulty = "medium"  # easy | medium | hard (relation/generator.py DIFFICULTIES)
    c.data.hallucination_penalty = 0.5  # the rule reward's cost of labelling a gold NO-RELATION pair

    for role, (env_name, reward) in ROLES.items():
        c[role] = policy_section(c, role, env_name, reward)
    # Refinement answers are sets: several `SUBJ OBJ LABEL` lines (a label answer is 2-4 tokens).
    c.refinement.rollout.max_new_tokens_per_turn = 48
    c.refinement.sft.data.seq_len, c.refinement.sft.data.batch_size = 256, 8

    c.eval = ConfigDict()
    # dev: unseen sentences of the training distribution; test: unseen entity names and templates
    # (test_entities / test_templates: one of the two), where policies trained from scratch on the
    # training names barely generalise (docs/depth.md).
    c.eval.split = "dev"
    c.eval.n_sentences = 100  # held-out sentences; every candidate pair of each is scored (~3.6 a sentence)
    c.eval.first_seed = 0
    c.eval.batch_size = 64
    c.eval.stages = "untrained,sft,sft_rl"

    if preset == "test":  # seconds, for tests: easy sentences, short SFT, one RL step, 30 sentences
        c.data.difficulty = "easy"
        for role in ROLES:
            s = c[role]
            s.sft.data.n_episodes, s.sft.steps = 1000, 120
            s.sft.log_every, s.sft.eval_every, s.sft.checkpoint_every = 40, 120, 120
            s.rl.groups_per_step, s.rl.group_size, s.rl.minibatch_size = 1, 2, 2
            s.steps, s.checkpoint_every = 1, 1
            s.rollout.max_new_tokens_per_turn = 6
        c.refinement.sft.data.n_episodes, c.refinement.sft.steps = 100, 10
        c.refinement.rollout.max_new_tokens_per_turn = 16
        c.eval.n_sentences, c.eval.batch_size = 30, 64
    return c


def policy_section(c: ConfigDict, role: str, env_name: str, reward: str) -> ConfigDict:
    """configs/rl.py:tiny on `env_name` (GRPO on the rule reward) with its SFT stage on the env's expert."""
    rl = load_config_file(os.path.join(HERE, "rl.py:tiny"))
    rl.seed = c.get_ref("seed")
    rl.workdir = c.get_ref("workdir") + f"/{role}"
    rl.wandb_project = c.get_ref("wandb_project")
    rl.env.name = env_name
    # No system prompt: the env's lists every label (~40 tokens an episode) and a policy trained from
    # scratch learns the labels from its data.
    rl.env.system_prompt = ""
    rl.env.kwargs = ConfigDict(
        {
            "split": "train",
            "difficulty": c.data.get_ref("difficulty"),
            "reward": reward,
            "hallucination_penalty": c.data.get_ref("hallucination_penalty"),
        }
    )
    rl.model.vocab_size = 1000  # English with invented names: 512 BPE merges split too many of them
    rl.rollout.max_turns, rl.rollout.max_new_tokens_per_turn = 2, 8  # one answer, one retry if malformed
    rl.max_length = 256  # one length for every role: their sampler programs compile once (xla_cache_dir)
    rl.steps, rl.checkpoint_every = 20, 10
    sft = rl.sft  # shares the rl section's env, expert, tokenizer, model and mesh (configs/rl.py)
    # Rows of 128 hold two ~60-token episodes; the loss is on the ~3 tokens of each answer.
    sft.data.n_episodes, sft.data.seq_len, sft.data.batch_size = 3000, 128, 16
    sft.steps = 250
    sft.log_every, sft.eval_every, sft.checkpoint_every = 25, 100, 100
    return rl
