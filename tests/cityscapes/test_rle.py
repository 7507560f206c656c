import numpy as np
import pytest
from pycocotools import mask as coco_mask

from worker.cityscapes.rle import checked_runs, decode_mask, decode_mask_box, encode_mask

rng = np.random.default_rng(5)


def masks():
    yield np.zeros((5, 7), bool)
    yield np.ones((5, 7), bool)
    yield rng.random((31, 17)) < 0.5
    big = np.zeros((300, 400), bool)
    big[50:250, 100:380] = True
    big[120:130, :] = False
    yield big
    yield rng.random((64, 64)) < 0.02
    small = np.zeros((700, 90), bool)  # a small object of a tall image: its box, not its columns
    small[300:340, 20:31] = rng.random((40, 11)) < 0.7
    small[300, 20] = small[339, 30] = True
    yield small
    corner = np.zeros((40, 30), bool)
    corner[-1, 10] = corner[0, 11] = True  # one run wrapping from a column into the next
    corner[39, 29] = True
    yield corner


@pytest.mark.parametrize("mask", list(masks()), ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_matches_pycocotools_both_ways(mask):
    ours = encode_mask(mask)
    theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["counts"] == theirs["counts"].decode()
    assert ours["size"] == list(theirs["size"])
    assert np.array_equal(decode_mask(ours), mask)
    assert np.array_equal(decode_mask({"size": ours["size"], "counts": ours["counts"]}),
                          coco_mask.decode(theirs).astype(bool))


@pytest.mark.parametrize("mask", list(masks()), ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_a_mask_decodes_to_its_bounding_box(mask):
    x0, y0, crop = decode_mask_box(encode_mask(mask))
    assert crop.dtype == np.bool_ and decode_mask(encode_mask(mask)).dtype == np.bool_
    if not mask.any():
        assert (x0, y0, crop.shape) == (0, 0, (0, 0))
        return
    rows, columns = np.nonzero(mask)
    assert (x0, y0) == (columns.min(), rows.min())
    assert np.array_equal(crop, mask[y0 : rows.max() + 1, x0 : columns.max() + 1])


def test_runs_of_no_pixels_between_runs_decode_as_pycocotools_does():
    rle = {"size": [6, 5], "counts": [7, 2, 0, 3, 0, 0, 4, 1, 13]}
    theirs = coco_mask.decode(coco_mask.frPyObjects(rle, 6, 5)).astype(bool)
    x0, y0, crop = decode_mask_box(rle)
    rows, columns = np.nonzero(theirs)
    assert (x0, y0) == (columns.min(), rows.min())
    assert np.array_equal(crop, theirs[y0 : rows.max() + 1, x0 : columns.max() + 1])


def test_uncompressed_counts_decode():
    mask = decode_mask({"size": [2, 3], "counts": [1, 2, 3]})
    # column-major: pixel order (0,0) (1,0) (0,1) (1,1) (0,2) (1,2) -> 0 1 1 0 0 0
    assert mask.tolist() == [[False, True, False], [True, False, False]]


@pytest.mark.parametrize(
    "rle",
    [{"size": [2, 3], "counts": [1, 2]}, {"size": [2, 3], "counts": [1, -2, 7]}, {"size": [2, 2], "counts": "1"}],
)
def test_runs_that_do_not_cover_the_mask_are_refused(rle):
    with pytest.raises(ValueError):
        decode_mask(rle)
    with pytest.raises(ValueError):
        decode_mask_box(rle)


@pytest.mark.parametrize("x0, x1", [(0, 3), (2, 5), (4, 9), (0, 9)])
def test_masks_given_by_their_columns_encode_as_whole(x0, x1):
    whole = np.zeros((6, 10), bool)
    whole[1:4, x0 : x1 + 1] = rng.random((3, x1 - x0 + 1)) < 0.6
    whole[0, x0] = True
    assert encode_mask(whole[:, x0 : x1 + 1], x0, 10) == encode_mask(whole)


@pytest.mark.parametrize("counts", [[1, True, True], [1.0, False, 2], [True, 2]],
                         ids=["ints", "floats", "first"])
def test_json_true_and_false_are_not_run_lengths(counts):
    with pytest.raises(ValueError, match="^RLE counts are neither a string nor a list of numbers"):
        checked_runs({"size": [1, 3], "counts": counts})


def test_a_single_run_wrapping_into_the_next_column_decodes_as_pycocotools_does():
    # 4x2 mask, column-major pixels 2..5 set: rows 2-3 of column 0, rows 0-1 of column 1.
    rle = {"size": [4, 2], "counts": [2, 4, 2]}
    theirs = coco_mask.decode(coco_mask.frPyObjects(rle, 4, 2)).astype(bool)
    assert theirs.tolist() == [[False, True], [False, True], [True, False], [True, False]]
    x0, y0, crop = decode_mask_box(rle)
    assert (x0, y0, crop.tolist()) == (0, 0, theirs.tolist())


def test_a_mask_of_any_nonzero_values_encodes_as_its_true_pixels():
    mask = rng.random((9, 7)) < 0.6
    assert encode_mask(mask * rng.integers(1, 256, mask.shape).astype(np.uint8)) == encode_mask(mask)


@pytest.mark.parametrize("rle, runs", [
    ({"size": [1, 3], "counts": [1.0, 2.0]}, [1, 2]),  # JSON may write whole numbers as floats
    ({"size": [0, 3], "counts": []}, []),
    ({"size": [0, 3], "counts": ""}, []),
    ({"size": [3, 0], "counts": [0]}, [0]),
    # 2^30 in six 5-bit groups of 0 with the 'more' bit (0x20 + 48 = 'P'), then 1: seven chars.
    ({"size": [32768, 32768], "counts": "PPPPPP1"}, [1 << 30]),
    ({"size": [65536, 65536], "counts": [1 << 32]}, [1 << 32]),  # 2^32 pixels: the largest
], ids=["floats", "empty list", "empty string", "no columns", "seven chars", "2^32 pixels"])
def test_edge_cases_of_valid_counts_give_their_int64_runs(rle, runs):
    height, width, checked = checked_runs(rle)
    assert (height, width, checked.tolist(), checked.dtype) == (*rle["size"], runs, np.int64)


@pytest.mark.parametrize("rle, message", [
    ([[2, 2], [4]], "^RLE size is not"),
    ({"size": [2], "counts": [2]}, "^RLE size is not"),
    ({"size": [2, -1], "counts": []}, "^RLE size is not"),
    ({"size": [65536, 65537], "counts": []}, r"^RLE size 65536x65537 is larger than any image$"),
    ({"size": [2, 2], "counts": 4}, "^RLE counts are neither"),
    ({"size": [1, 3], "counts": [1.5, 1.5]}, "^RLE counts are neither"),
    ({"size": [1, 3], "counts": [2.0**53]}, "^RLE counts are neither"),
    ({"size": [1, 3], "counts": ["1", "2"]}, "^RLE counts are neither"),
    ({"size": [1, 3], "counts": [[1], [1, 1]]}, "^RLE counts are neither"),
    ({"size": [1, 3], "counts": [[1, 2]]}, "^RLE counts are neither"),
    ({"size": [1, 1], "counts": [-1, 1, 1]}, r"^RLE runs lie outside 0 to 1 \(the mask's pixels\)$"),
    ({"size": [1, 1], "counts": [0, 2, -1]}, r"^RLE runs lie outside 0 to 1"),
    ({"size": [2, 3], "counts": [1, 2]}, r"^RLE runs cover 3 pixels, the mask has 6$"),
    ({"size": [2, 2], "counts": "é"}, r"^RLE string holds characters outside '0' to 'o'$"),
    ({"size": [0, 0], "counts": "/"}, r"^RLE string holds characters outside '0' to 'o'$"),
    # 'p' is 64: one past the last 6-bit code; as 0x40 & 0x1F it would read as a run of 0.
    ({"size": [0, 0], "counts": "p"}, r"^RLE string holds characters outside '0' to 'o'$"),
    ({"size": [2, 2], "counts": "P"}, r"^RLE string ends inside a number$"),  # 'P': 0x20, 'more'
    ({"size": [2, 2], "counts": "0P"}, r"^RLE string ends inside a number$"),
    ({"size": [2, 2], "counts": "PPPPPPP0"},
     r"^RLE string holds a number of 8 characters, more than any mask's run takes \(7\)$"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_broken_rles_are_refused_with_what_is_wrong(rle, message):
    with pytest.raises(ValueError, match=message):
        checked_runs(rle)
