"""CVAT for images 1.1 XML and COCO instances JSON written by a real tool read by our adapters.

bench/datumaro_write.py has Datumaro 1.13 (the engine behind CVAT's dataset exports) build one
scene and write it with its `cvat` and `coco_instances` exporters. Our export of each file must
give the pixels of the same scene written as manifest v1 directly, except where Datumaro's writer
changes the scene; there the reference makes exactly that change (`reference_manifest`):
- both files: coordinates are rounded to 2 decimals when Datumaro builds a shape;
- COCO has no z_order: annotations stay in item order, except that grouped ones go last, by
  group id (how Datumaro collects instances); every mask becomes an uncompressed RLE (counts
  list) with iscrowd 1 (its "guess" segmentation mode takes a mask for a crowd); a crowd polygon
  becomes such an RLE too, rasterized by pycocotools, whose edge pixels are not the official
  scripts'.
Unlike our hand-written files, neither carries label colours (we give Cityscapes names their
official ones), CVAT <image>s have no `subset` (Datumaro writes one file per subset), CVAT masks
span the whole image, a COCO box alone has `"segmentation": []` and COCO image ids count from 1.
The CVAT writer keeps points, polylines and tags, which we skip with a warning; the COCO one
drops them itself.
"""

import json
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from bench.refenv import DATUMARO, reference_python
from tests.cityscapes.test_adapters import assert_same_pixels, write_export
from worker.cityscapes.adapters import default_color, detect_format
from worker.cityscapes.labels import color_hex
from worker.cityscapes.rle import encode_mask

ROOT = Path(__file__).parents[2]
W, H = 320, 160
LABELS = ["road", "car", "rock"]  # rock is no Cityscapes name: the label map is the task's own
AREA = ("polygon", "bbox", "mask")


def region(y0, y1, x0, x1, hole) -> dict:
    """A rectangle of mask pixels less a rectangle `hole` (y0, y1, x0, x1), as COCO RLE."""
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    mask[hole[0] : hole[1], hole[2] : hole[3]] = False
    return encode_mask(mask)


def ann(kind: str, label: str, points=None, **extra) -> dict:
    """One annotation of the scene; "instance" is for the reference only (Datumaro ignores it)."""
    return {"type": kind, "label": label, **({"points": points} if points else {}), **extra}


def photo(name: str, *annotations: dict) -> dict:
    return {"name": name, "width": W, "height": H, "annotations": list(annotations)}


SCENE = {
    "labels": LABELS,
    "images": [
        photo(
            "lindau/a.png",
            ann("polygon", "road", [0, 96, 160, 120, 320, 96, 320, 159, 0, 159]),  # concave
            ann("bbox", "car", [60.5, 50, 120.25, 90], z_order=2, attributes={"occluded": True}),
            ann("polygon", "car", [20, 40, 80, 40, 80, 70, 50, 70, 50, 110, 20, 110], z_order=1),
            ann("polygon", "car", [150, 20, 250.5, 30, 180, 90.5], attributes={"is_crowd": True}),
            ann("mask", "rock", rle=region(60, 110, 200, 280, hole=(75, 90, 225, 250)), z_order=1),
            ann("points", "car", [3, 3, 5, 5]),
            ann("polyline", "road", [1, 1, 50, 50]),
            ann("tag", "car"),
        ),
        photo(
            "lindau/b.png",  # one car in two parts
            ann("polygon", "car", [10, 10, 60, 10, 60, 50, 10, 50], group=5, instance=0),
            ann("polygon", "car", [90, 10, 140, 10, 140, 50], group=5, instance=0),
            ann("polygon", "rock", [100.496, 60, 180, 60, 180, 140, 100, 140]),
        ),
        photo(
            "c.png",  # input order is not drawing order
            ann("polygon", "rock", [40, 40, 140, 40, 140, 20, 200, 80, 140, 140, 140, 120, 40, 120],
                z_order=3),  # an arrow: concave
            ann("polygon", "road", [0, 80, 320, 80, 320, 160, 0, 160]),
            ann("polygon", "car", [200, 60, 300, 60, 300, 150, 200, 150], z_order=-1),
            ann("mask", "car", rle=region(10, 40, 220, 300, hole=(20, 30, 240, 260)), z_order=2),
        ),
    ],
}


