"""Cloud TPU VMs for alejax: create, install, run a config on every worker, stream logs, stop, delete.

  python -m launch.tpu create  --name N --zone Z --accelerator-type v5p-32 [--mode on-demand|spot|queued]
  python -m launch.tpu install --name N --zone Z [--git-url URL --branch B]   # default: copy this checkout
  python -m launch.tpu run     --name N --zone Z --config configs/lm.py:25m --workdir gs://B/run [-- --config.k=v]
  python -m launch.tpu logs    --name N --zone Z --run RUN [--worker all] [--no-follow]
  python -m launch.tpu stop    --name N --zone Z --run RUN
  python -m launch.tpu delete  --name N --zone Z [--mode queued]

Plain TPU VMs, no Pathways: `run` starts the same command on every worker (`--worker=all`) with
ALEJAX_DISTRIBUTED=1, so `alejax.main` calls `jax.distributed.initialize()`, which reads the worker list
from the VM metadata. Every subcommand takes --dry-run: it prints the exact gcloud commands and runs
nothing (tests/test_launch.py checks them).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "~/alejax"  # where the code lives on every worker
REMOTE_LOGS = "~/alejax_logs"  # <run>.log and <run>.pid of detached runs, per worker

# Runtime (OS image) per TPU generation, from the Cloud TPU docs; --version overrides.
RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
MODES = ("on-demand", "spot", "queued")
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
QUEUED = ["gcloud", "compute", "tpus", "queued-resources"]


def runtime_version(accelerator_type: str) -> str:
    generation = accelerator_type.rsplit("-", 1)[0]
    if generation not in RUNTIME_VERSIONS:
        raise SystemExit(
            f"error: no default runtime for --accelerator-type {accelerator_type!r} "
            f"(known generations: {', '.join(sorted(RUNTIME_VERSIONS))}); pass --version"
        )
    return RUNTIME_VERSIONS[generation]


def _where(args) -> list[str]:
    return ["--zone", args.zone] + (["--project", args.project] if args.project else [])


def _ssh(args, command: str, worker: str = "all") -> list[str]:
    return [*TPU_VM, "ssh", args.name, *_where(args), f"--worker={worker}", "--command", command]


def _queued_id(args) -> str:
    return args.queued_id or f"{args.name}-qr"


# -- the subcommands: each returns the commands it runs, in order ------------------------------------------


def create_commands(args) -> list[list[str]]:
    version = args.version or runtime_version(args.accelerator_type)
    kind = ["--accelerator-type", args.accelerator_type]
    if args.mode == "queued":
        node = ["--node-id", args.name, *_where(args)]
        cmd = [*QUEUED, "create", _queued_id(args), *node, *kind, "--runtime-version", version]
        if args.spot:
            cmd.append("--spot")
        if args.valid_until:
            cmd += ["--valid-until-duration", args.valid_until]
        return [cmd]
    cmd = [*TPU_VM, "create", args.name, *_where(args), *kind, "--version", version]
    if args.mode == "spot":
        cmd.append("--spot")
    return [cmd]


def queued_state_command(args) -> list[str]:
    return [*QUEUED, "describe", _queued_id(args), *_where(args), "--format", "value(state.state)"]


def install_commands(args, tarball: str | None = None) -> list[list[str]]:
    pip = (
        f"cd {REMOTE_DIR} && python3 -m pip install -q -r launch/requirements-tpu.txt "
        "&& python3 -m pip install -q -e ."
    )
    if args.git_url:
        fetch = (
            f"rm -rf {REMOTE_DIR} && git clone -q --depth 1 --branch {shlex.quote(args.branch)} "
            f"{shlex.quote(args.git_url)} {REMOTE_DIR}"
        )
        return [_ssh(args, f"set -e; {fetch} && {pip}")]
    tarball = tarball or os.path.join(tempfile.gettempdir(), f"alejax-{args.name}.tar.gz")
    remote_tar = "~/alejax.tar.gz"
    copy = [*TPU_VM, "scp", tarball, f"{args.name}:{remote_tar}", *_where(args), "--worker=all"]
    unpack = f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && tar xzf {remote_tar} -C {REMOTE_DIR}"
    return [copy, _ssh(args, f"set -e; {unpack} && {pip}")]


def run_command_line(args) -> str:
    """The shell line every worker runs."""
    config = args.config
    job = ["python3", "-m", "alejax.main", f"--config={config}"]
    if args.workdir:
        job.append(f"--config.workdir={args.workdir}")
    job += args.overrides
    env = "ALEJAX_DISTRIBUTED=1 " + " ".join(f"{k}={shlex.quote(v)}" for k, v in args.env)
    line = f"cd {REMOTE_DIR} && {env.strip()} {shlex.join(job)}"
    if args.attach:
        return line
    log, pid = f"{REMOTE_LOGS}/{args.run}.log", f"{REMOTE_LOGS}/{args.run}.pid"
    # Detached: the job outlives the ssh session in its own process group (pid = group id, for `stop`);
    # its output goes to a per-worker log that `logs` streams.
    return (
        f"mkdir -p {REMOTE_LOGS} && setsid nohup bash -c {shlex.quote(line)} > {log} 2>&1 < /dev/null "
        f"& echo $! > {pid}"
    )


def run_commands(args) -> list[list[str]]:
    return [_ssh(args, run_command_line(args))]


def logs_commands(args) -> list[list[str]]:
    tail = "tail -n 200 -F" if args.follow else "tail -n 200"
    return [_ssh(args, f"{tail} {REMOTE_LOGS}/{args.run}.log", worker=args.worker)]


def stop_commands(args) -> list[list[str]]:
    pid = f"{REMOTE_LOGS}/{args.run}.pid"
    # The pid file names the job's process group (setsid in `run`): the job and everything it started.
    return [_ssh(args, f"if test -f {pid}; then kill -- -$(cat {pid}) || true; rm -f {pid}; fi")]


def delete_commands(args) -> list[list[str]]:
    if args.mode == "queued":  # deleting the queued resource deletes its TPU VM too (--force)
        return [[*QUEUED, "delete", _queued_id(args), *_where(args), "--force", "--quiet"]]
    return [[*TPU_VM, "delete", args.name, *_where(args), "--quiet"]]


def commands(argv: list[str]) -> list[list[str]]:
    """The gcloud commands `python -m launch.tpu <argv>` would run, as argv lists, running nothing (for
    other launchers, e.g. a sweep that starts one run per override set). Packing for `install` is skipped."""
    args = parse_args(argv)
    build = {
        "create": create_commands,
        "install": install_commands,
        "run": run_commands,
        "logs": logs_commands,
        "stop": stop_commands,
        "delete": delete_commands,
    }
    return build[args.command](args)


# -- running them -------------------------------------------------------------------------------------------


def _execute(cmd: list[str], dry_run: bool) -> None:
    print(("" if dry_run else "+ ") + shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)


def pack_checkout(tarball: str) -> int:
    """This checkout's files (tracked + untracked-but-not-ignored, as git sees them) into a tarball."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    files = [f for f in listed.split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]
    with tarfile.open(tarball, "w:gz") as tar:
        for f in files:
            tar.add(os.path.join(ROOT, f), arcname=f)
    return len(files)


