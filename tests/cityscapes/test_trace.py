"""Pixel-edge polygons (COCO output) against pycocotools, the rasterizer COCO consumers use."""

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_api

from worker.cityscapes.importer import coco_annotations
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.trace import trace_edge_polygons, value_boxes


def grid(picture: str) -> np.ndarray:
    """'#' is value 1, '.' is 0, a digit d is value d."""
    rows = picture.split()
    return np.array([[1 if c == "#" else 0 if c == "." else int(c) for c in row] for row in rows],
                    np.int32)


def pycocotools_mask(polygons: list, height: int, width: int) -> np.ndarray:
    rles = mask_api.frPyObjects([np.asarray(p, float).reshape(-1).tolist() for p in polygons],
                                height, width)
    return mask_api.decode(mask_api.merge(rles)).astype(bool)


SHAPES = {
    "one pixel": "... .#. ...",
    "a row": "#####",
    "a column": "# # # #",
    "a one-pixel diagonal": "#... .#.. ..#. ...#",
    "a convex block": ".... .##. .##. ....",
    "concave: L": "#... #... ####",
    "concave: comb": "#.#.# #.#.# #####",
    "concave: spiral": "##### ....# ###.# #...# #####",
    "pinched at a corner": "##.. ##.. ..## ..##",
    "checkerboard": "#.#. .#.# #.#. .#.#",
    "a ring": "#### #..# #..# ####",
    "a ring round an island": "##### #...# #.#.# #...# #####",
    "two holes and a spur": "####### #.#.#.# ####### ...#...",
    "a hole touching the outside at a corner": ".#### #.### ##### #####",
    "holes meeting at a corner": "#### #.## ##.# ####",
    "a ring round another value": "#### #22# #22# ####",
    "one pixel wide ring": "### #.# ###",
}


@pytest.mark.parametrize("picture", SHAPES.values(), ids=SHAPES.keys())
def test_pycocotools_draws_edge_polygons_back_to_the_pixels(picture):
    ids = grid(picture)
    polygons = trace_edge_polygons(ids)
    for value, mask in ((v, ids == v) for v in np.unique(ids) if v):
        assert np.array_equal(pycocotools_mask(polygons[value], *ids.shape), mask)
        # one polygon per 8-connected component, its holes inside it
        assert len(polygons[value]) == cv2.connectedComponents(mask.view(np.uint8), None, 8)[0] - 1
        for polygon in polygons[value]:
            assert len(polygon) >= 4  # 8+ numbers: pycocotools reads 4 as a box
            assert not np.any(np.all(polygon == np.roll(polygon, 1, axis=0), axis=1))


def test_pycocotools_draws_edge_polygons_of_random_images_back_exactly():
    rng = np.random.default_rng(7)
    for _ in range(300):
        height, width = rng.integers(1, 25, 2)
        ids = rng.integers(0, rng.integers(2, 6), (height, width)).astype(np.int32)
        boxes = value_boxes(ids)
        for value, polygons in trace_edge_polygons(ids, boxes).items():
            assert np.array_equal(pycocotools_mask(polygons, height, width), ids == value)


def test_coco_annotations_decode_to_the_instance_pixels_with_their_area_and_box():
    car, person, road = 26, 24, 7  # official ids; the car value alone is a crowd region
    ids = np.zeros((12, 16), np.int32)
    ids[1:9, 1:12] = road
    ids[3:6, 3:8] = car * 1000  # a car in a hole of the road
    ids[4, 5] = 0  # a hole in the car
    ids[0, :] = person * 1000 + 1  # one pixel high, along the border
    ids[2:11, 14] = person * 1000 + 2  # one pixel wide
    ids[9, 13], ids[10, 12] = person * 1000 + 2, person * 1000 + 2  # a one-pixel diagonal
    ids[10:12, 0:3] = car  # crowd
    label_map = LabelMap.cityscapes()
    annotations = coco_annotations(ids, label_map, "polygon", value_boxes(ids))
    assert len(annotations) == 5
    for annotation in annotations:
        segmentation = annotation["segmentation"]
        if annotation["iscrowd"]:
            rle = segmentation
            assert annotation["category_id"] == car
        else:
            assert all(isinstance(v, int) for polygon in segmentation for v in polygon)
            rle = mask_api.merge(mask_api.frPyObjects(segmentation, 12, 16))
        mask = mask_api.decode(rle).astype(bool)
        value = np.bincount(ids[mask]).argmax()
        assert np.array_equal(mask, ids == value)
        assert annotation["area"] == mask_api.area(rle) == mask.sum()
        assert annotation["bbox"] == mask_api.toBbox(rle).tolist()
