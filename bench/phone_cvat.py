"""Synthetic CVAT for images 1.1 XML shaped like a hosted CVAT's export of phone photos.

A real export of that kind (20 photos of 12 to 41 megapixels, 246 brush masks, 74 rotated boxes,
tags, no photos attached) is what this imitates: per image about 12 brush masks, each written as
CVAT writes one (`<mask rle="..." left= top= width= height=>`, runs of 0s and 1s, 0s first, row by
row over the box), 4 rotated boxes and a tag. Photos are not needed: the export draws labels only.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

# Phone photo sizes (width x height), portrait and landscape, 12.2 to 40.9 megapixels.
SIZES = ((3024, 4032), (4032, 3024), (3000, 4000), (4000, 6000), (4284, 5712), (5720, 7150))
LABELS = (("car", "#00008e"), ("person", "#dc143c"), ("road", "#804080"),
          ("vegetation", "#6b8e23"), ("building", "#464646"), ("trafficsign", "#dcdc00"))


def brush_mask(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A brush-painted blob: thick strokes along a random walk, as an annotator paints one."""
    mask = np.zeros((height, width), np.uint8)
    strokes = int(rng.integers(2, 6))
    radius = max(8, int(min(width, height) * rng.uniform(0.04, 0.12)))
    for _ in range(strokes):
        x, y = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        points = []
        for _ in range(int(rng.integers(4, 12))):
            angle = rng.uniform(0, 2 * math.pi)
            step = rng.uniform(0.05, 0.2) * min(width, height)
            x = min(max(x + step * math.cos(angle), 0), width - 1)
            y = min(max(y + step * math.sin(angle), 0), height - 1)
            points.append((int(x), int(y)))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, thickness=2 * radius)
    return mask.astype(bool)


def row_runs(mask: np.ndarray) -> list[int]:
    """CVAT's runs over a box: row by row, alternating 0s and 1s, starting with 0s."""
    flat = mask.reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return runs


def image_xml(rng: np.random.Generator, index: int, width: int, height: int,
              masks: int, boxes: int) -> str:
    lines = [f'  <image id="{index}" name="IMG_{4000 + index:04d}.jpg" width="{width}"'
             f' height="{height}">']
    for z in range(masks):
        label = LABELS[int(rng.integers(len(LABELS)))][0]
        box_w = int(rng.uniform(0.08, 0.6) * width)
        box_h = int(rng.uniform(0.08, 0.6) * height)
        left, top = int(rng.integers(0, width - box_w)), int(rng.integers(0, height - box_h))
        runs = row_runs(brush_mask(rng, box_w, box_h))
        lines.append(
            f'    <mask label="{label}" source="manual" occluded="0"'
            f' rle="{", ".join(map(str, runs))}" left="{left}" top="{top}" width="{box_w}"'
            f' height="{box_h}" z_order="{z % 3}">\n    </mask>'
        )
    for _ in range(boxes):
        label = LABELS[int(rng.integers(2))][0]
        w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        lines.append(
            f'    <box label="{label}" source="manual" occluded="0" xtl="{x:.2f}" ytl="{y:.2f}"'
            f' xbr="{x + w:.2f}" ybr="{y + h:.2f}" rotation="{rng.uniform(1, 359):.2f}"'
            f' z_order="3">\n    </box>'
        )
    lines.append('    <tag label="vegetation" source="manual">\n    </tag>')
    lines.append("  </image>")
    return "\n".join(lines)


def write_phone_cvat(path: Path, images: int = 20, masks: int = 12, boxes: int = 4,
                     seed: int = 0, first_size: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = "".join(
        f"<label><name>{name}</name><color>{color}</color><type>any</type><attributes>"
        "</attributes></label>" for name, color in LABELS
    )
    with open(path, "w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n'
                  "  <version>1.1</version>\n"
                  f"  <meta><task><name>phone photos</name><size>{images}</size>"
                  f"<labels>{labels}</labels></task></meta>\n")
        for index in range(images):
            width, height = SIZES[(first_size + index) % len(SIZES)]
            out.write(image_xml(rng, index, width, height, masks, boxes) + "\n")
        out.write("</annotations>\n")
    return path
