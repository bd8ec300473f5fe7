"""Runs a sweep: checks every run against the config, then runs them locally (N at a time) or on TPU VMs,
and gathers the results.

  python -m alejax.launch --sweep=sweeps/lm_lr.py [--parallel N] [--dry-run] [--launch tpu] [--config.k=v ...]

A sweep file is Python with `get_sweep()` returning an `alejax.launch.sweep.Sweep` (the DSL: `product`,
`zip_`, `chain`). Extra `--config.k=v` flags on the command line join `fixed`. Every key is checked against
the config (and every value against the key's type) before anything starts. Each run gets
`<sweep workdir>/<name from its overrides>` and a log file there; a finished run leaves `sweep_result.json`,
so a rerun skips it. The results land in `results.csv`, `results.md` and `results.png` (the metric against
each swept key) in the sweep workdir.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import os
import posixpath
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from alejax.config import check_override_keys, config_module, load_config_file
from alejax.launch.sweep import Run, Sweep
from alejax.train.metrics import format_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
RESULT_FILE = "sweep_result.json"  # written only when a run exits 0: its presence means "finished"
LOG_FILE = "sweep_run.log"

# ---------------------------------------------------------------------------------------------------------
# Loading and checking


def load_sweep(path: str) -> Sweep:
    if not os.path.exists(path):
        raise ValueError(f"sweep file {path!r} does not exist")
    module = config_module(path, "sweep file")
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"sweep file {path!r} has no get_sweep()")
    sweep = module.get_sweep()
    if not isinstance(sweep, Sweep):
        raise ValueError(
            f"{path}: get_sweep() must return alejax.launch.sweep.Sweep, got {type(sweep).__name__}"
        )
    sweep.name = sweep.name or os.path.splitext(os.path.basename(path))[0]
    return sweep


def resolve_config(spec: str) -> str:
    """`configs/X.py[:preset]` with the path made absolute (tried from the cwd, then from the repository)."""
    path, sep, preset = spec.partition(":")
    for candidate in (path, os.path.join(ROOT, path)):
        if os.path.exists(candidate):
            return os.path.abspath(candidate) + sep + preset
    raise ValueError(f"config file {path!r} not found (looked in {os.getcwd()} and {ROOT})")


def format_value(value: Any) -> str:
    """As ml_collections' config flags parse it back: bools lower-case, strings raw, the rest as literals."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value)


def check_runs(config_spec: str, runs: Sequence[Run], fixed: Mapping[str, Any]) -> None:
    """Unknown keys and values of the wrong type stop the sweep before any run starts."""
    keys = list(dict.fromkeys([*fixed, *(k for r in runs for k in r), "workdir"]))
    try:
        check_override_keys(["sweep", f"--config={config_spec}", *(f"--config.{k}=0" for k in keys)])
    except SystemExit as e:
        raise ValueError(str(e).removeprefix("error: ")) from None
    base = load_config_file(config_spec)
    for i, run in enumerate(runs):
        config = copy.deepcopy(base)
        for key, value in {**fixed, **run}.items():
            *parents, last = key.split(".")
            node = config
            for part in parents:
                node = node[part]
            if node.get_type(last) is type(None):
                raise ValueError(
                    f"config key {key!r} is None with no type, so the command line cannot override it; declare "
                    f"it as ml_collections.config_dict.placeholder(<type>) in {config_spec.partition(':')[0]}"
                )
            try:
                node[last] = value
            except (TypeError, ValueError) as e:
                raise ValueError(
                    f"run {i} ({run}): value {value!r} does not fit config key {key!r}: {e}"
                ) from None


