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
import xml.etree.ElementTree as ET
from array import array
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
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
    Recall,
    crowd_flag,
    invalid_json,
    json_events,
    read_manifest,
    shown,
    top_level_values,
)
from worker.cityscapes.rle import checked_runs, decode_mask_box, mask_runs
from worker.errors import ClientError, LabelMapError, ManifestError

FORMATS = ("manifest", "cvat", "coco")
MAX_WARNINGS = 200
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
    recall: Recall | None = None,
) -> Manifest:
    """The export's annotations as a Manifest, whatever their format; conversion warnings (shapes
    skipped) are in `manifest.warnings`. Shapes go to `workdir`, which the caller owns.

    Messages name the file `name` (the job's URL, when `path` is a downloaded copy) or `path`.
    `coco_rle_instances` reads COCO RLE annotations marked crowd as instances (see
    coco_to_manifest). `recall`: see read_manifest (a converted file is read in full).
    """
    source = os.fspath(path)
    if fmt not in ("auto", *FORMATS):
        raise ClientError(f"annotations format {fmt!r} is not one of auto, {', '.join(FORMATS)}")
    try:
        chosen = detect_format(source) if fmt == "auto" else fmt
        if chosen == "manifest":
            return read_manifest(source, workdir, recall)
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
    """Read a COCO instances document into `writer` as a stream: categories and images first,
    then annotations, whose shapes are spilled to a side file and handed to the writer image by
    image at the end. Memory holds the images and one image's shapes, not the document: one
    pass when the annotations come last (as writers put them), two otherwise.

    CVAT's COCO export marks every mask `iscrowd: 1`, so read as written its masked objects
    become crowd regions without instance ids: when every RLE annotation is crowd a warning
    says so, and `rle_instances` reads them as instances.
    """
    reader = _CocoReader(stream, writer, problems, rle_instances)
    with _ShapeSpill(writer.path.parent / "coco-shapes.part") as spill:
        try:
            reader.read_annotations(reader.read_head(), spill)
        except ijson.JSONError as exc:
            raise invalid_json(problems.source, exc) from None
        problems.raise_any()
        spill.group(len(reader.images))
        for position, image in enumerate(reader.images.values()):
            shapes, objects = spill.shapes_of(position)
            problem = number_instances(shapes, objects)
            if problem:
                problems.add(f"image {shown(image['name'])}: {problem}")
            writer.add_image(image, shapes)


_COCO_LISTS = ("images", "annotations", "categories")


