"""PNG for label images: a lossless encoder tuned for speed over size, and a decoder for plain
grey PNGs (8- or 16-bit ids), the hot path of every import.

Label images are large flat regions, so filter type 0 (none) with fast deflate (zlib-ng) keeps
them small while costing a few milliseconds per 2048x1024 image; libpng, Pillow and OpenCV read
the result like any other PNG. One-byte pixels are deflated as runs only (Z_RLE: faster and
smaller on labels), wider ones (16-bit ids, RGBA) with the default matching. The same rows always
give the same bytes: outputs are compared byte for byte across processes and machines.

Decoding inflates with zlib-ng (4x the system zlib here) and unfilters rows in C (_unfilter.c):
Pillow spent 70 % of a 16-bit image's decoding in its byte-at-a-time Paeth and Sub loops.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
from zlib_ng import zlib_ng

from worker.cityscapes._unfilter import unfilter

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (dtype, channels) -> (bit depth, PNG colour type)
_FORMATS = {
    (np.dtype(np.uint8), 1): (8, 0),
    (np.dtype(">u2"), 1): (16, 0),
    (np.dtype(np.uint8), 3): (8, 2),
    (np.dtype(np.uint8), 4): (8, 6),
}
DEFAULT_LEVEL = 2  # zlib-ng's: level 1 is its quick mode, a third larger on labels
# Rows encoded at a time: large enough for deflate to run at full speed, small enough to stay in
# the cache and to keep a 40-megapixel image from being copied whole.
_BAND_BYTES = 1 << 20


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


_IEND = _chunk(b"IEND", b"")


def encode_png(image: np.ndarray, level: int = DEFAULT_LEVEL) -> bytes:
    """PNG bytes of a grey (H, W) uint8/uint16 or an RGB/RGBA (H, W, 3|4) uint8 array.

    16-bit arrays already in big-endian order (dtype '>u2') skip a byte-swapping copy.
    """
    if image.dtype == np.uint16:
        image = image.astype(">u2")
    channels = 1 if image.ndim == 2 else image.shape[2]
    return encode_png_rows(
        image.shape[1], image.shape[0], image.dtype, channels, lambda y0, y1: image[y0:y1], level
    )


def encode_png_rows(
    width: int,
    height: int,
    dtype: np.dtype,
    channels: int,
    rows: Callable[[int, int], np.ndarray],
    level: int = DEFAULT_LEVEL,
) -> bytes:
    """PNG bytes of an image made band by band: `rows(y0, y1)` gives its rows y0 to y1 - 1, so
    that a photo-sized label image is never held whole, nor copied whole for the filter bytes."""
    try:
        depth, color_type = _FORMATS[(np.dtype(dtype), channels)]
    except KeyError:
        raise ValueError(f"no PNG format for {dtype} pixels of {channels} channel(s)") from None
    row_bytes = width * channels * np.dtype(dtype).itemsize
    band = max(1, min(height, _BAND_BYTES // (row_bytes + 1)))
    raw = np.empty((band, row_bytes + 1), np.uint8)
    raw[:, 0] = 0  # filter type "none" on every row
    strategy = zlib_ng.Z_RLE if channels * np.dtype(dtype).itemsize == 1 else zlib_ng.Z_DEFAULT_STRATEGY
    # A small image needs no 32 KiB window: a smaller one (and hash) is quicker to set up.
    window = min(zlib_ng.MAX_WBITS, max(9, (height * (row_bytes + 1)).bit_length()))
    deflate = zlib_ng.compressobj(level, zlib_ng.DEFLATED, window, min(8, window - 7), strategy)
    data = []
    for y0 in range(0, height, band):
        count = min(band, height - y0)
        raw[:count, 1:] = rows(y0, y0 + count).reshape(count, -1).view(np.uint8)
        data.append(deflate.compress(raw[:count]))
    data.append(deflate.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", b"".join(data)),
            _IEND,
        )
    )


def decode_grey(data: bytes) -> np.ndarray | None:
    """The pixels of a plain grey PNG as an (H, W) uint8 or native uint16 array; None for any
    other: another bit depth or colour type, interlaced, an unknown critical chunk, image data
    in more than one run of IDAT chunks, or not inflating to exactly its rows. A None is left to
    a general decoder, whose errors name what is wrong. Chunk CRCs are the caller's to check."""
    if len(data) < 33 or data[:8] != _SIGNATURE or data[8:16] != b"\0\0\0\rIHDR":
        return None
    width, height, depth, color_type, *methods = struct.unpack(">IIBBBBB", data[16:29])
    if color_type != 0 or depth not in (8, 16) or any(methods) or not width or not height:
        return None
    parts, at, done = [], 33, False
    while True:
        if at + 12 > len(data):
            return None
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT" and not done:
            parts.append(data[at + 8 : at + 8 + length])
        elif kind == b"IEND":
            break
        elif not kind[0] & 0x20:  # critical (IHDR again, PLTE, IDAT after other chunks, ...)
            return None
        done = done or (bool(parts) and kind != b"IDAT")
        at += 12 + length
    row_bytes = width * depth // 8
    rows = height * (row_bytes + 1)
    inflate = zlib_ng.decompressobj()
    try:
        raw = inflate.decompress(b"".join(parts), rows)
    except zlib_ng.error:
        return None
    if len(raw) != rows or not inflate.eof or inflate.unused_data:
        return None
    try:
        pixels = unfilter(raw, height, width, depth)
    except ValueError:  # a filter type over 4
        return None
    return np.frombuffer(pixels, np.uint8 if depth == 8 else np.uint16).reshape(height, width)
