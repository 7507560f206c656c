import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.official import official_images, pillow_polygons
from worker.cityscapes.export import (
    ExportOptions,
    ZipLayout,
    export_image,
    gt_path,
    left_image_path,
)
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.manifest import ImageRecord, Shape
from worker.cityscapes.rle import encode_mask, mask_runs
from worker.errors import ShapeError

IMAGE = ImageRecord(1, "lindau/x.png", 40, 20, "train")
OFFICIAL = LabelMap.cityscapes()
CUSTOM = LabelMap.from_task([("tree", (0, 255, 0)), ("cat", (9, 8, 7))])


def poly(index, label, points, **kw):
    return Shape(index=index, label=label, kind="polygon", points=np.asarray(points, float), **kw)


def pngs(result):
    return {
        p.path.rsplit("_gtFine_", 1)[1]: (
            np.asarray(Image.open(io.BytesIO(p.data))) if p.path.endswith(".png") else json.loads(p.data)
        )
        for p in result.parts
    }


def test_masks_paint_their_pixels_in_drawing_order_with_polygons():
    mask = np.zeros((20, 40), bool)
    mask[5:15, 10:30] = True
    mask[8:10, 15:18] = False  # a hole
    shapes = [
        poly(0, "road", [0, 0, 39, 0, 39, 19, 0, 19]),
        Shape(index=1, label="car", kind="mask", rle=encode_mask(mask)),
        poly(2, "person", [12, 6, 14, 6, 14, 8, 12, 8]),
    ]
    out = pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions()))
    expected = np.full((20, 40), 7)
    expected[mask] = 26
    expected[6:9, 12:15] = 24
    assert np.array_equal(out["labelIds.png"], expected)
    instances = out["instanceIds.png"]
    assert np.array_equal(instances[mask & (expected == 26)], np.full((mask & (expected == 26)).sum(), 26000))
    assert set(np.unique(instances)) == {7, 26000, 24000}
    # polygons.json holds the mask as its outline: the official format has no masks.
    labels = [o["label"] for o in out["polygons.json"]["objects"]]
    assert labels == ["road", "car", "person"]


def test_a_mask_over_a_box_paints_what_the_same_mask_over_the_image_paints():
    mask = np.zeros((20, 40), bool)
    mask[3:17, 25:38] = np.random.default_rng(3).random((14, 13)) < 0.6
    box = {"size": [14, 13], "counts": mask_runs(mask[3:17, 25:38]), "box": [25, 3, 13, 14]}
    whole = pngs(export_image(IMAGE, [Shape(index=0, label="car", kind="mask",
                                            rle=encode_mask(mask))], OFFICIAL, ExportOptions()))
    boxed = pngs(export_image(IMAGE, [Shape(index=0, label="car", kind="mask", rle=box)],
                              OFFICIAL, ExportOptions()))
    assert (whole["labelIds.png"] == 26).sum() == mask.sum()
    for kind in ("labelIds.png", "instanceIds.png", "color.png"):
        assert np.array_equal(boxed[kind], whole[kind]), kind
    assert boxed["polygons.json"] == whole["polygons.json"]


def test_instances_count_per_class_in_drawing_order_and_keep_given_numbers():
    shapes = [
        poly(0, "car", [0, 0, 5, 0, 5, 5]),
        poly(1, "person", [10, 0, 15, 0, 15, 5]),
        poly(2, "car", [20, 0, 25, 0, 25, 5], is_crowd=True),
        poly(3, "car", [30, 0, 35, 0, 35, 5]),
        poly(4, "car", [0, 10, 5, 10, 5, 15], instance=17),
        poly(5, "sky", [20, 10, 25, 10, 25, 15], is_crowd=True),
    ]
    out = pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions()))
    ids = out["instanceIds.png"]
    assert [ids[1, 4], ids[1, 14], ids[1, 24], ids[1, 34], ids[11, 4], ids[11, 24]] == [
        26000, 24000, 26, 26001, 26017, 23]
    names = [o["label"] for o in out["polygons.json"]["objects"]]
    assert names == ["car", "person", "cargroup", "car", "car", "sky"]


