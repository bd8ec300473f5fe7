"""grain pipelines over in-memory arrays, with iterator state that checkpoints (exact mid-epoch resume)."""

from __future__ import annotations

from typing import Mapping

import grain
import numpy as np


def batched_rows(
    rows: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
) -> grain.IterDataset:
    """Batches of rows drawn from `rows` (dict of [N, ...] arrays), reshuffled each epoch, forever by default.

    Iterate with `iter(...)`; the iterator's `get_state()` / `set_state()` resume it exactly.
    """
    n = len(next(iter(rows.values())))
    if n < batch_size:
        raise ValueError(f"{n} rows cannot fill one batch of {batch_size}")
    ds = grain.MapDataset.range(n)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs).map(lambda i: {k: v[i] for k, v in rows.items()})
    return ds.batch(batch_size, drop_remainder=True).to_iter_dataset()
