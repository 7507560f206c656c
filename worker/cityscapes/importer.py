"""The per-image import step: an item's files (bytes) in, manifest v1 image and shapes out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from worker.cityscapes.labels import BACKGROUND_NAMES, LabelMap, normalize_name
from worker.cityscapes.manifest import ImageSpec
from worker.cityscapes.reader import Item, decode_color_png, decode_ids_png
from worker.cityscapes.trace import (
    Box,
    Runs,
    segments,
    trace_edge_polygons,
    trace_shapes,
    value_boxes,
    value_runs,
)
from worker.errors import ClientError

ANNOTATIONS_PER_IMAGE = 100_000  # COCO annotation ids: image id * this + k
# Vertices read from one polygons.json (its size is bounded too: reader.MAX_POLYGONS_BYTES);
# a Cityscapes frame has about 10,000.
MAX_POLYGON_VERTICES = 1_000_000
# The images pixels are read from, best first (each later one loses something).
PIXEL_KINDS = ("instanceIds", "labelIds", "color")


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
    dumps, option = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY  # a thousand records an image
    if output_format == "coco":
        return [dumps({"id": image_id * ANNOTATIONS_PER_IMAGE + k, "image_id": image_id, **a},
                      option=option).decode() for k, a in enumerate(result.shapes)]
    return [dumps({"image": image_id, **shape}, option=option).decode() for shape in result.shapes]


def pixel_kind(item: Item) -> str | None:
    """The best image of the item to read pixel values from (None: it has none)."""
    return next((kind for kind in PIXEL_KINDS if kind in item.members), None)


def source_kinds(item: Item, shapes: str = "polygon", output_format: str = "manifest") -> list[str]:
    """The members import_item reads for these options: the others need not be read (a color
    PNG beside the instanceIds would cost another decompression for nothing)."""
    if "polygons" in item.members and shapes == "polygon" and output_format == "manifest":
        return ["polygons"]
    kind = pixel_kind(item)
    return [] if kind is None else [kind]


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
    ids, boxes, runs = _known_values(item_pixels(item, files, label_map, warnings), item,
                                     label_map, warnings)
    height, width = ids.shape
    image = image_record(item, width, height, next(iter(item.members.values())))
    if output_format == "coco":
        return ImportedImage(image, coco_annotations(ids, label_map, shapes, boxes, runs), warnings)
    out: list[dict[str, Any]] = []
    changed = 0
    labels = _ValueLabels(label_map)
    if shapes == "mask":
        for z, segment in enumerate(segments(ids, boxes=boxes)):
            out.append(_shape(labels[segment.value], z, {"type": "mask", "rle": segment.rle}))
    else:
        regions, changed = trace_shapes(ids, runs)
        for z, (value, polygon, _) in enumerate(regions):
            out.append(_shape(labels[value], z, {"type": "polygon", "points": polygon.reshape(-1)}))
        if changed:
            warnings.append(
                f"image {item.name!r}: the polygons redraw {changed} pixels differently"
                " (use shapes=mask for exact masks)"
            )
    return ImportedImage(image, out, warnings, changed)


def image_record(item: Item, width: Any, height: Any, member: str) -> dict[str, Any]:
    """The manifest's image entry, validated as read_manifest will validate it."""
    record = {"id": 0, "name": item.name, "width": width, "height": height, "subset": item.subset}
    try:
        spec = ImageSpec.model_validate(record)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'size'}: {e['msg']}"
                           for e in exc.errors())
        raise ClientError(f"member {member!r}: image of {width!r}x{height!r}: {detail}") from None
    return {"name": spec.name, "width": spec.width, "height": spec.height, "subset": spec.subset}