def test_custom_label_map_ids_and_instances():
    shapes = [poly(0, "tree", [0, 0, 9, 0, 9, 9]), poly(1, "cat", [20, 0, 29, 0, 29, 9])]
    out = pngs(export_image(IMAGE, shapes, CUSTOM, ExportOptions(train_ids=True)))
    assert out["labelIds.png"][2, 2] == 1 and out["labelIds.png"][2, 22] == 2
    assert out["instanceIds.png"][2, 2] == 1000 and out["instanceIds.png"][2, 22] == 2000
    assert tuple(out["color.png"][2, 22]) == (9, 8, 7, 255)
    assert "labelTrainIds.png" not in out  # no train ids outside the official table


def test_train_ids_only_on_request():
    shapes = [poly(0, "car", [0, 0, 9, 0, 9, 9]), poly(1, "caravan", [20, 0, 29, 0, 29, 9])]
    assert "labelTrainIds.png" not in pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions()))
    out = pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions(train_ids=True)))
    assert out["labelTrainIds.png"][2, 2] == 13 and out["labelTrainIds.png"][2, 22] == 255
    assert out["labelTrainIds.png"][15, 5] == 255


def test_unknown_labels_become_background_with_a_warning():
    shapes = [poly(0, "car", [0, 0, 9, 0, 9, 9]), poly(1, "unicorn", [0, 0, 5, 0, 5, 5])]
    result = export_image(IMAGE, shapes, OFFICIAL, ExportOptions())
    assert pngs(result)["labelIds.png"][1, 3] == 0
    assert any("'unicorn'" in w and "background" in w for w in result.warnings)


def test_polygons_with_fewer_than_three_points_are_skipped_with_a_warning():
    shapes = [poly(7, "car", [0, 0, 9, 9]), poly(8, "car", [1, 1, 1.2, 1.2, 0.9, 0.9])]
    result = export_image(IMAGE, shapes, OFFICIAL, ExportOptions())
    assert any("shape 7" in w and "lindau/x.png" in w for w in result.warnings)
    assert result.objects == 1  # a degenerate polygon of 3 points is still drawn, as officially


def test_license_plates_stay_in_polygons_json_only():
    shapes = [poly(0, "car", [0, 0, 9, 0, 9, 9]), poly(1, "license plate", [2, 2, 6, 2, 6, 4])]
    result = export_image(IMAGE, shapes, OFFICIAL, ExportOptions())
    out = pngs(result)
    assert out["labelIds.png"][3, 4] == 26
    assert [o["label"] for o in out["polygons.json"]["objects"]] == ["car", "license plate"]
    assert any("license plate" in w for w in result.warnings)


def test_instance_1001_of_a_class_names_the_shape():
    shapes = [poly(i, "car", [0, 0, 5, 0, 5, 5]) for i in range(1001)]
    with pytest.raises(ShapeError, match=r"image 'lindau/x.png', shape 1000: instance id 27000 of 'car' cannot be"):
        export_image(IMAGE, shapes, OFFICIAL, ExportOptions())


def test_a_given_instance_number_999_is_drawn_with_it():
    shapes = [poly(3, "car", [0, 0, 5, 0, 5, 5], instance=999)] * 2
    ids = pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions()))["instanceIds.png"]
    assert ids[2, 4] == 26999 and set(np.unique(ids)) == {0, 26999}


def test_class_ids_above_65_cannot_hold_instances():
    labels = LabelMap.from_task([(f"l{i}", (i, i, i)) for i in range(70)])
    with pytest.raises(ShapeError, match="'l66'.*65536"):
        export_image(IMAGE, [poly(0, "l66", [0, 0, 5, 0, 5, 5])], labels, ExportOptions())
    export_image(IMAGE, [poly(0, "l66", [0, 0, 5, 0, 5, 5], is_crowd=True)], labels, ExportOptions())


