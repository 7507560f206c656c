"""Synthetic street scenes in manifest v1: the bundled sample, test data and benchmark data.

Scenes are deterministic for a seed and carry what makes an export hard: large stuff polygons of
hundreds of vertices, overlapping objects across z_order levels, crowd objects, rectangles, tiny
and degenerate polygons, and vertices on and past the image border.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from worker.cityscapes.rle import encode_mask

# Seed spellings of the original colour map (as a CVAT task holds them).
STUFF = ("sky", "road", "building", "vegetation", "sidewalk", "terrain", "fence")
THINGS = ("car", "person", "rider", "bicycle", "truck", "bus", "motorcycle")
OBJECTS = ("trafficsign", "trafficlight", "pole", "licenseplate")
SEED_COLORS = {
    "background": "#000000", "sky": "#4682b4", "road": "#804080", "building": "#464646",
    "vegetation": "#6b8e23", "sidewalk": "#f423e8", "terrain": "#98fb98", "fence": "#be9999",
    "car": "#00008e", "person": "#dc143c", "rider": "#ff0000", "bicycle": "#770b20",
    "truck": "#000046", "bus": "#003c64", "motorcycle": "#0000e6", "trafficsign": "#dcdc00",
    "trafficlight": "#faaa1e", "pole": "#999999", "licenseplate": "#00000e",
}


def _wavy_band(rng, width, height, y_frac, top: bool, vertices: int) -> list[float]:
    xs = np.linspace(-3, width + 3, vertices)
    phase = rng.uniform(0, 2 * math.pi)
    ys = height * y_frac + height * 0.05 * np.sin(xs / width * 6 * math.pi + phase)
    ys += rng.normal(0, 2.0, vertices)
    edge = -2.0 if top else height + 2.0
    pts = [(x, y) for x, y in zip(xs, ys)] + [(width + 3, edge), (-3, edge)]
    return [round(float(v), 2) for p in pts for v in p]


def _star(rng, cx, cy, radius, vertices) -> list[float]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, vertices))
    radii = radius * rng.uniform(0.45, 1.0, vertices)
    xs, ys = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    return [round(float(v), 2) for p in zip(xs, ys) for v in p]


def scene_shapes(
    rng: np.random.Generator,
    image_id: int,
    width: int,
    height: int,
    objects: int = 60,
    stuff_vertices: int = 300,
    masks: int = 0,
) -> list[dict[str, Any]]:
    shapes: list[dict[str, Any]] = []

    def add(label, kind, points=None, z=0, crowd=False, rle=None):
        shape = {"image": image_id, "label": label, "type": kind, "z_order": z,
                 "attributes": {"is_crowd": crowd}}
        if points is not None:
            shape["points"] = points
        if rle is not None:
            shape["rle"] = rle
        shapes.append(shape)

    add("sky", "polygon", _wavy_band(rng, width, height, 0.3, True, stuff_vertices))
    add("road", "polygon", _wavy_band(rng, width, height, 0.65, False, stuff_vertices))
    add("building", "polygon", _star(rng, width * 0.3, height * 0.4, height * 0.3, stuff_vertices // 2))
    add("vegetation", "polygon", _star(rng, width * 0.75, height * 0.4, height * 0.25, stuff_vertices))
    add("sidewalk", "polygon", _wavy_band(rng, width, height, 0.85, False, stuff_vertices // 3))
    for _ in range(objects):
        label = str(rng.choice(THINGS + OBJECTS, p=_object_weights()))
        z = int(rng.integers(0, 3))
        crowd = bool(rng.random() < 0.1)
        roll = rng.random()
        # Centres may sit past the border, so that vertices land on and outside it.
        cx = rng.uniform(-0.05, 1.05) * width
        cy = rng.uniform(0.25, 1.05) * height
        if roll < 0.15:
            w, h = rng.uniform(2, width * 0.08), rng.uniform(2, height * 0.12)
            add(label, "rectangle", [round(float(v), 2) for v in (cx, cy, cx + w, cy + h)], z, crowd)
        elif roll < 0.20:
            add(label, "polygon", _star(rng, cx, cy, rng.uniform(0.3, 2.0), 3), z, crowd)
        elif roll < 0.23:
            x0, y0 = cx, cy
            add(label, "polygon", [x0, y0, x0 + 10, y0 + 5, x0 + 20, y0 + 10], z, crowd)
        else:
            radius = rng.uniform(6, max(7.0, height * 0.12))
            add(label, "polygon", _star(rng, cx, cy, radius, int(rng.integers(6, 26))), z, crowd)
    for _ in range(masks):
        mask = np.zeros((height, width), bool)
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(4, max(5, height // 6)))
        yy, xx = np.ogrid[:height, :width]
        mask |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        mask &= ~((xx - cx) ** 2 + (yy - cy) ** 2 < (r // 3) ** 2)  # a hole
        mask[:, int(rng.integers(0, width)) :: 97] = False  # split into components
        add(str(rng.choice(THINGS)), "mask", None, int(rng.integers(0, 3)), False, encode_mask(mask))
    return shapes


def _object_weights() -> np.ndarray:
    weights = np.array([6, 5, 2, 2, 1, 1, 1, 2, 2, 2, 0.5])
    return weights / weights.sum()


def make_manifest(
    images: int,
    width: int = 2048,
    height: int = 1024,
    seed: int = 0,
    objects: int = 60,
    stuff_vertices: int = 300,
    masks: int = 0,
    cities: tuple[str, ...] = ("frankfurt", "lindau", "munster"),
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    manifest: dict[str, Any] = {
        "version": 1,
        "labels": [{"name": n, "color": c, "attributes": []} for n, c in SEED_COLORS.items()],
        "images": [],
        "shapes": [],
    }
    for i in range(images):
        city = cities[i % len(cities)]
        subset = "val" if i % 5 == 4 else "train"
        name = f"{city}/{city}_{i:06d}_000019.png"
        manifest["images"].append(
            {"id": i + 1, "name": name, "width": width, "height": height, "subset": subset}
        )
        manifest["shapes"].extend(
            scene_shapes(rng, i + 1, width, height, objects, stuff_vertices, masks)
        )
    return manifest


def make_photo(seed: int, width: int, height: int) -> np.ndarray:
    """A smooth RGB picture to stand in for a street photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        127 + 120 * np.sin(xx / width * rng.uniform(2, 8) + yy / height * rng.uniform(1, 4) + k)
        for k in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.uint8)


