"""Cityscapes panoptic ground truth: what the official `createPanopticImgs.py` derives from
instanceIds, made from the same pixels (COCO panoptic format).

Each instanceIds value v of an evaluated class is a segment whose id is v itself, drawn in an RGB
PNG as id = R + 256 G + 256^2 B; crowd regions and stuff keep their class id (v < 1000), and only
a class with instances marks such a region `iscrowd`. Classes not evaluated (the official table's
`ignoreInEval` ones, or a task's background) are left 0, void. Per subset one JSON lists, in the
order of the instanceIds paths, each image and its `segments_info` (ascending id).

For a task's own label map (not the official table) the categories are its labels but the
background, in id order, each its own supercategory, `isthing` when the label has instances; the
train-id variant exists for the official table only.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO

import cv2
import numpy as np
import orjson

from worker.cityscapes.labels import IGNORE_TRAIN_ID, LabelMap
from worker.cityscapes.manifest import ImageRecord
from worker.cityscapes.png import encode_png_rows
from worker.errors import ClientError

TRAIN_ID_SUFFIX = "_trainId"
# The official table's category column (its `supercategory`), by class id.
_OFFICIAL_SUPERCATEGORIES = {
    **dict.fromkeys(range(7), "void"), **dict.fromkeys(range(7, 11), "flat"),
    **dict.fromkeys(range(11, 17), "construction"), **dict.fromkeys(range(17, 21), "object"),
    21: "nature", 22: "nature", 23: "sky", 24: "human", 25: "human",
    **dict.fromkeys(range(26, 34), "vehicle"), -1: "vehicle",
}
_BAND_ROWS = 256  # rows measured at a time
_RUN_RECORDS = 4096  # records sorted in memory before they go to a file
_MERGE_FAN_IN = 128  # sorted files read at once


@dataclass(frozen=True)
class PanopticVariant:
    """One JSON and PNG folder per subset: `cityscapes_panoptic_<subset><suffix>`."""

    suffix: str
    categories: tuple[dict, ...]  # as the JSON lists them
    category_of_class: dict[int, int]  # class id -> category id

    def to_json(self) -> dict:
        return {"suffix": self.suffix, "categories": list(self.categories),
                "classes": [[c, k] for c, k in self.category_of_class.items()]}

    @classmethod
    def from_json(cls, document: dict) -> PanopticVariant:
        return cls(document["suffix"], tuple(document["categories"]),
                   {c: k for c, k in document["classes"]})


@dataclass(frozen=True)
class PanopticScheme:
    """Which classes are segments (evaluated), which of them are things, and the variants."""

    things: frozenset[int]
    variants: tuple[PanopticVariant, ...]

    @property
    def classes(self) -> dict[int, int]:
        return self.variants[0].category_of_class


def panoptic_scheme(label_map: LabelMap, train_ids: bool = False) -> PanopticScheme:
    """The categories of `label_map`: the official script's for the official table (its
    `--use-train-id` variant too when `train_ids`), else the task's labels but the background."""
    if label_map.official:
        evaluated = [lb for lb in label_map.labels
                     if lb.id >= 0 and lb.train_id not in (IGNORE_TRAIN_ID, -1)]
        supercategory = {lb.id: _OFFICIAL_SUPERCATEGORIES[lb.id] for lb in evaluated}
    else:
        evaluated = [lb for lb in label_map.labels if lb.id > label_map.background.id]
        supercategory = {lb.id: lb.name for lb in evaluated}
    identities: list[tuple[str, Callable]] = [("", lambda lb: lb.id)]
    if train_ids and label_map.official:
        identities.append((TRAIN_ID_SUFFIX, lambda lb: lb.train_id))
    variants = tuple(
        PanopticVariant(
            suffix,
            tuple({"color": list(lb.color), "id": category(lb), "isthing": int(lb.has_instances),
                   "name": lb.name, "supercategory": supercategory[lb.id]} for lb in evaluated),
            {lb.id: category(lb) for lb in evaluated},
        )
        for suffix, category in identities
    )
    return PanopticScheme(frozenset(lb.id for lb in evaluated if lb.has_instances), variants)


def class_of(segment_id: int) -> int:
    return segment_id // 1000 if segment_id >= 1000 else segment_id


