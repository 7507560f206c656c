"""CVAT for images 1.1 XML and COCO instances JSON in: converted to manifest v1, exported, and
compared pixel for pixel with the same scene written as a manifest by hand."""

import io
import itertools
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from tests.factories import shape
from worker.cityscapes.adapters import detect_format, load_annotations
from worker.errors import ClientError, ManifestError
from worker.export_local import run_export
from worker.specs import parse_export_spec

W, H = 64, 40  # image 1: lindau/a.png
W2, H2 = 32, 20  # image 2: b.png
LABELS = [
    {"name": "road", "color": "#804080"},
    {"name": "car", "color": "#00008e"},
    {"name": "person", "color": "#dc143c"},
]


def runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat bool array, starting with a run of zeros (CVAT's and COCO's)."""
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    out = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    return [0, *out] if flat[0] else out


def coco_rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def full(height, width, y0, y1, x0, x1, hole=None):
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    if hole:
        mask[hole] = False
    return mask


# An L-shaped person inside its 6x8 box at (44, 2), and one that runs off the image's corner.
PERSON_BOX = full(8, 6, 0, 8, 0, 2) | full(8, 6, 6, 8, 0, 6)
PERSON = np.zeros((H, W), bool)
PERSON[2:10, 44:50] = PERSON_BOX
EDGE_BOX = full(14, 8, 2, 14, 1, 8)  # box at (60, 30): 4 of its 8 columns, 10 of its 14 rows inside
EDGE = np.zeros((H, W), bool)
EDGE[32:40, 61:64] = True
CAR2 = full(H2, W2, 4, 12, 10, 20, hole=(slice(6, 8), slice(12, 14)))


def workdir(tmp_path, n=""):
    path = tmp_path / f"work{n}"
    path.mkdir()
    return path


def write_export(tmp_path, name, annotations: bytes, fmt="auto") -> dict:
    source = tmp_path / name
    source.write_bytes(annotations)
    out = tmp_path / f"{name}.zip"
    result = run_export(
        parse_export_spec(
            {"annotations": str(source), "output": str(out), "annotations_format": fmt}
        ),
        jobs=1,
    )
    archive = zipfile.ZipFile(out)
    pngs = {
        n: np.asarray(Image.open(io.BytesIO(archive.read(n))))
        for n in archive.namelist()
        if n.endswith(".png")
    }
    return {"result": result, "pngs": pngs, "names": archive.namelist()}


def manifest_export(tmp_path, images, shapes) -> dict:
    document = {"version": 1, "labels": LABELS, "images": images, "shapes": shapes}
    return write_export(tmp_path, "reference.json", json.dumps(document).encode())


def assert_same_pixels(got: dict, expected: dict):
    assert sorted(got["pngs"]) == sorted(expected["pngs"])
    for name, pixels in expected["pngs"].items():
        assert np.array_equal(got["pngs"][name], pixels), name


# CVAT -------------------------------------------------------------------------------------


def cvat_document(images: str, meta: str | None = None) -> bytes:
    if meta is None:
        meta = "".join(
            f"<label><name>{lb['name']}</name><color>{lb['color']}</color>"
            "<type>any</type><attributes/></label>"
            for lb in LABELS
        )
        meta = f"<meta><task><name>t</name><labels>{meta}</labels></task></meta>"
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>{meta}'
        f"{images}</annotations>"
    ).encode()


def cvat_mask(label, left, top, box, **attrs):
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    rle = ", ".join(map(str, runs(box.ravel())))
    return (
        f'<mask label="{label}" source="manual" occluded="0" rle="{rle}" left="{left}"'
        f' top="{top}" width="{box.shape[1]}" height="{box.shape[0]}"{extra}></mask>'
    )


CROWD = '<attribute name="is_crowd">true</attribute>'
CVAT_IMAGES = (
    f'<image id="0" name="lindau/a.png" subset="val" width="{W}" height="{H}">'
    '<polygon label="road" occluded="0" points="0,25;63.4,25;63,39;0,39" z_order="0"></polygon>'
    '<box label="car" occluded="1" xtl="4" ytl="4" xbr="20.5" ybr="14" z_order="1"></box>'
    '<box label="car" xtl="30" ytl="10" xbr="40" ybr="14" rotation="90" z_order="1"></box>'
    + cvat_mask("person", 44, 2, PERSON_BOX, z_order=2)
    + cvat_mask("person", 60, 30, EDGE_BOX, z_order=2)
    + f'<polygon label="car" points="22,16;40,16;40,30" z_order="0">{CROWD}</polygon>'
    '<polygon label="car" points="2,20;30,20;30,35;2,35" z_order="-1"></polygon>'
    '<polygon label="car" points="42,18;50,18;50,24" z_order="0" group_id="3"></polygon>'
    '<points label="person" points="3,3" z_order="0"></points>'
    '<polygon label="car" points="52,18;60,18;60,24" z_order="0" group_id="3"></polygon>'
    '<polyline label="road" points="1,1;5,5" z_order="0"></polyline>'
    '<ellipse label="car" cx="10" cy="10" rx="3" ry="2" z_order="0"></ellipse>'
    '<tag label="car" source="manual"></tag>'
    "</image>"
    f'<image id="1" name="b.png" width="{W2}" height="{H2}">'
    '<polygon label="person" points="1,1;8,1;8,9" z_order="0"></polygon>'
    + cvat_mask("car", 10, 4, CAR2[4:12, 10:20])
    + "</image>"
)

# The same scene by hand; instance numbers count per label in drawing order (z, then input
# order), the two polygons of group 3 sharing one.
REFERENCE_IMAGES = [
    {"id": 1, "name": "lindau/a.png", "width": W, "height": H, "subset": "val"},
    {"id": 2, "name": "b.png", "width": W2, "height": H2},
]
REFERENCE_SHAPES = [
    shape(label="road", points=[0, 25, 63.4, 25, 63, 39, 0, 39]),
    shape(type="rectangle", points=[4, 4, 20.5, 14], z_order=1, instance=2),
    shape(type="rectangle", points=[33, 7, 37, 17], z_order=1, instance=3),
    shape(label="person", type="mask", rle=coco_rle(PERSON), z_order=2, instance=0),
    shape(label="person", type="mask", rle=coco_rle(EDGE), z_order=2, instance=1),
    shape(points=[22, 16, 40, 16, 40, 30], attributes={"is_crowd": True}),
    shape(points=[2, 20, 30, 20, 30, 35, 2, 35], z_order=-1, instance=0),
    shape(points=[42, 18, 50, 18, 50, 24], instance=1),
    shape(points=[52, 18, 60, 18, 60, 24], instance=1),
    shape(image=2, label="person", points=[1, 1, 8, 1, 8, 9]),
    shape(image=2, type="mask", rle=coco_rle(CAR2)),
]


def test_cvat_exports_the_pixels_of_the_same_scene_as_a_manifest(tmp_path):
    got = write_export(tmp_path, "task.xml", cvat_document(CVAT_IMAGES))
    expected = manifest_export(tmp_path, REFERENCE_IMAGES, REFERENCE_SHAPES)
    assert_same_pixels(got, expected)
    instances = got["pngs"]["gtFine/val/lindau/a_gtFine_instanceIds.png"]
    assert instances[20, 45] == instances[20, 55] == 26001  # one object in two polygons
    assert instances[17, 38] == 26  # crowd
    assert set(np.unique(instances[PERSON])) == {24000}
    assert got["result"]["objects"] == expected["result"]["objects"] == 11
    warnings = [w for w in got["result"]["warnings"] if "skipped" in w]
    assert warnings == [
        (
            "image 'lindau/a.png': skipped 1 <points>, 1 <polyline>, 1 <ellipse>,"
            " 1 <tag> (only polygons, boxes and masks have an area)"
        )
    ]


def test_cvat_labels_keep_their_colours_and_undeclared_ones_get_one(tmp_path):
    meta = (
        "<meta><project><labels><label><name>tree</name><color>#00ff00</color></label>"
        "<label><name>skeleton pt</name><parent>skel</parent></label></labels></project></meta>"
    )
    image = (
        '<image id="5" name="x.png" width="8" height="8">'
        '<polygon label="tree" points="0,0;7,0;7,7"/><polygon label="rock" points="0,0;7,7;0,7"/>'
        "</image>"
    )
    source = tmp_path / "t.xml"
    source.write_bytes(cvat_document(image, meta))
    manifest = load_annotations(source, workdir(tmp_path, 1))
    assert [name for name, _ in manifest.labels] == ["tree", "rock"]
    assert manifest.labels[0][1] == (0, 255, 0)
    assert manifest.labels[1][1] == load_annotations(source, workdir(tmp_path, 2)).labels[1][1]
    assert [s.instance for s in manifest.shapes_of(0)] == [None, None]  # no groups: left to export


def test_a_large_cvat_file_converts_image_by_image(tmp_path):
    """iterparse and clear: a file of many images converts image by image."""
    image = (
        '<image id="{i}" name="img{i}.png" width="16" height="16">'
        '<polygon label="car" points="1,1;9,1;9,9" z_order="0"/></image>'
    )
    source = tmp_path / "big.xml"
    source.write_bytes(cvat_document("".join(image.format(i=i) for i in range(2000))))
    manifest = load_annotations(source, workdir(tmp_path))
    assert len(manifest.images) == 2000 and manifest.shape_count == 2000
    assert manifest.images[1999].name == "img1999.png"
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["shapes.sqlite"]  # no copy left


# COCO -------------------------------------------------------------------------------------


def coco_document() -> dict:
    road = full(H, W, 25, 40, 0, 64)
    crowd = full(H, W, 16, 30, 22, 40)
    return {
        "info": {"description": "t"},
        "licenses": [],
        "images": [
            {"id": 10, "file_name": "lindau/a.png", "width": W, "height": H},
            {"id": 11, "file_name": "b.png", "width": W2, "height": H2},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": coco_rle(road),
            },
            {
                "id": 2,
                "image_id": 10,
                "category_id": 26,
                "iscrowd": 0,
                "segmentation": [[42, 18, 50, 18, 50, 24], [52, 18, 60, 18, 60, 24]],
            },
            {
                "id": 3,
                "image_id": 10,
                "category_id": 26,
                "iscrowd": 0,
                "segmentation": [[2, 20, 30, 20, 30, 35, 2, 35]],
            },
            {
                "id": 4,
                "image_id": 10,
                "category_id": 24,
                "iscrowd": 0,
                "segmentation": coco_rle(PERSON),
            },
            {
                "id": 5,
                "image_id": 10,
                "category_id": 26,
                "iscrowd": 1,
                "segmentation": {"size": [H, W], "counts": runs(crowd.T.ravel())},
            },
            {
                "id": 6,
                "image_id": 10,
                "category_id": 26,
                "iscrowd": 0,
                "segmentation": [],
                "bbox": [4, 4, 16.5, 10],
            },
            {
                "id": 7,
                "image_id": 11,
                "category_id": 24,
                "iscrowd": 0,
                "segmentation": [1, 1, 8, 1, 8, 9],
            },
            {
                "id": 8,
                "image_id": 11,
                "category_id": 26,
                "iscrowd": 0,
                "segmentation": {"size": [H2, W2], "counts": runs(CAR2.T.ravel())},
            },
        ],
        "categories": [
            {"id": 7, "name": "road"},
            {"id": 26, "name": "car"},
            {"id": 24, "name": "person"},
        ],
    }


COCO_REFERENCE_SHAPES = [
    shape(label="road", type="mask", rle=coco_rle(full(H, W, 25, 40, 0, 64))),
    shape(points=[42, 18, 50, 18, 50, 24], instance=0),
    shape(points=[52, 18, 60, 18, 60, 24], instance=0),
    shape(points=[2, 20, 30, 20, 30, 35, 2, 35], instance=1),
    shape(label="person", type="mask", rle=coco_rle(PERSON), instance=0),
    shape(type="mask", rle=coco_rle(full(H, W, 16, 30, 22, 40)), attributes={"is_crowd": True}),
    shape(type="rectangle", points=[4, 4, 20.5, 14], instance=2),
    shape(image=2, label="person", points=[1, 1, 8, 1, 8, 9]),
    shape(image=2, type="mask", rle=coco_rle(CAR2)),
]


def test_coco_exports_the_pixels_of_the_same_scene_as_a_manifest(tmp_path):
    got = write_export(tmp_path, "instances.json", json.dumps(coco_document()).encode())
    images = [{k: v for k, v in image.items() if k != "subset"} for image in REFERENCE_IMAGES]
    expected = manifest_export(tmp_path, images, COCO_REFERENCE_SHAPES)  # COCO has no subsets
    assert_same_pixels(got, expected)
    instances = got["pngs"]["gtFine/default/lindau/a_gtFine_instanceIds.png"]
    assert instances[20, 45] == instances[20, 55] == 26000  # one annotation, two polygons
    assert instances[17, 38] == 26  # crowd
    assert got["result"]["warnings"] == []


@pytest.mark.parametrize("order", list(itertools.permutations(["images", "annotations", "categories"])))
def test_coco_keys_in_any_order_and_annotations_interleaved_export_the_same_scene(tmp_path, order):
    """COCO is read as a stream: the annotations may come before the images they name, and an
    image's annotations may be spread among other images' (as merged files have them)."""
    document = coco_document()
    annotations = document["annotations"]
    first, other = [a for a in annotations if a["image_id"] == 10], [a for a in annotations if a["image_id"] == 11]
    document["annotations"] = first[:2] + other[:1] + first[2:] + other[1:]
    reordered = {"info": document["info"], **{key: document[key] for key in order}}
    got = write_export(tmp_path, "instances.json", json.dumps(reordered).encode())
    images = [{k: v for k, v in image.items() if k != "subset"} for image in REFERENCE_IMAGES]
    assert_same_pixels(got, manifest_export(tmp_path, images, COCO_REFERENCE_SHAPES))


def test_coco_labels_take_official_colours_or_stable_ones(tmp_path):
    document = coco_document()
    document["categories"].append({"id": 99, "name": "tree"})
    source = tmp_path / "c.json"
    source.write_text(json.dumps(document))
    manifest = load_annotations(source, workdir(tmp_path, 1))
    colours = dict(manifest.labels)
    assert colours["road"] == (128, 64, 128) and colours["car"] == (0, 0, 142)
    again = dict(load_annotations(source, workdir(tmp_path, 2)).labels)
    assert colours["tree"] == again["tree"] != (0, 0, 0)
    # Image 11 has no multi-polygon annotation: its instances are left to the export's count.
    assert [s.instance for s in manifest.shapes_of(1)] == [None, None]


def test_coco_keypoints_without_a_segmentation_are_skipped_not_boxed(tmp_path):
    document = coco_document()
    plain = load_annotations(_write(tmp_path, "plain.json", document), workdir(tmp_path, 1))
    document["annotations"].append(annotation(id=70, segmentation=[], bbox=[1, 1, 8, 8],
                                              keypoints=[3, 3, 2], num_keypoints=1))
    manifest = load_annotations(_write(tmp_path, "k.json", document), workdir(tmp_path, 2))
    assert manifest.warnings == ["annotation 70 (image 'lindau/a.png'): keypoints only, no area; skipped"]
    assert len(manifest.shapes_of(0)) == len(plain.shapes_of(0))


def _write(tmp_path, name, document):
    (tmp_path / name).write_text(json.dumps(document))
    return tmp_path / name


# Detection and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"\xef\xbb\xbf \n<?xml version='1.0'?><annotations/>", "cvat"),
        (b'{"info": {}, "images": [], "annotations": [], "categories": []}', "coco"),
        (b'{"images": [{"id": 1, "version": 2}], "categories": [], "annotations": []}', "coco"),
        (b'{"version": 1, "labels": [], "images": [], "shapes": []}', "manifest"),
        (b'{"labels": [], "images": [], "shapes": [], "version": 1}', "manifest"),
        (b'{"version": "1.0", "images": [], "annotations": [], "categories": []}', "coco"),
        (b"[1, 2]", "manifest"),
        (b"{oops", "manifest"),
        (b"", "manifest"),
    ],
)
def test_formats_are_told_by_content(tmp_path, text, expected):
    path = tmp_path / "a"
    path.write_bytes(text)
    assert detect_format(path) == expected


def cvat_image(*shapes, width=W, height=H):
    return cvat_document(
        f'<image id="0" name="a.png" width="{width}" height="{height}">'
        + "".join(shapes)
        + "</image>"
    )


def coco_with(**changes):
    document = coco_document()
    for key, value in changes.items():
        document[key] = value
    return json.dumps(document).encode()


def annotation(**changes):
    return {
        "id": 7,
        "image_id": 10,
        "category_id": 26,
        "segmentation": [[1, 1, 9, 1, 9, 9]],
        **changes,
    }


@pytest.mark.parametrize(
    "data, message",
    [
        (
            cvat_image('<polygon label="car" points="1,1;nan,2;5,5"/>'),
            "image 'a.png', shape 0 (<polygon>): points '1,1;nan,2;5,5' are not",
        ),
        (
            cvat_image(
                '<points label="car" points="1,1"/><polygon label="car" points="1,1;2;5,5"/>'
            ),
            "image 'a.png', shape 1 (<polygon>): points",
        ),
        (
            cvat_image('<box label="car" xtl="1" ytl="1" ybr="5"/>'),
            "(<box>): xbr=None is not a finite",
        ),
        (
            cvat_image('<box label="car" xtl="1" ytl="1" xbr="5" ybr="5" rotation="nan"/>'),
            "(<box>): rotation='nan' is not a finite number",
        ),
        (cvat_image('<polygon points="1,1;2,2;5,5"/>'), "(<polygon>): no label"),
        (
            cvat_image('<mask label="car" rle="3, 4" left="0" top="0" width="2" height="2"/>'),
            "(<mask>): mask runs cover 7 pixels, its 2x2 box has 4",
        ),
        (
            cvat_image('<mask label="car" rle="1, 1" left="0" top="0" width="100000" height="1"/>'),
            "mask box 100000x1 does not fit the 64x40 image",
        ),
        (
            cvat_image('<mask label="car" rle="x" left="0" top="0" width="2" height="2"/>'),
            "needs integer left, top, width and height",
        ),
        (cvat_image(width="wide"), "image 'a.png': width and height must be positive integers"),
        (
            cvat_document(
                "",
                "<meta><task><labels><label><name>car</name><color>red</color></label>"
                "</labels></task></meta>",
            ),
            "label 'car': colour 'red'",
        ),
        (cvat_document('<track id="0" label="car"></track>'), "this is CVAT for video"),
        (b"<annotations><image", "is not valid XML (unclosed token: line 1, column 13)"),
        (b"<html><body/></html>", "root element is <html>, not CVAT's <annotations>"),
        (cvat_document(""), "has no <image> elements"),
        (
            cvat_document('<image id="0" name="../a.png" width="4" height="4"></image>'),
            "images[0] ('../a.png'): name: Value error, image name '../a.png' has an empty",
        ),
        (
            coco_with(annotations=[annotation(category_id=99)]),
            "annotation 7 (image 'lindau/a.png'): category_id 99 is not in categories",
        ),
        (
            coco_with(annotations=[annotation(image_id=5)]),
            "annotation 7: image_id 5 is not in images",
        ),
        (
            coco_with(annotations=[annotation(segmentation={"size": [2, 2], "counts": [4]})]),
            "(image 'lindau/a.png'): RLE size [2, 2] is not the image's [height, width] [40, 64]",
        ),
        (
            coco_with(annotations=[annotation(segmentation={"size": [H, W], "counts": {"a": 1}})]),
            "RLE counts are neither a string nor a list of numbers",
        ),
        (
            coco_with(annotations=[annotation(segmentation=[[1, 2, "x"]])]),
            "segmentation is not a list of polygons",
        ),
        (
            coco_with(annotations=[annotation(segmentation=[[1, 2, 3]])]),
            "segmentation is not a list of polygons",
        ),
        (
            coco_with(annotations=[annotation(segmentation=None)]),
            "has neither a segmentation nor a bbox",
        ),
        (coco_with(categories=None), "has no 'categories' list (not COCO instances)"),
        (
            coco_with(images=[{"id": 10, "file_name": "a.png", "width": 4, "height": 4}] * 2),
            "images[1] ('a.png'): id 10 is used twice",
        ),
        (
            coco_with(
                images=[{"id": 10, "file_name": "a.png", "width": -4, "height": 4}], annotations=[]
            ),
            "images[0] ('a.png'): width: Input should be greater than 0",
        ),
        (
            coco_with(
                annotations=[
                    annotation(id=i, segmentation=[[1, 1, 9, 1, 9, 9]] * (1 + (i == 0)))
                    for i in range(1001)
                ]
            ),
            "image 'lindau/a.png': more than 1000 objects of label 'car'",
        ),
        (b'{"annotations": [], "images": 1}', "has no 'images' list"),
    ],
)
def test_broken_sources_name_the_file_image_and_shape(tmp_path, data, message):
    path = tmp_path / "source.in"
    path.write_bytes(data)
    with pytest.raises(ManifestError) as caught:
        load_annotations(path, workdir(tmp_path))
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not any(p.name.startswith("converted") for p in (tmp_path / "work").iterdir())


def test_a_forced_format_wins_over_the_content(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"version": 1, "labels": [], "images": [], "shapes": []}))
    with pytest.raises(ManifestError, match="has no 'annotations' list"):
        load_annotations(path, workdir(tmp_path, 1), "coco")
    with pytest.raises(ManifestError, match="is not valid XML"):
        load_annotations(path, workdir(tmp_path, 2), "cvat")
    with pytest.raises(ClientError, match="'yaml' is not one of auto, manifest, cvat, coco"):
        load_annotations(path, workdir(tmp_path, 3), "yaml")


@pytest.mark.parametrize("fmt", ["auto", "cvat"])
def test_messages_name_the_file_as_the_job_names_it(tmp_path, fmt):
    """On the cluster the file read is a downloaded copy; errors name the job's URL."""
    path = tmp_path / "annotations.json"
    path.write_bytes(cvat_image('<polygon label="car" points="1,1"/>', width=0))
    with pytest.raises(ManifestError) as caught:
        load_annotations(path, workdir(tmp_path), fmt, name="s3://b/task.xml")
    assert str(caught.value) == (
        "s3://b/task.xml: image 'a.png': width and height must be positive integers"
    )


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_exports_cvat_with_its_warnings_and_refuses_a_wrong_format(tmp_path):
    source = tmp_path / "task.xml"
    source.write_bytes(cvat_document(CVAT_IMAGES))
    out = tmp_path / "o.zip"
    run = cli("export", "--format", "cvat", "--annotations", source, "--output", out, "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["images"] == 2 and result["objects"] == 11
    assert "warning: image 'lindau/a.png': skipped 1 <points>" in run.stderr
    assert "gtFine/val/lindau/a_gtFine_instanceIds.png" in zipfile.ZipFile(out).namelist()
    wrong = cli(
        "export", "--format", "coco", "--annotations", source, "--output", tmp_path / "w.zip"
    )
    assert wrong.returncode == 2
    assert wrong.stderr.startswith(f"error: {source}: is not valid JSON")
    assert not (tmp_path / "w.zip").exists()


def cvat_coco_document() -> dict:
    """COCO 1.0 as CVAT writes it: every mask an uncompressed RLE with iscrowd 1, polygons 0."""
    car_a, car_b = full(H, W, 5, 15, 5, 20), full(H, W, 20, 35, 30, 50)

    def uncompressed(mask):
        return {"counts": runs(mask.T.reshape(-1)), "size": [H, W]}

    def annotation(number, segmentation, crowd):
        return {"id": number, "image_id": 1, "category_id": 2, "segmentation": segmentation,
                "area": 0, "bbox": [0, 0, 1, 1], "iscrowd": crowd,
                "attributes": {"occluded": False}}

    return {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "",
                 "version": "", "year": ""},
        "categories": [{"id": 1, "name": "road", "supercategory": ""},
                       {"id": 2, "name": "car", "supercategory": ""}],
        "images": [{"id": 1, "width": W, "height": H, "file_name": "lindau/a.png",
                    "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0}],
        "annotations": [annotation(1, uncompressed(car_a), 1), annotation(2, uncompressed(car_b), 1),
                        annotation(3, [[55, 2, 62, 2, 62, 9]], 0)],
    }


@pytest.mark.parametrize("as_instances", [False, True])
def test_coco_masks_all_marked_crowd_warn_and_can_be_read_as_instances(tmp_path, as_instances):
    source = tmp_path / "instances_default.json"
    source.write_text(json.dumps(cvat_coco_document()))
    out = tmp_path / "out.zip"
    result = run_export(parse_export_spec(
        {"annotations": str(source), "output": str(out), "coco_rle_instances": as_instances}),
        jobs=1)
    ids = np.asarray(Image.open(io.BytesIO(
        zipfile.ZipFile(out).read("gtFine/default/lindau/a_gtFine_instanceIds.png"))))
    warned = [w for w in result["warnings"] if "all 2 RLE annotations are iscrowd" in w]
    polygon_car = ids[5, 58]
    if as_instances:
        assert warned == []
        assert (ids[5:15, 5:20] == 26000).all() and (ids[20:35, 30:50] == 26001).all()
        assert polygon_car == 26002
    else:
        assert len(warned) == 1 and "--coco-rle-instances" in warned[0]
        assert (ids[5:15, 5:20] == 26).all() and (ids[20:35, 30:50] == 26).all()
        assert polygon_car == 26000
