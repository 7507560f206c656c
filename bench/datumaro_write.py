"""Run inside the Datumaro venv: a scene described in JSON -> the annotation files Datumaro's own
exporters write for it, CVAT for images 1.1 XML and COCO instances JSON (one start-up for both).

    python datumaro_write.py SCENE.json OUT  ->  OUT/cvat/<subset>.xml,
                                                 OUT/coco/annotations/instances_<subset>.json

SCENE: {"labels": [name, ...], "images": [{"name", "width", "height", "subset"?,
"annotations": [...]}]}. An annotation has a "type" (polygon, bbox, mask, points, polyline, tag),
a "label" and, as its type needs, "points" (x, y, ...; a bbox's are x0, y0, x1, y1) or "rle" (a
mask, COCO RLE over the image), and optionally "z_order", "group" and "attributes" (e.g.
is_crowd, occluded). Every label declares `is_crowd`, as a CVAT task with that attribute does,
so the CVAT writer keeps it.
"""

import json
import os
import sys

from datumaro.components.annotation import (
    AnnotationType,
    Bbox,
    Label,
    LabelCategories,
    Mask,
    Points,
    Polygon,
    PolyLine,
)
from datumaro.components.dataset import Dataset
from datumaro.components.dataset_base import DatasetItem
from datumaro.components.media import Image
from pycocotools import mask as coco_mask


def to_annotation(spec: dict, label: int):
    common = dict(
        label=label,
        group=spec.get("group", 0),
        attributes=spec.get("attributes", {}),
    )
    kind = spec["type"]
    if kind == "tag":
        return Label(**common)
    common["z_order"] = spec.get("z_order", 0)
    if kind == "mask":
        rle = dict(spec["rle"])
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
        return Mask(image=coco_mask.decode(rle).astype(bool), **common)
    points = spec["points"]
    if kind == "bbox":
        x0, y0, x1, y1 = points
        return Bbox(x0, y0, x1 - x0, y1 - y0, **common)
    shapes = {"polygon": Polygon, "points": Points, "polyline": PolyLine}
    return shapes[kind](points, **common)


def build_dataset(scene: dict) -> Dataset:
    label_ids = {name: i for i, name in enumerate(scene["labels"])}
    labels = LabelCategories(attributes={"is_crowd"})
    for name in scene["labels"]:
        labels.add(name)
    items = []
    for image in scene["images"]:
        items.append(
            DatasetItem(
                id=os.path.splitext(image["name"])[0],
                subset=image.get("subset", "default"),
                media=Image.from_file(path=image["name"], size=(image["height"], image["width"])),
                annotations=[
                    to_annotation(spec, label_ids[spec["label"]]) for spec in image["annotations"]
                ],
            )
        )
    return Dataset.from_iterable(items, categories={AnnotationType.label: labels})


def main(scene_path: str, out: str) -> None:
    with open(scene_path, encoding="utf-8") as f:
        dataset = build_dataset(json.load(f))
    dataset.export(os.path.join(out, "cvat"), "cvat", save_media=False)
    dataset.export(os.path.join(out, "coco"), "coco_instances", save_media=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