class _CocoReader:
    """The parts of a COCO document, read from its parse events as they come."""

    def __init__(self, stream: BinaryIO, writer: _ManifestFile, problems: _Problems,
                 rle_instances: bool):
        self.stream, self.writer, self.problems = stream, writer, problems
        self.rle_instances = rle_instances
        self.lists: set[str] = set()  # top-level keys whose value is a list
        self.root: str | None = None  # the first parse event: start_map for an object
        self.categories: dict[Any, str] = {}
        self.images: dict[Any, dict[str, Any]] = {}  # id -> image, in file order
        self._image_problems: list[str] = []  # reported after the categories'

    def _events(self) -> Iterator[tuple[str, str, Any]]:
        for prefix, event, value in json_events(self.stream, self.problems.source):
            if self.root is None:
                self.root = event
            if event == "start_array" and prefix in _COCO_LISTS:
                self.lists.add(prefix)
            yield prefix, event, value

    def _require(self, keys: tuple[str, ...]) -> None:
        """A document that is not COCO instances fails on that alone."""
        if self.root != "start_map":
            self.problems.add("is not a JSON object")
        for key in _COCO_LISTS:
            if key in keys and key not in self.lists:
                self.problems.add(f"has no {key!r} list (not COCO instances)")
        self.problems.raise_any()

    def read_head(self) -> Iterator[tuple[str, Any]] | None:
        """Categories, then images; returns the values still to come when the annotations
        follow them (the same pass reads those), else None (a second pass will)."""
        keys: set[str] = set()
        categories: list[Any] = []
        images = 0
        wanted = ("categories.item", "images.item", "annotations.item")
        values = top_level_values(self._events(), wanted)
        rest = None
        for prefix, value in values:
            if prefix == "":
                if value == "annotations" and {"categories", "images"} <= keys:
                    rest = values
                    break
                keys.add(value)
            elif prefix == "categories.item":
                categories.append(value)  # few; checked before the images, as they name them
            elif prefix == "images.item":
                self._add_image(images, value)
                images += 1
        # The whole file was read when the annotations did not come last.
        self._require(("images", "categories") if rest else _COCO_LISTS)
        for i, category in enumerate(categories):
            self._add_category(i, category)
        for problem in self._image_problems:
            self.problems.add(problem)
        return rest

    def _add_image(self, i: int, raw: Any) -> None:
        problems = self._image_problems
        if not isinstance(raw, dict) or not _is_key(raw.get("id")):
            problems.append(f"images[{i}]: needs an id (a number or text)")
            return
        where = f"images[{i}] ({shown(raw.get('file_name'))})"
        if raw["id"] in self.images:
            problems.append(f"{where}: id {shown(raw['id'])} is used twice")
            return
        if not isinstance(raw.get("file_name"), str):
            problems.append(f"{where}: file_name is not text")
            return
        width, height = raw.get("width"), raw.get("height")
        if not all(type(v) is int and -INT64 <= v < INT64 for v in (width, height)):
            problems.append(
                f"{where}: width and height {shown(width)}, {shown(height)} are not whole"
                " numbers of pixels"
            )
            return
        self.images[raw["id"]] = {"id": raw["id"], "name": raw["file_name"], "width": width,
                                  "height": height}

    def _add_category(self, i: int, category: Any) -> None:
        if not isinstance(category, dict) or not isinstance(category.get("name"), str) \
                or not _is_key(category.get("id")):
            self.problems.add(f"categories[{i}]: needs an id (a number or text) and a name")
        elif category["id"] in self.categories:
            self.problems.add(f"categories[{i}]: id {shown(category['id'])} is used twice")
        else:
            self.categories[category["id"]] = category["name"]
            self.writer.add_label(category["name"])

    def read_annotations(self, rest: Iterator[tuple[str, Any]] | None, spill: _ShapeSpill) -> None:
        if rest is None:
            rest = top_level_values(self._events(), ("annotations.item",))
        positions = {key: position for position, key in enumerate(self.images)}
        rle_count = rle_crowds = 0
        i = -1
        for prefix, annotation in rest:
            if prefix != "annotations.item":
                continue
            i += 1
            mask = self._add_annotation(i, annotation, positions, spill)
            if mask is not None:
                rle_count += 1
                rle_crowds += mask
        self._require(("annotations",))
        if rle_count and rle_crowds == rle_count and not self.rle_instances:
            self.writer.warnings.insert(0, (
                f"all {rle_count} RLE annotations are iscrowd, as CVAT's COCO export marks every"
                " mask: they are drawn as crowd regions, without instance ids; to read them as"
                " instances, use --coco-rle-instances (job field coco_rle_instances)"
            ))

    def _add_annotation(self, i: int, annotation: Any, positions: dict[Any, int],
                        spill: _ShapeSpill) -> bool | None:
        """Spill the annotation's shapes; for a mask, whether it is marked crowd."""
        if not isinstance(annotation, dict):
            self.problems.add(f"annotations[{i}]: not an object")
            return None
        given = annotation.get("id", i)
        where = f"annotation {shown(given)}" if _is_key(given) else f"annotations[{i}]"
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        image = self.images.get(image_id) if _is_key(image_id) else None
        if image is None:
            self.problems.add(f"{where}: image_id {shown(image_id)} is not in images")
            return None
        where += f" (image {shown(image['name'])})"
        label = self.categories.get(category_id) if _is_key(category_id) else None
        if label is None:
            self.problems.add(f"{where}: category_id {shown(category_id)} is not in categories")
            return None
        if not annotation.get("segmentation") and "keypoints" in annotation:
            self.writer.warnings.append(f"{where}: keypoints only, no area; skipped")
            return None
        try:
            geometries = _coco_geometries(annotation, image)
            crowd = crowd_flag(annotation.get("iscrowd", 0))
        except ValueError as exc:
            self.problems.add(f"{where}: {exc}")
            return None
        position = positions[image["id"]]
        if spill.count(position) + len(geometries) > MAX_SHAPES_PER_IMAGE:
            self.problems.add(f"{where}: the image has more than {MAX_SHAPES_PER_IMAGE:,} shapes")
            return None
        mask = crowd if geometries[0]["type"] == "mask" else None
        if mask is not None:
            crowd = crowd and not self.rle_instances
        attributes = {"is_crowd": crowd}
        for geometry in geometries:
            spill.add(position, i, {"image": image["id"], "label": label, **geometry,
                                    "attributes": attributes})
        return mask


class _ShapeSpill:
    """Shapes as they come, in a side file, found again by image: a few integers a shape stay
    in memory (its image's position, its object, where its JSON lies)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "w+b")
        self._owner, self._object = array("q"), array("q")
        self._offset, self._length = array("q"), array("q")
        self._counts: Counter[int] = Counter()
        self._end = 0
        self._order = self._starts = np.zeros(0, np.int64)

    def __enter__(self) -> _ShapeSpill:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def count(self, position: int) -> int:
        return self._counts[position]

    def add(self, position: int, obj: int, shape: dict[str, Any]) -> None:
        data = orjson.dumps(shape, option=orjson.OPT_SERIALIZE_NUMPY)
        self._file.write(data)
        self._owner.append(position)
        self._object.append(obj)
        self._offset.append(self._end)
        self._length.append(len(data))
        self._end += len(data)
        self._counts[position] += 1

    def group(self, images: int) -> None:
        """All shapes are in: sort them by image (stably: file order within an image)."""
        self._file.flush()
        owners = np.array(self._owner, np.int64)
        self._order = np.argsort(owners, kind="stable")
        self._starts = np.searchsorted(owners[self._order], np.arange(images + 1))

    def shapes_of(self, position: int) -> tuple[list[dict[str, Any]], list[int]]:
        """The shapes of the image at `position`, in file order, and their objects."""
        picked = self._order[self._starts[position]:self._starts[position + 1]]
        fd = self._file.fileno()
        shapes = [orjson.loads(os.pread(fd, self._length[k], self._offset[k])) for k in picked]
        return shapes, [self._object[k] for k in picked]


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