def reference_manifest(coco: bool = False, round_points: bool = True) -> dict:
    """SCENE as manifest v1, with the changes Datumaro's writer makes (module docstring)."""
    images, shapes = [], []
    for number, image in enumerate(SCENE["images"], 1):
        images.append({"id": number, "name": image["name"], "width": W, "height": H})
        drawn = [a for a in image["annotations"] if a["type"] in AREA]
        if coco:  # stable: ungrouped ones keep their order
            drawn.sort(key=lambda a: a.get("group", 0))
        for spec in drawn:
            crowd = spec.get("attributes", {}).get("is_crowd", False)
            crowd = crowd or (coco and spec["type"] == "mask")
            shape = {"image": number, "label": spec["label"], "attributes": {"is_crowd": crowd}}
            if not coco:
                shape["z_order"] = spec.get("z_order", 0)
            if "instance" in spec:
                shape["instance"] = spec["instance"]
            if spec["type"] == "mask":
                shape.update(type="mask", rle=spec["rle"])
            elif coco and crowd and spec["type"] == "polygon":
                points = [round(v, 2) for v in spec["points"]]
                raster = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([points], H, W)))
                shape.update(type="mask", rle=encode_mask(raster.astype(bool)))
            else:
                points = [round(v, 2) if round_points else v for v in spec["points"]]
                kind = "rectangle" if spec["type"] == "bbox" else "polygon"
                shape.update(type=kind, points=points)
            shapes.append(shape)
    labels = [{"name": name, "color": color_hex(default_color(name))} for name in LABELS]
    return {"version": 1, "labels": labels, "images": images, "shapes": shapes}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """Datumaro's two files for SCENE (one script run: its start-up is the slow part)."""
    tmp = tmp_path_factory.mktemp("datumaro-write")
    (tmp / "scene.json").write_text(json.dumps(SCENE))
    python = reference_python("datumaro", DATUMARO)
    script = ROOT / "bench" / "datumaro_write.py"
    subprocess.run(
        [str(python), str(script), str(tmp / "scene.json"), str(tmp / "out")],
        check=True, capture_output=True, text=True,
    )
    return {
        "cvat": tmp / "out" / "cvat" / "default.xml",
        "coco": tmp / "out" / "coco" / "annotations" / "instances_default.json",
    }


def export(tmp_path, name: str, document: bytes, fmt: str = "auto") -> dict:
    exported = write_export(tmp_path, name, document, fmt)
    with zipfile.ZipFile(tmp_path / f"{name}.zip") as archive:
        exported["label_color"] = archive.read("label_color.txt").decode()
    return exported


def reference_export(tmp_path, name: str, manifest: dict) -> dict:
    return export(tmp_path, name, json.dumps(manifest).encode(), "manifest")


def assert_every_image_and_label(got: dict, expected: dict):
    assert got["result"]["images"] == 3
    assert got["label_color"] == expected["label_color"]
    rock = " ".join(map(str, default_color("rock")))
    assert got["label_color"].splitlines()[1:] == [
        "0 0 0 background", "128 64 128 road", "0 0 142 car", f"{rock} rock"
    ]
    for stem in ("lindau/a", "lindau/b", "c"):
        for kind in ("labelIds", "instanceIds", "color"):
            assert f"gtFine/default/{stem}_gtFine_{kind}.png" in got["names"]


@pytest.mark.parametrize("fmt", ["cvat", "coco"])
def test_datumaros_files_are_told_apart_by_content(written, fmt):
    assert detect_format(written[fmt]) == fmt


def test_datumaros_cvat_file_exports_the_scene(tmp_path, written):
    root = ET.parse(written["cvat"]).getroot()
    assert [label.findtext("name") for label in root.iter("label")] == LABELS
    assert root.find(".//label/color") is None and root.find(".//image[@subset]") is None
    boxes = {tuple(m.get(k) for k in ("left", "top", "width", "height")) for m in root.iter("mask")}
    assert boxes == {("0", "0", str(W), str(H))}  # each mask spans the whole image
    got = export(tmp_path, "default.xml", written["cvat"].read_bytes())
    expected = reference_export(tmp_path, "reference.json", reference_manifest())
    assert_every_image_and_label(got, expected)
    assert_same_pixels(got, expected)
    assert got["result"]["objects"] == expected["result"]["objects"] == 12
    assert got["result"]["warnings"] == [
        "image 'lindau/a.png': skipped 1 <points>, 1 <polyline>, 1 <tag>"
        " (only polygons, boxes and masks have an area)"
    ]
    assert expected["result"]["warnings"] == []


