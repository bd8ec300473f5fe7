"""Check terminal tasks: every oracle earns reward 1 and every untouched start state reward 0.

    python -m alejax.envs.terminal --check-oracles                  # every shipped task
    python -m alejax.envs.terminal --check-oracles --tasks csv_sum,git_tag_release --workers 1
    python -m alejax.envs.terminal --check-oracles --task-dir PATH  # your own Harbor / Terminal-Bench 1 dirs

One line per task (time, sandbox disk use), then ONE JSON line with the counts overall and by category.
Exit code 1 if an oracle fails or a start state passes, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alejax.envs.terminal", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check-oracles", action="store_true", help="run every oracle and start-state check")
    parser.add_argument("--tasks", default="", help="comma-separated shipped task names (default: all)")
    parser.add_argument("--task-dir", action="append", default=[], help="a task directory to check instead")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tasks checked at once")
    parser.add_argument("--verbose", action="store_true", help="print the outputs of failed checks")
    args = parser.parse_args(argv)
    if not args.check_oracles:
        parser.print_usage(sys.stderr)
        print("error: nothing to do (use --check-oracles)", file=sys.stderr)
        return 2

    from alejax.envs.terminal import TASKS, load_task_dir
    from alejax.envs.terminal.tasks import check_tasks

    if args.task_dir:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                tasks = [load_task_dir(path) for path in args.task_dir]
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    else:
        names = [n for n in args.tasks.split(",") if n] or sorted(TASKS, key=lambda n: (TASKS[n].path, n))
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            print(
                f"error: unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(TASKS))}",
                file=sys.stderr,
            )
            return 2
        tasks = [TASKS[n] for n in names]

    def report(row: dict) -> None:
        if "skipped" in row:
            print(f"SKIP {row['task']:<24} {row['category']:<18} {row['skipped']}", flush=True)
            return
        if "error" in row:
            print(f"FAIL {row['task']:<24} {row['category']:<18} {row['error']}", flush=True)
            return
        ok = row["oracle_pass"] and row["start_state_fail"]
        print(
            f"{'ok  ' if ok else 'FAIL'} {row['task']:<24} {row['category']:<18} "
            f"oracle {row['oracle_reward']:g} in {row['oracle_s']:.2f}s, start state {row['start_state_reward']:g} "
            f"in {row['start_state_s']:.2f}s, disk {row['disk_bytes'] / 1024:.0f} KiB / {row['inodes']} inodes",
            flush=True,
        )
        if not ok and args.verbose:
            for key in ("oracle_output", "oracle_tests_output", "start_state_tests_output"):
                print(f"  {key}: {row[key].strip()}", flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the steps a sandbox does not apply: known per task
        _, summary = check_tasks(tasks, workers=args.workers, on_result=report)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