def run_name(run: Run) -> str:
    """A readable, filesystem-safe name from the overrides: the last key part when unambiguous."""
    if not run:
        return "base"
    lasts = [k.rsplit(".", 1)[-1] for k in run]
    parts = []
    for key, last in zip(run, lasts):
        label = last if lasts.count(last) == 1 else key
        parts.append(f"{label}={format_value(run[key])}")
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", ",".join(parts))
    if len(name) > 120:  # file names stop at 255 bytes; keep it readable and unique
        name = name[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


@dataclass
class PlannedRun:
    index: int
    name: str
    overrides: Run  # the swept keys only
    local_dir: str  # this machine: the run's log and its sweep_result.json
    workdir: str  # the job's --config.workdir (== local_dir unless the jobs write elsewhere, e.g. gs://)
    config_overrides: list[str]  # `--config.k=v` for the fixed and swept keys, then the workdir
    argv: list[str]  # the local command: python -m alejax.main --config=<absolute path> *config_overrides

    def command_line(self) -> str:
        return shlex.join(["python", *self.argv[1:]])


def plan(
    sweep: Sweep,
    config_spec: str,
    sweep_dir: str,
    extra_fixed: Mapping[str, Any] | None = None,
    remote_workdir: str | None = None,
):
    """Checks every run, then names each and gives it a directory: `<sweep_dir>/<name>` here, and
    `<remote_workdir>/<name>` as the job's workdir when the jobs write elsewhere (a gs:// bucket)."""
    fixed = {**sweep.fixed, **(extra_fixed or {})}
    check_runs(config_spec, sweep.runs, fixed)
    planned, seen = [], {}
    for i, run in enumerate(sweep.runs):
        name = run_name(run)
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        local_dir = os.path.join(sweep_dir, name)
        workdir = posixpath.join(remote_workdir, name) if remote_workdir else local_dir
        overrides = [f"--config.{k}={format_value(v)}" for k, v in {**fixed, **run}.items()]
        overrides.append(f"--config.workdir={workdir}")
        argv = [sys.executable, "-m", "alejax.main", f"--config={config_spec}", *overrides]
        planned.append(PlannedRun(i, name, dict(run), local_dir, workdir, overrides, argv))
    return planned, fixed


# ---------------------------------------------------------------------------------------------------------
# Running


def _read_text(path: str) -> str | None:
    if "://" in path:  # a bucket: gcloud is there wherever TPU runs were launched from
        out = subprocess.run(["gcloud", "storage", "cat", path], capture_output=True, text=True, check=False)
        return out.stdout if out.returncode == 0 else None
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def final_metrics(workdir: str) -> dict[str, Any]:
    """The job's summary.json if it wrote one, else the latest value of every metric in metrics.jsonl."""
    join = posixpath.join if "://" in workdir else os.path.join
    summary = _read_text(join(workdir, "summary.json"))
    if summary is not None:
        return json.loads(summary)
    final: dict[str, Any] = {}
    for line in (_read_text(join(workdir, "metrics.jsonl")) or "").splitlines():
        if line.strip():
            final.update(json.loads(line))  # eval metrics come every few steps: keep their latest
    return final


def _finished(run: PlannedRun) -> dict | None:
    path = os.path.join(run.local_dir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    if result.get("config_overrides") != run.config_overrides:
        raise ValueError(
            f"{run.local_dir} holds a finished run with other overrides ({result.get('config_overrides')}); "
            f"choose another --workdir for this sweep"
        )
    return result


def run_local(
    runs: Sequence[PlannedRun],
    parallel: int = 1,
    timeout_s: float | None = None,
    progress_every_s: float = 30.0,
    command_for: Callable[[PlannedRun, int], list[str]] | None = None,
) -> list[dict]:
    """Runs the sweep as subprocesses, `parallel` at a time; a failed run is reported and the rest go on.

    `command_for(run, slot)` gives a run's command when it starts in `slot` (0 .. parallel-1, each slot busy
    with one run at a time, e.g. one TPU VM per slot); default: the local `python -m alejax.main ...`.
    """
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    results: dict[int, dict] = {}
    pending = []
    for run in runs:
        done = _finished(run)
        if done is not None:
            results[run.index] = dict(done, status="skipped (finished before)")
        else:
            pending.append(run)
    total, n_skipped = len(runs), len(results)
    if n_skipped:
        print(
            f"[sweep] {n_skipped}/{total} runs finished before; running the other {len(pending)}", flush=True
        )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    active: dict[int, tuple[PlannedRun, subprocess.Popen, Any, float, int]] = {}
    free_slots = list(range(parallel))
    durations: list[float] = []
    t0 = last_report = time.time()

    def report(force: bool = False):
        nonlocal last_report
        now = time.time()
        if not force and now - last_report < progress_every_s:
            return
        last_report = now
        done = len(results)
        failed = sum(r["status"] == "failed" for r in results.values())
        left = total - done
        eta = (
            sum(durations) / len(durations) * math.ceil(left / parallel) if durations else math.inf
        )  # whole waves of `parallel` runs at the mean run time so far
        rate = (done - n_skipped) / max(now - t0, 1e-9) * 60
        print(
            f"[sweep] {done}/{total} runs done ({failed} failed, {len(active)} running) "
            f"{rate:.2f} runs/min elapsed {format_seconds(now - t0)} eta {format_seconds(eta if left else 0)}",
            flush=True,
        )

    try:
        while pending or active:
            while pending and len(active) < parallel:
                run, slot = pending.pop(0), free_slots.pop(0)
                argv = command_for(run, slot) if command_for else run.argv
                os.makedirs(run.local_dir, exist_ok=True)
                log = open(os.path.join(run.local_dir, LOG_FILE), "w", encoding="utf-8")
                log.write("$ " + shlex.join(argv) + "\n")
                log.flush()
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
                active[run.index] = (run, proc, log, time.time(), slot)
                print(f"[sweep] start {run.name} (log {log.name})", flush=True)
            time.sleep(0.2)
            for index, (run, proc, log, started, slot) in list(active.items()):
                seconds = time.time() - started
                if proc.poll() is None:
                    if timeout_s and seconds > timeout_s:
                        proc.kill()
                        proc.wait()
                        log.write(f"\n[sweep] killed after {seconds:.0f}s (timeout {timeout_s}s)\n")
                    else:
                        continue
                log.close()
                del active[index]
                free_slots.append(slot)
                durations.append(seconds)
                result = {
                    "name": run.name,
                    "overrides": run.overrides,
                    "config_overrides": run.config_overrides,
                    "seconds": seconds,
                    "returncode": proc.returncode,
                }
                if proc.returncode == 0:
                    result["metrics"] = final_metrics(run.workdir)
                    with open(os.path.join(run.local_dir, RESULT_FILE), "w", encoding="utf-8") as f:
                        json.dump(result, f, indent=1)
                    results[index] = dict(result, status="ok")
                    print(f"[sweep] done {run.name} in {seconds:.0f}s", flush=True)
                else:
                    tail = _tail(os.path.join(run.local_dir, LOG_FILE))
                    results[index] = dict(result, status="failed", metrics={})
                    print(
                        f"[sweep] FAILED {run.name} (exit {proc.returncode}, {seconds:.0f}s); "
                        f"log {os.path.join(run.local_dir, LOG_FILE)}:\n{tail}",
                        flush=True,
                    )
                report(force=True)
            report()
    except BaseException:  # Ctrl-C or a bug here: do not leave runs going on unattended
        for run, proc, log, _, _ in active.values():
            proc.kill()
            proc.wait()
            log.close()
            print(f"[sweep] stopped {run.name}", flush=True)
        raise
    if not runs or not durations:
        report(force=True)
    return [results[run.index] | {"workdir": run.workdir} for run in runs]


def _tail(path: str, n: int = 5) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "\n".join("    " + line.rstrip() for line in f.readlines()[-n:])


# ---------------------------------------------------------------------------------------------------------
# Results: table (CSV + Markdown) and plot


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_results(
    results: Sequence[dict], sweep: Sweep, sweep_dir: str, metric: str | None = None
) -> dict[str, str]:
    metric = metric or sweep.metric
    keys = list(dict.fromkeys(k for r in results for k in r["overrides"]))
    metric_names = sorted({m for r in results for m, v in r.get("metrics", {}).items() if _is_number(v)})
    metric_names = [m for m in metric_names if m != "step"]
    if metric in metric_names:
        metric_names.remove(metric)
        metric_names.insert(0, metric)
    header = ["name", "status", *keys, "step", *metric_names, "seconds"]
    rows = []
    for r in results:
        m = r.get("metrics", {})
        rows.append(
            [
                r["name"],
                r["status"].split(" ")[0],
                *(r["overrides"].get(k, "") for k in keys),
                m.get("step", ""),
            ]
            + [m.get(name, "") for name in metric_names]
            + [round(r.get("seconds", 0.0), 1)]
        )
    os.makedirs(sweep_dir, exist_ok=True)
    paths = {"csv": os.path.join(sweep_dir, "results.csv"), "md": os.path.join(sweep_dir, "results.md")}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])

    scored = [
        (r["metrics"][metric], i)
        for i, r in enumerate(results)
        if _is_number(r.get("metrics", {}).get(metric))
    ]
    best = (min if sweep.goal == "min" else max)(scored)[1] if scored else None
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    n_fixed_cols = 2 + len(keys) + 1  # name, status, the swept keys, step
    shown = [
        i
        for i, h in enumerate(header)
        if sweep.columns is None or i < n_fixed_cols or h in (metric, *sweep.columns, "seconds")
    ]
    lines = [
        f"# sweep {sweep.name}: {sweep.config}",
        "",
        f"{len(results)} runs; fixed: {', '.join(f'{k}={v}' for k, v in sweep.fixed.items()) or 'none'}; "
        f"best {metric} ({sweep.goal}) marked **bold**.",
        "",
        "| " + " | ".join(header[i] for i in shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    for i, row in enumerate(rows):
        cells = [cell(row[j]) for j in shown]
        if i == best:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    if scored:
        paths["png"] = plot_results(results, keys, metric, os.path.join(sweep_dir, "results.png"), sweep.name)
    else:
        print(f"[sweep] no run reported {metric!r}; no plot written", flush=True)
    return paths


def plot_results(
    results: Sequence[dict], keys: Sequence[str], metric: str, out_png: str, title: str = ""
) -> str:
    """One panel per swept key: the metric against that key, one line per setting of the other keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if _is_number(r.get("metrics", {}).get(metric))]
    # A key set only by runs without the metric (failed ones, say) has nothing to plot.
    keys = [k for k in keys if any(k in r["overrides"] for r in ok)] or ["run"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        with_key = [r for r in ok if key in r["overrides"] or key == "run"]  # chain(): not every run sets it
        values = list(dict.fromkeys(r["overrides"].get(key, r["name"]) for r in with_key))
        numeric = all(_is_number(v) for v in values)
        position = (lambda v: v) if numeric else values.index
        groups: dict[str, list] = {}
        for r in with_key:
            rest = ",".join(
                f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in r["overrides"].items() if k != key
            )
            groups.setdefault(rest, []).append(
                (position(r["overrides"].get(key, r["name"])), r["metrics"][metric])
            )
        for rest, points in groups.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=rest or None)
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(values)), [format_value(v) for v in values], rotation=20)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if 1 < len(groups) <= 8:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(f"sweep {title}: {metric}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ---------------------------------------------------------------------------------------------------------
# TPU: print (dry run) or launch each run's command on a TPU VM


def tpu_command(run: PlannedRun, config: str, vm: str, zone: str, project: str = "") -> list[str]:
    """One run on every worker of TPU VM `vm` through launch/tpu.py, attached (so runs on one VM queue up).

    `config` is the sweep's config spec as written (relative to the repository, which launch.tpu installed
    on the VM); the job's workdir should be a gs:// path (--remote-workdir) so its results outlive the VM.
    """
    where = ["--name", vm, "--zone", zone] + (["--project", project] if project else [])
    return [sys.executable, "-m", "launch.tpu", "run", *where, "--config", config, "--run", run.name,
            "--attach", "--", *run.config_overrides]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str]):
    parser = argparse.ArgumentParser(prog="python -m alejax.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="sweep file (Python with get_sweep())")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (local)")
    parser.add_argument("--dry-run", "--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--launch", choices=["local", "tpu"], default="local")
    parser.add_argument("--workdir", default=None, help="sweep workdir (default runs/sweeps/<sweep name>)")
    parser.add_argument("--metric", default=None, help="metric for the plot and the best mark")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a run is killed")
    parser.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--remote-workdir", default=None, help="jobs' workdirs (e.g. gs://BUCKET/sweeps/X)")
    parser.add_argument("--tpu-name", action="append", default=[], help="TPU VM(s) for --launch tpu (repeat)")
    parser.add_argument("--tpu-zone", default="", help="zone of the TPU VMs")
    parser.add_argument("--tpu-project", default="", help="GCP project (default: gcloud's)")
    args, rest = parser.parse_known_args(argv)
    extra = {}
    for arg in rest:
        if not arg.startswith("--config.") or "=" not in arg:
            parser.error(f"unexpected argument {arg!r}; extra overrides are --config.key=value")
        key, value = arg[len("--config.") :].split("=", 1)
        extra[key] = _parse_literal(value)
    return args, extra


def _parse_literal(text: str) -> Any:
    import ast

    if text in ("true", "false"):
        return text == "true"
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        return text


def main(argv: Sequence[str] | None = None) -> list[dict] | None:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sweep = load_sweep(args.sweep)
        config_spec = resolve_config(sweep.config)
        sweep_dir = args.workdir or os.path.join("runs", "sweeps", sweep.name)
        runs, fixed = plan(sweep, config_spec, sweep_dir, extra, args.remote_workdir)
        if args.launch == "tpu" and not (args.tpu_name and args.tpu_zone):
            raise ValueError("--launch tpu needs --tpu-name (repeat it for several VMs) and --tpu-zone")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    sweep.fixed = fixed
    where = f" (jobs write to {args.remote_workdir})" if args.remote_workdir else ""
    print(f"[sweep] {sweep.name}: {len(runs)} runs of {sweep.config} -> {sweep_dir}{where}", flush=True)
    command_for, parallel = None, args.parallel
    if args.launch == "tpu":
        vms = args.tpu_name
        command_for = lambda run, slot: tpu_command(
            run, sweep.config, vms[slot], args.tpu_zone, args.tpu_project
        )
        parallel = len(vms)  # one run at a time per VM
    if args.dry_run:
        for run in runs:
            done = os.path.exists(os.path.join(run.local_dir, RESULT_FILE))
            command = command_for(run, run.index % parallel) if command_for else None
            line = shlex.join(["python", *command[1:]]) if command else run.command_line()
            print(line + ("  # finished: a real run skips it" if done else ""), flush=True)
        return None
    try:
        results = run_local(runs, parallel, args.timeout, args.progress_every, command_for)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    paths = write_results(results, sweep, sweep_dir, args.metric)
    failed = [r["name"] for r in results if r["status"] == "failed"]
    print(
        f"[sweep] results: {', '.join(paths.values())}" + (f"; failed: {failed}" if failed else ""),
        flush=True,
    )
    return results


def cli(argv: Sequence[str] | None = None) -> int:
    results = main(argv)
    return int(any(r["status"] == "failed" for r in results or []))  # a failed run fails the sweep command


if __name__ == "__main__":
    sys.exit(cli())
