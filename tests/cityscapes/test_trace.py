"""Traced shapes against the rasterizers that will draw them: pycocotools for pixel-edge polygons
(COCO output), Pillow's polygon fill (the export's and the official scripts') for outlines through
pixel centres, and pycocotools' RLE decoder for masks."""

import itertools

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_api

from tests.official import pillow_polygons
from worker.cityscapes import trace
from worker.cityscapes.importer import coco_annotations
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.trace import (
    Region,
    redraw,
    segments,
    trace_edge_polygons,
    trace_regions,
    trace_shapes,
    value_boxes,
)
from worker.synth import jagged_polygons_json


def grid(picture: str) -> np.ndarray:
    """'#' is value 1, '.' is 0, a digit d is value d."""
    rows = picture.split()
    return np.array([[1 if c == "#" else 0 if c == "." else int(c) for c in row] for row in rows],
                    np.int32)


def every_vertex_turns(polygon: np.ndarray) -> bool:
    """No vertex lies on a straight run of the outline (it would add nothing): the edges into
    and out of each vertex are not parallel and alike. (Outlines through a pinch or a cut to a
    hole pass a point twice and may run straight through it there.)"""
    into = polygon - np.roll(polygon, 1, axis=0)
    out = np.roll(polygon, -1, axis=0) - polygon
    cross = into[:, 0] * out[:, 1] - into[:, 1] * out[:, 0]
    dot = (into * out).sum(axis=1)
    return not np.any((cross == 0) & (dot > 0))


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
    "a ring below another part": "##. ... ### #.# ###",
}
# Three rings deep: each correction round uncovers the next pocket, and two rounds are made.
NESTED = "####### #.....# #.###.# #.#.#.# #.###.# #.....# #######"


SIMPLE = ("one pixel", "a row", "a column", "a convex block", "concave: L", "concave: comb",
          "concave: spiral")


@pytest.mark.parametrize("name", SIMPLE)
def test_edge_polygons_without_holes_or_pinches_have_a_vertex_only_where_they_turn(name):
    (polygon,) = trace_edge_polygons(grid(SHAPES[name]))[1]
    assert every_vertex_turns(polygon)


@pytest.mark.parametrize("picture", SHAPES.values(), ids=SHAPES.keys())
def test_pycocotools_draws_edge_polygons_back_to_the_pixels(picture):
    ids = grid(picture)
    polygons = trace_edge_polygons(ids)
    assert set(polygons) == set(np.unique(ids).tolist()) - {0}  # background is no shape
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


def components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.view(np.uint8), None, 8)[0] - 1


def check_traced_shapes(ids: np.ndarray, missed_pixels: int = 0) -> None:
    """trace_shapes redraws ids with Pillow but for the pixels it says it misses, and OpenCV's
    redraw agrees with Pillow."""
    regions, missed = trace_shapes(ids)
    drawn = pillow_polygons(ids.shape, ((r.polygon.ravel(), r.value) for r in regions))
    assert missed == np.count_nonzero(drawn != ids) == missed_pixels
    assert np.array_equal(redraw(ids.shape, regions), drawn)


def test_a_pocket_three_rings_deep_is_missed_and_counted():
    check_traced_shapes(grid(NESTED), missed_pixels=1)


@pytest.mark.parametrize("picture", SHAPES.values(), ids=SHAPES.keys())
def test_traced_shapes_redraw_to_the_pixels_with_pillow(picture):
    # Holes and one-pixel rings need fixes drawn on top: background pockets, wrong borders.
    check_traced_shapes(grid(picture))


@pytest.mark.parametrize("picture", SHAPES.values(), ids=SHAPES.keys())
def test_segments_decode_with_pycocotools_to_the_pixels(picture):
    ids = grid(picture)
    check_segments(ids)


def check_segments(ids: np.ndarray) -> None:
    """Each value but 0 as the very RLE pycocotools encodes its pixels into."""
    found = {s.value: s.rle for s in segments(ids)}
    assert found.keys() == set(np.unique(ids).tolist()) - {0}
    for value, rle in found.items():
        theirs = mask_api.encode(np.asfortranarray((ids == value).view(np.uint8)))
        assert rle == {"size": list(theirs["size"]), "counts": theirs["counts"].decode()}, value


