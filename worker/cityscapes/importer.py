"""The per-image import step: an item's files (bytes) in, manifest v1 image and shapes out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from worker.cityscapes.labels import BACKGROUND_NAMES, LabelMap, normalize_name
from worker.cityscapes.reader import Item, decode_color_png, decode_ids_png
from worker.cityscapes.trace import segments, trace_edge_polygons, trace_shapes, value_boxes
from worker.errors import ClientError


ANNOTATIONS_PER_IMAGE = 100_000  # COCO annotation ids: image id * this + k


@dataclass
class ImportedImage:
    image: dict[str, Any]
    shapes: list[dict[str, Any]]  # manifest shapes, or COCO annotations (without ids)
    warnings: list[str] = field(default_factory=list)
    changed_pixels: int = 0  # pixels the polygon form draws differently from the source


def map_onto_task(result: ImportedImage, task_labels: list[dict[str, str]]) -> ImportedImage:
    """Shapes renamed to the task's labels (names compared as label maps compare them); shapes of
    labels the task lacks are reported and left out. Background shapes (which only restore
    pixels) keep the background name."""
    by_key = {normalize_name(entry["name"]): entry["name"] for entry in task_labels}
    kept, missing = [], {}
    for shape in result.shapes:
        key = normalize_name(shape["label"])
        if key in by_key:
            kept.append({**shape, "label": by_key[key]})
        elif key in BACKGROUND_NAMES:
            kept.append(shape)
        else:
            missing[shape["label"]] = missing.get(shape["label"], 0) + 1
    warnings = [f"image {result.image['name']!r}: {count} shape(s) of {name!r}, which the task"
                " labels lack, left out" for name, count in missing.items()]
    return ImportedImage(result.image, kept, result.warnings + warnings, result.changed_pixels)


def document_head(
    output_format: str,
    label_map: LabelMap,
    images: list[dict[str, Any]],
    task_labels: list[dict[str, str]] | None = None,
) -> str:
    """Everything of the output document before its shapes (or annotations) list."""
    if output_format == "coco":
        categories = [{"id": label.id, "name": label.name, "supercategory": ""}
                      for label in label_map.drawn() if label.id > 0]
        coco_images = [{"id": i["id"], "file_name": i["name"], "width": i["width"],
                        "height": i["height"]} for i in images]
        return (f'{{"images":{json.dumps(coco_images)},"categories":{json.dumps(categories)},'
                '"annotations":[')
    labels = json.dumps(task_labels if task_labels is not None else label_map.manifest_labels())
    return f'{{"version":1,"labels":{labels},"images":{json.dumps(images)},"shapes":['


DOCUMENT_TAIL = "]}\n"


def document_records(result: ImportedImage, image_id: int, output_format: str) -> list[str]:
    """The image's entries of the shapes (or annotations) list, as JSON texts."""
    if output_format == "coco":
        return [_json({"id": image_id * ANNOTATIONS_PER_IMAGE + k, "image_id": image_id, **a})
                for k, a in enumerate(result.shapes)]
    return [_json({"image": image_id, **shape}) for shape in result.shapes]


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def import_item(
    item: Item,
    files: dict[str, bytes],
    label_map: LabelMap,
    shapes: str = "polygon",
    output_format: str = "manifest",
) -> ImportedImage:
    """Shapes of one item from the best file it has: polygons.json (exact polygons), else
    instanceIds, else labelIds, else color (each fallback loses something: warned)."""
    warnings: list[str] = []
    if "polygons" in files and shapes == "polygon" and output_format == "manifest":
        return _from_polygons(item, files["polygons"], label_map)
    ids, boxes = _known_values(item_pixels(item, files, label_map, warnings), item, label_map,
                               warnings)
    height, width = ids.shape
    image = {"name": item.name, "width": width, "height": height, "subset": item.subset}
    if output_format == "coco":
        return ImportedImage(image, coco_annotations(ids, label_map, shapes, boxes), warnings)
    out: list[dict[str, Any]] = []
    changed = 0
    if shapes == "mask":
        for z, segment in enumerate(segments(ids, boxes=boxes)):
            out.append(_shape(segment.value, label_map, z, {"type": "mask", "rle": segment.rle}))
    else:
        regions, changed = trace_shapes(ids, boxes)
        for z, region in enumerate(regions):
            points = region.polygon.reshape(-1)
            out.append(_shape(region.value, label_map, z, {"type": "polygon", "points": points}))
        if changed:
            warnings.append(
                f"image {item.name!r}: the polygons redraw {changed} pixels differently"
                " (use shapes=mask for exact masks)"
            )
    return ImportedImage(image, out, warnings, changed)


