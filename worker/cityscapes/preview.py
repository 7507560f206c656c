"""A look at one image of a Cityscapes zip before it ships: class colours blended over the photo
(or grey), instance outlines on top, and a legend of the classes present beside the picture.

The picture keeps the image's size at the left of the output (scaled down by a whole factor when
its longer side exceeds MAX_SIDE), so a pixel of the overlay is the pixel of the masks at the same
place; the legend is a panel to its right.
"""

from __future__ import annotations

import posixpath
import zipfile
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from worker.cityscapes.importer import item_pixels, pixel_kind
from worker.cityscapes.labels import Color, LabelMap
from worker.cityscapes.png import encode_png
from worker.cityscapes.reader import (
    ArchiveError,
    Item,
    archive_label_map,
    decode_color_png,
    png_size,
    read_member,
    scan_archive,
)
from worker.errors import ClientError

ALPHA = 0.5  # weight of the class colour over the photo
GREY = 128  # the background when the zip has no photo
OUTLINE: Color = (255, 255, 255)
UNKNOWN: Color = (255, 0, 255)  # class ids the label map lacks
PANEL: Color = (32, 32, 32)
# Larger images are drawn scaled down by a whole factor (every k-th mask pixel, the photo averaged
# over k x k): a 10000x10000 image would otherwise take gigabytes to draw.
MAX_SIDE = 2048


@dataclass
class Preview:
    item: Item
    png: bytes
    classes: list[str]
    instances: int


def preview_step(width: int, height: int) -> int:
    """The smallest whole factor that brings the image's longer side to MAX_SIDE or less."""
    return max(1, -(-max(width, height) // MAX_SIDE))


def class_ids(pixels: np.ndarray) -> np.ndarray:
    """Class id per pixel of an instanceIds (or labelIds) image."""
    return np.where(pixels >= 1000, pixels // 1000, pixels)


def instance_outlines(pixels: np.ndarray) -> np.ndarray:
    """Pixels of an instance (value >= 1000) with a 4-neighbour of another value."""
    edge = np.zeros(pixels.shape, bool)
    rows = pixels[1:, :] != pixels[:-1, :]
    cols = pixels[:, 1:] != pixels[:, :-1]
    edge[1:, :] |= rows
    edge[:-1, :] |= rows
    edge[:, 1:] |= cols
    edge[:, :-1] |= cols
    return edge & (pixels >= 1000)


def render_overlay(
    pixels: np.ndarray, label_map: LabelMap, photo: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """(H, W + legend, 3) RGB picture, and the names of the classes present in id order."""
    classes = class_ids(pixels)
    height, width = classes.shape
    present = [int(c) for c in np.flatnonzero(np.bincount(classes.ravel()))
               if c != label_map.background.id]
    table = np.zeros((max(present, default=0) + 1, 3), np.uint8)
    legend: list[tuple[str, Color]] = []
    for class_id in present:
        label = label_map.by_id(class_id)
        color = label.color if label else UNKNOWN
        table[class_id] = color
        legend.append((label.name if label else f"id {class_id} (not in the label map)", color))

    base = np.full((height, width, 3), GREY, np.uint8) if photo is None else photo
    blended = cv2.addWeighted(base, 1 - ALPHA, np.take(table, classes, axis=0), ALPHA, 0)
    picture = base.copy()
    cv2.copyTo(blended, (classes != label_map.background.id).view(np.uint8), picture)
    picture[instance_outlines(pixels)] = OUTLINE
    return _with_legend(picture, legend), [name for name, _ in legend]


def _with_legend(picture: np.ndarray, entries: list[tuple[str, Color]]) -> np.ndarray:
    """The picture with a legend panel at its right: a swatch and a name per class."""
    height, width = picture.shape[:2]
    font = ImageFont.load_default(size=max(10, min(height // 48, 24)))
    _, top, _, bottom = font.getbbox("Ag")
    row = bottom - top + 6
    swatch = row - 6
    text_width = max((int(font.getlength(name)) for name, _ in entries), default=0)
    panel_width = 8 + swatch + 6 + text_width + 8
    canvas = Image.new("RGB", (width + panel_width, max(height, 8 + row * len(entries))), PANEL)
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, color) in enumerate(entries):
        x, y = width + 8, 8 + i * row
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=color, outline=OUTLINE)
        draw.text((x + swatch + 6, y - top), name, fill=OUTLINE, font=font)
    return np.asarray(canvas)


def preview_archive(archive: zipfile.ZipFile, image: str | None = None) -> Preview:
    """The overlay of one item of a Cityscapes zip (the first when `image` is None) as PNG."""
    index = scan_archive(archive)
    item = choose_item(index.items, image)
    label_map = archive_label_map(archive, index.label_file)
    best = pixel_kind(item)  # polygons.json alone would need rasterizing
    files = {best: read_member(archive, item.members[best])} if best else {}
    size = png_size(files[best]) if best else None
    step = preview_step(*size) if size else 1
    pixels = item_pixels(item, files, label_map, [], step)
    size = size or (pixels.shape[1], pixels.shape[0])
    photo = None
    if item.photo is not None:
        photo = decode_color_png(read_member(archive, item.photo), item.photo)
        if photo.shape[:2] != (size[1], size[0]):
            raise ArchiveError(
                f"member {item.photo!r} is {photo.shape[1]}x{photo.shape[0]}, its gtFine images"
                f" {size[0]}x{size[1]}"
            )
        if step > 1:
            photo = cv2.resize(photo, pixels.shape[::-1], interpolation=cv2.INTER_AREA)
    picture, classes = render_overlay(pixels, label_map, photo)
    instances = len(np.unique(pixels[pixels >= 1000]))
    return Preview(item, encode_png(picture, level=2), classes, instances)


def choose_item(items: list[Item], wanted: str | None) -> Item:
    """The item called `wanted`: its item name (city/stem), with its subset in front, or its
    file name alone; a photo's or a mask's file name is accepted too."""
    if wanted is None:
        return items[0]
    key = posixpath.splitext(wanted.strip("/"))[0]
    for suffix in ("_leftImg8bit", "_gtFine_instanceIds", "_gtFine_labelIds", "_gtFine_color"):
        key = key.removesuffix(suffix)
    found = [i for i in items if key in (i.name, f"{i.subset}/{i.name}")]
    if not found and "/" not in key:
        found = [i for i in items if posixpath.basename(i.name) == key]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(f"{i.subset}/{i.name}" for i in found[:5])
        raise ClientError(f"image {wanted!r} names {len(found)} images ({names}); add its subset")
    names = ", ".join(i.name for i in items[:5])
    more = f", ... ({len(items)} images)" if len(items) > 5 else ""
    raise ClientError(f"image {wanted!r} is not in the archive; it has {names}{more}")
