import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from worker.cityscapes.png import decode_grey, encode_png

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


# Decoding: files written by other encoders (Pillow's and libpng's adaptive filters choose a filter
# a row), and rows filtered by hand with each of the five filters as the PNG specification
# defines them (section 9.2), each checked against Pillow's decoding of the same bytes.


def label_like(shape: tuple[int, int], dtype: type, seed: int) -> np.ndarray:
    """Flat regions with ragged borders (what label images are), plus noise in one corner."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    image = np.zeros(shape, dtype)
    for _ in range(12):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, shape[0] + 1), rng.integers(1, shape[1] + 1)
        image[y : y + h, x : x + w] = rng.integers(0, top + 1)
    image[: shape[0] // 4, : shape[1] // 4] = rng.integers(0, top + 1, (shape[0] // 4, shape[1] // 4))
    return image


def pillow_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))).astype(np.int64)


def written_by(writer: str, image: np.ndarray) -> bytes:
    if writer == "opencv":
        return cv2.imencode(".png", image)[1].tobytes()
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("writer", ["pillow", "opencv"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (37, 53), (256, 301)])
def test_files_of_other_encoders_decode_as_pillow_decodes_them(writer, dtype, shape):
    for seed in range(3):
        image = label_like(shape, dtype, seed)
        data = written_by(writer, image)
        pixels = decode_grey(data)
        assert pixels is not None and pixels.dtype == np.dtype(dtype) and pixels.dtype.isnative
        assert np.array_equal(pixels, image) and np.array_equal(pixels, pillow_pixels(data))
        pixels[0, 0] = 1  # an array of its own, writable as Pillow's copy was


def test_the_other_encoders_used_every_filter_that_they_choose():
    """The cases above are worth something only if the encoders filtered rows in several ways."""
    used = set()
    for writer in ("pillow", "opencv"):
        for dtype in (np.uint8, np.uint16):
            data = written_by(writer, label_like((256, 301), dtype, 0))
            raw = zlib.decompress(b"".join(b for k, b in png_chunks(data) if k == b"IDAT"))
            rows = np.frombuffer(raw, np.uint8).reshape(256, -1)
            used |= set(rows[:, 0].tolist())
    assert {1, 2, 4} <= used


def paeth_predictor(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filtered_png(image: np.ndarray, types: list[int]) -> bytes:
    """A grey PNG whose row y is filtered with types[y], as the specification defines filtering."""
    depth = 8 * image.dtype.itemsize
    bpp = image.dtype.itemsize
    rows = image.astype(image.dtype.newbyteorder(">")).reshape(image.shape[0], -1).view(np.uint8)
    out, prior = bytearray(), [0] * rows.shape[1]
    for row, kind in zip(rows.tolist(), types):
        filtered = []
        for x, value in enumerate(row):
            a = row[x - bpp] if x >= bpp else 0
            c = prior[x - bpp] if x >= bpp else 0
            b = prior[x]
            guess = [0, a, b, (a + b) // 2, paeth_predictor(a, b, c)][kind]
            filtered.append((value - guess) % 256)
        out += bytes([kind, *filtered])
        prior = row
    header = struct.pack(">IIBBBBB", image.shape[1], image.shape[0], depth, 0, 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header),
                     chunk(b"IDAT", zlib.compress(bytes(out))), chunk(b"IEND", b"")])


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("kind", range(5))
def test_each_filter_of_the_specification_is_undone(dtype, kind):
    for seed, shape in enumerate([(6, 1), (6, 5), (24, 40)]):
        image = label_like(shape, dtype, seed)
        data = filtered_png(image, [kind] * shape[0])
        assert np.array_equal(pillow_pixels(data), image)  # the reference agrees with Pillow
        assert np.array_equal(decode_grey(data), image)


def test_rows_of_mixed_filters_are_undone():
    image = label_like((50, 33), np.uint16, 7)
    types = np.random.default_rng(7).integers(0, 5, 50).tolist()
    assert np.array_equal(decode_grey(filtered_png(image, types)), image)


def replaced(data: bytes, kind: bytes, body: bytes) -> bytes:
    """The PNG with its `kind` chunk's data replaced (its CRC made right)."""
    return b"".join([data[:8], *(chunk(k, body if k == kind else b) for k, b in png_chunks(data))])