@pytest.mark.parametrize("count", [256, 600])  # 256: one index past what an 8-bit canvas holds
def test_more_than_255_shapes_are_painted_exactly(count):
    rng = np.random.default_rng(1)
    shapes = [poly(i, ("car", "person")[i % 2], rng.integers(-2, 40, 8)) for i in range(count)]
    out = pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions()))
    # The same polygons painted one by one with their instance ids, as json2instanceImg does.
    expected = pillow_polygons((20, 40), ((shape.points, (26, 24)[i % 2] * 1000 + i // 2)
                                          for i, shape in enumerate(shapes)))
    assert np.array_equal(out["instanceIds.png"], expected)
    last = (26, 24)[(count - 1) % 2] * 1000 + (count - 1) // 2
    assert last in out["instanceIds.png"]  # the shape past index 255 shows


def test_paths_follow_subset_and_city():
    assert gt_path(IMAGE, "labelIds.png") == "gtFine/train/lindau/x_gtFine_labelIds.png"
    flat = ImageRecord(1, "x.jpg", 4, 4)
    assert gt_path(flat, "color.png") == "gtFine/default/x_gtFine_color.png"


@pytest.mark.parametrize("layout, default_city, name, folder", [
    ("cvat", None, "lindau/x.png", "train/lindau"),
    ("cvat", None, "x.png", "train"),  # as before the layouts: no city folder
    ("cvat", None, "aachen_000001_000019.png", "train"),
    ("cvat", "berlin", "x.png", "train/berlin"),
    ("cvat", "berlin", "aachen_000001_000019.png", "train/aachen"),
    ("cityscapes", None, "lindau/x.png", "train/lindau"),
    ("cityscapes", None, "x.png", "train/default"),
    ("cityscapes", None, "bad-honnef_000001_000019.png", "train/bad-honnef"),
    ("cityscapes", None, "aachen_1_x.png", "train/default"),
    ("cityscapes", "berlin", "x.png", "train/berlin"),
])
def test_layouts_place_photos_and_city_folders(layout, default_city, name, folder):
    image, zip_layout = ImageRecord(1, name, 4, 4, "train"), ZipLayout(layout, default_city)
    stem = name.rsplit("/", 1)[-1][: -len(".png")]
    photos = "leftImg8bit" if layout == "cityscapes" else "imgsFine/leftImg8bit"
    gt = f"gtFine/{folder}/{stem}_gtFine_labelIds.png"
    assert gt_path(image, "labelIds.png", zip_layout) == gt
    assert left_image_path(image, ".jpg", zip_layout) == f"{photos}/{folder}/{stem}_leftImg8bit.jpg"


@pytest.mark.parametrize("points", [[1, 1, 1.0738e9, 1, 10, 9], [-2e9, 0, 5, 0, 5, 5],
                                    [0, 0, 5, 1e300, 5, 5]])
def test_coordinates_the_rasterizer_cannot_draw_name_the_shape(points):
    with pytest.raises(ShapeError, match=r"shape 4: a coordinate of \S+ is beyond \+-1,073,741,824"
                       r" \(2\^30\), which the rasterizer \(Pillow, as in the official scripts\)"
                       r" cannot draw$"):
        export_image(IMAGE, [poly(4, "car", points)], OFFICIAL, ExportOptions())


def test_coordinates_past_single_precision_are_drawn_with_a_warning():
    far = 2.0**23 + 1
    out = export_image(IMAGE, [poly(3, "road", [-far, -far, far, -far, 0, far])], OFFICIAL,
                       ExportOptions())
    assert (pngs(out)["labelIds.png"] == 7).all()
    assert len(out.warnings) == 1 and out.warnings[0].endswith(
        "shape 3: a coordinate of 8.389e+06 is beyond +-8,388,608 (2^23): drawn as the official"
        " scripts draw it, whose single-precision edges may stray a few pixels from the true line")
    near = export_image(IMAGE, [poly(3, "road", [-2**23, 0, 2**23, 0, 0, 2**23])], OFFICIAL,
                        ExportOptions())
    assert near.warnings == []


def test_a_coordinate_of_exactly_2_to_the_30_is_drawn():
    edge = 2**30
    out = export_image(IMAGE, [poly(4, "road", [-edge, 0, edge, 0, 0, edge])], OFFICIAL,
                       ExportOptions())
    assert (pngs(out)["labelIds.png"] == 7).all() and len(out.warnings) == 1


def test_polygons_json_holds_vertices_rounded_to_whole_numbers_halves_up():
    shapes = [poly(0, "car", [0.5, 1.49, 9.5, 1.5, 4.2, 8.7]),
              Shape(index=1, label="road", kind="rectangle", points=np.asarray([10.5, 2.5, 20.4, 9.6]))]
    objects = pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions()))["polygons.json"]["objects"]
    assert [o["polygon"] for o in objects] == [[[1, 1], [10, 2], [4, 9]],
                                               [[11, 3], [20, 3], [20, 10], [11, 10]]]
    assert all(type(v) is int for o in objects for vertex in o["polygon"] for v in vertex)


