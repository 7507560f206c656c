"""Input adapters: CVAT for images 1.1 XML and COCO instances JSON, turned into manifest v1.

The format is told by content (or forced by the job). A converted file is written to the job's
work folder and read by `read_manifest` like any manifest, so every check of manifest v1 applies
to it as well; the adapters only check what a manifest cannot express (a CVAT point list, a COCO
category id) and name the image and shape of the source file in their messages.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import os
import re
import shutil
import stat
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
from worker.cityscapes.manifest import (
    INT64,
    MAX_DEPTH,
    MAX_IMAGE_SIDE,
    MAX_PROBLEMS,
    MAX_RLE_RUNS,
    MAX_SHAPES_PER_IMAGE,
    MAX_VALUE_BYTES,
    MAX_VERTICES,
    Manifest,
    crowd_flag,
    json_events,
    read_manifest,
    shown,
)
from worker.cityscapes.rle import checked_runs, decode_mask_box, mask_runs
from worker.errors import ClientError, LabelMapError, ManifestError

FORMATS = ("manifest", "cvat", "coco")
MAX_WARNINGS = 200
# COCO is one JSON value, loaded whole by orjson, whose objects take several times the file
# (not yet measured at the limit); COCO 2017's train file, 448 MiB, stays within it.
MAX_COCO_BYTES = 512 << 20
# XML: a tag with its attributes, or a text, between two '<' (a polygon at MAX_VERTICES is ~20 MB).
MAX_XML_TOKEN = MAX_VALUE_BYTES
# Elements inside one child of <annotations> (an <image> and its shapes and their attributes).
MAX_XML_ELEMENTS = 16 * MAX_SHAPES_PER_IMAGE
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
    """'cvat' for XML (UTF-8, UTF-16 or UTF-32, with a BOM or without); 'coco' for a JSON
    object whose first top-level key of the two is "annotations" (COCO's) rather than "shapes"
    (ours); else 'manifest', whose reader then reports anything that is not a manifest."""
    source = os.fspath(path)
    with _open(source) as stream:
        if xml_encoding(stream.read(4096)) is not None:
            return "cvat"
        stream.seek(0)
        if not stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
            return "manifest"
        try:
            for prefix, event, value in json_events(stream, source):
                if not prefix and event == "map_key" and value in ("annotations", "shapes"):
                    return "coco" if value == "annotations" else "manifest"
        except ijson.JSONError:
            pass
    return "manifest"


# XML 1.0 appendix F: the byte order mark, or the first bytes of "<?xml", give the encoding
# family; UTF-32 before UTF-16, whose BOM begins UTF-32's.
_XML_BOMS = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
             (b"\xef\xbb\xbf", "utf-8"), (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"))
_XML_STARTS = ((b"\x00\x00\x00<", "utf-32-be"), (b"<\x00\x00\x00", "utf-32-le"),
               (b"\x00<\x00?", "utf-16-be"), (b"<\x00?\x00", "utf-16-le"))
_DECLARED = re.compile(rb"""<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
# What expat reads itself (and Python's handler, for one-byte encodings such as cp1252).
_EXPAT_NATIVE = ("utf_8", "utf_16", "utf_16_le", "utf_16_be", "ascii", "latin_1")


def xml_encoding(head: bytes) -> str | None:
    """The encoding of an XML document from its first bytes and declaration (Python's codec
    name), or None if it does not begin as XML."""
    family = next((name for bom, name in _XML_BOMS if head.startswith(bom)), None)
    if family is not None:
        text = codecs.decode(head[len(codecs.BOM_UTF8) if family == "utf-8" else 0 :][:1024],
                             family, "ignore")
        if not text.lstrip("\ufeff \t\r\n").startswith("<"):
            return None
    else:
        family = next((name for start, name in _XML_STARTS if head.startswith(start)), None)
        if family is None:
            if not head.lstrip(b" \t\r\n").startswith(b"<"):
                return None
            family = "utf-8"
    if family != "utf-8":
        return family
    declared = _DECLARED.match(head.lstrip(b"\xef\xbb\xbf \t\r\n"))
    return declared[1].decode().lower() if declared else "utf-8"


class _XmlReads:
    """The XML file as expat is fed it: each read ends just past a '<' (byte 0x3C, in every
    encoding read here), so that no tag or text spans two reads. Expat 2.5 parses a token cut by
    a read again from its start at each read: an 80 MB attribute in 16 KB reads costs its length
    squared (minutes). A token of more than MAX_XML_TOKEN bytes is refused. Encodings expat
    cannot read (UTF-32, multi-byte ones such as Shift_JIS) are decoded here and fed as UTF-8."""

    def __init__(self, stream: BinaryIO, source: str, encoding: str):
        self._stream, self.source = stream, source
        self._buffer = bytearray()
        self._eof = False
        self.offset = 0
        self._decoder = None
        try:
            codec = codecs.lookup(encoding).name.replace("-", "_")
        except LookupError:
            raise ManifestError(
                source, [f"declares encoding {encoding[:40]!r}, which is unknown"]
            ) from None
        if codec not in _EXPAT_NATIVE and not _single_byte(codec):
            self._decoder = codecs.getincrementaldecoder(codec)()

    @property
    def transcoded(self) -> bool:
        return self._decoder is not None

    def read(self, size: int = -1) -> bytes:
        while True:
            cut = self._buffer.rfind(b"<")
            if cut >= 0 or (self._eof and self._buffer):
                end = cut + 1 if cut >= 0 else len(self._buffer)
                out = bytes(self._buffer[:end])
                del self._buffer[:end]
                return out
            if self._eof:
                return b""
            if len(self._buffer) > MAX_XML_TOKEN:
                raise ManifestError(self.source, [
                    f"holds a tag or text of more than {MAX_XML_TOKEN >> 20} MiB near byte"
                    f" {self.offset:,}"])
            data = self._stream.read(1 << 20)
            self._eof = not data
            if self._decoder is not None:
                try:
                    data = self._decoder.decode(data, final=self._eof).encode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ManifestError(self.source, [
                        f"holds bytes that are not {exc.encoding} near byte"
                        f" {self.offset + exc.start:,}"]) from None
            self.offset += len(data)
            self._buffer += data


def _single_byte(codec: str) -> bool:
    """Whether Python's expat handler reads `codec` (it maps each byte to one character)."""
    try:
        return len(bytes(range(256)).decode(codec, "replace")) == 256
    except (LookupError, TypeError, ValueError):
        return False


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
    """A manifest v1 written as its images come: images and shapes to side files, labels
    (small) kept until the end, when the head is written and the side files copied after it."""

    def __init__(self, workdir: Path):
        self.path = workdir / "converted-manifest.json"
        self._images_path = workdir / "converted-images.part"
        self._shapes_path = workdir / "converted-shapes.part"
        self._images = open(self._images_path, "wb")
        self._shapes = open(self._shapes_path, "wb")
        self.labels: dict[str, Color] = {}
        self.warnings: list[str] = []
        self.image_count = 0
        self._count = 0

    def add_label(self, name: str, color: Color | None = None) -> None:
        if name not in self.labels:
            self.labels[name] = color if color is not None else default_color(name)

    def add_image(self, image: dict[str, Any], shapes: list[dict[str, Any]]) -> None:
        self._images.write((b"," if self.image_count else b"") + orjson.dumps(image))
        self.image_count += 1
        for shape in shapes:
            self.add_label(shape["label"])
            if self._count:
                self._shapes.write(b",")
            self._shapes.write(orjson.dumps(shape, option=orjson.OPT_SERIALIZE_NUMPY))
            self._count += 1

    def finish(self) -> Path:
        self._images.close()
        self._shapes.close()
        labels = [{"name": name, "color": color_hex(color)} for name, color in self.labels.items()]
        with open(self.path, "wb") as out:
            out.write(b'{"version":1,"labels":' + orjson.dumps(labels) + b',"images":[')
            for part, after in ((self._images_path, b'],"shapes":['), (self._shapes_path, b"]}")):
                with open(part, "rb") as spooled:
                    shutil.copyfileobj(spooled, out, 1 << 20)
                out.write(after)
        return self.path

    def discard(self) -> None:
        self._images.close()
        self._shapes.close()
        for path in (self.path, self._images_path, self._shapes_path):
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
    """The values as float64 if they are a list of finite JSON numbers, else None."""
    if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
        return None
    try:
        array = np.asarray(values, np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if array.ndim != 1 or not np.isfinite(array).all():
        return None
    return array


# CVAT for images 1.1 ------------------------------------------------------------------------


def cvat_to_manifest(stream: BinaryIO, writer: _ManifestFile, problems: _Problems) -> None:
    """Read a CVAT for images 1.1 XML stream image by image (flat memory) into `writer`."""
    stream.seek(0)
    encoding = xml_encoding(stream.read(4096)) or "utf-8"
    stream.seek(0)
    reads = _XmlReads(stream, problems.source, encoding)
    parser = ET.XMLParser(encoding="utf-8") if reads.transcoded else None
    depth, root, top, inside, shapes = 0, None, None, 0, 0
    try:
        for event, element in ET.iterparse(reads, events=("start", "end"), parser=parser):
            if event == "start":
                depth += 1
                if root is None:
                    root = element
                    if element.tag != "annotations":
                        problems.add(
                            f"root element is <{element.tag[:40]}>, not CVAT's <annotations>"
                        )
                        problems.raise_any()
                elif depth == 2:
                    top, inside, shapes = element, 0, 0
                else:
                    inside += 1
                    shapes += depth == 3
                    if depth > MAX_DEPTH or inside > MAX_XML_ELEMENTS or (
                            shapes > MAX_SHAPES_PER_IMAGE and top.tag == "image"):
                        _refuse_crowded(top, depth, inside, shapes, problems)
                continue
            depth -= 1
            if depth != 1:
                continue
            if element.tag == "meta":
                _cvat_labels(element, writer, problems)
            elif element.tag == "image":
                _cvat_image(element, writer.image_count, writer, problems)
            elif element.tag == "track":
                problems.add(
                    "holds <track> elements: this is CVAT for video; export the task as"
                    " CVAT for images 1.1"
                )
                problems.raise_any()
            root.clear()  # done with this child: memory stays flat
    except ET.ParseError as exc:
        problems.add(f"is not valid XML ({exc})")
    except ValueError as exc:  # pyexpat: an encoding it cannot read
        problems.add(f"is not readable XML ({exc})")
    if root is not None and not writer.image_count and not problems.found:
        problems.add("has no <image> elements")


def _refuse_crowded(
    element: ET.Element, depth: int, inside: int, shapes: int, problems: _Problems
) -> None:
    what = f"<{element.tag[:40]}>"
    if element.get("name") is not None:
        what = f"<{element.tag[:40]} name={shown(element.get('name'))}>"
    if depth > MAX_DEPTH:
        problems.add(f"{what}: elements are nested more than {MAX_DEPTH} levels deep")
    elif inside > MAX_XML_ELEMENTS:
        problems.add(f"{what}: holds more than {MAX_XML_ELEMENTS:,} elements")
    else:
        problems.add(f"{what}: holds more than {MAX_SHAPES_PER_IMAGE:,} shapes")
    problems.raise_any()


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
        image_id = _cvat_id(element.get("id"), index)
    except ValueError as exc:
        problems.add(f"image {shown(name)}: {exc}")
        return
    try:
        width, height = _cvat_int(element, "width"), _cvat_int(element, "height")
    except ValueError:
        width = height = 0
    if width <= 0 or height <= 0:
        problems.add(f"image {shown(name)}: width and height must be positive integers")
        return
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        problems.add(f"image {shown(name)}: {width}x{height} is more than {MAX_IMAGE_SIDE} a side")
        return
    image: dict[str, Any] = {"id": image_id, "name": name, "width": width, "height": height}
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
        where = f"image {shown(name)}, shape {position} (<{child.tag}>)"
        label = child.get("label")
        if not label:
            problems.add(f"{where}: no label")
            continue
        attributes: dict[str, Any] = {
            a.get("name", ""): a.text or "" for a in child.iter("attribute")
        }
        try:
            geometry = convert(child, width, height)
            z_order = _cvat_int(child, "z_order", 0)
            crowd_flag(attributes.get("is_crowd", False))
        except ValueError as exc:
            problems.add(f"{where}: {exc}")
            continue
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
        problems.add(f"image {shown(name)}: {problem}")
    if skipped:
        kinds = ", ".join(f"{count} <{kind[:40]}>" for kind, count in skipped.items())
        writer.warnings.append(
            f"image {shown(name)}: skipped {kinds} (only polygons, boxes and masks have an area)"
        )
    writer.add_image(image, shapes)


_WHOLE = re.compile(r"\s*[+-]?[0-9]{1,19}\s*", re.ASCII)


def _cvat_int(element: ET.Element, key: str, default: int | None = None) -> int:
    """A whole-number attribute (ASCII digits, within 64 bits)."""
    text = element.get(key)
    if text is None and default is not None:
        return default
    value = int(text) if text is not None and _WHOLE.fullmatch(text) else None
    if value is None or not -INT64 <= value < INT64:
        raise ValueError(f"{key}={shown(text)} is not a whole number within 64 bits")
    return value


def _cvat_id(value: str | None, default: int) -> int | str:
    """An image id: a number as CVAT writes them, else kept as text (it only links shapes)."""
    if value is None:
        return default
    if re.fullmatch(r"\s*[+-]?[0-9]+\s*", value, re.ASCII):
        number = int(value) if len(value) < 40 else INT64
        if not -INT64 <= number < INT64:
            raise ValueError(f"id={shown(value)} is not a whole number within 64 bits")
        return number
    return value


def _number(element: ET.Element, key: str) -> float:
    try:
        value = float(element.get(key, "nan"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{key}={shown(element.get(key))} is not a finite number")
    return value


def _cvat_polygon(element: ET.Element, width: int, height: int) -> dict[str, Any]:
    text = element.get("points", "")
    vertices = text.count(";") + 1
    if vertices > MAX_VERTICES:
        raise ValueError(f"polygon has {vertices:,} vertices, more than {MAX_VERTICES:,}")
    try:
        points = np.array(text.replace(";", ",").split(","), np.float64)
    except ValueError:
        points = None
    if points is None or len(points) != 2 * vertices or not np.isfinite(points).all():
        raise ValueError(f"points {shown(text)} are not 'x,y;x,y;...' finite numbers")
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
    text = element.get("rle", "")
    if text.count(",") >= MAX_RLE_RUNS:
        raise ValueError(f"mask has {text.count(',') + 1:,} runs, more than {MAX_RLE_RUNS:,}")
    pieces = text.split(",")
    try:
        left, top, box_w, box_h = (
            _cvat_int(element, k) for k in ("left", "top", "width", "height")
        )
        if not all(_WHOLE.fullmatch(piece) for piece in pieces):
            raise ValueError(text)
    except ValueError:
        raise ValueError(
            "needs integer left, top, width and height, and rle runs 'a, b, ...'"
        ) from None
    runs = [int(piece) for piece in pieces]
    if not (0 < box_w <= 2 * width and 0 < box_h <= 2 * height):
        raise ValueError(f"mask box {box_w}x{box_h} does not fit the {width}x{height} image")
    if min(runs) < 0:
        raise ValueError("mask runs are not all positive")
    if sum(runs) != box_w * box_h:
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
    document = _load_coco(stream, problems)
    if document is None:
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
        if not isinstance(category, dict) or not isinstance(category.get("name"), str) \
                or not _is_key(category.get("id")):
            problems.add(f"categories[{i}]: needs an id (a number or text) and a name")
            continue
        if category["id"] in categories:
            problems.add(f"categories[{i}]: id {shown(category['id'])} is used twice")
            continue
        categories[category["id"]] = category["name"]
        writer.add_label(category["name"])

    images: dict[Any, dict[str, Any]] = {}
    for i, raw in enumerate(document["images"]):
        if not isinstance(raw, dict) or not _is_key(raw.get("id")):
            problems.add(f"images[{i}]: needs an id (a number or text)")
            continue
        where = f"images[{i}] ({shown(raw.get('file_name'))})"
        if raw["id"] in images:
            problems.add(f"{where}: id {shown(raw['id'])} is used twice")
            continue
        if not isinstance(raw.get("file_name"), str):
            problems.add(f"{where}: file_name is not text")
            continue
        width, height = raw.get("width"), raw.get("height")
        if not all(type(v) is int and -INT64 <= v < INT64 for v in (width, height)):
            problems.add(
                f"{where}: width and height {shown(width)}, {shown(height)} are not whole"
                " numbers of pixels"
            )
            continue
        images[raw["id"]] = {"id": raw["id"], "name": raw["file_name"], "width": width,
                             "height": height}

    shapes_of: dict[Any, list[tuple[dict[str, Any], int]]] = {key: [] for key in images}
    rle_count = rle_crowds = 0
    annotations = document["annotations"]
    for i, annotation in enumerate(annotations):
        annotations[i] = None  # its numbers are copied to arrays: let its objects go
        if not isinstance(annotation, dict):
            problems.add(f"annotations[{i}]: not an object")
            continue
        given = annotation.get("id", i)
        where = f"annotation {shown(given)}" if _is_key(given) else f"annotations[{i}]"
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        image = images.get(image_id) if _is_key(image_id) else None
        if image is None:
            problems.add(f"{where}: image_id {shown(image_id)} is not in images")
            continue
        where += f" (image {shown(image['name'])})"
        label = categories.get(category_id) if _is_key(category_id) else None
        if label is None:
            problems.add(f"{where}: category_id {shown(category_id)} is not in categories")
            continue
        if not annotation.get("segmentation") and "keypoints" in annotation:
            writer.warnings.append(f"{where}: keypoints only, no area; skipped")
            continue
        try:
            geometries = _coco_geometries(annotation, image)
            crowd = crowd_flag(annotation.get("iscrowd", 0))
        except ValueError as exc:
            problems.add(f"{where}: {exc}")
            continue
        if len(shapes_of[image["id"]]) + len(geometries) > MAX_SHAPES_PER_IMAGE:
            problems.add(f"{where}: the image has more than {MAX_SHAPES_PER_IMAGE:,} shapes")
            continue
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
            problems.add(f"image {shown(image['name'])}: {problem}")
        writer.add_image(image, shapes)


def _load_coco(stream: BinaryIO, problems: _Problems) -> Any:
    """The document, or None with a problem: at most MAX_COCO_BYTES are read (it is loaded
    whole); orjson refuses nesting past 1024 levels, and malformed UTF-8."""
    info = os.fstat(stream.fileno())
    limit = f"{MAX_COCO_BYTES >> 20} MiB, the most a COCO file may be (it is loaded whole)"
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_COCO_BYTES:
        problems.add(f"is {info.st_size / (1 << 20):,.0f} MiB, more than {limit}")
        return None
    data = stream.read(MAX_COCO_BYTES + 1)
    if len(data) > MAX_COCO_BYTES:
        problems.add(f"is more than {limit}")
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc).lower():
            problems.add(f"is nested too deep for a COCO file ({exc})")
        else:
            problems.add(f"is not valid JSON ({exc})")
        return None


def _is_key(value: Any) -> bool:
    """An id as COCO files give them: a number within 64 bits, or text."""
    if type(value) is int:
        return -INT64 <= value < INT64
    return isinstance(value, str) and len(value) <= 1024


def _coco_geometries(annotation: dict[str, Any], image: dict[str, Any]) -> list[dict[str, Any]]:
    """The shapes of one annotation: one per polygon, or its mask, or else its box."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if size != [image["height"], image["width"]]:
            raise ValueError(
                f"RLE size {shown(size)} is not the image's [height, width]"
                f" [{image['height']}, {image['width']}]"
            )
        _, _, runs = checked_runs({"size": size, "counts": counts})
        if len(runs) > MAX_RLE_RUNS:
            raise ValueError(f"RLE has {len(runs):,} runs, more than {MAX_RLE_RUNS:,}")
        return [{"type": "mask", "rle": {"size": size, "counts": counts}}]
    if isinstance(segmentation, list) and segmentation:
        if not isinstance(segmentation[0], list):  # one polygon, not nested: as some tools write
            segmentation = [segmentation]
        polygons = [_finite(polygon) for polygon in segmentation]
        if any(p is None or len(p) % 2 for p in polygons):
            raise ValueError("segmentation is not a list of polygons [x0, y0, x1, y1, ...]")
        vertices = max(len(p) // 2 for p in polygons)
        if vertices > MAX_VERTICES:
            raise ValueError(f"a polygon has {vertices:,} vertices, more than {MAX_VERTICES:,}")
        return [{"type": "polygon", "points": p} for p in polygons]
    box = _finite(annotation.get("bbox", []))
    if box is None or len(box) != 4:
        raise ValueError("has neither a segmentation nor a bbox [x, y, width, height]")
    x, y, w, h = box
    return [{"type": "rectangle", "points": [x, y, x + w, y + h]}]
