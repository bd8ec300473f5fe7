"""The SFT job (resumes mid-epoch exactly) and the quickstart job (every stage, the table, the plot, and a
rerun after a kill during RL that resumes from the last checkpoint)."""

import json
import os
import shutil

import numpy as np
import pytest

from alejax.config import load_config_file
from alejax.main import run_job
from alejax.rl.pipeline import RLPipeline
from alejax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sft_config(workdir, steps=6):
    c = load_config_file(os.path.join(ROOT, "configs", "sft.py:arithmetic"))
    c.unlock()
    c.workdir = str(workdir)
    c.data.n_episodes, c.data.seq_len, c.data.batch_size = 60, 256, 4
    c.model.update(dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64))
    c.model.vocab_size = 400
    c.steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 1, 3, 2
    return c


def test_sft_job_resumes_mid_epoch_exactly(tmp_path):
    # 60 episodes pack into few rows, so 6 steps of 4 rows cross epoch boundaries: resume must land mid-epoch.
    whole = run_job(_sft_config(tmp_path / "whole"))
    assert whole["loss"] < read_metrics(str(tmp_path / "whole" / "metrics.jsonl"))[0]["loss"]
    assert os.path.exists(tmp_path / "whole" / "model" / "config.json")
    assert os.path.exists(tmp_path / "whole" / "model" / "tokenizer.json")

    run_job(_sft_config(tmp_path / "killed"))
    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "6")  # as if killed after the step-4 checkpoint
    resumed = run_job(_sft_config(tmp_path / "killed"))
    assert resumed["loss"] == pytest.approx(whole["loss"], rel=1e-6)  # same batches, same updates
    losses = {r["step"]: r["loss"] for r in read_metrics(str(tmp_path / "killed" / "metrics.jsonl"))}
    whole_losses = {r["step"]: r["loss"] for r in read_metrics(str(tmp_path / "whole" / "metrics.jsonl"))}
    assert losses[5] == pytest.approx(whole_losses[5], rel=1e-6)


def _quickstart_config(workdir):
    c = load_config_file(os.path.join(ROOT, "configs", "quickstart.py:test"))
    c.unlock()
    c.workdir = str(workdir)
    return c


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_quickstart_runs_every_stage_and_resumes_after_a_kill_during_rl(tmp_path, monkeypatch, capsys):
    real_step, calls = RLPipeline.step, []

    def step_then_die(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # killed during RL step 3 (after the step-2 checkpoint)
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(RLPipeline, "step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_job(_quickstart_config(tmp_path))
    monkeypatch.setattr(RLPipeline, "step", real_step)
    capsys.readouterr()

    out = run_job(_quickstart_config(tmp_path))
    printed = capsys.readouterr().out
    assert "resumed from checkpoint step 2" in printed
    rl_rows = read_metrics(str(tmp_path / "rl" / "metrics.jsonl"))
    assert [r["step"] for r in rl_rows] == [1, 2, 3, 4]  # the same number of steps as an unbroken run
    assert set(out["results"]) == {"untrained", "sft", "sft_rl"}
    for summary in out["results"].values():
        assert summary["episodes"] == 4 and 0.0 <= summary["success"] <= 1.0
        assert {"score/strict", "score/loose"} <= set(summary)
    table = open(tmp_path / "results.md").read()
    assert "| sft_rl |" in table and "full success" in table and "R_strict" in table
    # The paired SFT+RL - SFT gain over the same 4 tasks, and the RL reward trend over its 4 steps.
    gain = out["rl_gain"]["success"]
    assert gain["tasks"] == 4 and gain["better"] + gain["worse"] + gain["tied"] == 4
    per_task = {name: np.asarray(out["results"][name]["per_task"]["success"]) for name in ("sft", "sft_rl")}
    assert gain["mean_difference"] == pytest.approx((per_task["sft_rl"] - per_task["sft"]).mean())
    assert out["rl_reward_trend"]["points"] == 4 and "paired over the same 4 tasks" in table
    assert json.load(open(tmp_path / "results.json"))["results"]["sft"] == out["results"]["sft"]
    assert os.path.getsize(tmp_path / "quickstart.png") > 10_000
    assert os.listdir(tmp_path / "rl" / "tensorboard") and os.listdir(tmp_path / "sft" / "tensorboard")
    assert np.isfinite(out["wall_s"])


def test_quickstart_rejects_an_unknown_policy_name(tmp_path):
    c = _quickstart_config(tmp_path)
    c.eval.policies = "sft,best"
    with pytest.raises(ValueError, match="best"):
        run_job(c)
