"""Run inside the Datumaro venv: a manifest v1 file -> Cityscapes zip, the way CVAT exports it.

    python datumaro_export.py MANIFEST.json OUT.zip

CVAT builds a Datumaro dataset of the task's shapes (polygons, boxes; labels with their colours),
turns polygons and boxes into masks, merges instance segments, exports the "cityscapes" format
with the task's colours as label map and zips the folder; this script does the same steps.
"""

import json
import os
import sys
import tempfile
import zipfile
from collections import defaultdict

from datumaro.components.annotation import (
    AnnotationType,
    Bbox,
    LabelCategories,
    MaskCategories,
    Polygon,
)
from datumaro.components.dataset import Dataset
from datumaro.components.dataset_base import DatasetItem
from datumaro.components.media import Image


def hex_rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))


def build_dataset(manifest: dict) -> tuple[Dataset, dict]:
    names = [label["name"] for label in manifest["labels"]]
    colors = {label["name"]: hex_rgb(label["color"]) for label in manifest["labels"]}
    label_ids = {name: i for i, name in enumerate(names)}
    categories = {
        AnnotationType.label: LabelCategories.from_iterable(names),
        AnnotationType.mask: MaskCategories({i: colors[n] for i, n in enumerate(names)}),
    }
    by_image = defaultdict(list)
    for shape in manifest["shapes"]:
        by_image[shape["image"]].append(shape)

    items = []
    for image in manifest["images"]:
        annotations = []
        for number, shape in enumerate(by_image[image["id"]], 1):
            common = dict(
                label=label_ids[shape["label"]],
                id=number,
                group=0,
                z_order=shape.get("z_order", 0),
                attributes={"is_crowd": bool(shape.get("attributes", {}).get("is_crowd", False))},
            )
            points = shape["points"]
            if shape["type"] == "rectangle":
                x0, y0, x1, y1 = points
                annotations.append(Bbox(x0, y0, x1 - x0, y1 - y0, **common))
            elif shape["type"] == "polygon":
                annotations.append(Polygon(points, **common))
            else:
                raise ValueError(f"shape type {shape['type']!r} is not in this benchmark")
        item_id = os.path.splitext(image["name"])[0]
        media = Image.from_file(path=image["name"], size=(image["height"], image["width"]))
        items.append(
            DatasetItem(id=item_id, subset=image.get("subset", "default"), media=media,
                        annotations=annotations)
        )
    return Dataset.from_iterable(items, categories=categories), colors


def zip_folder(folder: str, out: str) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                path = os.path.join(root, name)
                archive.write(path, os.path.relpath(path, folder))


def main(manifest_path: str, out: str) -> None:
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    dataset, colors = build_dataset(manifest)
    dataset.transform("polygons_to_masks")
    dataset.transform("boxes_to_masks")
    dataset.transform("merge_instance_segments")
    with tempfile.TemporaryDirectory(prefix="datumaro-export-") as folder:
        dataset.export(folder, "cityscapes", save_media=False, apply_colormap=True,
                       label_map=colors)
        zip_folder(folder, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
