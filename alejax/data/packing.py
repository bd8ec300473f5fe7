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


def first_fit_decreasing(lengths: Sequence[int], row_length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Place whole sequences in rows of `row_length`: longest first, each into the first row with room.

    Returns (row, offset) per sequence and the number of rows used. Unlike `pack_documents` (in order, for
    the LM's stream of documents) the order is free here, and for ragged lengths first-fit-decreasing leaves
    the fewest rows; no sequence is split (each must fit a row).
    """
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and lengths.max() > row_length:
        raise ValueError(f"a sequence of {lengths.max()} tokens does not fit a row of {row_length}")
    row = np.zeros(len(lengths), np.int32)
    offset = np.zeros(len(lengths), np.int32)
    free: list[int] = []  # room left in each open row
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        r = next((r for r, room in enumerate(free) if room >= n), len(free))
        if r == len(free):
            free.append(row_length)
        row[i], offset[i] = r, row_length - free[r]
        free[r] -= n
    return row, offset, len(free)


def packed_model_inputs(
    tokens: np.ndarray, lengths: np.ndarray, *, row_multiple: int = 1, groups: int = 1
) -> dict[str, np.ndarray]:
    """Pack [B, T] right-padded sequences (sequence b holds tokens[b, :lengths[b]]) into [R, T] rows for
    one model forward, and the map back.

    Returns `packed_tokens`, `packed_positions` (restart at 0 per sequence), `packed_segment_ids` (1, 2, ...
    per row; 0 = padding) and `pack_index` [B, T]: the flat index into [R, T] of position t of sequence b,
    -1 where it has no token and at t = 0 (the layout of `alejax.train.step.token_logprobs`, whose position 0
    predicts nothing). With `groups` = k, the B sequences split into k groups as
    `alejax.train.step.split_microbatches` splits rows (group j: rows j, j + k, ...); each group is packed
    on its own into R/k rows, interleaved the same way, and its `pack_index` counts within the group, so a
    microbatch holds its sequences' packed rows. R/k is rounded up to a multiple of `row_multiple` (the
    data-parallel degree, so packed rows shard like the batch; it also bounds the number of shapes compiled).
    """
    batch, width = tokens.shape
    if batch % groups:
        raise ValueError(f"{batch} sequences do not split into {groups} groups")
    members = [np.arange(j, batch, groups) for j in range(groups)]
    placements = [first_fit_decreasing(lengths[m], width) for m in members]
    rows = max(n for _, _, n in placements)
    rows = -(-rows // row_multiple) * row_multiple
    out = {
        "packed_tokens": np.zeros((rows * groups, width), np.int32),
        "packed_positions": np.zeros((rows * groups, width), np.int32),
        "packed_segment_ids": np.zeros((rows * groups, width), np.int32),
        "pack_index": np.full((batch, width), -1, np.int32),
    }
    for j, (m, (row, offset, _)) in enumerate(zip(members, placements)):
        segments_in_row: dict[int, int] = {}
        for b, r, start in zip(m, row, offset):
            n = int(lengths[b])
            packed_row = r * groups + j  # interleaved: split_microbatches puts it in group j's microbatch
            segment = segments_in_row[r] = segments_in_row.get(r, 0) + 1
            out["packed_tokens"][packed_row, start : start + n] = tokens[b, :n]
            out["packed_positions"][packed_row, start : start + n] = np.arange(n)
            out["packed_segment_ids"][packed_row, start : start + n] = segment
            out["pack_index"][b, 1:n] = r * width + start + np.arange(1, n)
    return out