def segment_rgb(values: np.ndarray, scheme: PanopticScheme) -> np.ndarray:
    """(N, 3) uint8: the panoptic colour of each instanceIds value, black for void ones."""
    values = np.asarray(values, np.int64)
    classes = np.where(values >= 1000, values // 1000, values)
    evaluated = np.isin(classes, list(scheme.classes))
    rgb = np.stack([values % 256, values // 256 % 256, values // 65536 % 256], axis=-1)
    return np.where(evaluated[:, None], rgb, 0).astype(np.uint8)


def colored(index: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """colors[index], an (H, W, 3) image: for 8-bit indices by OpenCV's table lookup, per
    channel (a quarter of the time numpy's indexing takes on a photo-sized image)."""
    if index.dtype == np.uint8 and len(colors) <= 256:
        table = np.zeros((1, 256, 3), np.uint8)
        table[0, : len(colors)] = colors
        return cv2.LUT(cv2.cvtColor(index, cv2.COLOR_GRAY2RGB), table)
    return np.take(colors, index, axis=0)


class SegmentExtents:
    """Area and bounding box of each code (a small integer per pixel) of an image seen band by
    band, from its horizontal runs: label images are flat, so runs are few."""

    def __init__(self, size: int):
        self.area = np.zeros(size, np.int64)
        self.left = np.full(size, np.iinfo(np.int64).max)
        self.top = np.full(size, np.iinfo(np.int64).max)
        self.right = np.full(size, -1, np.int64)
        self.bottom = np.full(size, -1, np.int64)

    def add_rows(self, y0: int, rows: np.ndarray) -> None:
        width = rows.shape[1]
        if not rows.size:
            return
        flat = rows.ravel()
        begins = np.empty(flat.size, bool)
        begins[0] = True
        np.not_equal(flat[1:], flat[:-1], out=begins[1:])
        begins[::width] = True  # runs end with their row
        starts = np.flatnonzero(begins)
        ends = np.append(starts[1:], flat.size)
        codes = flat[starts].astype(np.intp)
        row = starts // width
        np.add.at(self.area, codes, ends - starts)
        np.minimum.at(self.left, codes, starts - row * width)
        np.maximum.at(self.right, codes, ends - 1 - row * width)
        np.minimum.at(self.top, codes, row + y0)
        np.maximum.at(self.bottom, codes, row + y0)

    def by_value(self, values: np.ndarray) -> dict[int, list[int]]:
        """value -> [area, left, top, right, bottom], for codes standing for `values[code]`
        (several codes may stand for one value)."""
        merged: dict[int, list[int]] = {}
        for code in np.flatnonzero(self.area).tolist():
            value = int(values[code])
            box = [int(self.area[code]), int(self.left[code]), int(self.top[code]),
                   int(self.right[code]), int(self.bottom[code])]
            if value in merged:
                old = merged[value]
                box = [old[0] + box[0], min(old[1], box[1]), min(old[2], box[2]),
                       max(old[3], box[3]), max(old[4], box[4])]
            merged[value] = box
        return merged


def measure(width: int, height: int, rows: Callable[[int, int], np.ndarray], size: int
            ) -> SegmentExtents:
    """The extents of the codes of an image given by `rows(y0, y1)`, codes below `size`."""
    extents = SegmentExtents(size)
    for y0 in range(0, height, _BAND_ROWS):
        extents.add_rows(y0, np.asarray(rows(y0, min(height, y0 + _BAND_ROWS))).reshape(-1, width))
    return extents


def segments(extents: dict[int, list[int]], scheme: PanopticScheme) -> list[list[int]]:
    """[id, area, x, y, width, height, iscrowd] of each evaluated value, ascending."""
    found = []
    for value in sorted(extents):
        cls = class_of(value)
        if cls not in scheme.classes:
            continue
        area, left, top, right, bottom = extents[value]
        crowd = int(value < 1000 and cls in scheme.things)
        found.append([value, area, left, top, right - left + 1, bottom - top + 1, crowd])
    return found


def segments_info(found: list[list[int]], variant: PanopticVariant) -> list[dict]:
    """The JSON's `segments_info` of an image's segments, in one variant."""
    return [{"area": area, "bbox": [x, y, w, h],
             "category_id": variant.category_of_class[class_of(value)], "id": value,
             "iscrowd": crowd} for value, area, x, y, w, h, crowd in found]


def panoptic_from_instance_ids(instance_ids: np.ndarray, scheme: PanopticScheme
                               ) -> tuple[np.ndarray, list[list[int]]]:
    """The panoptic RGB image and segments of an instanceIds image (any integer array)."""
    values, codes = np.unique(instance_ids, return_inverse=True)
    codes = codes.reshape(instance_ids.shape)
    height, width = instance_ids.shape
    extents = measure(width, height, lambda y0, y1: codes[y0:y1], len(values))
    return segment_rgb(values, scheme)[codes], segments(extents.by_value(values), scheme)


def image_panoptic(image: ImageRecord, rows: Callable[[int, int], np.ndarray], values: np.ndarray,
                   scheme: PanopticScheme, instance_ids_path: str) -> tuple[bytes, dict]:
    """An image's panoptic PNG and record, from its instanceIds as an index image (`rows`) and
    the value of each index (`values`): made band by band, like the other PNGs."""
    colors = segment_rgb(values, scheme)
    png = encode_png_rows(image.width, image.height, np.uint8, 3,
                          lambda y0, y1: colored(rows(y0, y1), colors))
    extents = measure(image.width, image.height, rows, len(values))
    return png, image_record(image, instance_ids_path, segments(extents.by_value(values), scheme))


def check_png_paths(images: Iterable[ImageRecord], scheme: PanopticScheme) -> None:
    """Panoptic PNGs lie in one folder per subset, named by the image alone: two images whose
    PNGs would share a path (one name in two cities, say) are refused, naming both."""
    seen: dict[str, str] = {}
    for image in images:
        for variant in scheme.variants:
            path = png_path(image, variant)
            if path in seen:
                raise ClientError(f"images {seen[path]!r} and {image.name!r} would both have the"
                                  f" panoptic PNG {path}; rename one")
            seen[path] = image.name


def folder(subset: str, variant: PanopticVariant) -> str:
    return f"gtFine/cityscapes_panoptic_{subset}{variant.suffix}"


def png_path(image: ImageRecord, variant: PanopticVariant) -> str:
    return f"{folder(image.subset, variant)}/{image.stem}_gtFine_panoptic.png"


def json_path(subset: str, variant: PanopticVariant) -> str:
    return folder(subset, variant) + ".json"


def image_record(image: ImageRecord, instance_ids_path: str, found: list[list[int]]) -> dict:
    """What the subset JSON needs of one image; `instance_ids_path` orders the images, as the
    official script lists them (its sorted glob of instanceIds files)."""
    return {"subset": image.subset, "key": instance_ids_path, "id": image.stem,
            "width": image.width, "height": image.height, "segments": found}


def record_order(record: dict) -> tuple[str, str]:
    return record["subset"], record["key"]


def sorted_lines(records: Iterable[dict]) -> bytes:
    """Records as JSON lines in the subsets' order: a sorted run for `merge_runs`."""
    return _run_text([_line(r) for r in records])


def _line(record: dict) -> tuple[tuple[str, str], bytes]:
    return record_order(record), orjson.dumps(record) + b"\n"


def _run_text(lines: list[tuple[tuple[str, str], bytes]]) -> bytes:
    lines.sort(key=lambda line: line[0])
    return b"".join(text for _, text in lines)


def read_run(path: str) -> Iterator[dict]:
    with open(path, "rb") as lines:
        for line in lines:
            yield orjson.loads(line)


def merge_runs(paths: list[str], workdir: str) -> Iterator[dict]:
    """The records of sorted runs (files of `sorted_lines`) in one order, reading a bounded
    number of files at once: many runs are merged into fewer files first."""
    level = 0
    while len(paths) > _MERGE_FAN_IN:
        merged = []
        for start in range(0, len(paths), _MERGE_FAN_IN):
            group = paths[start:start + _MERGE_FAN_IN]
            path = os.path.join(workdir, f"merge-{level}-{start}.jsonl")
            with open(path, "wb") as out:
                merged_records = heapq.merge(*map(read_run, group), key=record_order)
                out.writelines(orjson.dumps(record) + b"\n" for record in merged_records)
            merged.append(path)
        paths, level = merged, level + 1
    return heapq.merge(*map(read_run, paths), key=record_order)


class RecordSpool:
    """Records arriving in any order, kept as sorted runs in files of `workdir`: memory holds a
    run's worth (as JSON text, a few hundred bytes an image), however many images."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.runs: list[str] = []
        self.pending: list[tuple[tuple[str, str], bytes]] = []

    def add(self, record: dict) -> None:
        self.pending.append(_line(record))
        if len(self.pending) >= _RUN_RECORDS:
            self._spill()

    def _spill(self) -> None:
        path = os.path.join(self.workdir, f"records-{len(self.runs):06d}.jsonl")
        with open(path, "wb") as out:
            out.write(_run_text(self.pending))
        self.runs.append(path)
        self.pending = []

    def sorted_records(self) -> Iterator[dict]:
        if self.pending:
            self._spill()
        return merge_runs(self.runs, self.workdir)


# The official JSON is json.dump(..., sort_keys=True, indent=4): written here piece by piece in
# exactly that text, so that a subset of any size streams through.
_IND = "    "


def _string(text: str) -> str:
    return json.dumps(text)


def _indented(value: object, depth: int) -> str:
    """A value as json.dump(indent=4) writes it `depth` levels deep."""
    return json.dumps(value, sort_keys=True, indent=4).replace("\n", "\n" + _IND * depth)


def annotation_text(record: dict, variant: PanopticVariant) -> str:
    i2, i3, i4, i5, i6 = (_IND * d for d in range(2, 7))
    found = record["segments"]
    if found:
        items = ",\n".join(
            f'{i4}{{\n{i5}"area": {area},\n{i5}"bbox": [\n{i6}{x},\n{i6}{y},\n{i6}{w},\n{i6}{h}\n'
            f'{i5}],\n{i5}"category_id": {variant.category_of_class[class_of(value)]},\n'
            f'{i5}"id": {value},\n{i5}"iscrowd": {crowd}\n{i4}}}'
            for value, area, x, y, w, h, crowd in found)
        listed = f"[\n{items}\n{i3}]"
    else:
        listed = "[]"
    image_id = _string(record["id"])
    file_name = _string(record["id"] + "_gtFine_panoptic.png")
    return (f'{i2}{{\n{i3}"file_name": {file_name},\n{i3}"image_id": {image_id},\n'
            f'{i3}"segments_info": {listed}\n{i2}}}')


def image_text(record: dict) -> str:
    i2, i3 = _IND * 2, _IND * 3
    file_name = _string(record["id"] + "_gtFine_leftImg8bit.png")
    return (f'{i2}{{\n{i3}"file_name": {file_name},\n{i3}"height": {record["height"]},\n'
            f'{i3}"id": {_string(record["id"])},\n{i3}"width": {record["width"]}\n{i2}}}')


@dataclass
class SubsetDocument:
    """A subset's JSON of one variant, its two long lists kept in files until it is read."""

    subset: str
    variant: PanopticVariant
    annotations: BinaryIO
    images: BinaryIO
    count: int

    @property
    def path(self) -> str:
        return json_path(self.subset, self.variant)

    def pieces(self) -> Iterator[bytes]:
        """The document's text, in pieces of at most 1 MiB (a subset has one image or more)."""
        categories = ",\n".join(_IND * 2 + _indented(c, 2) for c in self.variant.categories)
        yield b'{\n    "annotations": ['
        yield from _contents(self.annotations)
        yield b'\n    ],\n    "categories": '
        yield (f"[\n{categories}\n    ]" if categories else "[]").encode()
        yield b',\n    "images": ['
        yield from _contents(self.images)
        yield b"\n    ]\n}"


def _contents(spool: BinaryIO) -> Iterator[bytes]:
    spool.seek(0)
    while block := spool.read(1 << 20):
        yield block


def subset_documents(records: Iterable[dict], variants: Iterable[PanopticVariant]
                     ) -> Iterator[SubsetDocument]:
    """Each subset's documents (one per variant), from records in `record_order`. A document is
    valid until the next one is asked for."""
    variants = tuple(variants)
    records = iter(records)
    record = next(records, None)
    while record is not None:
        subset = record["subset"]
        with ExitStack() as files:
            images = files.enter_context(tempfile.TemporaryFile())
            annotations = [files.enter_context(tempfile.TemporaryFile()) for _ in variants]
            count = 0
            while record is not None and record["subset"] == subset:
                separator = b",\n" if count else b"\n"  # json.dump's, before each element
                for variant, spool in zip(variants, annotations):
                    spool.write(separator + annotation_text(record, variant).encode())
                images.write(separator + image_text(record).encode())
                count += 1
                record = next(records, None)
            for variant, spool in zip(variants, annotations):
                yield SubsetDocument(subset, variant, spool, images, count)
