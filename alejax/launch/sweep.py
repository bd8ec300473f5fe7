"""The sweep DSL: a sweep file lists overrides of one config as a `Sweep`; `alejax.launch.runner` runs it.

    from alejax.launch.sweep import Sweep, chain, product, zip_

    def get_sweep():
        return Sweep(
            config="configs/lm.py:tiny",
            runs=product({"optim.learning_rate": [1e-3, 3e-3]}, zip_({"optim.warmup_steps": [0, 30],
                                                                      "optim.schedule": ["constant", "cosine"]})),
            fixed={"steps": 200},   # applied to every run
            metric="eval_loss",     # the column the plot and the "best" mark use
        )

`product` crosses its factors, `zip_` pairs equally long value lists, `chain` concatenates run lists; each
takes `{key: [values]}` dicts or run lists from the others, so they nest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

Run = dict[str, Any]  # dotted config key -> value


def _runs(factor: Mapping[str, Sequence[Any]] | Sequence[Run], *, how: str) -> list[Run]:
    """A `{key: [values]}` dict (crossed or zipped over its keys, per `how`) or an already expanded run list."""
    if isinstance(factor, Mapping):
        if not factor:
            raise ValueError("an empty {} is not a sweep axis; give {key: [values]}")
        for key, values in factor.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"sweep keys are dotted config keys (str), got {key!r}")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise ValueError(f"sweep key {key!r} needs a list of values, got {values!r}")
            if len(values) == 0:
                raise ValueError(f"sweep key {key!r} has an empty list of values")
        keys = list(factor)
        if how == "zip":
            _check_same_length({k: len(factor[k]) for k in keys})
            return [dict(zip(keys, combo)) for combo in zip(*(factor[k] for k in keys))]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(factor[k] for k in keys))]
    if isinstance(factor, Sequence) and not isinstance(factor, (str, bytes)):
        if not all(isinstance(run, Mapping) for run in factor):
            raise ValueError(f"a run list holds dicts of overrides; got {factor!r}")
        return [dict(run) for run in factor]
    raise ValueError(f"a sweep factor is {{key: [values]}} or a list of runs, got {factor!r}")


def _check_same_length(lengths: Mapping[str, int]) -> None:
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(f"zip_ needs equally long value lists; got lengths {shown}")


def _merge(runs: Sequence[Run]) -> Run:
    merged: Run = {}
    for run in runs:
        clash = sorted(set(merged) & set(run))
        if clash:
            raise ValueError(f"sweep key(s) {clash} appear in more than one factor")
        merged.update(run)
    return merged


def product(*factors) -> list[Run]:
    """Every combination: `product({"a": [1, 2]}, {"b": [3, 4]})` -> 4 runs (a dict's own keys are crossed)."""
    expanded = [_runs(f, how="product") for f in factors]
    return [_merge(combo) for combo in itertools.product(*expanded)]


def zip_(*factors) -> list[Run]:
    """Position by position: `zip_({"a": [1, 2], "b": [3, 4]})` -> 2 runs; all lists must be equally long."""
    expanded = [_runs(f, how="zip") for f in factors]
    _check_same_length({"+".join(sorted({k for r in runs for k in r})): len(runs) for runs in expanded})
    return [_merge(combo) for combo in zip(*expanded)]


def chain(*factors) -> list[Run]:
    """One after another: e.g. a baseline run list followed by the ablation grid."""
    return [run for f in factors for run in _runs(f, how="product")]


@dataclass
class Sweep:
    config: str  # "configs/X.py[:preset]", relative to the working directory or the repository
    runs: Sequence[Run]  # from product / zip_ / chain
    fixed: Mapping[str, Any] = field(default_factory=dict)  # applied to every run
    metric: str = "loss"  # plotted against each swept key; the best run is marked in results.md
    goal: str = "min"  # "min" or "max": which end of `metric` is best
    name: str | None = None  # the sweep workdir's name (default: the sweep file's stem)
    columns: Sequence[str] | None = None  # metrics shown in results.md after `metric` (None: all; CSV: all)

    def __post_init__(self):
        self.runs = _runs(self.runs, how="product")
        if not self.runs:
            raise ValueError("the sweep has no runs")
        if self.goal not in ("min", "max"):
            raise ValueError(f"Sweep.goal must be 'min' or 'max', got {self.goal!r}")
        clash = sorted(set(self.fixed) & {k for r in self.runs for k in r})
        if clash:
            raise ValueError(f"key(s) {clash} are both swept and fixed")
