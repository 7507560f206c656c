import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from worker.cityscapes.png import encode_png

rng = np.random.default_rng(3)
CASES = {
    "grey8": rng.integers(0, 256, (37, 53), dtype=np.uint8),
    "grey16": rng.integers(0, 65536, (37, 53), dtype=np.uint16),
    "grey16-big-endian": rng.integers(0, 65536, (37, 53), dtype=np.uint16).astype(">u2"),
    "rgb": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
    "rgba": rng.integers(0, 256, (37, 53, 4), dtype=np.uint8),
    "flat": np.full((1024, 2048), 7, np.uint8),
}


@pytest.mark.parametrize("name", CASES)
def test_pillow_and_opencv_read_back_the_same_pixels(name):
    image = CASES[name]
    data = encode_png(image)
    pil = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(pil.astype(np.int64), image.astype(np.int64))
    cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:  # OpenCV orders channels BGR(A)
        cv = cv[..., [2, 1, 0, 3][: image.shape[2]]]
    assert np.array_equal(cv.astype(np.int64), image.astype(np.int64))


def test_pillow_opens_16_bit_as_16_bit():
    data = encode_png(np.array([[0, 1000, 65535]], np.uint16))
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I;16B", "I")


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.int32), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), float)]
)
def test_arrays_without_a_png_format_are_refused(bad):
    with pytest.raises(ValueError, match="no PNG format"):
        encode_png(bad)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, each chunk's CRC checked as the PNG specification defines it
    (CRC-32 of type and data)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.append((kind, body))
        at += 12 + length
    return chunks


@pytest.mark.parametrize("name", CASES)
def test_the_file_is_laid_out_as_the_png_specification_says(name):
    image = CASES[name]
    chunks = png_chunks(encode_png(image))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"] and chunks[2][1] == b""
    channels = 1 if image.ndim == 2 else image.shape[2]
    depth = 8 * image.dtype.itemsize
    colour_type = {1: 0, 3: 2, 4: 6}[channels]  # greyscale, truecolour, truecolour with alpha
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (
        image.shape[1], image.shape[0], depth, colour_type, 0, 0, 0)
    # The zlib stream holds every row exactly once, each led by its filter type (0: none).
    rows = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(image.shape[0], -1)
    assert rows.shape[1] == 1 + image.shape[1] * channels * image.dtype.itemsize
    assert not rows[:, 0].any()
    assert np.array_equal(rows[:, 1:], image.astype(image.dtype.newbyteorder(">")).reshape(
        image.shape[0], -1).view(np.uint8))


def test_the_compression_level_changes_the_bytes_not_the_pixels():
    image = CASES["rgb"] // 64  # compressible
    fastest, smallest = encode_png(image, level=0), encode_png(image, level=3)
    assert fastest != smallest
    for data in (fastest, smallest):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), image)


def test_one_byte_pixels_are_deflated_as_runs_and_wider_ones_matched_a_row_up():
    """The encoding choice the module documents, seen from outside: rows of noise that repeat
    the row above shrink where deflate may look a row back (16-bit ids, RGBA), and not for 8-bit
    labels, which are deflated as runs only (matches at distance 1)."""
    row = np.random.default_rng(3).integers(0, 256, 512, dtype=np.uint8)
    grey = np.tile(row, (64, 1))  # 64 equal rows, no runs within a row
    wide = np.tile(row.view(">u2"), (64, 1))  # the same bytes as 16-bit pixels

    def idat(image: np.ndarray) -> bytes:
        return dict(png_chunks(encode_png(image)))[b"IDAT"]

    assert len(idat(grey)) > 0.9 * grey.nbytes
    assert len(idat(wide)) < 0.1 * wide.nbytes
    rgba = np.tile(row.reshape(1, 128, 4), (64, 1, 1))
    assert len(idat(rgba)) < 0.1 * rgba.nbytes