def item_pixels(
    item: Item, files: dict[str, bytes], label_map: LabelMap, warnings: list[str], step: int = 1
) -> np.ndarray:
    """The item's pixel values (instance ids where it can) from its best image: instanceIds,
    else labelIds, else color (each fallback warned); every `step`th row and column of them.
    In the PNG's own type (8- or 16-bit): at 16384x16384 every byte a pixel is 268 MB."""
    if "instanceIds" in files:
        ids = decode_ids_png(files["instanceIds"], item.members["instanceIds"])
        return np.ascontiguousarray(ids[::step, ::step])
    if "labelIds" in files:
        warnings.append(f"image {item.name!r}: no instanceIds; read labelIds (no instances)")
        ids = decode_ids_png(files["labelIds"], item.members["labelIds"])
        return np.ascontiguousarray(ids[::step, ::step])
    if "color" in files:
        warnings.append(f"image {item.name!r}: only the color image; classes read by colour")
        rgb = decode_color_png(files["color"], item.members["color"])
        return _ids_from_colors(rgb[::step, ::step], label_map)
    raise ClientError(f"image {item.name!r}: no instanceIds, labelIds or color image")


def coco_annotations(
    ids: np.ndarray,
    label_map: LabelMap,
    shapes: str,
    boxes: dict[int, Box],
    runs: Runs | None = None,
) -> list[dict[str, Any]]:
    """One COCO annotation per instance (or crowd region): a polygon per component along its
    pixels' edges, holes joined in (exact as pycocotools draws them), or its exact RLE; crowd
    regions always as RLE, as COCO wants them."""
    counts = np.bincount(ids.ravel())
    crowd = {v for v in boxes if 0 < v < 1000 and label_map.by_id(v).has_instances}
    as_masks = {v: b for v, b in boxes.items() if v in crowd or shapes == "mask"}
    masks = {s.value: s.rle for s in segments(ids, boxes=as_masks)} if as_masks else {}
    # All values in one call each: a call per value would walk the whole image per value.
    polygons = trace_edge_polygons(ids, {v: b for v, b in boxes.items() if v not in masks}, runs)
    out = []
    for value, (x0, y0, x1, y1) in sorted(boxes.items()):
        if value == 0:
            continue
        label = label_map.by_id(value // 1000 if value >= 1000 else value)
        if value in masks:
            segmentation: Any = masks[value]
        else:
            segmentation = [polygon.reshape(-1).tolist() for polygon in polygons[value]]
        out.append({"category_id": label.id, "segmentation": segmentation,
                    "area": int(counts[value]), "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                    "iscrowd": int(value in crowd)})
    return out


class _ValueLabels(dict):
    """(label name, is_crowd, instance number or None) of each pixel value, looked up once."""

    def __init__(self, label_map: LabelMap):
        super().__init__()
        self.label_map = label_map

    def __missing__(self, value: int) -> tuple[str, bool, int | None]:
        label = self.label_map.by_id(_class_id(value))
        assert label is not None  # _known_values dropped the rest
        entry = (label.name, value < 1000 and label.has_instances,
                 value % 1000 if value >= 1000 else None)
        self[value] = entry
        return entry


def _shape(entry: tuple[str, bool, int | None], z: int, geometry: dict) -> dict[str, Any]:
    name, crowd, instance = entry
    shape = {"label": name, "z_order": z, **geometry, "attributes": {"is_crowd": crowd}}
    if instance is not None:
        shape["instance"] = instance
    return shape


def _known_values(
    ids: np.ndarray, item: Item, label_map: LabelMap, warnings: list[str]
) -> tuple[np.ndarray, dict[int, Box], Runs]:
    """Pixels whose class is not in the label map are reported and treated as background, all
    values at once through one lookup table (65,536 unknown values cost one pass, not 65,536).
    Returns the ids, their value boxes and runs (one pass over the pixels, shared with
    tracing)."""
    runs = value_runs(ids)
    boxes = value_boxes(ids, runs)
    known = {label.id for label in label_map.labels if label.id >= 0}
    unknown = [v for v in boxes if _class_id(v) not in known]
    if not unknown:
        return ids, boxes, runs
    counts = np.bincount(ids.ravel(), minlength=max(boxes) + 1)
    table = np.arange(max(boxes) + 1, dtype=ids.dtype)
    table[unknown] = label_map.background.id
    ids = table[ids]
    listed = ", ".join(f"{v} (class id {_class_id(v)}, {counts[v]} pixels)" for v in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    what = "pixel value" if len(unknown) == 1 else f"{len(unknown)} pixel values:"
    warnings.append(
        f"image {item.name!r}: {what} {listed}{more} not in the label map;"
        f" {int(counts[unknown].sum())} pixels read as background"
    )
    runs = value_runs(ids)
    return ids, value_boxes(ids, runs), runs


def _class_id(value: int) -> int:
    return value // 1000 if value >= 1000 else value


def _ids_from_colors(rgb: np.ndarray, label_map: LabelMap) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    ids = np.zeros(packed.shape, np.uint8)  # class ids
    for label in reversed(label_map.drawn()):  # the first label of a shared colour wins
        r, g, b = label.color
        ids[packed == (r << 16 | g << 8 | b)] = label.id
    return ids


def _from_polygons(item: Item, data: bytes, label_map: LabelMap) -> ImportedImage:
    """Shapes of a polygons.json, checked as the manifest will check them: a size the export
    accepts, finite vertices within its coordinate range (an object with others is left out,
    warned), at most MAX_POLYGON_VERTICES vertices in all."""
    # The export's module (its rasterizer, panoptic and PNG writers) is loaded for its limit only
    # where polygons.json is read: tracing an image needs none of it (~15 ms of start-up).
    from worker.cityscapes.export import MAX_COORDINATE

    member = item.members["polygons"]
    try:
        document = orjson.loads(data)  # refuses NaN, Infinity and 1e999 (json takes them)
        width, height, objects = document["imgWidth"], document["imgHeight"], document["objects"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ClientError(f"member {member!r}: not a Cityscapes polygons file ({exc})") from None
    if not isinstance(objects, list):
        raise ClientError(f"member {member!r}: objects is not a list")
    image = image_record(item, width, height, member)
    warnings: list[str] = []
    out = []
    vertices = 0
    for z, obj in enumerate(objects):
        if not isinstance(obj, dict):
            warnings.append(f"image {item.name!r}: object {z} is not an object; skipped")
            continue
        name = obj.get("label", "")
        name = name if isinstance(name, str) else str(name)
        crowd = False
        label = label_map.lookup(name)
        if label is None and name.endswith("group"):
            label, crowd = label_map.lookup(name[: -len("group")]), True
        if label is None or obj.get("deleted"):
            if label is None:
                warnings.append(f"image {item.name!r}: object {z} of unknown label {name!r} skipped")
            continue
        points = _polygon_points(obj.get("polygon") or [], MAX_COORDINATE)
        if points is None:
            warnings.append(
                f"image {item.name!r}: object {z} ({name!r}): polygon is not a list of [x, y]"
                f" numbers within +-{MAX_COORDINATE:,}; skipped"
            )
            continue
        vertices += len(points) // 2
        if vertices > MAX_POLYGON_VERTICES:
            raise ClientError(
                f"member {member!r}: more than {MAX_POLYGON_VERTICES:,} vertices; at most"
                f" {MAX_POLYGON_VERTICES:,} are read per image"
            )
        out.append({"label": label.name, "type": "polygon", "points": points, "z_order": z,
                    "attributes": {"is_crowd": crowd}})
    return ImportedImage(image, out, warnings)


def _polygon_points(polygon: Any, limit: float) -> list[float] | None:
    """Flat x, y coordinates of a polygons.json polygon, or None if it is not one we can draw."""
    if not isinstance(polygon, list):
        return None
    points = []
    for point in polygon:
        if not isinstance(point, list) or len(point) < 2:
            return None
        for v in point[:2]:
            if type(v) not in (int, float) or not -limit <= v <= limit:
                return None  # bool, text, NaN (fails both comparisons) or too far out
            points.append(float(v))
    return points
