"""The official Cityscapes scripts as the reference: their images for a polygons.json, and a
polygons.json built from a manifest independently of our exporter: labels looked up in the
official scripts' own table, vertices rounded by the rule the README states (halves up), written
here rather than taken from the product."""

import json
import math

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import name2label
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image, ImageDraw


def official_images(polygons_json: bytes) -> dict[str, np.ndarray]:
    annotation = Annotation()
    annotation.fromJsonText(polygons_json.decode())
    return {
        "labelIds": np.asarray(createLabelImage(annotation, "ids")),
        "labelTrainIds": np.asarray(createLabelImage(annotation, "trainIds")),
        "color": np.asarray(createLabelImage(annotation, "color")),
        "instanceIds": np.asarray(createInstanceImage(annotation, "ids")),
    }


def official_label(name: str):
    """The official scripts' label for a task's spelling: the seed writes names without spaces
    ("trafficsign"), the scripts with them ("traffic sign")."""
    spelled = {key.replace(" ", ""): label for key, label in name2label.items()}
    return name2label.get(name) or spelled[name.replace(" ", "").lower()]


def reference_json(manifest: dict, image: dict) -> bytes:
    """polygons.json built by the test from the manifest, independently of the exporter."""
    shapes = [
        (s["z_order"], i, s) for i, s in enumerate(manifest["shapes"]) if s["image"] == image["id"]
    ]
    objects = []
    for _, _, shape in sorted(shapes, key=lambda t: t[:2]):
        pts = [[math.floor(x + 0.5), math.floor(y + 0.5)]
               for x, y in zip(shape["points"][::2], shape["points"][1::2])]
        if shape["type"] == "rectangle":
            (x1, y1), (x2, y2) = pts
            pts = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
        if len(pts) < 3:
            continue
        label = official_label(shape["label"])
        name = label.name
        if shape["attributes"]["is_crowd"] and label.hasInstances:
            name += "group"
        objects.append({"label": name, "polygon": pts})
    document = {"imgHeight": image["height"], "imgWidth": image["width"], "objects": objects}
    return json.dumps(document).encode()


def pillow_polygons(shape: tuple[int, int], polygons) -> np.ndarray:
    """(flat vertices, value) pairs filled in order as the official scripts fill polygons
    (Pillow's ImageDraw.polygon, as json2instanceImg), on a 32-bit image of this (H, W)."""
    canvas = Image.new("I", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for points, value in polygons:
        draw.polygon(list(points), fill=int(value))
    return np.asarray(canvas)