def test_traced_shapes_of_random_images_redraw_exactly_with_pillow():
    rng = np.random.default_rng(11)
    for _ in range(200):
        height, width = rng.integers(1, 12, 2)
        check_traced_shapes(rng.integers(0, rng.integers(2, 5), (height, width)).astype(np.int32))


def findcontours_outlines(ids: np.ndarray, skip: int) -> list[tuple[int, list]]:
    """(value, outer border) pairs as OpenCV traces them on each value's mask, in its order."""
    out = []
    for value in np.unique(ids).tolist():
        if value == skip:
            continue
        contours, hierarchy = cv2.findContours((ids == value).view(np.uint8), cv2.RETR_CCOMP,
                                               cv2.CHAIN_APPROX_SIMPLE)
        out += [(value, contours[i].reshape(-1, 2).tolist())
                for i in np.flatnonzero(hierarchy[0, :, 3] == -1)]
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.int64])
def test_outer_borders_are_those_findcontours_traces_on_each_value(dtype):
    """Every component of every value at once, as OpenCV traces each value's mask: the same
    vertices, from the same first one, in the same order."""
    rng = np.random.default_rng(12)
    for _ in range(400):
        height, width = rng.integers(1, 16, 2)
        ids = rng.integers(-1, rng.integers(1, 5), (height, width)).astype(dtype)
        values, borders = trace._component_borders(ids, (0,), (0, 0), None)
        assert list(zip(values, (b.tolist() for b in borders))) == findcontours_outlines(ids, 0)


def test_outer_borders_of_jagged_scenes_are_those_findcontours_traces():
    for seed in range(3):
        scene = jagged_polygons_json(seed, width=320, height=160, segments=60)
        ids = pillow_polygons((160, 320), (
            (np.asarray(o["polygon"], float).ravel(), k % 7 * 1000 + k)
            for k, o in enumerate(scene["objects"])))
        values, borders = trace._component_borders(ids, (0,), (0, 0), None)
        assert list(zip(values, (b.tolist() for b in borders))) == findcontours_outlines(ids, 0)


def test_segments_of_random_images_are_the_rle_pycocotools_encodes():
    """Small values spread over few columns: runs that go on from the bottom of one column to
    the top of the next, masks that start at the first pixel or end at the last."""
    rng = np.random.default_rng(13)
    for _ in range(300):
        height, width = rng.integers(1, 9, 2)
        check_segments(rng.integers(0, rng.integers(2, 5), (height, width)).astype(np.uint16))


def test_outlines_of_a_crop_are_placed_by_the_offset():
    ids = grid("#### #22# #22# ####")
    placed = trace_regions(ids, offset=(5, 7))
    assert [(r.value, r.polygon.tolist()) for r in placed] == [
        (1, [[5, 7], [5, 10], [8, 10], [8, 7]]), (2, [[6, 8], [6, 9], [7, 9], [7, 8]])]


def sparse_scene() -> np.ndarray:
    """300x300 with values whose boxes are large and nearly empty (traced part by part): blobs
    at opposite corners, a one-pixel diagonal, a thin L, a ring round a dot; value 3 is dense."""
    ids = np.zeros((300, 300), np.int32)
    ids[2:6, 3:8] = 1
    ids[293:297, 290:299] = 1
    ids[150, 150] = 1
    diagonal = np.arange(20, 260)
    ids[diagonal, diagonal + 10] = 2
    ids[40, 60:280] = 4
    ids[40:280, 279] = 4
    ids[200:205, 20:25] = 4
    ids[200, 20:25] = ids[204, 20:25] = ids[200:205, 20] = ids[200:205, 24] = 5
    ids[202, 22] = 5
    ids[100:160, 100:130] = 3
    return ids


def test_sparse_values_trace_one_outline_per_component():
    ids = sparse_scene()
    check_traced_shapes(ids)
    outer = trace_regions(ids)  # outlines only (no fixes): one per 8-connected component
    for value in range(1, 6):
        assert sum(r.value == value for r in outer) == components(ids == value), value
    edges = trace_edge_polygons(ids)
    assert sorted(edges) == [1, 2, 3, 4, 5]
    for value in range(1, 6):
        assert len(edges[value]) == components(ids == value), value
        assert np.array_equal(pycocotools_mask(edges[value], 300, 300), ids == value), value