def item_pixels(
    item: Item, files: dict[str, bytes], label_map: LabelMap, warnings: list[str]
) -> np.ndarray:
    """The item's pixel values (instance ids where it can) from its best image: instanceIds,
    else labelIds, else color (each fallback warned)."""
    if "instanceIds" in files:
        return decode_ids_png(files["instanceIds"], item.members["instanceIds"]).astype(np.int32)
    if "labelIds" in files:
        warnings.append(f"image {item.name!r}: no instanceIds; read labelIds (no instances)")
        return decode_ids_png(files["labelIds"], item.members["labelIds"]).astype(np.int32)
    if "color" in files:
        warnings.append(f"image {item.name!r}: only the color image; classes read by colour")
        return _ids_from_colors(decode_color_png(files["color"], item.members["color"]), label_map)
    raise ClientError(f"image {item.name!r}: no instanceIds, labelIds or color image")


def coco_annotations(
    ids: np.ndarray, label_map: LabelMap, shapes: str, boxes: dict[int, tuple[int, int, int, int]]
) -> list[dict[str, Any]]:
    """One COCO annotation per instance (or crowd region): a polygon per component along its
    pixels' edges, holes joined in (exact as pycocotools draws them), or its exact RLE; crowd
    regions always as RLE, as COCO wants them."""
    counts = np.bincount(ids.ravel())
    masks = {s.value: s.rle for s in segments(ids, boxes=boxes)} if shapes == "mask" else {}
    out = []
    for value, (x0, y0, x1, y1) in sorted(boxes.items()):
        if value == 0:
            continue
        label = label_map.by_id(value // 1000 if value >= 1000 else value)
        crowd = value < 1000 and label.has_instances
        if crowd and value not in masks:
            masks[value] = segments(ids, boxes={value: (x0, y0, x1, y1)})[0].rle
        if crowd or shapes == "mask":
            segmentation: Any = masks[value]
        else:
            polygons = trace_edge_polygons(ids, {value: (x0, y0, x1, y1)})[value]
            segmentation = [polygon.reshape(-1).tolist() for polygon in polygons]
        out.append({"category_id": label.id, "segmentation": segmentation,
                    "area": int(counts[value]), "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                    "iscrowd": int(crowd)})
    return out


def _shape(value: int, label_map: LabelMap, z: int, geometry: dict) -> dict[str, Any]:
    class_id = value // 1000 if value >= 1000 else value
    label = label_map.by_id(class_id)
    assert label is not None  # _known_values dropped the rest
    shape = {"label": label.name, "z_order": z, **geometry,
             "attributes": {"is_crowd": value < 1000 and label.has_instances}}
    if value >= 1000:
        shape["instance"] = value % 1000
    return shape


def _known_values(
    ids: np.ndarray, item: Item, label_map: LabelMap, warnings: list[str]
) -> tuple[np.ndarray, dict[int, tuple[int, int, int, int]]]:
    """Pixels whose class is not in the label map are reported and treated as background.
    Returns the ids and their value boxes (one pass over the pixels, shared with tracing)."""
    boxes = value_boxes(ids)
    known = {label.id for label in label_map.labels if label.id >= 0}
    unknown = [v for v in boxes if (v // 1000 if v >= 1000 else v) not in known]
    if not unknown:
        return ids, boxes
    ids = ids.copy()
    for value in unknown:
        count = int(np.count_nonzero(ids == value))
        ids[ids == value] = label_map.background.id
        warnings.append(
            f"image {item.name!r}: pixel value {value} (class id"
            f" {value // 1000 if value >= 1000 else value}) is not in the label map;"
            f" {count} pixels read as background"
        )
    return ids, value_boxes(ids)


def _ids_from_colors(rgb: np.ndarray, label_map: LabelMap) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    ids = np.zeros(packed.shape, np.int32)
    for label in reversed(label_map.drawn()):  # the first label of a shared colour wins
        r, g, b = label.color
        ids[packed == (r << 16 | g << 8 | b)] = label.id
    return ids


def _from_polygons(item: Item, data: bytes, label_map: LabelMap) -> ImportedImage:
    member = item.members["polygons"]
    try:
        document = json.loads(data)
        width, height = int(document["imgWidth"]), int(document["imgHeight"])
        objects = list(document["objects"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ClientError(f"member {member!r}: not a Cityscapes polygons file ({exc})") from None
    warnings: list[str] = []
    out = []
    for z, obj in enumerate(objects):
        name = str(obj.get("label", ""))
        crowd = False
        label = label_map.lookup(name)
        if label is None and name.endswith("group"):
            label, crowd = label_map.lookup(name[: -len("group")]), True
        polygon = obj.get("polygon") or []
        if label is None or obj.get("deleted"):
            if label is None:
                warnings.append(f"image {item.name!r}: object {z} of unknown label {name!r} skipped")
            continue
        points = [float(v) for point in polygon for v in point[:2]]
        out.append({"label": label.name, "type": "polygon", "points": points, "z_order": z,
                    "attributes": {"is_crowd": crowd}})
    image = {"name": item.name, "width": width, "height": height, "subset": item.subset}
    return ImportedImage(image, out, warnings)