# Official spellings (cityscapesscripts' labels table) for polygons.json scenes: stuff, then
# objects (mostly classes with instances, so that most polygons are a segment of their own).
JAGGED_STUFF = ("road", "sidewalk", "building", "wall", "fence", "vegetation", "terrain", "sky")
JAGGED_OBJECTS = ("car", "person", "rider", "bicycle", "motorcycle", "truck", "bus", "pole",
                  "traffic sign", "traffic light", "cargroup", "persongroup")
_JAGGED_WEIGHTS = np.array([8, 8, 2, 2, 1, 1, 1, 1, 1, 1, 0.5, 0.5]) / 27


def _jagged_ring(rng, cx, cy, rx, ry, vertices) -> list[list[int]]:
    """A ring of integer vertices around (cx, cy) whose radius wavers and jumps from vertex to
    vertex, as hand-drawn outlines of cars, people and foliage do."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, vertices))
    waves = 1 + 0.2 * np.sin(rng.integers(2, 7) * angles + rng.uniform(0, 2 * math.pi))
    radii = waves * rng.uniform(0.75, 1.0, vertices)
    xs = np.rint(cx + rx * radii * np.cos(angles)).astype(int)
    ys = np.rint(cy + ry * radii * np.sin(angles)).astype(int)
    return [[int(x), int(y)] for x, y in zip(xs, ys)]


def jagged_polygons_json(seed: int, width: int = 2048, height: int = 1024,
                         segments: int = 200) -> dict[str, Any]:
    """A polygons.json document (the official format and label names) of a jagged street scene:
    `segments` polygons of 6 to 300 vertices, large stuff first, then objects from a few pixels
    to a sixth of the image across. For benchmarks and tests of the import on input that our
    exporter did not draw (the official scripts draw it)."""
    rng = np.random.default_rng(seed)
    objects = []
    stuff = len(JAGGED_STUFF) * 2
    for k in range(segments):
        if k < stuff:
            label = JAGGED_STUFF[k % len(JAGGED_STUFF)]
            radius = rng.uniform(0.15, 0.4) * height
            vertices = int(rng.integers(150, 301))
        else:
            label = str(rng.choice(JAGGED_OBJECTS, p=_JAGGED_WEIGHTS))
            radius = float(np.exp(rng.uniform(np.log(3), np.log(height / 6))))
            vertices = int(np.clip(radius * rng.uniform(0.5, 2.0), 6, 300))
        aspect = rng.uniform(0.4, 2.5)
        cx, cy = rng.uniform(-0.05, 1.05) * width, rng.uniform(-0.05, 1.05) * height
        ring = _jagged_ring(rng, cx, cy, radius * aspect**0.5, radius / aspect**0.5, vertices)
        objects.append({"label": label, "polygon": ring})
    return {"imgHeight": height, "imgWidth": width, "objects": objects}
