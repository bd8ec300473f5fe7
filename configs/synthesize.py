"""Synthesize a trajectory dataset (`job = "synthesize"`): a policy plays an env mix in given ratios; the episodes
go to sharded JSONL (`alejax.data.records`), the configured filters run over them, and a data card says what the
dataset holds. Rollout only: nothing is trained.

Run:   python -m alejax.main --config=configs/synthesize.py          # tiny: scripted experts, 2-core CPU, seconds
       python -m alejax.main --config=configs/synthesize.py:shop     # shop/single:2,relation/grounding:1
       python -m alejax.main --config=configs/synthesize.py:smollm2  # SmolLM2-135M-Instruct samples arithmetic
Evaluate:  python -m alejax.main --config=configs/synthesize.py:heldout --config.policy=runs/sft_tiny  # greedy
Any policy:  --config.policy=scripted | smollm2 | runs/sft_tiny/model (a model dir, or a job workdir with
             model/) | path/to/model.gguf | my_module:my_policy (a callable: messages -> reply text)
A mix:       --config.mix="shop/single:2,relation/grounding:1"  (env:ratio, comma-separated)
Writes <workdir>/raw/part-*.jsonl (every episode played; a rerun resumes, never repeating an (env, seed)),
<workdir>/data/part-*.jsonl (what the filters kept: train on it with configs/sft.py --config.data.source=jsonl
--config.data.path=<workdir>/data), and <workdir>/data_card.{json,md} with lengths.png and turns.png.

Expected (tiny, seed 0, ~6 s of play on 2 cores): 300 episodes (200 arithmetic/easy, 100 relation/grounding),
86.7% successful (the arithmetic expert guesses on a quarter of its tasks: 80.0% there, 100% on relation); the
filters keep 246: `success` drops the 40 guesses, `dedup_near` 10 near-repeats, `decontaminate` 4 arithmetic
tasks that are held-out tasks verbatim. docs/data.md goes on to SFT on them and evaluate (35.0% held-out).
"""

from ml_collections import ConfigDict

from alejax.config import section_of
from alejax.envs.pools import EnvPoolConfig
from alejax.rollout.sampler import SamplingConfig
from alejax.rollout.scheduler import RolloutConfig

# Filter params by name; `filters` says which run, in order (alejax.data.filters.FILTERS). decontaminate compares
# against the first observations of `heldout.n_tasks` held-out tasks of every env in the mix.
FILTER_PARAMS = {
    "success": {},
    "min_reward": {"threshold": 0.5},
    "length_bounds": {"min_length": 0, "max_length": 4096, "unit": "tokens"},  # unit chars without tokens
    "turn_bounds": {"min_turns": 1, "max_turns": 16},
    "valid_tool_calls": {},
    "no_loops": {"max_repeats": 3},
    "dedup_exact": {},
    "dedup_near": {"threshold": 0.8},
    "decontaminate": {"n": 13, "roles": ["user"]},
}


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "tiny"
    c = ConfigDict()
    c.job = "synthesize"
    c.seed = 0
    c.workdir = f"runs/synthesize_{preset}"
    # "scripted" (each env's scripted_policy), a model ("smollm2", a Hugging Face-format directory or a job
    # workdir holding model/, a .gguf file) or "module:function", a callable messages -> reply text.
    c.policy = "scripted"
    c.mix = "arithmetic/easy:2,relation/grounding:1"
    # Over the mix, apportioned by its ratios; env e plays seeds first_seed .. first_seed + n_e - 1.
    c.n_episodes = 300
    c.first_seed = 0
    c.shard_size = 16  # episodes per shard: the unit of work a killed run loses
    # Per env (by registry name): its factory's kwargs, its scripted policy's kwargs, a system prompt replacing
    # its own ("" drops it). Envs not named get none. The keys hold a "/", which command-line overrides cannot
    # name: set these in a config file or a preset (like `heldout` below).
    c.env_kwargs = ConfigDict({"relation/grounding": {"split": "train"}})
    c.expert = ConfigDict({"arithmetic/easy": {"compact": True, "guess_fraction": 0.25}})
    c.system_prompts = ConfigDict()
    c.render_tools = False  # tool schemas in the system turn (and in the records' `tools`)

    # Model policies run through the rollout scheduler (one per env, sharing one sampler).
    c.sampling = section_of(SamplingConfig, temperature=1.0)
    c.rollout = section_of(RolloutConfig, max_turns=8, max_new_tokens_per_turn=32)  # max_turns: every policy
    c.max_length = 512
    c.batch_size = 16  # sampler rows (episodes played at once)
    c.env_pool = section_of(EnvPoolConfig)
    c.num_devices = -1  # devices the model is sharded over (-1: all; 1 is fastest for a tiny model on CPU)
    c.mesh = ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})

    c.filters = "success,turn_bounds,valid_tool_calls,no_loops,dedup_exact,dedup_near,decontaminate"
    c.filter_params = ConfigDict(FILTER_PARAMS)
    # Held-out tasks for decontaminate: seeds first_seed.., each env's kwargs updated with env_kwargs[env].
    c.heldout = ConfigDict(
        {"first_seed": 100_000, "n_tasks": 200, "env_kwargs": {"relation/grounding": {"split": "test"}}}
    )
    c.progress_every_s = 5.0

    if preset == "shop":  # the example mix: the shop expert and the relation expert
        c.mix, c.n_episodes = "shop/single:2,relation/grounding:1", 150
        c.env_kwargs["shop/single"] = {"world_seed": 0, "n_products": 500, "split": "train", "page_size": 5}
        c.expert = ConfigDict({"shop/single": {"check_details": False}})
        c.heldout.env_kwargs["shop/single"] = {"split": "eval"}
    elif (
        preset == "smollm2"
    ):  # a real model samples (behaviour log-probs recorded): ~30 s an episode on 2 cores
        c.policy, c.mix, c.n_episodes, c.shard_size = "smollm2", "arithmetic/easy:1", 16, 8
        c.expert = ConfigDict()
        c.rollout.max_turns, c.rollout.max_new_tokens_per_turn, c.max_length = 4, 48, 1024
        c.batch_size, c.render_tools = 8, True  # a general chat model needs the tool schemas in its prompt
        c.filters = "turn_bounds,no_loops,dedup_exact"
    elif (
        preset == "heldout"
    ):  # evaluate a policy (--config.policy=...): greedy, on the tiny mix's held-out tasks
        c.first_seed, c.n_episodes, c.filters = c.heldout.first_seed, 120, ""
        c.env_kwargs = ConfigDict({"relation/grounding": {"split": "test"}})
        c.sampling.temperature = 0.0
    elif preset != "tiny":
        raise ValueError(
            f"unknown preset {preset!r} for configs/synthesize.py; expected tiny, shop, smollm2 or heldout"
        )
    return c
