"""The official Cityscapes scripts as the reference: their images for a polygons.json, and a
polygons.json built from a manifest independently of our exporter."""

import json

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage

from worker.cityscapes.labels import LabelMap


def official_images(polygons_json: bytes) -> dict[str, np.ndarray]:
    annotation = Annotation()
    annotation.fromJsonText(polygons_json.decode())
    return {
        "labelIds": np.asarray(createLabelImage(annotation, "ids")),
        "labelTrainIds": np.asarray(createLabelImage(annotation, "trainIds")),
        "color": np.asarray(createLabelImage(annotation, "color")),
        "instanceIds": np.asarray(createInstanceImage(annotation, "ids")),
    }


def reference_json(manifest: dict, image: dict) -> bytes:
    """polygons.json built by the test from the manifest, independently of the exporter."""
    official = LabelMap.cityscapes()
    shapes = [
        (s["z_order"], i, s) for i, s in enumerate(manifest["shapes"]) if s["image"] == image["id"]
    ]
    objects = []
    for _, _, shape in sorted(shapes, key=lambda t: t[:2]):
        pts = np.floor(np.asarray(shape["points"], float) + 0.5).astype(int).reshape(-1, 2)
        if shape["type"] == "rectangle":
            (x1, y1), (x2, y2) = pts
            pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
        if len(pts) < 3:
            continue
        label = official.lookup(shape["label"])
        name = label.name
        if shape["attributes"]["is_crowd"] and label.has_instances:
            name += "group"
        objects.append({"label": name, "polygon": pts.tolist()})
    document = {"imgHeight": image["height"], "imgWidth": image["width"], "objects": objects}
    return json.dumps(document).encode()
