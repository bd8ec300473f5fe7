"""RL post-training of an agent on a registered environment (`job = "rl"`): optional SFT warm start from the
env's scripted expert, then GRPO (or any registered estimator / loss), with checkpoints and automatic resume.

Run:   python -m alejax.main --config=configs/rl.py            # tiny preset: arithmetic/easy, CPU, a few minutes
       python -m alejax.main --config=configs/rl.py:keydoor     # the key-and-door corridor
Async rollout (next step's rollout overlaps this step's training): --config.rl.max_policy_version_gap=1
GAE with a critic:  --config.rl.advantage=gae --config.advantage.lam=0.95
"""

import dataclasses

from ml_collections import ConfigDict, config_dict

from alejax.rl.advantages import AdvantageConfig
from alejax.rl.critic import CriticConfig
from alejax.rl.losses import LossConfig
from alejax.rl.resample import ResampleConfig
from alejax.rollout.scheduler import RolloutConfig


def _fields(cls, **overrides) -> ConfigDict:
    """Every field of a config dataclass with its default, so any of them can be overridden by name; a None
    default becomes a typed placeholder (the command line can set it: --config.loss.mis_high=2.0)."""
    values = {**dataclasses.asdict(cls()), **overrides}
    for field in dataclasses.fields(cls):
        if values.get(field.name, 0) is None:
            kind = next(t for t in (float, int, str, bool) if t.__name__ in str(field.type))
            values[field.name] = config_dict.placeholder(kind)
    return ConfigDict(values)


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "tiny"
    c = ConfigDict()
    c.job = "rl"
    c.seed = 0
    c.workdir = f"runs/rl_{preset}"
    c.num_devices = 1  # devices used (-1: all); a tiny model learns fastest on one
    c.mesh = ConfigDict({"data": 1, "fsdp": -1})  # actor_train's mesh when `placement` is empty
    # Role placement for alejax.parallel.place_roles, e.g. {"actor_infer": {"devices": [4, 5, 6, 7]}};
    # empty: every role on actor_train's mesh (colocated).
    c.placement = ConfigDict()

    c.env = ConfigDict()
    c.env.name = "arithmetic/easy"
    c.env.kwargs = ConfigDict({"n_ops": 2})  # the env factory's keyword arguments (n_ops=1: one calc call)
    c.env.render_tools = False  # put the tool schemas in the prompt (long); compact actions do not need them
    c.env.pool_size = 8  # env threads

    c.tokenizer = ConfigDict()
    c.tokenizer.dir = ""  # a Hugging Face tokenizer directory; default: a BPE trained here on env text
    c.tokenizer.vocab_size = 512
    c.tokenizer.corpus_docs = 300  # generated docs mixed into the BPE's training text

    c.model = ConfigDict(
        dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128, vocab_size=512)
    )

    c.sft = ConfigDict()  # warm start on the scripted expert's episodes (steps=0: none)
    c.sft.steps = 80
    c.sft.episodes = 400
    c.sft.batch_size = 16
    c.sft.seq_len = 256
    c.sft.learning_rate = 3e-3
    c.sft.compact = True  # one-line `calc 3 + 4` / `answer 7` actions
    c.sft.expert = ConfigDict()  # more kwargs of the env's scripted_policy (e.g. arithmetic's guess_fraction)
    c.sft.successful_only = True  # False keeps the expert's failed episodes too (a mixed expert's guesses)

    c.rl = ConfigDict()  # alejax.rl.pipeline.RLConfig fields
    c.rl.groups_per_step = 4
    c.rl.group_size = 8
    c.rl.minibatch_size = 16
    c.rl.epochs = 1
    c.rl.advantage = "grpo"
    c.rl.filter_zero_variance_groups = True
    c.rl.max_policy_version_gap = 0
    c.advantage = _fields(AdvantageConfig)
    c.loss = _fields(LossConfig, policy_loss="ppo_clip", kl_coef=0.0)
    c.critic = _fields(CriticConfig, learning_rate=1e-3, value_clip=0.2)  # used by advantage=gae
    c.rollout = _fields(RolloutConfig, max_turns=4, max_new_tokens_per_turn=12)
    # IPA's chunk-initialized resampling (alejax.rl.resample.ResampleConfig fields, plus the expert that
    # provides the replayed prefixes: the env's scripted policy with `teacher_policy` kwargs). Pair it with
    # loss.policy_loss=ipa_chunk and rl.filter_zero_variance_groups=False (failed groups carry the IL term).
    c.resample = _fields(ResampleConfig)
    c.resample.enabled = False
    c.resample.teacher_policy = ConfigDict({"compact": True})
    c.temperature = 1.0
    c.max_length = 128

    c.optim = ConfigDict()
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 1
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0

    c.steps = 20  # RL steps
    c.checkpoint_every = 5
    c.keep_checkpoints = 2
    c.progress_every_s = 5.0
    c.wandb_project = ""

    if preset == "keydoor":
        c.env.name, c.env.kwargs = "keydoor/corridor", ConfigDict()
        c.rollout.max_turns, c.max_length = 12, 512
        c.sft.seq_len = 512
    elif preset != "tiny":
        raise ValueError(f"unknown preset {preset!r} for configs/rl.py; expected tiny or keydoor")
    return c
