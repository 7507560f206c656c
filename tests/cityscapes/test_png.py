import io

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
