"""Instance-id images back into shapes: one polygon per connected component, ordered so that
drawing them again (with the export's rasterizer) gives the same image.

Components of a label image never overlap, so a component's outer outline either is disjoint from
another's or encloses it (the other sits in a hole). Drawing outlines from the largest enclosed area
down therefore paints every hole's content after its container. Background pockets inside a hole
and pixels that an outline drew wrongly (where a border runs one pixel wide, the rasterizer's fill
and the traced border disagree) are fixed by small shapes drawn on top. What is still wrong after
that is counted and reported.

COCO consumers draw polygons differently (pycocotools: pixels whose centre is inside, even-odd),
so COCO output traces along pixel edges instead (trace_edge_polygons).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

import cv2
import numpy as np

from worker.cityscapes._fill import fill as fill_regions
from worker.cityscapes._runs import scan as scan_runs
from worker.cityscapes._trace import outlines as trace_outlines
from worker.cityscapes.rle import encode_counts, transposed

CORRECTION_ROUNDS = 2


class Region(NamedTuple):
    """One connected component of one pixel value (a tuple: an image has a thousand)."""

    value: int  # the pixel value (class id, or class_id * 1000 + k)
    polygon: np.ndarray  # (N, 2) int32 vertices: pixel centres on the component's border
    area: float  # enclosed area of the outline, for drawing order


@dataclass(frozen=True)
class Segment:
    """All pixels of one value, as a mask (exact by construction)."""

    value: int
    rle: dict


# A value whose box is this large and at most 1/SPARSE_RATIO full (two pixels at opposite corners,
# say) is traced along pixel edges (COCO) in the gap-free parts of its box: cropping whole boxes
# made 10,000 such instances take minutes (measured). Outlines through pixel centres are traced
# for the whole image at once (_trace.c) and need no boxes.
SPARSE_AREA = 1 << 14
SPARSE_RATIO = 8

Box = tuple[int, int, int, int]
Runs = tuple[np.ndarray, ...]  # what value_runs gives


def value_runs(ids: np.ndarray) -> Runs:
    """Horizontal runs of equal value, sorted by value: (values, rows, cols, ends, firsts), where
    `firsts` indexes the first run of each value (int64 arrays; within a value, image order)."""
    data, count = scan_runs(np.ascontiguousarray(ids))
    values, rows, cols, ends = np.frombuffer(data, np.int64).reshape(4, count)
    firsts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return values, rows, cols, ends, firsts


def value_boxes(ids: np.ndarray, runs: Runs | None = None) -> dict[int, Box]:
    """Bounding box (x0, y0, x1, y1), inclusive, of every value in the image, in one pass.

    The image is cut into horizontal runs of equal value (or `runs`, its value_runs if known);
    boxes are reduced over the runs, which are far fewer than the pixels.
    """
    values, rows, cols, ends, firsts = value_runs(ids) if runs is None else runs
    x0 = np.minimum.reduceat(cols, firsts)
    x1 = np.maximum.reduceat(ends, firsts)
    y0 = np.minimum.reduceat(rows, firsts)
    y1 = np.maximum.reduceat(rows, firsts)
    return {
        int(v): (int(a), int(b), int(c), int(d))
        for v, a, b, c, d in zip(values[firsts], x0, y0, x1, y1)
    }


def _area(box: Box) -> int:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def _sparse_runs(
    ids: np.ndarray, boxes: dict[int, Box], skip: tuple[int, ...], runs: Runs | None = None
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, cols, ends) of the runs of each sparse value (see SPARSE_AREA)."""
    large = {v for v, box in boxes.items() if v not in skip and _area(box) > SPARSE_AREA}
    if not large:
        return {}
    values, rows, cols, ends, firsts = value_runs(ids) if runs is None else runs
    counts = np.add.reduceat(ends - cols + 1, firsts)
    bounds = np.append(firsts, len(values))
    out = {}
    for k in np.flatnonzero(np.isin(values[firsts], list(large))):
        value = int(values[firsts[k]])
        if _area(boxes[value]) > SPARSE_RATIO * int(counts[k]):
            part = slice(bounds[k], bounds[k + 1])
            out[value] = (rows[part], cols[part], ends[part])
    return out