def test_sparse_values_give_the_masks_pycocotools_encodes():
    ids = sparse_scene()
    check_segments(ids)
    ids[299, 299] = 1  # the last pixel (column-major too): COCO's counts end on its run
    check_segments(ids)


def test_dots_and_lines_trace_as_polygons_of_three_vertices_the_fewest_the_export_draws():
    ids = grid(".... .#.. .... 2222")
    assert [(r.value, r.polygon.tolist()) for r in trace_regions(ids)] == [
        (1, [[1, 1], [1, 1], [1, 1]]), (2, [[0, 3], [3, 3], [3, 3]])]


def test_regions_without_area_redraw_as_pillow_draws_them():
    """Dots, lines in all eight directions, collinear triples and an L, as regions without area
    (drawn last, as such regions are): redraw must paint Pillow's pixels."""
    polygons = [
        [[3, 3], [3, 3], [3, 3]],  # a dot
        *([[x, y], [x + dx * 4, y + dy * 4], [x + dx * 4, y + dy * 4]]  # apart, as components are
          for (dx, dy), (x, y) in zip([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1),
                                       (1, -1)], [(30, 5), (30, 15), (30, 25), (45, 5), (45, 15),
                                                  (45, 25), (55, 10), (55, 25)])),
        [[20, 2], [22, 2], [25, 2]],  # collinear, no end repeated
        [[20, 6], [20, 9], [20, 7]],
        [[2, 20], [2, 24], [6, 24], [2, 24]],  # an L, out and back
    ]
    regions = [Region(k + 1, np.array(p, np.int32), 0.0) for k, p in enumerate(polygons)]
    drawn = pillow_polygons((32, 64), ((r.polygon.ravel(), r.value) for r in regions))
    assert len(np.unique(drawn)) == len(regions) + 1  # each drawn, none over another
    assert np.array_equal(redraw((32, 64), regions), drawn)


def test_traced_shapes_of_jagged_scenes_drawn_by_pillow_redraw_exactly():
    """Scenes of the kind the import benchmark measures, small: jagged polygons of many
    vertices (long diagonal and stepped borders, many crossings a row, holes), drawn by Pillow
    as the official scripts draw them, traced, then redrawn."""
    for seed in range(6):
        scene = jagged_polygons_json(seed, width=160, height=96, segments=40)
        ids = pillow_polygons((96, 160), (
            (np.asarray(o["polygon"], float).ravel(), 1000 + k)
            for k, o in enumerate(scene["objects"])))
        check_traced_shapes(ids.astype(np.int32))


@pytest.mark.parametrize("polygon, problem", [
    ([[0, 0], [2, 1], [0, 2]], "an edge along no row, column or diagonal"),
    ([[0, 0], [5, 0], [5, 12]], "a vertex outside the image"),
    ([[0, -1], [3, -1], [3, 2]], "a vertex outside the image"),
])
def test_redraw_refuses_what_no_tracing_gives(polygon, problem):
    regions = [Region(1, np.array([[1, 1], [1, 1], [1, 1]], np.int32), 0.0),
               Region(2, np.array(polygon, np.int32), 1.0)]
    with pytest.raises(ValueError, match=f"polygon 1 has {problem}"):
        redraw((10, 10), regions)


def test_redraw_paints_in_the_type_asked_for():
    ids = grid("#### #22# #22# ####")
    regions = trace_regions(ids)
    assert redraw(ids.shape, regions).dtype == np.int32
    drawn = redraw(ids.shape, regions, dtype=np.uint16)
    assert drawn.dtype == np.uint16 and np.array_equal(drawn, ids)


