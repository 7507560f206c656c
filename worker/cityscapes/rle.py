"""COCO run-length encoding of binary masks (column-major runs, starting with zeros)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


# A run is at most a mask's pixels (MAX_PIXELS, 2^28) and a delta-coded one twice that: 30 bits,
# six characters of five. A longer number can only be hostile (a 100-bit run).
MAX_NUMBER_CHARS = 7
# Beyond this a mask's size is not an image's (16384x16384 is 2^28): refused before any sum.
MAX_MASK_PIXELS = 1 << 32


def decode_counts(counts: str) -> np.ndarray:
    """Run lengths (int64) from COCO's compressed string form (6-bit groups, delta-coded from
    run 3), vectorized; ValueError names what is wrong with the string."""
    if not counts.isascii():
        raise ValueError("RLE string holds characters outside '0' to 'o'")
    codes = np.frombuffer(counts.encode(), np.uint8).astype(np.int64) - 48
    if not codes.size:
        return np.zeros(0, np.int64)
    if codes.min() < 0 or codes.max() > 63:
        raise ValueError("RLE string holds characters outside '0' to 'o'")
    last = np.flatnonzero((codes & 0x20) == 0)  # a number's last character
    if not last.size or last[-1] != codes.size - 1:
        raise ValueError("RLE string ends inside a number")
    first = np.concatenate(([0], last[:-1] + 1))
    lengths = last - first + 1
    if lengths.max() > MAX_NUMBER_CHARS:
        raise ValueError(
            f"RLE string holds a number of {int(lengths.max())} characters, more than any"
            f" mask's run takes ({MAX_NUMBER_CHARS})"
        )
    position = np.arange(codes.size) - np.repeat(first, lengths)
    values = np.add.reduceat((codes & 0x1F) << (5 * position), first)
    negative = (codes[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # run i > 2 is coded as its difference to run i - 2
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def encode_counts(runs: list[int]) -> str:
    """The compressed string form of run lengths (inverse of decode_counts), vectorized: all
    numbers' first characters at once, then their second, ... (a mask of a street scene has
    tens of thousands of runs)."""
    values = np.array(runs, np.int64)
    values[3:] -= values[1:-2].copy()  # run i > 2 is coded as its difference to run i - 2
    chars = np.zeros((len(values), 13), np.uint8)  # 13 groups of 5 bits hold any int64
    wanted = np.zeros(chars.shape, bool)
    pending = np.ones(len(values), bool)
    for k in range(chars.shape[1]):
        char = values & 0x1F
        values >>= 5
        sign = (char & 0x10) != 0
        more = ~(((values == 0) & ~sign) | ((values == -1) & sign))
        chars[:, k] = char + 48 + (more << 5)
        wanted[:, k] = pending
        pending &= more
        if not pending.any():
            break
    return chars[wanted].tobytes().decode("ascii")


def is_mask_size(size: Any) -> bool:
    """An RLE's size as JSON may give it: [height, width], whole numbers from 0."""
    return (isinstance(size, (list, tuple)) and len(size) == 2
            and all(type(v) is int and v >= 0 for v in size))


def checked_runs(rle: dict[str, Any]) -> tuple[int, int, np.ndarray]:
    """(height, width, runs) of an RLE whose runs are whole, non-negative and cover exactly its
    size; ValueError otherwise. Checked with bounds before any numpy sum can wrap around."""
    size = rle.get("size") if isinstance(rle, dict) else None
    if not is_mask_size(size):
        raise ValueError("RLE size is not [height, width] in whole pixels")
    height, width = size
    pixels = height * width
    if pixels > MAX_MASK_PIXELS:
        raise ValueError(f"RLE size {height}x{width} is larger than any image")
    counts = rle.get("counts")
    if isinstance(counts, str):
        runs = decode_counts(counts)
    elif isinstance(counts, list):
        runs = _whole_numbers(counts)
    else:
        raise ValueError("RLE counts are neither a string nor a list of numbers (whole ones)")
    if runs.size and (runs.min() < 0 or runs.max() > pixels):
        raise ValueError(f"RLE runs lie outside 0 to {pixels} (the mask's pixels)")
    covered = int(runs.sum())  # each run within 0..2^32 and fewer than 2^31 runs: no wrap
    if covered != pixels:
        raise ValueError(f"RLE runs cover {covered} pixels, the mask has {pixels}")
    return height, width, runs


def _whole_numbers(values: list) -> np.ndarray:
    """A list of JSON numbers as int64, if each is a whole number within int64."""
    array = None
    if bool not in map(type, values):  # JSON true/false: Python bools are ints, not run lengths
        try:
            array = np.asarray(values)
        except (ValueError, OverflowError, TypeError):
            pass
    if array is not None and array.ndim == 1 and array.dtype.kind == "f":
        if np.isfinite(array).all() and (array == np.round(array)).all() \
                and np.abs(array).max(initial=0) < 2.0**53:
            return array.astype(np.int64)
    elif array is not None and array.ndim == 1 and (array.dtype.kind in "iu" or not array.size):
        return array.astype(np.int64)
    raise ValueError("RLE counts are neither a string nor a list of numbers (whole ones)")


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """A (height, width) bool mask from {"size": [h, w], "counts": str | [int, ...]}."""
    x0, y0, crop = decode_mask_box(rle)  # checks the runs and the size
    height, width = rle["size"]
    mask = np.zeros((height, width), np.bool_)
    mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return mask


def decode_mask_box(rle: dict[str, Any]) -> tuple[int, int, np.ndarray]:
    """(x0, y0, crop): the mask's pixels within their bounding box, decoded without building the
    whole image or its full-height columns: the work is that of the runs and of the box. An
    empty mask gives a (0, 0) crop."""
    height, width, runs = checked_runs(rle)
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


_OPENCV_TYPES = frozenset(map(np.dtype, (np.uint8, np.int8, np.uint16, np.int16, np.int32)))


def transposed(image: np.ndarray) -> np.ndarray:
    """A 2-D array's transpose, C-contiguous: COCO counts pixels column after column. OpenCV's
    transpose is several times faster than numpy's copy of a view, for the types it has."""
    if image.size and image.dtype in _OPENCV_TYPES:
        return cv2.transpose(np.ascontiguousarray(image))
    return np.ascontiguousarray(image.T)


def mask_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed counts of a (height, width) bool mask: column-major runs, 0s first."""
    flat = transposed(np.asarray(mask, np.bool_).view(np.uint8)).reshape(-1)
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
