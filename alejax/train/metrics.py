"""Metrics: one writer for JSONL (always), TensorBoard (always) and W&B (only if installed and asked),
a progress line with rate and ETA, and PNG plots next to the metrics file."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np


def _scalar(value: Any) -> float | int | None:
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything that is not array-like is simply not logged
        return None
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        return None
    item = arr.reshape(()).item()
    return item if isinstance(item, int) else float(item)


class _LocalEventWriter:
    """TensorBoard's event file on a local path, written without TensorFlow: tensorboard's own writer
    routes through `tensorboard.compat.tf`, which imports TensorFlow (seconds, log noise) whenever it is
    installed, e.g. with the seqio extra."""

    def __init__(self, logdir: str):
        import socket

        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._records = RecordWriter(open(os.path.join(logdir, name), "wb"))
        self.add_event(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()

    def close(self) -> None:
        self._records.close()


def _event_writer(logdir: str):
    if "://" in logdir:  # gs:// and other remote paths: tensorboard's writer knows their file systems
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        return EventFileWriter(logdir)
    return _LocalEventWriter(logdir)


class MetricsWriter:
    """Appends `{"step": s, **scalars}` lines to `<workdir>/metrics.jsonl` and TensorBoard events."""

    def __init__(
        self,
        workdir: str,
        *,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            self._tb = _event_writer(os.path.join(workdir, "tensorboard"))
        self._wandb = None
        if wandb_project:
            try:
                import wandb  # optional: only when installed and asked for
            except ImportError:
                print("wandb is not installed; logging to JSONL and TensorBoard only")
            else:
                self._wandb = wandb.init(project=wandb_project, config=dict(config or {}), dir=workdir)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        scalars = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
        self._file.write(json.dumps({"step": int(step), **scalars}) + "\n")
        self._file.flush()
        if self._tb is not None:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary

            values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
            self._tb.add_event(Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))
        return scalars

    def close(self):
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_metrics(path: str) -> list[dict[str, float]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def last_logged(path: str, keys: tuple[str, ...]) -> dict[str, float]:
    """The latest logged value of each key (for a job resumed at its final step, which logs nothing new)."""
    last = {}
    for row in read_metrics(path) if os.path.exists(path) else []:
        last.update({k: row[k] for k in keys if k in row})
    return last


class Progress:
    """A periodic one-line report: step, rate, ETA and chosen metrics (works in logs and notebooks)."""

    def __init__(self, total: int, start: int = 0, every_s: float = 5.0, label: str = "train"):
        self.total, self.start, self.every_s, self.label = total, start, every_s, label
        self.t0 = self.last = time.time()

    def update(self, step: int, metrics: Mapping[str, Any] | None = None, force: bool = False) -> str | None:
        now = time.time()
        if not force and now - self.last < self.every_s and step < self.total:
            return None
        self.last = now
        done = step - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else math.inf
        shown = " ".join(f"{k}={v:.4g}" for k, v in (metrics or {}).items() if isinstance(v, (int, float)))
        line = (
            f"[{self.label}] step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) "
            f"{rate:.2f} step/s eta {format_seconds(eta)} {shown}"
        ).rstrip()
        print(line, flush=True)
        return line


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def plot_metrics(path: str, keys: Sequence[str], out_png: str | None = None, title: str | None = None) -> str:
    """One panel per key (those present), x = step; saved next to the metrics file by default."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    rows = read_metrics(path)
    keys = [k for k in keys if any(k in r for r in rows)]
    out_png = out_png or os.path.splitext(path)[0] + ".png"
    fig = Figure(figsize=(4.5 * max(len(keys), 1), 3.4))
    axes = fig.subplots(1, max(len(keys), 1), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 40 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return out_png
