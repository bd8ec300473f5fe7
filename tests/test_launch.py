"""launch/tpu.py in dry-run mode: every subcommand prints exactly the gcloud commands it would run."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile

import pytest

from launch import tpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHERE = "--name alx --zone us-central2-b"
TAR = os.path.join(tempfile.gettempdir(), "alejax-alx.tar.gz")
PIP = "cd ~/alejax && python3 -m pip install -q -r launch/requirements-tpu.txt && python3 -m pip install -q -e ."


def dry(capsys, line: str) -> list[str]:
    """The printed lines of `python -m launch.tpu <line> --dry-run` (in-process)."""
    argv = shlex.split(line)
    cut = argv.index("--") if "--" in argv else len(argv)
    tpu.main(argv[:cut] + ["--dry-run"] + argv[cut:])
    return capsys.readouterr().out.strip().splitlines()


def test_create_on_demand_spot_and_queued(capsys):
    assert dry(capsys, f"create {WHERE} --accelerator-type v5litepod-8") == [
        "gcloud compute tpus tpu-vm create alx --zone us-central2-b --accelerator-type v5litepod-8 "
        "--version v2-alpha-tpuv5-lite"
    ]
    assert dry(capsys, f"create {WHERE} --accelerator-type v4-8 --mode spot --project my-proj") == [
        "gcloud compute tpus tpu-vm create alx --zone us-central2-b --project my-proj --accelerator-type v4-8 "
        "--version tpu-ubuntu2204-base --spot"
    ]
    assert dry(capsys, f"create {WHERE} --accelerator-type v5p-32 --mode queued --spot --valid-until 6h") == [
        "gcloud compute tpus queued-resources create alx-qr --node-id alx --zone us-central2-b "
        "--accelerator-type v5p-32 --runtime-version v2-alpha-tpuv5 --spot --valid-until-duration 6h",
        "gcloud compute tpus queued-resources describe alx-qr --zone us-central2-b "
        "--format 'value(state.state)'  # polled until ACTIVE",
    ]
    # An explicit runtime wins over the generation's default.
    out = dry(capsys, f"create {WHERE} --accelerator-type v6e-8 --version my-runtime")
    assert out[0].endswith("--accelerator-type v6e-8 --version my-runtime")


def test_install_copies_the_checkout_or_clones_a_branch(capsys):
    assert dry(capsys, f"install {WHERE}") == [
        f"# pack this checkout ({ROOT}) into {TAR}",
        f"gcloud compute tpus tpu-vm scp {TAR} 'alx:~/alejax.tar.gz' --zone us-central2-b --worker=all",
        "gcloud compute tpus tpu-vm ssh alx --zone us-central2-b --worker=all --command "
        + shlex.quote(
            "set -e; rm -rf ~/alejax && mkdir -p ~/alejax && tar xzf ~/alejax.tar.gz -C ~/alejax && " + PIP
        ),
    ]
    assert dry(capsys, f"install {WHERE} --git-url https://github.com/o/alejax.git --branch exp/1") == [
        "gcloud compute tpus tpu-vm ssh alx --zone us-central2-b --worker=all --command "
        + shlex.quote(
            "set -e; rm -rf ~/alejax && git clone -q --depth 1 --branch exp/1 "
            "https://github.com/o/alejax.git ~/alejax && " + PIP
        )
    ]


def test_run_on_all_workers_detached_and_attached(capsys):
    out = dry(
        capsys,
        f"run {WHERE} --config configs/lm.py:25m --workdir gs://bkt/runs/lm --env XLA_FLAGS='--a --b' "
        "-- --config.steps=100 --config.optim.learning_rate=1e-3",
    )
    job = (
        "cd ~/alejax && ALEJAX_DISTRIBUTED=1 XLA_FLAGS='--a --b' python3 -m alejax.main "
        "--config=configs/lm.py:25m --config.workdir=gs://bkt/runs/lm --config.steps=100 "
        "--config.optim.learning_rate=1e-3"
    )
    remote = (
        f"mkdir -p ~/alejax_logs && setsid nohup bash -c {shlex.quote(job)} > ~/alejax_logs/lm_25m.log "
        "2>&1 < /dev/null & echo $! > ~/alejax_logs/lm_25m.pid"
    )
    assert out[0] == (
        "gcloud compute tpus tpu-vm ssh alx --zone us-central2-b --worker=all --command "
        + shlex.quote(remote)
    )
    assert "launch.tpu logs --name alx --zone us-central2-b --run lm_25m" in out[1]
    # The printed command is a real shell line: it splits back into exactly the argv that would run.
    args = tpu.parse_args(shlex.split(f"run {WHERE} --config configs/lm.py:25m --workdir gs://bkt/runs/lm"))
    assert shlex.split(out[0])[-1].startswith("mkdir -p ~/alejax_logs")
    assert tpu.run_commands(args)[0][-1] == tpu.run_command_line(args)

    attached = dry(capsys, f"run {WHERE} --config configs/rm_causal.py --attach --run rm1")
    assert attached == [
        "gcloud compute tpus tpu-vm ssh alx --zone us-central2-b --worker=all --command "
        + shlex.quote(
            "cd ~/alejax && ALEJAX_DISTRIBUTED=1 python3 -m alejax.main --config=configs/rm_causal.py"
        )
    ]


def test_logs_stop_delete(capsys):
    assert dry(capsys, f"logs {WHERE} --run lm_25m") == [
        "gcloud compute tpus tpu-vm ssh alx --zone us-central2-b --worker=0 --command "
        "'tail -n 200 -F ~/alejax_logs/lm_25m.log'"
    ]
    assert dry(capsys, f"logs {WHERE} --run lm_25m --worker all --no-follow") == [
        "gcloud compute tpus tpu-vm ssh alx --zone us-central2-b --worker=all --command "
        "'tail -n 200 ~/alejax_logs/lm_25m.log'"
    ]
    pid = "~/alejax_logs/lm_25m.pid"
    assert dry(capsys, f"stop {WHERE} --run lm_25m") == [
        "gcloud compute tpus tpu-vm ssh alx --zone us-central2-b --worker=all --command "
        + shlex.quote(f"if test -f {pid}; then kill -- -$(cat {pid}) || true; rm -f {pid}; fi")
    ]
    assert dry(capsys, f"delete {WHERE}") == [
        "gcloud compute tpus tpu-vm delete alx --zone us-central2-b --quiet"
    ]
    assert dry(capsys, f"delete {WHERE} --mode queued --queued-id myqr") == [
        "gcloud compute tpus queued-resources delete myqr --zone us-central2-b --force --quiet"
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        (f"create {WHERE} --accelerator-type v9-8", "no default runtime"),
        (f"create {WHERE} --accelerator-type v4-8 --spot", "--mode queued"),
        (f"run {WHERE} --config configs/nope.py", "not a file"),
        (f"run {WHERE} --config configs/lm.py -- --steps=3", "--config.key=value"),
        (f"run {WHERE} --config configs/lm.py --env NOEQUALS", "KEY=VALUE"),
        (f"logs {WHERE} --run r -- --config.steps=3", "only for run"),
        (f"install {WHERE} --branch dev", "--branch needs --git-url"),
    ],
)
def test_bad_arguments_are_named(capsys, line, message):
    with pytest.raises(SystemExit) as exit_info:
        dry(capsys, line)
    captured = capsys.readouterr()
    assert message in captured.err + str(exit_info.value.code)


def test_install_packs_this_checkout(tmp_path):
    tarball = str(tmp_path / "a.tar.gz")
    n = tpu.pack_checkout(tarball)
    import tarfile

    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert n == len(names) and "alejax/main.py" in names and "launch/requirements-tpu.txt" in names
    assert not any(name.startswith((".git/", "runs/")) or "__pycache__" in name for name in names)


def test_commands_api_matches_the_printed_dry_run(capsys):
    line = f"run {WHERE} --config configs/lm.py:tiny --run sweep_3 -- --config.seed=3"
    printed = dry(capsys, line)
    built = tpu.commands(shlex.split(line))
    assert [shlex.join(c) for c in built] == printed[:1]
    assert "--config.seed=3" in built[0][-1] and "sweep_3.log" in built[0][-1]


def test_cli_entry_point_dry_run():
    out = subprocess.run(
        [sys.executable, "-m", "launch.tpu", "delete", "--name", "alx", "--zone", "z", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "gcloud compute tpus tpu-vm delete alx --zone z --quiet"
