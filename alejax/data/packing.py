"""Sequence packing: many short documents in one fixed-length row, kept apart by segment ids."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def pack_documents(
    documents: Iterable[Sequence[int]], seq_len: int, *, loss_masks: Iterable[Sequence[float]] | None = None
) -> dict[str, np.ndarray]:
    """Greedy first-fit-in-order packing into rows of `seq_len`.

    Returns int32 `tokens`, `segment_ids` (1, 2, ... per document in a row; 0 = padding), `positions`
    (restart at 0 per document) and float32 `loss_mask` (default 1 on every real token), each [N, seq_len].
    A document longer than a row is split into row-sized pieces, each its own segment.
    """
    rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
    current: list[tuple[np.ndarray, np.ndarray]] = []
    used = 0
    masks = iter(loss_masks) if loss_masks is not None else None
    for doc in documents:
        tokens = np.asarray(doc, np.int32)
        mask = np.ones(len(tokens), np.float32) if masks is None else np.asarray(next(masks), np.float32)
        if len(mask) != len(tokens):
            raise ValueError(f"loss mask length {len(mask)} != document length {len(tokens)}")
        for start in range(0, len(tokens), seq_len):
            piece, piece_mask = tokens[start : start + seq_len], mask[start : start + seq_len]
            if used + len(piece) > seq_len:
                rows.append(current)
                current, used = [], 0
            current.append((piece, piece_mask))
            used += len(piece)
    if current:
        rows.append(current)

    n = len(rows)
    out = {
        "tokens": np.zeros((n, seq_len), np.int32),
        "segment_ids": np.zeros((n, seq_len), np.int32),
        "positions": np.zeros((n, seq_len), np.int32),
        "loss_mask": np.zeros((n, seq_len), np.float32),
    }
    for r, pieces in enumerate(rows):
        offset = 0
        for segment, (piece, piece_mask) in enumerate(pieces, start=1):
            end = offset + len(piece)
            out["tokens"][r, offset:end] = piece
            out["segment_ids"][r, offset:end] = segment
            out["positions"][r, offset:end] = np.arange(len(piece))
            out["loss_mask"][r, offset:end] = piece_mask
            offset = end
    return out