def test_mask_outlines_of_three_corners_are_kept_and_lines_are_not():
    mask = np.zeros((20, 40), bool)
    mask[2, 2] = mask[3, 2] = mask[2, 3] = True  # an L of three pixels: a triangle of centres
    mask[10, 10:15] = True  # a line: two vertices, no area for a polygon
    shapes = [Shape(index=0, label="car", kind="mask", rle=encode_mask(mask))]
    objects = pngs(export_image(IMAGE, shapes, OFFICIAL, ExportOptions()))["polygons.json"]["objects"]
    assert len(objects) == 1
    assert sorted(map(tuple, objects[0]["polygon"])) == [(2, 2), (2, 3), (3, 2)]


def test_a_cityscapes_sized_image_matches_the_official_scripts_in_every_row():
    # 2048x1024, as the dataset's photos: PNGs made in several bands of rows, all to be right.
    image = ImageRecord(1, "lindau/big.png", 2048, 1024, "train")
    shapes = [poly(0, "road", [0, 500, 2047, 450, 2047, 1023, 0, 1023]),
              poly(1, "car", [100, 300, 1900, 280, 1700, 990, 300, 1000]),
              poly(2, "person", [1000, 10, 1040, 10, 1030, 1010])]
    out = pngs(export_image(image, shapes, OFFICIAL, ExportOptions(train_ids=True)))
    polygons = json.dumps(out["polygons.json"]).encode()
    for kind, expected in official_images(polygons).items():
        assert np.array_equal(out[f"{kind}.png"], expected), kind


def test_polygons_json_is_deflated_in_the_archive_and_pngs_are_stored():
    result = export_image(IMAGE, [poly(0, "car", [0, 0, 9, 0, 9, 9])], OFFICIAL, ExportOptions())
    assert {p.path.rsplit("_gtFine_", 1)[1]: p.compress for p in result.parts} == {
        "labelIds.png": False, "instanceIds.png": False, "color.png": False, "polygons.json": True}


def test_labels_not_drawn_are_counted_in_one_warning_each_and_later_shapes_still_drawn():
    shapes = [poly(0, "unicorn", [0, 0, 5, 0, 5, 5]), poly(1, "license plate", [2, 2, 6, 2, 6, 4]),
              poly(2, "unicorn", [0, 0, 5, 0, 5, 5]), poly(3, "license plate", [2, 2, 6, 2, 6, 4]),
              poly(4, "car", [20, 0, 29, 0, 29, 9])]
    result = export_image(IMAGE, shapes, OFFICIAL, ExportOptions())
    assert pngs(result)["instanceIds.png"][2, 22] == 26000
    assert result.warnings == [
        "image 'lindau/x.png': 2 shape(s) of label 'unicorn', which is not in the label map,"
        " drawn as background",
        "image 'lindau/x.png': 2 shape(s) of 'license plate', a label without a pixel id,"
        " kept in polygons.json only",
    ]


def test_a_polygon_of_no_points_is_skipped_with_a_warning():
    result = export_image(IMAGE, [poly(6, "car", [])], OFFICIAL, ExportOptions())
    assert result.objects == 0
    assert result.warnings == ["image 'lindau/x.png', shape 6: polygon has 0 points (< 3); skipped"]


def test_a_broken_mask_rle_names_the_shape_and_the_problem():
    rle = {"size": [20, 40], "counts": [5, 5]}
    with pytest.raises(ShapeError, match=r"^image 'lindau/x.png', shape 2: mask RLE is broken"
                                         r" \(RLE runs cover 10 pixels, the mask has 800\)$"):
        export_image(IMAGE, [Shape(index=2, label="car", kind="mask", rle=rle)], OFFICIAL,
                     ExportOptions())


def test_instance_id_65535_is_the_largest_drawn():
    labels = LabelMap.from_task([(f"l{i}", (i, i, i)) for i in range(70)])  # l64: class id 65
    ids = pngs(export_image(IMAGE, [poly(0, "l64", [0, 0, 5, 0, 5, 5], instance=535)], labels,
                            ExportOptions()))["instanceIds.png"]
    assert ids[1, 4] == 65535
    with pytest.raises(ShapeError, match="instance id 65536 of 'l64'"):
        export_image(IMAGE, [poly(0, "l64", [0, 0, 5, 0, 5, 5], instance=536)], labels,
                     ExportOptions())