def test_datumaros_coco_file_exports_the_scene_as_datumaro_changes_it(tmp_path, written):
    document = json.loads(written["coco"].read_bytes())
    assert [image["id"] for image in document["images"]] == [1, 2, 3]
    by_form = {"rle": [], "polygons": [], "bbox": []}
    for annotation in document["annotations"]:
        segmentation = annotation["segmentation"]
        form = "rle" if isinstance(segmentation, dict) else "polygons" if segmentation else "bbox"
        by_form[form].append(annotation)
    assert [(a["iscrowd"], type(a["segmentation"]["counts"])) for a in by_form["rle"]] == [
        (1, list)
    ] * 3  # the crowd triangle and both masks: uncompressed RLE
    # one list per annotation; b.png's group is one annotation of two polygons, after its rock
    assert [len(a["segmentation"]) for a in by_form["polygons"]] == [1, 1, 1, 2, 1, 1, 1]
    assert [a["bbox"] for a in by_form["bbox"]] == [[60.5, 50, 59.75, 40]]
    got = export(tmp_path, "instances_default.json", written["coco"].read_bytes(), "coco")
    expected = reference_export(tmp_path, "reference.json", reference_manifest(coco=True))
    assert_every_image_and_label(got, expected)
    assert_same_pixels(got, expected)
    assert got["result"]["objects"] == expected["result"]["objects"] == 12
    # Datumaro, like CVAT, writes every mask as a crowd RLE: the warning says so and names the switch.
    assert got["result"]["warnings"] == [
        "all 3 RLE annotations are iscrowd, as CVAT's COCO export marks every mask: they are drawn"
        " as crowd regions, without instance ids; to read them as instances, use"
        " --coco-rle-instances (job field coco_rle_instances)"
    ]


def test_what_datumaros_changes_do_to_the_pixels(tmp_path):
    """Each change the references make shows in the pixels: none of them is a no-op."""
    runs = {
        name: reference_export(tmp_path, f"{name}.json", manifest)["pngs"]
        for name, manifest in (
            ("exact", reference_manifest(round_points=False)),
            ("cvat", reference_manifest()),
            ("coco", reference_manifest(coco=True)),
        )
    }
    road, car, rock = 1, 2, 3
    # 100.496 is 100.5 once rounded, which the official rule rounds up: the rock of b.png
    # loses pixels in column 100 only.
    b = "gtFine/default/lindau/b_gtFine_labelIds.png"
    changed = np.argwhere(runs["exact"][b] != runs["cvat"][b])
    assert len(changed) and set(changed[:, 1]) == {100}
    # c.png: z_order puts the rock over the road and the road over the car; COCO draws in order.
    labels = {name: pngs["gtFine/default/c_gtFine_labelIds.png"] for name, pngs in runs.items()}
    assert labels["cvat"][100, 60] == rock and labels["coco"][100, 60] == road
    assert labels["cvat"][100, 250] == road and labels["coco"][100, 250] == car
    # The mask is an instance in CVAT and a crowd (its class id) in COCO.
    ids = {name: pngs["gtFine/default/c_gtFine_instanceIds.png"] for name, pngs in runs.items()}
    assert ids["cvat"][15, 230] == car * 1000 + 1 and ids["coco"][15, 230] == car
    # pycocotools' raster of the crowd triangle differs from the official rule's (which rounds
    # the vertices, here two at .5) along its outline: up to 2 pixels deep on its steep edge.
    a = "gtFine/default/lindau/a_gtFine_instanceIds.png"
    official, pycoco = runs["cvat"][a] == car, runs["coco"][a] == car
    outline = np.zeros_like(official)
    for axis in (0, 1):
        for step in (-2, -1, 1, 2):
            outline |= official != np.roll(official, step, axis)
    differ = official != pycoco
    assert differ.any() and not (differ & ~outline).any()
