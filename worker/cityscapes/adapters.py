"""Input adapters: CVAT for images 1.1 XML and COCO instances JSON, turned into manifest v1.

The format is told by content (or forced by the job). A converted file is written to the job's
work folder and read by `read_manifest` like any manifest, so every check of manifest v1 applies
to it as well; the adapters only check what a manifest cannot express (a CVAT point list, a COCO
category id) and name the image and shape of the source file in their messages.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, BinaryIO

import ijson
import numpy as np
import orjson

from worker.cityscapes.export import MAX_INSTANCES
from worker.cityscapes.labels import Color, LabelMap, color_hex, normalize_name, parse_color
from worker.cityscapes.manifest import MAX_PROBLEMS, Manifest, crowd_flag, read_manifest
from worker.cityscapes.rle import decode_mask_box, mask_runs
from worker.errors import ClientError, LabelMapError, ManifestError

FORMATS = ("manifest", "cvat", "coco")
MAX_WARNINGS = 200
_OFFICIAL = LabelMap.cityscapes()


def load_annotations(
    path: str | os.PathLike,
    workdir: str | os.PathLike,
    fmt: str = "auto",
    name: str | None = None,
    coco_rle_instances: bool = False,
) -> Manifest:
    """The export's annotations as a Manifest, whatever their format; conversion warnings (shapes
    skipped) are in `manifest.warnings`. Shapes go to `workdir`, which the caller owns.

    Messages name the file `name` (the job's URL, when `path` is a downloaded copy) or `path`.
    `coco_rle_instances` reads COCO RLE annotations marked crowd as instances (see
    coco_to_manifest).
    """
    source = os.fspath(path)
    if fmt not in ("auto", *FORMATS):
        raise ClientError(f"annotations format {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    try:
        chosen = detect_format(source) if fmt == "auto" else fmt
        if chosen == "manifest":
            return read_manifest(source, workdir)
        return _convert(source, Path(workdir), chosen, coco_rle_instances)
    except ManifestError as exc:
        if exc.source == (name or source):
            raise
        raise ManifestError(name or source, exc.problems) from None


def _convert(source: str, workdir: Path, fmt: str, coco_rle_instances: bool) -> Manifest:
    problems = _Problems(source)
    writer = _ManifestFile(workdir)
    try:
        with _open(source) as stream:
            if fmt == "cvat":
                cvat_to_manifest(stream, writer, problems)
            else:
                coco_to_manifest(stream, writer, problems, coco_rle_instances)
        problems.raise_any()
        manifest = read_manifest(writer.finish(), workdir)
    finally:
        writer.discard()
    manifest.warnings = writer.warnings[:MAX_WARNINGS]
    if len(writer.warnings) > MAX_WARNINGS:
        manifest.warnings.append(f"... and {len(writer.warnings) - MAX_WARNINGS} more warnings")
    return manifest


def detect_format(path: str | os.PathLike) -> str:
    """'cvat' for XML; 'coco' for a JSON object whose first top-level key of the two is
    "annotations" (COCO's) rather than "shapes" (ours); else 'manifest', whose reader then
    reports anything that is not a manifest."""
    source = os.fspath(path)
    with _open(source) as stream:
        head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"<"):
            return "cvat"
        if not head.startswith(b"{"):
            return "manifest"
        stream.seek(0)
        try:
            for prefix, event, value in ijson.parse(stream):
                if not prefix and event == "map_key" and value in ("annotations", "shapes"):
                    return "coco" if value == "annotations" else "manifest"
        except ijson.JSONError:
            pass
    return "manifest"


def _open(source: str) -> BinaryIO:
    try:
        return open(source, "rb")
    except OSError as exc:
        raise ManifestError(source, [f"cannot be read ({exc.strerror})"]) from None


def default_color(name: str) -> Color:
    """A label's colour when the source gives none: the official one for Cityscapes names, else
    one derived from the name (stable whatever the label order)."""
    official = _OFFICIAL.lookup(name)
    if official is not None:
        return official.color
    r, g, b = hashlib.blake2b(name.encode(), digest_size=3).digest()
    return (r, g, b) if (r, g, b) != (0, 0, 0) else (1, 1, 1)


class _Problems:
    """Findings in the source file, raised together (as read_manifest does)."""

    def __init__(self, source: str):
        self.source = source
        self.found: list[str] = []

    def add(self, text: str) -> None:
        self.found.append(text)
        if len(self.found) >= MAX_PROBLEMS:
            self.raise_any()

    def raise_any(self) -> None:
        if self.found:
            raise ManifestError(self.source, self.found)


class _ManifestFile:
    """A manifest v1 written as its images come: shapes to a side file, labels and images (small)
    kept until the end, when the head is written and the shapes copied after it."""

    def __init__(self, workdir: Path):
        self.path = workdir / "converted-manifest.json"
        self._shapes_path = workdir / "converted-shapes.part"
        self._shapes = open(self._shapes_path, "wb")
        self.labels: dict[str, Color] = {}
        self.images: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self._count = 0

    def add_label(self, name: str, color: Color | None = None) -> None:
        if name not in self.labels:
            self.labels[name] = color if color is not None else default_color(name)

    def add_image(self, image: dict[str, Any], shapes: list[dict[str, Any]]) -> None:
        self.images.append(image)
        for shape in shapes:
            self.add_label(shape["label"])
            if self._count:
                self._shapes.write(b",")
            self._shapes.write(orjson.dumps(shape, option=orjson.OPT_SERIALIZE_NUMPY))
            self._count += 1

    def finish(self) -> Path:
        self._shapes.close()
        labels = [{"name": name, "color": color_hex(color)} for name, color in self.labels.items()]
        with open(self.path, "wb") as out:
            out.write(b'{"version":1,"labels":' + orjson.dumps(labels))
            out.write(b',"images":' + orjson.dumps(self.images) + b',"shapes":[')
            with open(self._shapes_path, "rb") as shapes:
                shutil.copyfileobj(shapes, out, 1 << 20)
            out.write(b"]}")
        return self.path

    def discard(self) -> None:
        self._shapes.close()
        for path in (self.path, self._shapes_path):
            path.unlink(missing_ok=True)


def number_instances(shapes: list[dict[str, Any]], objects: list[Hashable]) -> str | None:
    """Give every non-crowd shape of an image an explicit instance number when some object has
    several shapes (a CVAT group, a COCO multi-polygon), so its parts share one id.

    Numbers count per label in drawing order (z_order, then input order), as the export counts
    shapes without one; an image without multi-shape objects is left to the export's count.
    Returns a problem when a label has more objects than instance ids hold.
    """
    if len(set(objects)) == len(objects):
        return None
    order = sorted(range(len(shapes)), key=lambda i: shapes[i].get("z_order", 0))
    counters: Counter[str] = Counter()
    numbers: dict[tuple[str, Hashable], int] = {}
    for i in order:
        shape = shapes[i]
        if crowd_flag(shape.get("attributes", {}).get("is_crowd", False)):
            continue
        label = normalize_name(shape["label"])
        key = (label, objects[i])
        if key not in numbers:
            numbers[key] = counters[label]
            counters[label] += 1
        if numbers[key] >= MAX_INSTANCES:
            return f"more than {MAX_INSTANCES} objects of label {shape['label']!r}"
        shape["instance"] = numbers[key]
    return None


def _finite(values: Any) -> np.ndarray | None:
    """The values as float64 if they are all finite numbers, else None."""
    try:
        array = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        return None
    if array.ndim != 1 or not np.isfinite(array).all():
        return None
    return array


# CVAT for images 1.1 ------------------------------------------------------------------------


def cvat_to_manifest(stream: BinaryIO, writer: _ManifestFile, problems: _Problems) -> None:
    """Read a CVAT for images 1.1 XML stream image by image (flat memory) into `writer`."""
    depth, root = 0, None
    try:
        for event, element in ET.iterparse(stream, events=("start", "end")):
            if event == "start":
                depth += 1
                if root is None:
                    root = element
                    if element.tag != "annotations":
                        problems.add(f"root element is <{element.tag}>, not CVAT's <annotations>")
                        problems.raise_any()
                continue
            depth -= 1
            if depth != 1:
                continue
            if element.tag == "meta":
                _cvat_labels(element, writer, problems)
            elif element.tag == "image":
                _cvat_image(element, len(writer.images), writer, problems)
            elif element.tag == "track":
                problems.add(
                    "holds <track> elements: this is CVAT for video; export the task as"
                    " CVAT for images 1.1"
                )
                problems.raise_any()
            root.clear()  # done with this child: memory stays flat
    except ET.ParseError as exc:
        problems.add(f"is not valid XML ({exc})")
    if root is not None and not writer.images and not problems.found:
        problems.add("has no <image> elements")


def _cvat_labels(meta: ET.Element, writer: _ManifestFile, problems: _Problems) -> None:
    for labels in meta.iter("labels"):
        for label in labels.findall("label"):
            name = label.findtext("name")
            if not name or label.find("parent") is not None:  # skeleton points have a parent
                continue
            color_text = (label.findtext("color") or "").strip()
            try:
                color = parse_color(color_text, f"label {name!r}") if color_text else None
            except LabelMapError as exc:
                problems.add(str(exc))
                continue
            writer.add_label(name, color)


def _cvat_image(
    element: ET.Element, index: int, writer: _ManifestFile, problems: _Problems
) -> None:
    name = element.get("name", "")
    try:
        width, height = int(element.get("width", "")), int(element.get("height", ""))
    except ValueError:
        width = height = 0
    if width <= 0 or height <= 0:
        problems.add(f"image {name!r}: width and height must be positive integers")
        return
    image: dict[str, Any] = {
        "id": _int_or(element.get("id"), index),
        "name": name,
        "width": width,
        "height": height,
    }
    if element.get("subset"):
        image["subset"] = element.get("subset")
    shapes: list[dict[str, Any]] = []
    objects: list[Hashable] = []
    skipped: Counter[str] = Counter()
    for position, child in enumerate(element):
        convert = _CVAT_SHAPES.get(child.tag)
        if convert is None:
            skipped[child.tag] += 1
            continue
        where = f"image {name!r}, shape {position} (<{child.tag}>)"
        label = child.get("label")
        if not label:
            problems.add(f"{where}: no label")
            continue
        try:
            geometry = convert(child, width, height)
            z_order = int(child.get("z_order", "0"))
        except ValueError as exc:
            problems.add(f"{where}: {exc}")
            continue
        attributes: dict[str, Any] = {
            a.get("name", ""): a.text or "" for a in child.iter("attribute")
        }
        if child.get("occluded") == "1":
            attributes["occluded"] = True
        shapes.append(
            {
                "image": image["id"],
                "label": label,
                **geometry,
                "z_order": z_order,
                "attributes": attributes,
            }
        )
        group = child.get("group_id", "0")
        objects.append(("group", group) if group not in ("", "0") else ("shape", position))
    problem = number_instances(shapes, objects)
    if problem:
        problems.add(f"image {name!r}: {problem}")
    if skipped:
        kinds = ", ".join(f"{count} <{kind}>" for kind, count in skipped.items())
        writer.warnings.append(
            f"image {name!r}: skipped {kinds} (only polygons, boxes and masks have an area)"
        )
    writer.add_image(image, shapes)


def _int_or(value: str | None, default: int) -> int | str:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return value


def _number(element: ET.Element, key: str) -> float:
    value = float(element.get(key, "nan"))
    if not math.isfinite(value):
        raise ValueError(f"{key}={element.get(key)!r} is not a finite number")
    return value


def _cvat_polygon(element: ET.Element, width: int, height: int) -> dict[str, Any]:
    text = element.get("points", "")
    try:
        points = np.array(text.replace(";", ",").split(","), np.float64)
    except ValueError:
        points = None
    if points is None or len(points) != 2 * (text.count(";") + 1) or not np.isfinite(points).all():
        raise ValueError(f"points {text[:60]!r} are not 'x,y;x,y;...' finite numbers")
    return {"type": "polygon", "points": points}


def _cvat_box(element: ET.Element, width: int, height: int) -> dict[str, Any]:
    x0, y0, x1, y1 = (_number(element, key) for key in ("xtl", "ytl", "xbr", "ybr"))
    angle = math.radians(_number(element, "rotation")) if element.get("rotation") else 0.0
    if not angle:
        return {"type": "rectangle", "points": [x0, y0, x1, y1]}
    # CVAT turns a box about its centre, clockwise on screen (y points down).
    cx, cy, cos, sin = (x0 + x1) / 2, (y0 + y1) / 2, math.cos(angle), math.sin(angle)
    points = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        points += [cx + cos * (x - cx) - sin * (y - cy), cy + sin * (x - cx) + cos * (y - cy)]
    return {"type": "polygon", "points": points}


def _cvat_mask(element: ET.Element, width: int, height: int) -> dict[str, Any]:
    """CVAT's mask: runs of 0s and 1s alternating (0s first), row by row over the box at
    left/top; as a manifest mask over its pixels' own bounding box (tools such as Datumaro write
    boxes the size of the image), the part outside the image cut off."""
    try:
        left, top, box_w, box_h = (
            int(element.get(k, "")) for k in ("left", "top", "width", "height")
        )
        runs = [int(v) for v in element.get("rle", "").split(",")]
    except ValueError:
        raise ValueError(
            "needs integer left, top, width and height, and rle runs 'a, b, ...'"
        ) from None
    if not (0 < box_w <= 2 * width and 0 < box_h <= 2 * height):
        raise ValueError(f"mask box {box_w}x{box_h} does not fit the {width}x{height} image")
    if min(runs) < 0 or sum(runs) != box_w * box_h:
        raise ValueError(
            f"mask runs cover {sum(runs)} pixels, its {box_w}x{box_h} box has {box_w * box_h}"
        )
    # Row-major runs over the box are column-major runs over its transpose.
    row, column, crop = decode_mask_box({"size": [box_w, box_h], "counts": runs})
    pixels, top, left = crop.T, top + row, left + column
    x0, x1 = max(left, 0), min(left + pixels.shape[1], width)
    y0, y1 = max(top, 0), min(top + pixels.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        x0 = x1 = y0 = y1 = 0
    inside = pixels[y0 - top : y1 - top, x0 - left : x1 - left]
    return {"type": "mask", "box": [x0, y0, x1 - x0, y1 - y0],
            "rle": {"size": [y1 - y0, x1 - x0], "counts": mask_runs(inside)}}


_CVAT_SHAPES: dict[str, Callable[[ET.Element, int, int], dict[str, Any]]] = {
    "polygon": _cvat_polygon,
    "box": _cvat_box,
    "mask": _cvat_mask,
}


# COCO instances ----------------------------------------------------------------------------


def coco_to_manifest(
    stream: BinaryIO, writer: _ManifestFile, problems: _Problems, rle_instances: bool = False
) -> None:
    """Read a COCO instances document into `writer` (loaded whole: it is one JSON value).

    CVAT's COCO export marks every mask `iscrowd: 1`, so read as written its masked objects
    become crowd regions without instance ids: when every RLE annotation is crowd a warning
    says so, and `rle_instances` reads them as instances.
    """
    try:
        document = orjson.loads(stream.read())
    except orjson.JSONDecodeError as exc:
        problems.add(f"is not valid JSON ({exc})")
        return
    if not isinstance(document, dict):
        problems.add("is not a JSON object")
        return
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            problems.add(f"has no {key!r} list (not COCO instances)")
    problems.raise_any()

    categories: dict[Any, str] = {}
    for i, category in enumerate(document["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("name"), str):
            problems.add(f"categories[{i}]: needs an id and a name")
            continue
        if category.get("id") in categories:
            problems.add(f"categories[{i}]: id {category.get('id')!r} is used twice")
            continue
        categories[category.get("id")] = category["name"]
        writer.add_label(category["name"])

    images: dict[Any, dict[str, Any]] = {}
    for i, raw in enumerate(document["images"]):
        if not isinstance(raw, dict) or "id" not in raw:
            problems.add(f"images[{i}]: needs an id")
            continue
        if raw["id"] in images:
            problems.add(f"images[{i}] ({raw.get('file_name')!r}): id {raw['id']!r} is used twice")
            continue
        images[raw["id"]] = {
            "id": raw["id"],
            "name": raw.get("file_name"),
            "width": raw.get("width"),
            "height": raw.get("height"),
        }

    shapes_of: dict[Any, list[tuple[dict[str, Any], int]]] = {key: [] for key in images}
    rle_count = rle_crowds = 0
    for i, annotation in enumerate(document["annotations"]):
        if not isinstance(annotation, dict):
            problems.add(f"annotations[{i}]: not an object")
            continue
        where = f"annotation {annotation.get('id', i)!r}"
        image = images.get(annotation.get("image_id"))
        if image is None:
            problems.add(f"{where}: image_id {annotation.get('image_id')!r} is not in images")
            continue
        where += f" (image {image['name']!r})"
        label = categories.get(annotation.get("category_id"))
        if label is None:
            problems.add(
                f"{where}: category_id {annotation.get('category_id')!r} is not in categories"
            )
            continue
        if not annotation.get("segmentation") and "keypoints" in annotation:
            writer.warnings.append(f"{where}: keypoints only, no area; skipped")
            continue
        try:
            geometries = _coco_geometries(annotation, image)
        except ValueError as exc:
            problems.add(f"{where}: {exc}")
            continue
        crowd = bool(annotation.get("iscrowd", 0))
        if geometries[0]["type"] == "mask":
            rle_count += 1
            rle_crowds += crowd
            crowd = crowd and not rle_instances
        attributes = {"is_crowd": crowd}
        for geometry in geometries:
            shape = {"image": image["id"], "label": label, **geometry, "attributes": attributes}
            shapes_of[image["id"]].append((shape, i))
    if rle_count and rle_crowds == rle_count and not rle_instances:
        writer.warnings.insert(0, (
            f"all {rle_count} RLE annotations are iscrowd, as CVAT's COCO export marks every"
            " mask: they are drawn as crowd regions, without instance ids; to read them as"
            " instances, use --coco-rle-instances (job field coco_rle_instances)"
        ))
    for key, image in images.items():
        shapes = [shape for shape, _ in shapes_of[key]]
        problem = number_instances(shapes, [annotation for _, annotation in shapes_of[key]])
        if problem:
            problems.add(f"image {image['name']!r}: {problem}")
        writer.add_image(image, shapes)


def _coco_geometries(annotation: dict[str, Any], image: dict[str, Any]) -> list[dict[str, Any]]:
    """The shapes of one annotation: one per polygon, or its mask, or else its box."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if size != [image["height"], image["width"]]:
            raise ValueError(
                f"RLE size {size!r} is not the image's [height, width]"
                f" [{image['height']}, {image['width']}]"
            )
        if not isinstance(counts, str) and _finite(counts) is None:
            raise ValueError("RLE counts are neither a string nor a list of numbers")
        return [{"type": "mask", "rle": {"size": size, "counts": counts}}]
    if isinstance(segmentation, list) and segmentation:
        if not isinstance(segmentation[0], list):  # one polygon, not nested: as some tools write
            segmentation = [segmentation]
        polygons = [_finite(polygon) for polygon in segmentation]
        if any(p is None or len(p) % 2 for p in polygons):
            raise ValueError("segmentation is not a list of polygons [x0, y0, x1, y1, ...]")
        return [{"type": "polygon", "points": p} for p in polygons]
    box = _finite(annotation.get("bbox", []))
    if box is None or len(box) != 4:
        raise ValueError("has neither a segmentation nor a bbox [x, y, width, height]")
    x, y, w, h = box
    return [{"type": "rectangle", "points": [x, y, x + w, y + h]}]