def _gap_free_boxes(rows: np.ndarray, cols: np.ndarray, ends: np.ndarray) -> list[Box]:
    """Boxes of groups of runs that no 8-connected component crosses: cut wherever a whole row
    or column between them holds none of the runs (an XY cut), until each group's box is no
    longer sparse (tracing it costs about its pixels) or no cut is left."""
    out, stack = [], [(rows, cols, ends)]
    while stack:
        r, a, b = stack.pop()
        box = (int(a.min()), int(r.min()), int(b.max()), int(r.max()))
        if _area(box) <= max(SPARSE_AREA, SPARSE_RATIO * int((b - a + 1).sum())):
            out.append(box)
            continue
        order = np.argsort(r, kind="stable")
        r, a, b = r[order], a[order], b[order]
        cuts = np.flatnonzero(np.diff(r) > 1) + 1
        if not len(cuts):
            order = np.argsort(a, kind="stable")
            r, a, b = r[order], a[order], b[order]
            cuts = np.flatnonzero(a[1:] > np.maximum.accumulate(b)[:-1] + 1) + 1
        if len(cuts):
            stack.extend(zip(np.split(r, cuts), np.split(a, cuts), np.split(b, cuts)))
        else:
            out.append((int(a.min()), int(r.min()), int(b.max()), int(r.max())))
    return out


def value_parts(
    ids: np.ndarray,
    boxes: dict[int, Box] | None = None,
    skip: tuple[int, ...] = (),
    runs: Runs | None = None,
) -> list[tuple[int, Box]]:
    """(value, box) pairs to trace, covering every component of every value but `skip`: a value's
    box, or for a sparse value the gap-free parts of it, so the work is that of the pixels.
    `boxes` and `runs` are the ids' value_boxes and value_runs, if known."""
    boxes = value_boxes(ids, runs) if boxes is None else boxes
    sparse = _sparse_runs(ids, boxes, skip, runs)
    out = []
    for value, box in boxes.items():
        if value in skip:
            continue
        if value in sparse:
            out.extend((value, part) for part in _gap_free_boxes(*sparse[value]))
        else:
            out.append((value, box))
    return out


def trace_regions(
    ids: np.ndarray,
    skip: tuple[int, ...] = (0,),
    offset: tuple[int, int] = (0, 0),
    runs: Runs | None = None,
) -> list[Region]:
    """Outlines of every component of every value but `skip`, largest enclosed area first;
    `offset` places `ids` (a crop) in the whole image; `runs` are its value_runs if known."""
    values, borders = _component_borders(ids, skip, offset, runs)
    return _regions(values, borders)


def _component_borders(
    ids: np.ndarray, skip: tuple[int, ...], offset: tuple[int, int], runs: Runs | None
) -> tuple[list[int], list[np.ndarray]]:
    """The outer border of every component of every value but `skip`, as findContours traces
    it (_trace.c, all at once), and its value: by value, and within a value in the order
    findContours lists them (the last found first)."""
    ids = np.ascontiguousarray(ids)
    values, rows, cols, ends, _ = value_runs(ids) if runs is None else runs
    table, vertices, count = trace_outlines(ids, values, rows, cols, ends,
                                            tuple(int(v) for v in skip))
    found, lengths = np.frombuffer(table, np.int64).reshape(2, count)
    points = np.frombuffer(vertices, np.int32).reshape(-1, 2)
    if offset != (0, 0):
        points = points + np.array(offset, np.int32)
    order = np.lexsort((-np.arange(count), found)).tolist()
    borders = np.split(points, np.cumsum(lengths)[:-1]) if count else []
    return found[order].tolist(), [borders[i] for i in order]


