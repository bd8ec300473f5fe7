"""The RL job: config -> SFT warm start -> async GRPO steps with metrics and checkpoints; a killed run resumes."""

import json
import os

import pytest

from alejax.config import config_module, load_config_file
from alejax.jobs import JOBS
from alejax.jobs import rl as rl_job
from alejax.rl.build import rl_config_from, task_seeds
from alejax.train.metrics import read_metrics

CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "rl.py")


def _tiny(workdir, steps):
    c = load_config_file(f"{CONFIG}:tiny")
    c.workdir = str(workdir)
    c.steps = steps
    c.sft.steps, c.sft.data.n_episodes, c.sft.data.batch_size = 4, 40, 4
    c.sft.log_every = c.sft.eval_every = c.sft.checkpoint_every = 2
    c.rl.groups_per_step, c.rl.group_size, c.rl.minibatch_size = 2, 4, 8
    c.rl.filter_zero_variance_groups = False  # every step updates, so versions advance
    c.rl.max_policy_version_gap = 1  # the job's async path
    c.rollout.max_turns, c.rollout.max_new_tokens_per_turn = 2, 6
    c.checkpoint_every = 2
    c.progress_every_s = 0.0
    return c


def test_config_presets_and_job_registration():
    assert "rl" in JOBS
    module = config_module(CONFIG)
    assert module.get_config("tiny").job == "rl" and module.get_config("keydoor").env.name.startswith(
        "keydoor"
    )
    with pytest.raises(ValueError, match="unknown preset"):
        module.get_config("huge")
    real = module.get_config(
        "smollm2"
    )  # the real-model preset (bench/real_rl.py): LoRA on SmolLM2, mixed expert
    assert real.sft.pretrained == "smollm2" and real.sft.lora.rank == real.lora.rank == 8
    assert real.sft.expert.guess_fraction == 0.5 and not real.sft.data.successful_only
    c = module.get_config()
    c.rl.bogus = 1
    with pytest.raises(ValueError, match="bogus"):
        rl_config_from(c)
    # Tasks depend on (seed, step) only: a resumed run trains on the same tasks.
    assert task_seeds(c, 3) == task_seeds(c, 3) != task_seeds(c, 4)


def test_rl_job_is_killed_and_resumes_to_the_same_final_step(tmp_path, capsys):
    first = rl_job.run(_tiny(tmp_path, steps=2))
    assert first["rl_step"] == 2 and first["policy_version"] == 2
    # Killed after logging step 3 but before its checkpoint: the resumed run redoes step 3.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "reward": -1.0}) + "\n")
    capsys.readouterr()
    last = rl_job.run(_tiny(tmp_path, steps=4))
    out = capsys.readouterr().out
    assert "resumed from checkpoint step 2" in out and "resumed from checkpoint step 4" in out  # SFT loads
    assert last["rl_step"] == 4 and last["policy_version"] == 4  # the restored trainer version continued
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["reward"] >= 0
    # Each run's first rollout has nothing to overlap; the next one usually starts a turn before the sync (1),
    # but on a loaded box its first turn may begin after it (0): the bound is what holds every time.
    staleness = [r["staleness"] for r in rows]
    assert staleness[0] == staleness[2] == 0 and max(staleness) <= 1, staleness
    for phase in ("rollout", "reward", "old_logp", "train", "sync", "idle"):
        assert all(f"time_{phase}_s" in r for r in rows), phase
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())[-1] == 4
    assert os.path.exists(tmp_path / "metrics.png") and os.listdir(tmp_path / "tensorboard")
    # Re-running a finished job does no step and reports where it stands.
    again = rl_job.run(_tiny(tmp_path, steps=4))
    assert again["rl_step"] == 4 and len(read_metrics(str(tmp_path / "metrics.jsonl"))) == 4
    assert again["reward"] == rows[-1]["reward"] and "reward nan" not in capsys.readouterr().out