def test_edge_polygons_of_a_block_and_of_a_block_with_a_hole():
    # A pixel's edges run from (x, y) to (x + 1, y + 1): a 3x2 block at (1, 1) has corners
    # (1, 1), (4, 1), (4, 3), (1, 3).
    (block,) = trace_edge_polygons(grid("..... .###. .###."))[1]
    assert sorted(map(tuple, block.tolist())) == [(1, 1), (1, 3), (4, 1), (4, 3)]
    assert every_vertex_turns(block)
    # A 6x6 block with a one-pixel hole at (4, 4): the hole is joined by one cut to the nearest
    # outer corner, (6, 6), from the hole's corner nearest to it, at distance 2^0.5 * 1.
    (holed,) = trace_edge_polygons(grid("###### ###### ###### ###### ####.# ######"))[1]
    vertices = set(map(tuple, holed.tolist()))
    assert vertices == {(0, 0), (6, 0), (6, 6), (0, 6), (4, 4), (5, 4), (5, 5), (4, 5)}
    outer = {(0, 0), (6, 0), (6, 6), (0, 6)}
    cuts = {frozenset((tuple(a), tuple(b))) for a, b in zip(holed.tolist(), np.roll(holed, -1, 0).tolist())
            if (tuple(a) in outer) != (tuple(b) in outer)}
    assert all((6, 6) in cut for cut in cuts) and len(cuts) == 1
    # A wide hole: met first (findContours scans rows) at its top left corner (1, 1), whose
    # nearest outer corner is (0, 0), not a corner nearer to the hole's other end.
    (wide,) = trace_edge_polygons(grid("####### #.....# #.....# #######"))[1]
    outer = {(0, 0), (7, 0), (7, 4), (0, 4)}
    cuts = {frozenset((tuple(a), tuple(b))) for a, b in zip(wide.tolist(), np.roll(wide, -1, 0).tolist())
            if (tuple(a) in outer) != (tuple(b) in outer)}
    assert cuts == {frozenset({(0, 0), (1, 1)})}


def test_sparse_values_are_traced_around_their_pixels_not_across_their_boxes(monkeypatch):
    # Twenty values of five lone pixels each, three at the corners of an L 1000 pixels wide:
    # boxes of a million pixels, of which five are the value's. Along pixel edges (COCO), they
    # are cut apart by empty rows, then by empty columns until no part is sparse: no crop traced
    # is larger than SPARSE_AREA (the three pixels of a row in one 1x1001 box, the others
    # alone). Outlines through pixel centres and masks take no boxes at all.
    ids = np.zeros((2048, 2048), np.uint16)
    for value in range(1, 21):
        k = 40 * value
        ids[k, k] = ids[k, k + 1000] = ids[k + 1000, k + 1000] = value
        ids[k + 2, k] = ids[k, k + 2] = value  # one empty row, one empty column: cut there too
    # Boxes of just over 2^14 pixels (781 x 21), flat at the top right and tall at the bottom
    # left, each of two lone pixels.
    ids[0, 1000] = ids[20, 1780] = 21
    ids[1000, 0] = ids[1780, 20] = 22
    traced = []
    find_contours = cv2.findContours
    monkeypatch.setattr(cv2, "findContours",
                        lambda image, *a, **k: traced.append(image.shape) or find_contours(image, *a, **k))
    regions = trace_regions(ids)
    masks = segments(ids)
    assert traced == []
    edges = trace_edge_polygons(ids)
    assert max(h * w for h, w in traced) <= trace.SPARSE_AREA and (1, 1001) in traced
    assert sum(h * w for h, w in traced) < 2 * 104 * 1001
    assert len(regions) == 104 and sum(map(len, edges.values())) == 104 and len(masks) == 22


def test_misses_are_traced_group_by_group_each_in_its_own_box():
    # Wrongly drawn pixels (digits, their true values; '.' drawn right): lone pixels, an L whose
    # box holds a lone pixel of another group, and one group of two values.
    picture = "3...... ....... .4.5... .4..... .444... ....... .6677.."
    ids = grid(picture)
    wrong = ids != 0
    fixes = trace._trace_misses(ids, wrong)
    drawn = redraw(ids.shape, fixes, under=np.full(ids.shape, -1, np.int32))
    assert np.array_equal(drawn, np.where(wrong, ids, -1))
    assert sorted(r.value for r in fixes) == [3, 4, 5, 6, 7]
    lone = {r.value: r.polygon.tolist() for r in fixes if r.value in (3, 5)}
    assert lone == {3: [[0, 0]] * 3, 5: [[3, 2]] * 3}