def wait_until_active(args, timeout_s: float, poll_s: float = 30.0) -> None:
    """Polls a queued resource until ACTIVE, printing its state, the time waited and the time left."""
    start = time.time()
    while True:
        state = subprocess.run(
            queued_state_command(args), check=True, capture_output=True, text=True
        ).stdout.strip()
        waited = time.time() - start
        print(
            f"queued resource {_queued_id(args)}: {state} after {waited:.0f}s "
            f"(giving up in {max(timeout_s - waited, 0):.0f}s)",
            flush=True,
        )
        if state == "ACTIVE":
            return
        if state in ("FAILED", "SUSPENDED"):
            raise SystemExit(f"error: queued resource {_queued_id(args)} is {state}")
        if waited > timeout_s:
            raise SystemExit(f"error: queued resource {_queued_id(args)} not ACTIVE after {timeout_s:.0f}s")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "create":
        for cmd in create_commands(args):
            _execute(cmd, args.dry_run)
        if args.mode == "queued" and args.wait_s > 0:
            if args.dry_run:
                print(shlex.join(queued_state_command(args)) + "  # polled until ACTIVE", flush=True)
            else:
                wait_until_active(args, args.wait_s)
    elif args.command == "install":
        tarball = None
        if not args.git_url:
            tarball = os.path.join(tempfile.gettempdir(), f"alejax-{args.name}.tar.gz")
            if args.dry_run:
                print(f"# pack this checkout ({ROOT}) into {tarball}", flush=True)
            else:
                print(f"packed {pack_checkout(tarball)} files into {tarball}", flush=True)
        for cmd in install_commands(args, tarball):
            _execute(cmd, args.dry_run)
    else:
        commands = {
            "run": run_commands,
            "logs": logs_commands,
            "stop": stop_commands,
            "delete": delete_commands,
        }
        for cmd in commands[args.command](args):
            _execute(cmd, args.dry_run)
        if args.command == "run" and not args.attach:
            follow = f"python -m launch.tpu logs --name {args.name} --zone {args.zone} --run {args.run}"
            print(f"# started run {args.run!r} on every worker; stream its output with: {follow}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after a bare `--` is passed to alejax.main as config overrides.
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--name", required=True, help="TPU VM name")
        p.add_argument("--zone", required=True, help="e.g. us-central2-b")
        p.add_argument("--project", default="", help="GCP project (default: gcloud's configured one)")
        p.add_argument("--dry-run", action="store_true", help="print the gcloud commands, run nothing")
        return p

    p = common(sub.add_parser("create", help="create a TPU VM (on-demand, spot or queued)"))
    p.add_argument("--accelerator-type", required=True, help="e.g. v5litepod-8, v5p-32, v4-8, v6e-8")
    p.add_argument("--mode", choices=MODES, default="on-demand")
    p.add_argument("--version", default="", help="TPU runtime; default from the accelerator generation")
    p.add_argument("--spot", action="store_true", help="queued mode: ask for spot capacity")
    p.add_argument("--valid-until", default="", help="queued mode: give up after this duration, e.g. 6h")
    p.add_argument("--queued-id", default="", help="queued resource id (default: NAME-qr)")
    p.add_argument("--wait-s", type=float, default=3600.0, help="queued mode: wait this long for ACTIVE")

    p = common(sub.add_parser("install", help="put alejax on every worker"))
    p.add_argument("--git-url", default="", help="clone this repository instead of copying the checkout")
    p.add_argument("--branch", default="main", help="with --git-url: branch or tag")

    p = common(sub.add_parser("run", help="run a config on every worker (jax.distributed)"))
    p.add_argument("--config", required=True, help="configs/X.py[:preset], relative to the repository")
    p.add_argument("--workdir", default="", help="e.g. gs://BUCKET/runs/NAME (checkpoints go there)")
    p.add_argument("--run", default="", help="run name for logs/stop (default: from the config)")
    p.add_argument("--attach", action="store_true", help="stay attached (output of all workers inline)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="extra environment, repeatable")

    p = common(sub.add_parser("logs", help="stream a detached run's log"))
    p.add_argument("--run", required=True)
    p.add_argument("--worker", default="0", help="worker index, or all")
    p.add_argument("--no-follow", dest="follow", action="store_false")

    p = common(sub.add_parser("stop", help="stop a detached run on every worker"))
    p.add_argument("--run", required=True)

    p = common(sub.add_parser("delete", help="delete the TPU VM (or its queued resource)"))
    p.add_argument("--mode", choices=MODES, default="on-demand")
    p.add_argument("--queued-id", default="", help="queued resource id (default: NAME-qr)")

    args = parser.parse_args(argv)
    if overrides and args.command != "run":
        parser.error(f"arguments after -- are config overrides, only for run; got {overrides}")
    args.overrides = overrides
    if args.command == "create" and (args.spot or args.valid_until) and args.mode != "queued":
        parser.error("--spot and --valid-until belong to --mode queued (use --mode spot for a spot VM)")
    if args.command == "run":
        bad = [o for o in overrides if not o.startswith("--config.")]
        if bad:
            parser.error(f"overrides must look like --config.key=value; got {bad}")
        pairs = []
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key.isidentifier():
                parser.error(f"--env {item!r}: expected KEY=VALUE")
            pairs.append((key, value))
        args.env = pairs
        config_path = args.config.partition(":")[0]
        if not os.path.exists(os.path.join(ROOT, config_path)):
            parser.error(f"--config {args.config!r}: {config_path} is not a file of this repository")
        if not args.run:
            stem = os.path.splitext(os.path.basename(config_path))[0]
            preset = args.config.partition(":")[2]
            args.run = f"{stem}_{preset}" if preset else stem
    if args.command == "install" and args.git_url == "" and args.branch != "main":
        parser.error("--branch needs --git-url")
    return args


if __name__ == "__main__":
    main()
