"""Sweeps: product / zip_ / chain expansion, key and value checks, dry runs, and one real tiny sweep."""

import csv
import json
import os
import shlex
import subprocess
import sys

import pytest

from alejax.launch.runner import load_sweep, main, plan, resolve_config, run_name, write_results
from alejax.launch.sweep import Sweep, chain, product, zip_

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LM = os.path.join(ROOT, "configs", "lm.py")


def test_product_zip_and_chain_expand_in_order():
    runs = product({"a": [1, 2]}, zip_({"b": [3, 4], "c": ["x", "y"]}))
    assert runs == [
        {"a": 1, "b": 3, "c": "x"},
        {"a": 1, "b": 4, "c": "y"},
        {"a": 2, "b": 3, "c": "x"},
        {"a": 2, "b": 4, "c": "y"},
    ]
    assert product({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]  # a dict's keys cross
    assert zip_({"a": [1, 2]}, {"b": [5, 6]}) == [{"a": 1, "b": 5}, {"a": 2, "b": 6}]
    assert chain({"p": ["base"]}, product({"p": ["ipa"]}, {"g": [0.9, 1.0]})) == [
        {"p": "base"},
        {"p": "ipa", "g": 0.9},
        {"p": "ipa", "g": 1.0},
    ]


def test_expansion_rejects_bad_axes_with_a_message_naming_them():
    with pytest.raises(ValueError, match=r"equally long.*b: 2.*c: 3"):
        zip_({"b": [1, 2], "c": [1, 2, 3]})
    with pytest.raises(ValueError, match="equally long"):
        zip_({"a": [1, 2]}, {"b": [1, 2, 3]})
    with pytest.raises(ValueError, match="'a' needs a list of values"):
        product({"a": 0.1})
    with pytest.raises(ValueError, match="'a' needs a list of values"):
        product({"a": "adam"})  # a string is not a list of letters
    with pytest.raises(ValueError, match="'a' has an empty list"):
        product({"a": []})
    with pytest.raises(ValueError, match=r"\['a'\] appear in more than one factor"):
        product({"a": [1]}, {"a": [2]})
    with pytest.raises(ValueError, match="both swept and fixed"):
        Sweep(config="configs/lm.py", runs=product({"steps": [1]}), fixed={"steps": 2})


def test_unknown_key_or_wrong_type_is_rejected_before_anything_runs(tmp_path):
    sweep = Sweep(config="configs/lm.py:tiny", runs=product({"optim.lr": [1e-3, 1e-2]}))
    with pytest.raises(
        ValueError, match=r"unknown config key 'optim.lr'(.|\n)*keys of optim: .*learning_rate"
    ):
        plan(sweep, resolve_config(sweep.config), str(tmp_path))
    sweep = Sweep(config="configs/lm.py:tiny", runs=product({"steps": [10, "many"]}))
    with pytest.raises(ValueError, match=r"run 1 .*'many' does not fit config key 'steps'"):
        plan(sweep, resolve_config(sweep.config), str(tmp_path))
    assert not os.listdir(tmp_path)

    sweep_file = tmp_path / "bad.py"
    sweep_file.write_text(
        "from alejax.launch.sweep import Sweep, product\n"
        "def get_sweep():\n"
        "    return Sweep(config='configs/lm.py:tiny', runs=product({'optim.learning_rat': [1e-3]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "alejax.launch", f"--sweep={sweep_file}", f"--workdir={tmp_path / 'w'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode != 0 and "optim.learning_rat" in out.stderr and "learning_rate" in out.stderr
    assert not os.path.exists(tmp_path / "w")


def test_run_names_are_readable_and_unique():
    assert run_name({"optim.learning_rate": 0.001, "optim.warmup_steps": 0}) == (
        "learning_rate=0.001-warmup_steps=0"
    )
    assert run_name({"a.lr": 1, "b.lr": 2}) == "a.lr=1-b.lr=2"  # same last part: the full key
    assert run_name({"x": True, "y": "a/b c"}) == "x=true-y=a-b-c"
    long = run_name({"k": "v" * 300})
    assert len(long) <= 120 and long != run_name({"k": "v" * 301})


def test_dry_run_prints_one_command_per_run(capsys, tmp_path):
    assert (
        main(["--sweep", os.path.join(ROOT, "sweeps", "lm_lr.py"), "--dry-run", "--config.steps=7"]) is None
    )
    lines = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("python -m alejax.main")
    ]
    assert len(lines) == 6
    assert all(f"--config={LM}:tiny" in line and "--config.steps=7" in line for line in lines)
    assert "--config.optim.learning_rate=0.01 --config.optim.warmup_steps=30" in lines[-1]
    assert lines[-1].endswith("--config.workdir=runs/sweeps/lm_lr/learning_rate=0.01-warmup_steps=30")
    assert not os.path.exists(os.path.join("runs", "sweeps", "lm_lr", "learning_rate=0.01-warmup_steps=30"))


def test_ipa_ablation_dry_run_against_the_rl_config(capsys):
    sweep = load_sweep(os.path.join(ROOT, "sweeps", "ipa_ablation.py"))
    main(["--sweep", os.path.join(ROOT, "sweeps", "ipa_ablation.py"), "--dry-run"])  # checks every key
    lines = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("python -m alejax.main")
    ]
    assert len(lines) == len(sweep.runs) >= 4
    for key in (
        "rl.advantage_config.chunk_gamma",
        "rl.loss.ipa_mismatch_cap",
        "rl.loss.mismatch_level",
        "rl.loss.policy_loss",
    ):
        assert any(f"--config.{key}=" in line for line in lines), key
    assert len({line.rsplit("--config.workdir=", 1)[1] for line in lines}) == len(lines)  # own workdirs


@pytest.mark.slow
def test_tiny_sweep_runs_gathers_results_and_resumes(tmp_path):
    sweep_file = tmp_path / "tiny.py"
    # Two real runs, plus one that fails fast (no such text files): the others must still finish.
    sweep_file.write_text(
        "from alejax.launch.sweep import Sweep, chain, product\n"
        "def get_sweep():\n"
        "    return Sweep(\n"
        "        config='configs/lm.py:tiny',\n"
        "        runs=chain(product({'optim.learning_rate': [1e-3, 1e-2]}),\n"
        "                   {'data.text_glob': ['/nonexistent/*.txt']}),\n"
        "        fixed={'steps': 4, 'log_every': 2, 'eval_every': 4, 'eval_batches': 1, 'data.n_docs': 200,\n"
        "               'data.seq_len': 32, 'data.batch_size': 4, 'model.vocab_size': 300, 'model.n_layers': 1,\n"
        "               'progress_every_s': 0.0},\n"
        "        metric='eval_loss')\n"
    )
    workdir = tmp_path / "sweep"
    argv = [sys.executable, "-m", "alejax.launch", f"--sweep={sweep_file}", f"--workdir={workdir}"]
    first = subprocess.run(
        argv + ["--parallel=2", "--progress-every=5"], capture_output=True, text=True, cwd=ROOT, timeout=400
    )
    assert first.returncode == 1, first.stdout + first.stderr  # one run failed, so the sweep says so
    assert "FAILED text_glob=-nonexistent-.txt" in first.stdout and "does not exist" not in first.stderr
    assert "[sweep] 3/3 runs done (1 failed, 0 running)" in first.stdout, first.stdout
    assert "results.png; failed: ['text_glob=-nonexistent-.txt']" in first.stdout, first.stdout + first.stderr
    assert "no file" in (workdir / "text_glob=-nonexistent-.txt" / "sweep_run.log").read_text()

    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["status"]) for r in rows] == [
        ("learning_rate=0.001", "ok"),
        ("learning_rate=0.01", "ok"),
        ("text_glob=-nonexistent-.txt", "failed"),
    ]
    for row in rows[:2]:
        metrics_lines = (workdir / row["name"] / "metrics.jsonl").read_text().splitlines()
        last = json.loads(metrics_lines[-1])
        assert int(row["step"]) == last["step"] == 4
        assert float(row["eval_loss"]) == pytest.approx(last["eval_loss"])
    assert rows[0]["eval_loss"] != rows[1]["eval_loss"]  # two learning rates, two results
    assert list(rows[0])[:6] == [
        "name",
        "status",
        "optim.learning_rate",
        "data.text_glob",
        "step",
        "eval_loss",
    ]
    md = (workdir / "results.md").read_text()
    assert md.count("| learning_rate=0.0") + md.count("| **learning_rate=0.0") == 2 and "**" in md
    assert (workdir / "results.png").stat().st_size > 5000

    # A rerun skips the finished runs (no new metrics lines) and retries only the failed one.
    second = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=200)
    assert "2/3 runs finished before; running the other 1" in second.stdout, second.stdout
    assert "start learning_rate" not in second.stdout
    assert len((workdir / "learning_rate=0.01" / "metrics.jsonl").read_text().splitlines()) == 2
    with open(workdir / "results.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["skipped", "skipped", "failed"]


def test_untyped_none_key_is_rejected_with_the_fix(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text(
        "from ml_collections import ConfigDict, config_dict\n"
        "def get_config():\n"
        "    return ConfigDict({'workdir': 'w', 'cap': None, 'typed_cap': config_dict.placeholder(float)})\n"
    )
    plan(Sweep(config=str(config), runs=product({"typed_cap": [2.0, 5.0]})), str(config), str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"'cap' is None with no type.*placeholder"):
        plan(Sweep(config=str(config), runs=product({"cap": [2.0]})), str(config), str(tmp_path / "s"))


def test_tpu_launch_dry_run_spreads_runs_over_the_vms(capsys):
    pytest.importorskip("launch.tpu", reason="launch/tpu.py (the TPU launch scripts) is not there")
    from launch import tpu

    sweep = os.path.join(ROOT, "sweeps", "lm_lr.py")
    main(["--sweep", sweep, "--dry-run", "--launch", "tpu", "--tpu-name", "vm-a", "--tpu-name", "vm-b",
          "--tpu-zone", "us-central2-b", "--remote-workdir", "gs://bucket/lm_lr"])  # fmt: skip
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("python -m launch.tpu")]
    assert len(lines) == 6
    assert [line.split("--name ")[1].split()[0] for line in lines] == ["vm-a", "vm-b"] * 3
    first = shlex.split(lines[0])
    assert first[first.index("--config") + 1] == "configs/lm.py:tiny"  # relative: the VM has its own checkout
    assert first[-1] == "--config.workdir=gs://bucket/lm_lr/learning_rate=0.001-warmup_steps=0"
    # launch.tpu accepts the command as printed: its own dry run shows the gcloud ssh on every worker.
    tpu.main([*first[3 : first.index("--")], "--dry-run", *first[first.index("--") :]])
    gcloud = capsys.readouterr().out
    assert gcloud.startswith("gcloud compute tpus tpu-vm ssh vm-a --zone us-central2-b --worker=all")
    assert "python3 -m alejax.main --config=configs/lm.py:tiny" in gcloud and "gs://bucket/lm_lr/" in gcloud

    with pytest.raises(SystemExit, match="--tpu-zone"):
        main(["--sweep", sweep, "--dry-run", "--launch", "tpu", "--tpu-name", "vm-a"])


def test_ipa_ablation_plans_against_the_rl_config(tmp_path):
    """Every run of the IPA ablation passes the key and type checks of configs/rl.py (its optional loss
    fields are typed placeholders)."""
    config = os.path.join(ROOT, "configs", "rl.py")
    sweep = load_sweep(os.path.join(ROOT, "sweeps", "ipa_ablation.py"))
    runs, _ = plan(sweep, f"{config}:tiny", str(tmp_path / "sweep"))
    assert len(runs) == len(sweep.runs) == 10
    assert {r.overrides["rl.loss.policy_loss"] for r in runs} == {"ipa_chunk", "ppo_clip"}
    assert len({r.name for r in runs}) == 10
    assert "--config.rl.loss.ipa_mismatch_cap=5.0" in runs[1].config_overrides


def test_results_table_and_plot_from_mixed_runs(tmp_path):
    sweep = Sweep(
        config="configs/lm.py",
        runs=chain(product({"lr": [0.1, 0.01]}, {"opt": ["adam", "sgd"]}), {"glob": ["x"]}),
        metric="acc",
        goal="max",
        name="mixed",
    )
    results = [
        {
            "name": f"r{i}",
            "status": "ok",
            "overrides": run,
            "metrics": {"step": 9, "acc": acc, "loss": 1 - acc},
        }
        for i, (run, acc) in enumerate(zip(sweep.runs[:4], [0.5, 0.9, 0.7, 0.6]))
    ] + [{"name": "r4", "status": "failed", "overrides": sweep.runs[4], "metrics": {}, "seconds": 1.0}]
    paths = write_results(results, sweep, str(tmp_path))
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["name", "status", "lr", "opt", "glob", "step", "acc", "loss", "seconds"]
    assert [r["acc"] for r in rows] == ["0.5", "0.9", "0.7", "0.6", ""] and rows[4]["status"] == "failed"
    md = open(paths["md"]).read()
    assert "| **r1** |" in md and md.count("**") == 4  # the best acc (max) in bold (+ the legend line)
    assert os.path.getsize(paths["png"]) > 5000  # panels for lr and opt; glob has no finished run

    sweep.columns = ()  # results.md: only the chosen metric; the CSV keeps every metric
    write_results(results, sweep, str(tmp_path))
    assert "| name | status | lr | opt | glob | step | acc | seconds |" in open(paths["md"]).read()
    assert "loss" in open(paths["csv"]).readline()


def test_run_local_keeps_one_run_per_slot_reports_failures_and_kills_on_timeout(tmp_path, capsys):
    """Fake jobs (plain python, no jax): each writes a metric and its slot's busy interval."""
    sweep = Sweep(
        config="configs/lm.py:tiny", runs=product({"optim.learning_rate": [0.1, 0.2, 0.3, 0.4, 0.5]})
    )
    runs, _ = plan(sweep, resolve_config(sweep.config), str(tmp_path))
    job = (
        "import json, os, sys, time; lr, slot, workdir = float(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
        "t0 = time.time(); time.sleep(0.3 if lr < 0.5 else 30)\n"
        "open(os.path.join(workdir, 'metrics.jsonl'), 'w').write(json.dumps({'step': 1, 'score': lr}) + '\\n')\n"
        "open(os.path.join(sys.argv[4], 'slot' + slot + '.txt'), 'a').write(f'{t0} {time.time()}\\n')\n"
        "sys.exit(3 if lr == 0.2 else 0)\n"
    )

    def command_for(run, slot):
        lr = run.overrides["optim.learning_rate"]
        return [sys.executable, "-c", job, str(lr), str(slot), run.workdir, str(tmp_path)]

    from alejax.launch.runner import run_local

    results = run_local(runs, parallel=2, timeout_s=5, progress_every_s=0.5, command_for=command_for)
    assert [r["status"] for r in results] == ["ok", "failed", "ok", "ok", "failed"]
    assert results[0]["metrics"] == {"step": 1, "score": 0.1} and results[1]["returncode"] == 3
    assert "killed after" in open(os.path.join(runs[4].local_dir, "sweep_run.log")).read()  # the timeout
    for slot in ("0", "1"):  # runs never overlap within a slot
        spans = sorted(tuple(map(float, line.split())) for line in open(tmp_path / f"slot{slot}.txt"))
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    assert "[sweep] 5/5 runs done (2 failed, 0 running)" in capsys.readouterr().out
