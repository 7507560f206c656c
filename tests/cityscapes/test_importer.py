"""The per-item import step on hand-made files: polygons.json read as the official format writes
it, ids images (made with Pillow) traced back into shapes that Pillow and pycocotools draw back
to the pixels, COCO records, and the warnings and errors that name what is wrong."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_api

from tests.official import pillow_polygons
from worker.cityscapes import importer
from worker.cityscapes.importer import (
    DOCUMENT_TAIL,
    ImportedImage,
    document_head,
    document_records,
    import_item,
    map_onto_task,
)
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.reader import ArchiveError, Item
from worker.errors import ClientError

OFFICIAL = LabelMap.cityscapes()
CUSTOM = LabelMap.from_task([("tree", (0, 255, 0)), ("cat", (9, 8, 7))])  # ids 1 and 2
KINDS = ("polygons", "instanceIds", "labelIds", "color")
ITEM = Item("lindau/x", "train", {kind: f"gtFine/train/lindau/x_gtFine_{kind}.{'json' if kind == 'polygons' else 'png'}"
                                  for kind in KINDS})


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def polygons_json(objects: list, width: int = 30, height: int = 20) -> bytes:
    return json.dumps({"imgHeight": height, "imgWidth": width, "objects": objects}).encode()


# A small instanceIds image in the official encoding: road (7), a car instance in a hole of the
# road, a one-pixel-wide person, a car crowd region (26), a pocket of background.
IDS = np.zeros((12, 16), np.uint16)
IDS[1:9, 1:12] = 7
IDS[3:6, 3:8] = 26000
IDS[4, 5] = 0
IDS[2:11, 14] = 24002
IDS[10:12, 0:3] = 26


def value_of(shape: dict) -> int:
    """The pixel value a manifest shape of the official table stands for."""
    class_id = OFFICIAL.lookup(shape["label"]).id
    return class_id * 1000 + shape["instance"] if "instance" in shape else class_id


def test_polygons_json_objects_become_shapes_in_their_order_with_crowds_and_skips_warned():
    objects = [
        {"label": "car", "polygon": [[1.5, 1], [5, 1], [5, 5]]},
        "not an object",
        {"label": "cargroup", "polygon": [[0, 0], [9, 0, 4], [9, 9]]},  # a third number: ignored
        {"label": "unicorn", "polygon": [[0, 0], [1, 0], [1, 1]]},
        {"label": "person", "deleted": 1, "polygon": [[0, 0], [1, 0], [1, 1]]},
        {"label": "road", "polygon": [[1, 1], [2], [3, 3]]},
        {"label": "road", "polygon": [[True, 1], [2, 2], [3, 3]]},
        {"label": 26, "polygon": [[0, 0], [1, 0], [1, 1]]},
        {"polygon": [[0, 0], [1, 0], [1, 1]]},
        {"label": "polegroup", "polygon": [[-2**30, 0], [2**30, 0], [0, 2**30]]},
        {"label": "sky", "polygon": [[0, 0], [2**30 + 1, 0], [0, 5]]},
    ]
    result = import_item(ITEM, {"polygons": polygons_json(objects)}, OFFICIAL)
    assert result.image == {"name": "lindau/x", "width": 30, "height": 20, "subset": "train"}
    assert result.shapes == [
        {"label": "car", "type": "polygon", "points": [1.5, 1, 5, 1, 5, 5], "z_order": 0,
         "attributes": {"is_crowd": False}},
        {"label": "car", "type": "polygon", "points": [0, 0, 9, 0, 9, 9], "z_order": 2,
         "attributes": {"is_crowd": True}},
        # polegroup is a label of its own in the official table, not a group of poles
        {"label": "polegroup", "type": "polygon", "points": [-2**30, 0, 2**30, 0, 0, 2**30],
         "z_order": 9, "attributes": {"is_crowd": False}},
    ]
    bad = "polygon is not a list of [x, y] numbers within +-1,073,741,824; skipped"
    assert result.warnings == [
        "image 'lindau/x': object 1 is not an object; skipped",
        "image 'lindau/x': object 3 of unknown label 'unicorn' skipped",
        f"image 'lindau/x': object 5 ('road'): {bad}",
        f"image 'lindau/x': object 6 ('road'): {bad}",
        "image 'lindau/x': object 7 of unknown label '26' skipped",
        "image 'lindau/x': object 8 of unknown label '' skipped",
        f"image 'lindau/x': object 10 ('sky'): {bad}",
    ]


@pytest.mark.parametrize("text, message", [
    (b"[1, 2]", r"not a Cityscapes polygons file \("),
    (b'{"imgWidth": 3, "imgHeight": 2}', r"not a Cityscapes polygons file \("),
    (b'{"imgWidth": 3, "imgHeight": 2, "objects": {}}', "objects is not a list$"),
    (polygons_json([], width=0), r"image of 0x20: width: Input should be greater than 0$"),
    (polygons_json([], width=0, height=0), r"image of 0x0: width: Input should be greater than 0;"
                                           r" height: Input should be greater than 0$"),
    (polygons_json([], width=20000, height=20000), r"image of 20000x20000: size: Value error,"
                                                   r" 20000x20000 is more than"),
])
def test_broken_polygons_files_name_the_member_and_the_problem(text, message):
    with pytest.raises(ClientError, match=r"^member 'gtFine/train/lindau/x_gtFine_polygons.json': "
                                          + message):
        import_item(ITEM, {"polygons": text}, OFFICIAL)


def test_vertices_are_counted_over_all_objects_of_an_image(monkeypatch):
    monkeypatch.setattr(importer, "MAX_POLYGON_VERTICES", 7)
    triangle, square = [[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 0], [1, 1], [0, 1]]
    objects = [{"label": "car", "polygon": triangle}, {"label": "car", "polygon": square}]
    assert len(import_item(ITEM, {"polygons": polygons_json(objects)}, OFFICIAL).shapes) == 2
    objects.append({"label": "car", "polygon": [[0, 0]]})
    with pytest.raises(ClientError, match=r"_polygons.json': more than 7 vertices; at most 7 are"
                                          r" read per image$"):
        import_item(ITEM, {"polygons": polygons_json(objects)}, OFFICIAL)


def both_files() -> dict[str, bytes]:
    """A polygons.json that does not match the pixels, beside the instanceIds image."""
    other = polygons_json([{"label": "sky", "polygon": [[0, 0], [5, 0], [5, 5]]}], 16, 12)
    return {"polygons": other, "instanceIds": png(IDS)}


def test_polygons_json_is_read_by_default_and_the_pixels_for_masks_or_coco():
    assert [s["label"] for s in import_item(ITEM, both_files(), OFFICIAL).shapes] == ["sky"]
    for shapes, output in (("mask", "manifest"), ("polygon", "coco")):
        read = import_item(ITEM, both_files(), OFFICIAL, shapes, output).shapes
        assert len(read) == 4, (shapes, output)


def test_masks_from_instance_ids_decode_to_each_value_with_its_label_and_instance():
    result = import_item(ITEM, {"instanceIds": png(IDS)}, OFFICIAL, "mask")
    assert result.warnings == [] and result.changed_pixels == 0
    assert [s["z_order"] for s in result.shapes] == [0, 1, 2, 3]
    values = set()
    for shape in result.shapes:
        assert shape["type"] == "mask"
        value = np.bincount(IDS[mask_api.decode(shape["rle"]).astype(bool)]).argmax()
        assert np.array_equal(mask_api.decode(shape["rle"]).astype(bool), IDS == value)
        label = OFFICIAL.by_id(value // 1000 if value >= 1000 else value)
        assert shape["label"] == label.name
        assert shape.get("instance") == (value % 1000 if value >= 1000 else None)
        assert shape["attributes"] == {"is_crowd": bool(value < 1000 and label.has_instances)}
        values.add(int(value))
    assert values == {7, 26, 24002, 26000}


def test_polygons_from_instance_ids_redraw_with_pillow_to_the_pixels():
    result = import_item(ITEM, {"instanceIds": png(IDS)}, OFFICIAL, "polygon")
    assert result.warnings == [] and result.changed_pixels == 0
    assert all(s["type"] == "polygon" for s in result.shapes)
    ordered = sorted(result.shapes, key=lambda s: s["z_order"])
    assert np.array_equal(pillow_polygons(IDS.shape, ((s["points"], value_of(s)) for s in ordered)),
                          IDS)


def test_instance_0_of_class_1_is_an_instance_not_a_crowd():
    ids = np.zeros((6, 8), np.uint16)
    ids[1:3, 1:4] = 1000  # tree, instance 0
    ids[4:6, 4:8] = 1  # tree, no instance: a crowd region
    result = import_item(ITEM, {"instanceIds": png(ids)}, CUSTOM, "mask")
    found = {(s["label"], s.get("instance"), s["attributes"]["is_crowd"]) for s in result.shapes}
    assert found == {("tree", 0, False), ("tree", None, True)}
    coco = import_item(ITEM, {"instanceIds": png(ids)}, CUSTOM, "polygon", "coco").shapes
    assert [(a["category_id"], a["iscrowd"], type(a["segmentation"])) for a in coco] == [
        (1, 1, dict), (1, 0, list)]


def test_fallback_images_are_warned_and_serve_coco_too():
    classes = np.where(IDS >= 1000, IDS // 1000, IDS).astype(np.uint8)
    colours = np.zeros((*IDS.shape, 3), np.uint8)
    for label in OFFICIAL.drawn():
        colours[classes == label.id] = label.color
    for kind, data, warning in (
        ("labelIds", png(classes), "no instanceIds; read labelIds (no instances)"),
        ("color", png(colours), "only the color image; classes read by colour"),
    ):
        result = import_item(ITEM, {kind: data}, OFFICIAL, "polygon", "coco")
        assert result.warnings == [f"image 'lindau/x': {warning}"], kind
        by_category = {a["category_id"]: a["area"] for a in result.shapes}
        assert by_category == {7: int((classes == 7).sum()), 24: 9, 26: 3 * 5 - 1 + 2 * 3}, kind


@pytest.mark.parametrize("kind", ["instanceIds", "labelIds", "color"])
def test_an_undecodable_image_names_its_member(kind):
    with pytest.raises(ArchiveError, match=f"^member 'gtFine/train/lindau/x_gtFine_{kind}.png'"):
        import_item(ITEM, {kind: b"\x89PNG broken"}, OFFICIAL)


def test_an_item_without_images_is_refused_by_name():
    with pytest.raises(ClientError, match="^image 'lindau/x': no instanceIds, labelIds or color image$"):
        import_item(ITEM, {}, OFFICIAL)


@pytest.mark.parametrize("unknown, listed", [
    ([40000], "pixel value 40000 (class id 40, 1 pixels)"),
    ([40, 41, 42, 43, 44], "5 pixel values: 40 (class id 40, 1 pixels), 41 (class id 41, 1 pixels),"
                           " 42 (class id 42, 1 pixels), 43 (class id 43, 1 pixels), 44 (class id 44,"
                           " 1 pixels)"),
    ([40, 41, 42, 43, 44, 45], "6 pixel values: 40 (class id 40, 1 pixels), 41 (class id 41,"
                               " 1 pixels), 42 (class id 42, 1 pixels), 43 (class id 43, 1 pixels),"
                               " 44 (class id 44, 1 pixels) and 1 more"),
    ([40, 41, 42, 43, 44, 45, 46000], "7 pixel values: 40 (class id 40, 1 pixels), 41 (class id 41,"
                                      " 1 pixels), 42 (class id 42, 1 pixels), 43 (class id 43,"
                                      " 1 pixels), 44 (class id 44, 1 pixels) and 2 more"),
])
def test_values_outside_the_label_map_are_listed_five_at_most_and_read_as_background(unknown, listed):
    ids = IDS.copy()
    ids[0, : len(unknown)] = unknown
    result = import_item(ITEM, {"instanceIds": png(ids)}, OFFICIAL, "mask")
    assert result.warnings == [f"image 'lindau/x': {listed} not in the label map;"
                               f" {len(unknown)} pixels read as background"]
    assert np.array_equal(painted_masks(result.shapes, ids.shape), IDS)


def painted_masks(shapes: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """Mask shapes decoded by pycocotools and painted in z order with their values."""
    out = np.zeros(shape, np.int64)
    for s in sorted(shapes, key=lambda s: s["z_order"]):
        out[mask_api.decode(s["rle"]).astype(bool)] = value_of(s)
    return out


def test_shapes_map_onto_the_task_labels_and_the_rest_is_counted_out():
    shapes = [{"label": name, "z_order": z} for z, name in
              enumerate(["car", "unicorn", "road", "unicorn", "unlabeled", "unicorn", "sky"])]
    mapped = map_onto_task(ImportedImage({"name": "lindau/x"}, shapes, ["before"], 5),
                           [{"name": "Car"}, {"name": "Road"}])
    assert [(s["label"], s["z_order"]) for s in mapped.shapes] == [
        ("Car", 0), ("Road", 2), ("unlabeled", 4)]
    assert mapped.warnings == [
        "before",
        "image 'lindau/x': 3 shape(s) of 'unicorn', which the task labels lack, left out",
        "image 'lindau/x': 1 shape(s) of 'sky', which the task labels lack, left out",
    ]
    assert mapped.changed_pixels == 5


def test_document_heads_hold_coco_categories_or_manifest_labels():
    images = [{"id": 3, "name": "lindau/x", "width": 16, "height": 12, "subset": "train"}]
    coco = json.loads(document_head("coco", CUSTOM, images) + DOCUMENT_TAIL)
    assert coco == {"images": [{"id": 3, "file_name": "lindau/x", "width": 16, "height": 12}],
                    "categories": [{"id": 1, "name": "tree", "supercategory": ""},
                                   {"id": 2, "name": "cat", "supercategory": ""}],
                    "annotations": []}
    manifest = json.loads(document_head("manifest", CUSTOM, images) + DOCUMENT_TAIL)
    assert manifest["labels"] == [{"name": "background", "color": "#000000"},
                                  {"name": "tree", "color": "#00ff00"},
                                  {"name": "cat", "color": "#090807"}]
    task = [{"name": "Tree", "color": "#00ff00"}]
    assert json.loads(document_head("manifest", CUSTOM, images, task) + DOCUMENT_TAIL)["labels"] == task


def test_coco_annotation_ids_are_the_image_id_times_100000_plus_their_index():
    result = ImportedImage({}, [{"category_id": 1}, {"category_id": 2}])
    records = [json.loads(r) for r in document_records(result, 3, "coco")]
    assert records == [{"id": 300000, "image_id": 3, "category_id": 1},
                       {"id": 300001, "image_id": 3, "category_id": 2}]
    assert [json.loads(r) for r in document_records(result, 3, "manifest")] == [
        {"image": 3, "category_id": 1}, {"image": 3, "category_id": 2}]


def test_pixels_the_polygons_cannot_redraw_are_counted_and_warned():
    ids = np.full((7, 7), 7, np.uint16)  # road rings round background rings, three deep
    ids[1:6, 1:6], ids[2:5, 2:5], ids[3, 3] = 0, 7, 0
    result = import_item(ITEM, {"instanceIds": png(ids)}, OFFICIAL, "polygon")
    ordered = sorted(result.shapes, key=lambda s: s["z_order"])
    drawn = pillow_polygons(ids.shape, ((s["points"], value_of(s)) for s in ordered))
    assert result.changed_pixels == np.count_nonzero(drawn != ids) == 1
    assert result.warnings == ["image 'lindau/x': the polygons redraw 1 pixels differently"
                               " (use shapes=mask for exact masks)"]