GREY = label_like((20, 30), np.uint16, 1)
PLAIN = filtered_png(GREY, [4] * 20)
IDAT = dict(png_chunks(PLAIN))[b"IDAT"]


def with_chunks(*chunks: tuple[bytes, bytes]) -> bytes:
    return b"".join([PLAIN[:8], *(chunk(k, b) for k, b in chunks)])


HEAD = (b"IHDR", dict(png_chunks(PLAIN))[b"IHDR"])
END = (b"IEND", b"")


def interlaced(data: bytes) -> bytes:
    header = bytearray(dict(png_chunks(data))[b"IHDR"])
    header[12] = 1
    return replaced(data, b"IHDR", bytes(header))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(written_by("pillow", np.zeros((4, 4, 3), np.uint8)), id="rgb"),
        pytest.param(written_by("pillow", np.zeros((4, 4), bool)), id="1-bit"),
        pytest.param(PLAIN[:7] + b"x" + PLAIN[8:], id="not a PNG signature"),
        pytest.param(interlaced(PLAIN), id="interlaced"),
        pytest.param(with_chunks(HEAD, (b"IDAT", IDAT[:100]), (b"tEXt", b"a\0b"), (b"IDAT", IDAT[100:]), END),
                     id="IDAT split by another chunk"),
        pytest.param(with_chunks(HEAD, (b"PLTE", bytes(6)), (b"IDAT", IDAT), END), id="PLTE"),
        pytest.param(with_chunks(HEAD, (b"IDAT", IDAT[:-10]), END), id="stream cut short"),
        pytest.param(with_chunks(HEAD, (b"IDAT", IDAT + zlib.compress(b"more")), END), id="data after the stream"),
        pytest.param(with_chunks(HEAD, (b"IDAT", zlib.compress(zlib.decompress(IDAT) + b"\0")), END), id="a byte too many"),
        pytest.param(with_chunks(HEAD, (b"IDAT", zlib.compress(bytes([5]) + zlib.decompress(IDAT)[1:])), END), id="filter type 5"),
        pytest.param(with_chunks(HEAD, (b"IDAT", IDAT[:-1] + bytes([IDAT[-1] ^ 1])), END), id="bad adler32"),
        pytest.param(with_chunks(HEAD, (b"IDAT", IDAT)), id="no IEND"),
    ],
)
def test_any_other_png_is_left_to_the_general_decoder(data):
    assert decode_grey(data) is None


def test_chunks_around_the_image_data_are_passed_over():
    data = with_chunks(HEAD, (b"tEXt", b"a\0b"), (b"IDAT", IDAT[:100]), (b"IDAT", IDAT[100:]),
                       (b"zTXt", b"junk"), END)
    assert np.array_equal(decode_grey(data), GREY)
    assert np.array_equal(pillow_pixels(data), GREY)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_plain_png_made_hostile_decodes_as_pillow_decodes_it_or_is_left_to_pillow(data):
    """Rows re-filtered with arbitrary filter bytes (over 4 too), header fields changed, data
    cut or lengthened, each file's chunks made whole again (so that they pass the reader's CRC
    check and reach the decoder): what decode_grey returns, Pillow returns too."""
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16]))
    height, width = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    image = label_like((height, width), dtype, data.draw(st.integers(0, 99)))
    raw = bytearray(zlib.decompress(idat_of(written_by("pillow", image))))
    header = bytearray(struct.pack(">IIBBBBB", width, height, 8 * image.itemsize, 0, 0, 0, 0))
    damage = data.draw(st.sampled_from(["bytes", "length", "header"]))
    if damage == "bytes":  # filter types and samples
        for _ in range(data.draw(st.integers(1, 6))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
    elif damage == "length":
        raw = raw[: data.draw(st.integers(0, len(raw)))] + bytes(data.draw(st.integers(0, 3)))
    else:
        header[data.draw(st.integers(0, 12))] = data.draw(st.integers(0, 255))
    png = b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", bytes(header)),
                    chunk(b"IDAT", zlib.compress(bytes(raw))), chunk(b"IEND", b"")])
    pixels = decode_grey(png)
    if pixels is not None:
        assert np.array_equal(pixels, pillow_pixels(png))


def idat_of(data: bytes) -> bytes:
    return b"".join(body for kind, body in png_chunks(data) if kind == b"IDAT")