@pytest.mark.parametrize(
    ("picture", "mixed"),
    [
        ("3...... ....... .4.5... .4..... .444... ....... .6677..", True),
        ("3...... ....... .4.5... .4..... .444... ....... .66.77.", False),
        # A row's ends are not neighbours of each other or of the next rows' ends.
        ("2...1 2.... ...1. 3....", False),
        (".3 4.", True),  # diagonal neighbours
        ("44444 4...4 4.3.4 4...4 44444", False),  # a group with a hole, another inside it
    ],
)
def test_a_group_of_one_value_is_its_own_outline(picture, mixed, monkeypatch):
    """Where no two neighbouring wrong pixels differ, each group's fix is the outline the whole
    mask's tracing found, as tracing each group in its own box finds it."""
    ids = grid(picture)
    wrong = ids != 0
    assert trace._mixed_neighbours(ids, wrong) is mixed
    fast = trace._trace_misses(ids, wrong)
    monkeypatch.setattr(trace, "_mixed_neighbours", lambda ids, wrong: True)
    by_group = trace._trace_misses(ids, wrong)
    assert [(r.value, r.polygon.tolist(), r.area) for r in fast] == [
        (r.value, r.polygon.tolist(), r.area) for r in by_group
    ]


def test_runs_are_the_horizontal_stretches_of_one_value_grouped_by_value_in_image_order():
    ids = grid("1122 2222 3113")
    values, rows, cols, ends, firsts = trace.value_runs(ids)
    assert values.dtype == np.int64
    assert list(zip(values.tolist(), rows.tolist(), cols.tolist(), ends.tolist())) == [
        (1, 0, 0, 1), (1, 2, 1, 2), (2, 0, 2, 3), (2, 1, 0, 3), (3, 2, 0, 0), (3, 2, 3, 3)]
    assert firsts.tolist() == [0, 2, 4]


def runs_by_rows(ids: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The runs as a person would list them, a row at a time, then grouped by value (a stable
    sort keeps image order within a value)."""
    runs = []
    for row, line in enumerate(ids.tolist()):
        col = 0
        for value, group in itertools.groupby(line):
            length = len(list(group))
            runs.append((value, row, col, col + length - 1))
            col += length
    return sorted(runs, key=lambda run: run[0])


RUN_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64]


@pytest.mark.parametrize("dtype", RUN_DTYPES)
def test_runs_of_every_integer_type_and_width(dtype):
    """Widths around the 16-byte blocks the scan compares at once; few values and long runs,
    many values and short ones; the extremes of the type."""
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    for width in [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100]:
        for values in (np.array([info.min, 0, 1, info.max]), rng.integers(0, 1 << 7, 50)):
            choice = rng.integers(0, len(values), (6, width))
            ids = values.astype(dtype)[choice]
            ids[:, width // 2 :] = ids[:, width // 2 : width // 2 + 1]  # a long run a row
            got = trace.value_runs(ids)
            assert all(a.dtype == np.int64 for a in got)
            assert list(zip(*(a.tolist() for a in got[:4]))) == runs_by_rows(ids)


def test_runs_of_values_too_far_apart_for_counting_are_sorted_all_the_same():
    rng = np.random.default_rng(6)
    ids = rng.choice(np.array([-(1 << 62), -3, 0, 5, 1 << 40, (1 << 62) + 7]), (20, 33))
    values, rows, cols, ends, firsts = trace.value_runs(ids)
    got = list(zip(values.tolist(), rows.tolist(), cols.tolist(), ends.tolist()))
    assert got == runs_by_rows(ids)
    assert values[firsts].tolist() == sorted(set(ids.ravel().tolist()))


def test_runs_of_a_crop_are_those_of_its_pixels():
    ids = np.random.default_rng(7).integers(0, 3, (30, 40)).astype(np.uint16)
    crop = ids[5:20:2, 3:31]  # not contiguous
    got = trace.value_runs(crop)
    assert list(zip(*(a.tolist() for a in got[:4]))) == runs_by_rows(crop)


@pytest.mark.parametrize("bad", [np.zeros((3, 3), np.uint64), np.zeros((3, 3), float),
                                 np.zeros(9, np.uint16), np.zeros((3, 3), bool)])
def test_runs_want_a_2d_image_of_integers(bad):
    with pytest.raises(TypeError, match="2-D integer image"):
        trace.value_runs(bad)


def test_outer_borders_refuse_runs_of_another_image():
    ids = grid("1122 2222 3113")
    with pytest.raises(ValueError, match="runs do not match the image"):
        trace._component_borders(grid("2112 2222 3113"), (0,), (0, 0), trace.value_runs(ids))
