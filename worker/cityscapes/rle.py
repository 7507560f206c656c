"""COCO run-length encoding of binary masks (column-major runs, starting with zeros)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def decode_counts(counts: str) -> list[int]:
    """Run lengths from COCO's compressed string form (6-bit groups, delta-coded from run 3)."""
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value = shift = 0
        while True:
            char = ord(counts[pos]) - 48
            pos += 1
            value |= (char & 0x1F) << shift
            shift += 5
            if not char & 0x20:
                if char & 0x10:
                    value |= -1 << shift
                break
            if pos >= len(counts):
                raise ValueError("RLE string ends inside a number")
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def encode_counts(runs: list[int]) -> str:
    """The compressed string form of run lengths (inverse of decode_counts)."""
    out = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        while True:
            char = value & 0x1F
            value >>= 5
            more = not ((value == 0 and not char & 0x10) or (value == -1 and char & 0x10))
            if more:
                char |= 0x20
            out.append(chr(char + 48))
            if not more:
                break
    return "".join(out)


def _checked_runs(rle: dict[str, Any]) -> tuple[int, int, np.ndarray]:
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = np.asarray(decode_counts(counts) if isinstance(counts, str) else counts, np.int64)
    if runs.ndim != 1 or (runs < 0).any() or runs.sum() != height * width:
        raise ValueError(f"RLE runs cover {runs.sum()} pixels, the mask has {height * width}")
    return height, width, runs


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """A (height, width) bool mask from {"size": [h, w], "counts": str | [int, ...]}."""
    height, width = (int(v) for v in rle["size"])
    x0, y0, crop = decode_mask_box(rle)
    mask = np.zeros((height, width), np.bool_)
    mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return mask


def decode_mask_box(rle: dict[str, Any]) -> tuple[int, int, np.ndarray]:
    """(x0, y0, crop): the mask's pixels within their bounding box, decoded without building the
    whole image or its full-height columns: the work is that of the runs and of the box. An
    empty mask gives a (0, 0) crop."""
    height, width, runs = _checked_runs(rle)
    ends = np.cumsum(runs)
    starts = ends - runs
    ones = (np.arange(len(runs)) % 2 == 1) & (runs > 0)
    starts, lasts = starts[ones], ends[ones] - 1
    if not len(starts):
        return 0, 0, np.zeros((0, 0), np.bool_)
    first_columns, last_columns = starts // height, lasts // height
    x0, x1 = int(first_columns[0]), int(last_columns[-1])
    if (first_columns != last_columns).any():
        y0, y1 = 0, height - 1  # a run wraps into the next column: the box is full height
    else:
        y0, y1 = int((starts % height).min()), int((lasts % height).max())
    box_height, box_width = y1 - y0 + 1, x1 - x0 + 1
    # In the box's own column-major order every run is still one stretch of pixels: within one
    # column, or (full height box) unchanged but for the offset.
    begin = (first_columns - x0) * box_height + starts % height - y0
    stop = (last_columns - x0) * box_height + lasts % height - y0 + 1
    bounds = np.empty(2 * len(begin) + 2, np.int64)
    bounds[0], bounds[-1] = 0, box_height * box_width
    bounds[1:-1:2], bounds[2:-1:2] = begin, stop
    lengths = np.diff(bounds)
    values = np.zeros(len(lengths), np.bool_)
    values[1::2] = True
    flat = np.repeat(values, lengths)
    # Rows in memory order, as drawing and contour tracing read them (OpenCV's transpose is
    # several times faster than numpy's copy of a transposed view).
    rows = cv2.transpose(flat.reshape(box_width, box_height).view(np.uint8)).view(np.bool_)
    return x0, y0, rows.reshape(box_height, box_width)


def mask_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts of a (height, width) bool mask: column-major runs, 0s first."""
    flat = np.asarray(mask, np.bool_).T.reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return runs


def encode_mask(mask: np.ndarray, x0: int = 0, width: int | None = None) -> dict[str, Any]:
    """COCO compressed RLE of a (height, width) bool mask.

    `mask` may hold only the columns x0 .. x0 + mask.shape[1] - 1 of an image `width` wide
    (all else empty): the runs are the same, computed on the columns that matter.
    """
    height, columns = mask.shape
    width = columns if width is None else width
    runs = mask_runs(mask)
    runs[0] += x0 * height  # empty columns before the mask's
    after = (width - x0 - columns) * height
    if after:
        if len(runs) % 2:  # ends on a run of zeros: lengthen it
            runs[-1] += after
        else:
            runs.append(after)
    return {"size": [int(height), int(width)], "counts": encode_counts(runs)}