def _outer_borders(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[np.ndarray]:
    """findContours' outer borders of the mask's components, (N, 2) int32 each; holes are
    left out: their content is drawn by the regions inside them."""
    contours, hierarchy = cv2.findContours(
        mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=offset
    )
    if hierarchy is None:
        return []
    outer = np.flatnonzero(hierarchy[0, :, 3] == -1).tolist()
    return [contours[i].reshape(-1, 2) for i in outer]


_AREA = attrgetter("area")


def _regions(values: list[int], borders: list[np.ndarray]) -> list[Region]:
    """Regions of these borders ((N, 2) int32 each), largest enclosed area first (equal areas in
    the order given).

    The areas are cv2.contourArea's, all at once (shoelace sums of integer vertices: exact); a
    dot or a line (half the regions of a jagged scene) gets its end repeated, a polygon the
    rasterizer draws."""
    if not borders:
        return []
    lengths = np.fromiter(map(len, borders), np.int64, len(borders))
    starts = np.cumsum(lengths) - lengths
    points = np.concatenate(borders)
    following, _ = _rings(lengths)
    x, y = points[:, 0].astype(np.int64), points[:, 1].astype(np.int64)
    twice = np.add.reduceat(x * y[following] - x[following] * y, starts)
    polygons = list(borders)
    short = np.flatnonzero(lengths < 3)
    if len(short):
        ends = starts[short] + lengths[short] - 1
        padded = points[np.minimum(starts[short, None] + np.arange(3), ends[:, None])]
        for i, polygon in zip(short.tolist(), padded):
            polygons[i] = polygon
    regions = list(map(Region, values, polygons, (np.abs(twice) / 2).tolist()))
    regions.sort(key=_AREA, reverse=True)  # stable, as reversed keys are
    return regions


# Chain code of a step (dx, dy) between 8-neighbours, y pointing down: its angle / 45 degrees,
# counter-clockwise as seen on screen (0 = right, 2 = up).
_STEPS = np.array(((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1)))
_STEP_CODE = np.full((3, 3), -1, np.int64)
_STEP_CODE[_STEPS[:, 1] + 1, _STEPS[:, 0] + 1] = np.arange(8)
# Pixel corner k (odd: at angle k * 45 degrees from the pixel's centre) from the pixel's top left.
_CORNER = np.zeros((8, 2), np.int64)
_CORNER[[1, 3, 5, 7]] = ((1, 0), (0, 0), (0, 1), (1, 1))


def trace_edge_polygons(
    ids: np.ndarray,
    boxes: dict[int, tuple[int, int, int, int]] | None = None,
    runs: Runs | None = None,
) -> dict[int, list[np.ndarray]]:
    """Per value but 0: one polygon per connected component along its pixels' outer edges
    (integer corners), its holes joined in by zero-width cuts.

    Filled even-odd at pixel centres, the rule of pycocotools (COCO consumers), such a polygon
    covers exactly the component's pixels: the cuts are walked once each way and cancel. Outlines
    through pixel centres (trace_regions) lose about half a pixel all round there instead.
    """
    out: dict[int, list[np.ndarray]] = {}
    for value, (x0, y0, x1, y1) in value_parts(ids, boxes, (0,), runs):
        crop = (ids[y0 : y1 + 1, x0 : x1 + 1] == value).view(np.uint8)
        borders, hierarchy = cv2.findContours(
            crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE, offset=(x0, y0)
        )
        outlines = _pixel_edge_outlines(borders)
        parents = hierarchy[0][:, 3]
        holes: dict[int, list[np.ndarray]] = {}
        for i in np.flatnonzero(parents != -1):
            holes.setdefault(int(parents[i]), []).append(outlines[i])
        out.setdefault(value, []).extend(
            _join_holes(outlines[i], holes.get(int(i), [])) for i in np.flatnonzero(parents == -1)
        )
    return out


def _pixel_edge_outlines(borders: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The pixel-edge outlines of borders that findContours traced (every pixel, background on
    the right as seen on screen): each pixel adds the corners where the outline turns on its way
    round the pixel's outer side, from where it arrives to where it leaves. All borders at once:
    each is a ring in one long array."""
    lengths = np.array([len(b) for b in borders])
    points = np.concatenate(borders).reshape(-1, 2)
    following, _ = _rings(lengths)
    step = points[following] - points
    leaving = _STEP_CODE[step[:, 1] + 1, step[:, 0] + 1]
    arriving = np.empty_like(leaving)
    arriving[following] = leaving
    first = (arriving - 3 - (arriving & 1)) % 8  # the corner shared with the previous pixel
    last = (leaving - 1 + (leaving & 1)) % 8  # the corner shared with the next one
    count = ((last - first) % 8) // 2  # corners from first on, before last
    count[(count == 0) & (leaving == (arriving + 4) % 8)] = 4  # the end of a diagonal line
    lone = (np.cumsum(lengths) - 1)[lengths == 1]  # a one-pixel border: all four corners
    first[lone], last[lone], count[lone] = 3, 3, 4
    # Every corner a pixel adds after its first is a turn; its first is one unless the outline
    # arrives along the direction it leaves in (the last edge of the previous pixel that added any).
    active = np.flatnonzero(count)
    active_lengths = np.add.reduceat(count > 0, np.cumsum(lengths) - lengths)
    _, preceding = _rings(active_lengths)
    skip = (last[active[preceding]] == (first[active] + 2) % 8).astype(np.int64)
    emitted = count[active] - skip
    owner = np.repeat(active, emitted)
    nth = np.arange(len(owner)) - np.repeat(np.cumsum(emitted) - emitted, emitted)
    corners = points[owner] + _CORNER[(first[owner] + 2 * (nth + np.repeat(skip, emitted))) % 8]
    ends = np.cumsum(np.add.reduceat(emitted, np.cumsum(active_lengths) - active_lengths))
    return np.split(corners, ends[:-1])


def _rings(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the next and the previous element, for rings of these lengths laid end to end."""
    ends = np.cumsum(lengths)
    following = np.arange(1, ends[-1] + 1)
    following[ends - 1] = ends - lengths
    preceding = np.empty_like(following)
    preceding[following] = np.arange(ends[-1])
    return following, preceding


def _join_holes(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """One polygon: the outer outline with each hole's outline walked from the outer vertex
    nearest to the hole's first vertex (near its top: findContours scans rows) and back again."""
    if not holes:
        return outer
    tops = np.array([h[0] for h in holes], np.int64)
    xs, ys = outer[:, 0].astype(np.int64), outer[:, 1].astype(np.int64)
    anchors = np.concatenate([  # nearest outer vertex, in blocks of holes to bound the memory
        np.argmin(np.square(xs - block[:, :1]) + np.square(ys - block[:, 1:]), axis=1)
        for block in np.split(tops, range(64, len(tops), 64))
    ])
    parts, start = [], 0
    for k in np.argsort(anchors, kind="stable"):
        anchor = int(anchors[k])
        parts += [outer[start : anchor + 1], holes[k], holes[k][:1], outer[anchor : anchor + 1]]
        start = anchor + 1
    parts.append(outer[start:])
    joined = np.concatenate(parts)
    # a hole touching the outline at its nearest vertex: no cut, no repeated vertex
    return joined[np.any(joined != joined[np.arange(-1, len(joined) - 1)], axis=1)]


def redraw(
    shape: tuple[int, int], regions: list[Region], under: np.ndarray | None = None,
    dtype: np.dtype | type = np.int32,
) -> np.ndarray:
    """The image the export draws from these regions, in this order, over `under` (or 0 of
    `dtype`).

    Traced outlines have their vertices on pixel centres and only horizontal, vertical and
    diagonal edges; such a polygon covers its edges' pixels and those between its crossings of
    each row, which _fill.c paints for all regions in one call (OpenCV's fillPoly, which paints
    the same pixels, took a call a polygon and half again the time). The test suite checks the
    redraw against Pillow's polygon (the export's rasterizer), and every round trip goes through
    the real export.
    """
    drawn = np.zeros(shape, dtype) if under is None else under.copy()
    _draw(drawn, regions)
    return drawn


def _draw(drawn: np.ndarray, regions: list[Region]) -> None:
    """Regions painted in order (by _fill.c, all in one call)."""
    if not regions:
        return
    count = len(regions)
    fill_regions(
        drawn,
        np.concatenate([r.polygon for r in regions]).astype(np.int32, copy=False),
        np.fromiter((len(r.polygon) for r in regions), np.int64, count),
        np.fromiter((r.value for r in regions), np.int64, count),
    )


def trace_shapes(ids: np.ndarray, runs: Runs | None = None) -> tuple[list[Region], int]:
    """Regions (in drawing order) that redraw `ids`; and how many pixels they still miss.

    Value 0 (background) becomes a region only where it must cover a wrongly drawn pixel.
    Fixes are drawn on top, so each round only paints its own fixes over the last drawing.
    """
    # Drawn in the ids' own type (16-bit for instanceIds): at 16384x16384 every byte a pixel
    # is 268 MB.
    regions = trace_regions(ids, runs=runs)
    drawn = redraw(ids.shape, regions, dtype=ids.dtype)
    for _ in range(CORRECTION_ROUNDS):
        wrong = ids != drawn
        if not wrong.any():
            return regions, 0
        fixes = _trace_misses(ids, wrong)
        regions += fixes
        _draw(drawn, fixes)
    return regions, int(np.count_nonzero(ids != drawn))


def _trace_misses(ids: np.ndarray, wrong: np.ndarray) -> list[Region]:
    """Regions of the true values of the wrongly drawn pixels, largest enclosed area first.

    They are few and scattered over the whole image: each 8-connected group of them is found by
    its outline. A group of one value (where no two neighbouring wrong pixels differ: nearly
    always) is that outline, as tracing it in its own box would find it again; otherwise each
    group is traced in its own box, a group of several values value by value as trace_regions
    traces an image.
    """
    # A hole in a group is left out: what lies in it is a group of its own.
    outer = _outer_borders(wrong.view(np.uint8))
    if not _mixed_neighbours(ids, wrong):
        firsts = np.stack([group[0] for group in outer])
        return _regions(ids[firsts[:, 1], firsts[:, 0]].tolist(), outer)
    values: list[int] = []
    borders: list[np.ndarray] = []
    for group in outer:
        x, y = group[0].tolist()
        if len(group) == 1:
            values.append(int(ids[y, x]))
            borders.append(group)
            continue
        x0, y0, w, h = cv2.boundingRect(group)
        box = (slice(y0, y0 + h), slice(x0, x0 + w))
        _, labels = cv2.connectedComponents(wrong[box].view(np.uint8), connectivity=8)
        own = labels == labels[y - y0, x - x0]  # other groups may lie in the box too
        pixels = ids[box]
        value = pixels[y - y0, x - x0]
        if np.all(pixels[own] == value):
            found = _outer_borders(own.view(np.uint8), (x0, y0))
            values += [int(value)] * len(found)
            borders += found
        else:
            misses = np.where(own, pixels.astype(np.int64), -1)
            found_values, found = _component_borders(misses, (-1,), (x0, y0), None)
            values += found_values
            borders += found
    return _regions(values, borders)


# Half of the 8 neighbours (right, down-left, down, down-right): each pair is looked at once.
_NEIGHBOURS = ((0, 1), (1, -1), (1, 0), (1, 1))


def _mixed_neighbours(ids: np.ndarray, wrong: np.ndarray) -> bool:
    """Whether two 8-neighbouring wrong pixels have different values (then some group of them
    has several), looked at the wrong pixels only."""
    height, width = ids.shape
    at = np.flatnonzero(wrong)
    rows, cols = np.divmod(at, width)
    flat_ids, flat_wrong = ids.reshape(-1), wrong.reshape(-1)
    values = flat_ids[at]
    for dy, dx in _NEIGHBOURS:
        inside = (rows + dy < height) & (cols + dx >= 0) & (cols + dx < width)
        near = at[inside] + (dy * width + dx)
        if np.any(flat_wrong[near] & (flat_ids[near] != values[inside])):
            return True
    return False


def segments(
    ids: np.ndarray, skip: tuple[int, ...] = (0,), boxes: dict[int, Box] | None = None
) -> list[Segment]:
    """Every value but `skip` (of those `boxes` has, if given) as one exact mask (COCO RLE).

    COCO counts pixels column after column: the runs of the image's columns are the runs of its
    transpose's rows (value_runs: by value, each value's in column order), so every value's
    counts come from one pass over the pixels. A run that reaches the bottom of a column and one
    that starts at the top of the next are one run of COCO's."""
    height, width = ids.shape
    values, columns, tops, bottoms, firsts = value_runs(transposed(ids))
    starts = columns * height + tops
    stops = columns * height + bottoms + 1
    bounds = np.append(firsts, len(values)).tolist()
    out = []
    for k, value in enumerate(values[firsts].tolist()):
        if value in skip or (boxes is not None and value not in boxes):
            continue
        first, last = starts[bounds[k] : bounds[k + 1]], stops[bounds[k] : bounds[k + 1]]
        opens = np.ones(len(first), bool)
        opens[1:] = first[1:] != last[:-1]
        closes = np.append(opens[1:], True)
        edges = np.empty(2 * int(opens.sum()) + 2, np.int64)
        edges[0], edges[-1] = 0, height * width
        edges[1:-1:2], edges[2:-1:2] = first[opens], last[closes]
        counts = np.diff(edges).tolist()
        if not counts[-1]:
            counts.pop()
        out.append(Segment(value, {"size": [height, width], "counts": encode_counts(counts)}))
    return out
