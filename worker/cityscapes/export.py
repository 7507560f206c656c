"""The per-image export step: shapes in, the image's Cityscapes files out.

All shapes of an image are painted once, as shape indices, with Pillow's polygon rasterizer (the
one the official scripts use, so the pixels agree exactly); every output image is then a 256-entry
lookup of that index image, so an image costs one rasterization whatever the number of outputs.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
import orjson
from PIL import Image, ImageDraw

from worker.cityscapes.labels import IGNORE_TRAIN_ID, Label, LabelMap
from worker.cityscapes.manifest import ImageRecord, Shape
from worker.cityscapes.panoptic import image_panoptic, panoptic_scheme, png_path
from worker.cityscapes.png import encode_png_rows
from worker.cityscapes.rle import decode_mask_box
from worker.errors import ShapeError

MAX_INSTANCES = 1000  # k in class_id * 1000 + k
MAX_INSTANCE_ID = 65535  # instanceIds images are 16-bit
# Pillow's polygon fill, the official scripts' rasterizer, holds vertices and their differences
# in 32-bit integers: past 2^30 a polygon can overflow and draw nothing (measured: a triangle at
# +-1.2e9 covering the image draws no pixel). Within it, every vertex is drawn as officially.
MAX_COORDINATE = 1 << 30
# It computes edge crossings in single precision: up to 2^23 an edge stays within a pixel of the
# true line in every row; past it (measured: 3 px at 2^24, 23 px at 1e8) the pixels are still the
# official scripts', and a warning says the edge may stray.
PRECISE_COORDINATE = 1 << 23


# `<city>_<sequence>_<frame>`, the original dataset's image names (frankfurt_000000_000294).
CITY_NAMING = re.compile(r"(?P<city>[A-Za-z][A-Za-z0-9-]*)_\d+_\d+")
DEFAULT_CITY = "default"


@dataclass(frozen=True)
class ZipLayout:
    """Where an image's files go in the zip.

    "cvat" (the default, the format description's): photos under imgsFine/leftImg8bit/, and an
    image whose name has no folder gets no city folder. "cityscapes" (the original dataset's, which
    loaders walking `<split>/<city>/` need): photos under leftImg8bit/ at the root, and every
    image in a city folder. `default_city` is the folder of names that have none and do not follow
    the `<city>_<seq>_<frame>` naming; set, it gives the "cvat" layout city folders too.
    """

    name: str = "cvat"
    default_city: str | None = None

    @property
    def photos_root(self) -> str:
        return "leftImg8bit" if self.name == "cityscapes" else "imgsFine/leftImg8bit"

    def city(self, image: ImageRecord) -> str:
        if image.city:
            return image.city
        fallback = self.default_city or (DEFAULT_CITY if self.name == "cityscapes" else None)
        if fallback is None:
            return ""
        named = CITY_NAMING.fullmatch(image.stem)
        return named["city"] if named else fallback


@dataclass(frozen=True)
class ExportOptions:
    polygons_json: bool = True
    train_ids: bool = False
    layout: ZipLayout = ZipLayout()
    panoptic: bool = False  # the panoptic PNG (worker.cityscapes.panoptic) and its record


@dataclass(frozen=True, slots=True)
class ZipPart:
    """One file of the output archive."""

    path: str
    data: bytes
    compress: bool = False  # PNGs are compressed already; stored as they are


@dataclass
class ImageExport:
    parts: list[ZipPart]
    objects: int
    warnings: list[str] = field(default_factory=list)
    panoptic: dict | None = None  # the image's entry in its subset's panoptic JSON


def gt_path(image: ImageRecord, kind: str, layout: ZipLayout = ZipLayout()) -> str:
    """gtFine/<subset>/<city>/<name>_gtFine_<kind> (the city folder: see ZipLayout)."""
    return gt_prefix(image, layout) + kind


def gt_prefix(image: ImageRecord, layout: ZipLayout) -> str:
    """gt_path without its kind: the same for every file of an image."""
    folder = posixpath.join("gtFine", image.subset, layout.city(image))
    return posixpath.join(folder, f"{image.stem}_gtFine_")


def left_image_path(image: ImageRecord, ext: str, layout: ZipLayout = ZipLayout()) -> str:
    folder = posixpath.join(layout.photos_root, image.subset, layout.city(image))
    return posixpath.join(folder, f"{image.stem}_leftImg8bit{ext}")


def polygon_vertices(points: np.ndarray) -> np.ndarray:
    """Integer (N, 2) vertices: each coordinate to the nearest integer, halves up."""
    return np.floor(points + 0.5).astype(np.int64).reshape(-1, 2)


def rectangle_vertices(points: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = polygon_vertices(points).ravel()
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.int64)


@dataclass(frozen=True, slots=True)
class MaskBox:
    """A mask as the pixels of its bounding box, whose top left corner is (x0, y0)."""

    x0: int
    y0: int
    pixels: np.ndarray  # (h, w) bool


def decode_shape_mask(rle: dict) -> MaskBox:
    """A mask shape's pixels in its bounding box; its rle covers the image, or the "box" at
    whose corner it lies."""
    x0, y0, pixels = decode_mask_box(rle)
    left, top = rle.get("box", (0, 0))[:2]
    return MaskBox(x0 + left, y0 + top, pixels)


def mask_outlines(mask: MaskBox) -> list[np.ndarray]:
    """Outer contours of a mask's components, for polygons.json (which cannot hold masks)."""
    contours, _ = cv2.findContours(
        mask.pixels.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
        offset=(mask.x0, mask.y0),
    )
    return [c.reshape(-1, 2) for c in contours if len(c) >= 3]


@dataclass(slots=True)
class _Drawable:
    label: Label
    value: int  # instanceIds pixel value
    geometry: np.ndarray | MaskBox  # (N, 2) polygon vertices, or a mask


def export_image(
    image: ImageRecord, shapes: list[Shape], label_map: LabelMap, options: ExportOptions
) -> ImageExport:
    """The Cityscapes files of one image; `shapes` are in drawing order."""
    warnings: list[str] = []
    drawables, document = _resolve(image, shapes, label_map, warnings)
    canvas = paint_canvas(image.width, image.height, [d.geometry for d in drawables])

    size = max(256, len(drawables) + 1)
    label_lut = np.full(size, label_map.background.id, np.uint8)
    instance_lut = np.full(size, label_map.background.id, np.uint16)
    color_lut = np.full(size, _rgba_word(label_map.background.color), np.uint32)
    for i, item in enumerate(drawables, 1):
        label_lut[i] = item.label.id
        instance_lut[i] = item.value
        color_lut[i] = _rgba_word(item.label.color)
    # Each output is a lookup of the index image, made and encoded band by band: one full-size
    # image (the canvas painted) is held, whatever the outputs.
    # Byte-swapped table: the lookup yields big-endian pixels, as PNG stores them.
    instance_be, color_words = instance_lut.byteswap(), color_lut.view(np.int32)
    outputs = [
        ("labelIds.png", np.uint8, 1, lambda rows: lookup(rows, label_lut)),
        ("instanceIds.png", ">u2", 1, lambda rows: lookup(rows, instance_be)),
        ("color.png", np.uint8, 4, lambda rows: lookup(rows, color_words)),
    ]
    if options.train_ids and label_map.official:
        train_lut = np.full(size, IGNORE_TRAIN_ID, np.uint8)
        for i, item in enumerate(drawables, 1):
            train_lut[i] = item.label.train_id if item.label.train_id >= 0 else IGNORE_TRAIN_ID
        outputs.append(("labelTrainIds.png", np.uint8, 1, lambda rows: lookup(rows, train_lut)))

    prefix = gt_prefix(image, options.layout)
    # A small canvas is read once; a large one band by band (see canvas_rows).
    whole = np.asarray(canvas) if image.width * image.height <= _WHOLE_CANVAS else None

    def rows(y0: int, y1: int) -> np.ndarray:
        return whole[y0:y1] if whole is not None else canvas_rows(canvas, y0, y1)

    parts = [
        ZipPart(prefix + kind, encode_png_rows(
            image.width, image.height, dtype, channels, lambda y0, y1, f=table: f(rows(y0, y1))))
        for kind, dtype, channels, table in outputs
    ]
    if options.polygons_json:
        parts.append(ZipPart(prefix + "polygons.json", document, compress=True))
    record = None
    if options.panoptic:
        scheme = panoptic_scheme(label_map, options.train_ids)
        png, record = image_panoptic(image, rows, instance_lut[: len(drawables) + 1], scheme,
                                     prefix + "instanceIds.png")
        parts.extend(ZipPart(png_path(image, variant), png) for variant in scheme.variants)
    return ImageExport(parts, len(drawables), warnings, record)


_WHOLE_CANVAS = 1 << 16  # pixels


def _rgba_word(color: tuple[int, int, int]) -> int:
    r, g, b = color
    return r | g << 8 | b << 16 | 255 << 24  # little-endian RGBA bytes


def lookup(index: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[index], for an index image of paint_indices (table at least 256 entries long)."""
    if index.dtype == np.uint8:
        return cv2.LUT(index, table[:256])
    return np.take(table, index)


def paint_indices(width: int, height: int, geometries: list[np.ndarray | MaskBox]) -> np.ndarray:
    """(H, W) image of the 1-based index of the last shape covering each pixel (0: none).

    A geometry is either (N, 2) integer polygon vertices or a MaskBox.
    """
    return np.asarray(paint_canvas(width, height, geometries))


def canvas_rows(canvas: Image.Image, y0: int, y1: int) -> np.ndarray:
    """Rows y0 to y1 - 1 of a painted canvas as an array, without copying the whole image."""
    return np.asarray(canvas.crop((0, y0, canvas.width, y1)))


def paint_canvas(width: int, height: int, geometries: list[np.ndarray | MaskBox]) -> Image.Image:
    """paint_indices as the Pillow image it is painted on."""
    mode = "L" if len(geometries) <= 255 else "I"
    canvas = Image.new(mode, (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for i, geometry in enumerate(geometries, 1):
        if isinstance(geometry, MaskBox):
            if geometry.pixels.size:
                stencil = Image.fromarray(geometry.pixels.view(np.uint8) * np.uint8(255))
                canvas.paste(i, (geometry.x0, geometry.y0, geometry.x0 + stencil.width,
                                 geometry.y0 + stencil.height), stencil)
        else:
            draw.polygon(geometry.ravel().tolist(), fill=i)
    return canvas


def _resolve(
    image: ImageRecord, shapes: list[Shape], label_map: LabelMap, warnings: list[str]
) -> tuple[list[_Drawable], bytes]:
    """Drawables in drawing order, and the polygons.json document."""
    drawables: list[_Drawable] = []
    objects: list[dict] = []
    counters: Counter[int] = Counter()
    unknown: Counter[str] = Counter()
    undrawn: Counter[str] = Counter()
    for shape in shapes:
        where = f"image {image.name!r}, shape {shape.index}"
        label = label_map.lookup(shape.label)
        if label is None:
            unknown[shape.label] += 1
            label = label_map.background
        if shape.kind == "mask":
            try:
                mask = decode_shape_mask(shape.rle or {})
            except (ValueError, KeyError, TypeError) as exc:
                raise ShapeError(f"{where}: mask RLE is broken ({exc})") from None
            outlines = mask_outlines(mask)
            geometry = mask
        else:
            reach = float(np.abs(shape.points).max(initial=0))
            if reach > MAX_COORDINATE:
                raise ShapeError(
                    f"{where}: a coordinate of {reach:.4g} is beyond +-{MAX_COORDINATE:,} (2^30),"
                    " which the rasterizer (Pillow, as in the official scripts) cannot draw"
                )
            if shape.kind == "rectangle":
                vertices = rectangle_vertices(shape.points)
            else:
                vertices = polygon_vertices(shape.points)
            if len(vertices) < 3:
                warnings.append(f"{where}: polygon has {len(vertices)} points (< 3); skipped")
                continue
            if reach > PRECISE_COORDINATE:
                warnings.append(
                    f"{where}: a coordinate of {reach:.4g} is beyond +-{PRECISE_COORDINATE:,}"
                    " (2^23): drawn as the official scripts draw it, whose single-precision"
                    " edges may stray a few pixels from the true line"
                )
            outlines = [vertices]
            geometry = vertices
        crowd = shape.is_crowd and label.has_instances
        name = label.name + "group" if crowd else label.name
        objects.extend({"label": name, "polygon": o} for o in outlines)
        if label.id < 0:
            undrawn[label.name] += 1
            continue
        value = label.id
        if label.has_instances and not shape.is_crowd:
            k = shape.instance
            if k is None:
                k = counters[label.id]
                counters[label.id] += 1
            value = label.id * 1000 + k
            if k >= MAX_INSTANCES or value > MAX_INSTANCE_ID:
                raise ShapeError(
                    f"{where}: instance id {value} of {label.name!r} cannot be encoded"
                    f" (class id * 1000 + k must stay below 65536, k below 1000)"
                )
        drawables.append(_Drawable(label, value, geometry))
    for name, count in unknown.items():
        warnings.append(
            f"image {image.name!r}: {count} shape(s) of label {name!r}, which is not in the"
            " label map, drawn as background"
        )
    for name, count in undrawn.items():
        warnings.append(
            f"image {image.name!r}: {count} shape(s) of {name!r}, a label without a pixel id,"
            " kept in polygons.json only"
        )
    document = {"imgHeight": image.height, "imgWidth": image.width, "objects": objects}
    return drawables, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
