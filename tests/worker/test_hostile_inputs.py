"""A corpus of broken and hostile inputs, through the command line: each gets one clear line
(an error with exit code 2, or a documented warning), never a traceback, never a partial output."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.factories import image, manifest, shape
from worker.cityscapes.png import encode_png


def archive(members: dict[str, bytes], method=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


IDS = np.zeros((32, 64), np.uint16)
IDS[2:10, 2:20] = 26000
GOOD_PNG = encode_png(IDS)
MEMBER = "gtFine/lindau/a_gtFine_instanceIds.png"


def png_of(image_: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image_.save(buffer, "PNG")
    return buffer.getvalue()


CVAT_IMAGE = ('<annotations><version>1.1</version><image id="0" name="a.png" width="64" height="32">'
              "{}</image></annotations>")
XML_BOMB = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a0 "lol">'
            + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
            + "]><annotations>&a9;</annotations>")

# (annotations text, expected exit code, text the single line must hold)
EXPORT_CASES = {
    "not json": ("{oops", 2, "not valid JSON"),
    "json array": ("[1, 2]", 2, "version is 'none'"),
    "wrong version": (json.dumps(manifest(version=2)), 2, "version is 2"),
    "empty dataset": (json.dumps(manifest(images=[], shapes=[])), 2, "has no images"),
    "unknown image": (json.dumps(manifest(shapes=[shape(image=7)])), 2, "image 7 is not in the images list"),
    "unknown label": (json.dumps(manifest(shapes=[shape(label="unicorn")])), 0, "'unicorn'"),
    "two points": (json.dumps(manifest(shapes=[shape(points=[1, 1, 5, 5])])), 0, "(< 3); skipped"),
    "odd coordinates": (json.dumps(manifest(shapes=[shape(points=[1, 1, 5])])), 2, "odd number"),
    "NaN": ('{"version": 1, "labels": [], "images": [{"id": 1, "name": "a.png", "width": 4,'
            ' "height": 4}], "shapes": [{"image": 1, "label": "car", "type": "polygon",'
            ' "points": [1, NaN, 2, 2, 3, 3]}]}', 2, "not valid JSON"),
    "Infinity": ('{"version": 1, "labels": [], "images": [{"id": 1, "name": "a.png", "width": 4,'
                 ' "height": 4}], "shapes": [{"image": 1, "label": "car", "type": "polygon",'
                 ' "points": [1, Infinity, 2, 2, 3, 3]}]}', 2, "not valid JSON"),
    "huge coordinates": (json.dumps(manifest(shapes=[shape(points=[1, 1, 1e12, 1, 3, 3])])), 2,
                         "is beyond +-1,073,741,824 (2^30)"),
    "duplicate names": (json.dumps(manifest(images=[image(), image(id=2)])), 2, "same output files"),
    "too many pixels": (json.dumps(manifest(images=[image(width=32768, height=16385)])), 2,
                        "32768x16385 is more than 268,435,456 pixels"),
    "duplicate ids": (json.dumps(manifest(images=[image(), image(name="lindau/b.png")])), 2, "used twice"),
    "dot-dot name": (json.dumps(manifest(images=[image(name="../../etc/a.png")])), 2, "'..'"),
    "absolute name": (json.dumps(manifest(images=[image(name="/etc/a.png")])), 2, "absolute"),
    "NUL in name": (json.dumps(manifest(images=[image(name="a\u0000b.png")])), 2, "control"),
    "backslash name": (json.dumps(manifest(images=[image(name="a\\..\\b.png")])), 2,
                       "holds control characters or"),
    "subset with slash": (json.dumps(manifest(images=[image(subset="../x")])), 2, "subset"),
    "negative width": (json.dumps(manifest(images=[image(width=-4)])), 2, "width"),
    "giant image": (json.dumps(manifest(images=[image(width=100000)])), 2, "width"),
    "1000 instances": (json.dumps(manifest(shapes=[shape()] * 1001)), 2,
                       "cannot be encoded (class id * 1000 + k must stay below 65536"),
    "class id over 65 with instances": (
        json.dumps(manifest(labels=[{"name": f"l{i}", "color": "#010203"} for i in range(70)],
                            shapes=[shape(label="l68")])), 2, "'l68'"),
    "duplicate label names": (json.dumps(manifest(labels=[{"name": "Car", "color": "#000001"},
                                                          {"name": "car", "color": "#000002"}])),
                              2, "same label"),
    "bad colour": (json.dumps(manifest(labels=[{"name": "car", "color": "blue"}])), 2, "#rrggbb"),
    "label with newline": (json.dumps(manifest(labels=[{"name": "car\n0 0 0 x", "color": "#000001"}])),
                           2, "control characters"),
    "rectangle of 3 numbers": (json.dumps(manifest(shapes=[shape(type="rectangle", points=[1, 2, 3])])),
                               2, "rectangle needs"),
    "mask of another size": (json.dumps(manifest(shapes=[shape(type="mask", rle={"size": [2, 2], "counts": [4]})])),
                             2, "mask size"),
    "broken mask runs": (json.dumps(manifest(shapes=[shape(type="mask", rle={"size": [32, 64], "counts": [5, 3]})])),
                         2, "mask RLE is broken"),
    "unsupported shape type": (json.dumps(manifest(shapes=[shape(type="cuboid")])), 2, "shapes[0]"),
    "CVAT point not a number": (CVAT_IMAGE.format('<polygon label="car" points="1,1;x,2;5,5"/>'), 2,
                                "image 'a.png', shape 0 (<polygon>): points"),
    "CVAT points and polygon": (CVAT_IMAGE.format('<points label="car" points="1,1"/>'
                                                  '<polygon label="car" points="1,1;20,1;10,9"/>'),
                                0, "image 'a.png': skipped 1 <points>"),
    "CVAT for video": ('<annotations><track id="0" label="car"/></annotations>', 2, "CVAT for video"),
    "truncated XML": ("<annotations><image", 2, "is not valid XML"),
    "XML entity bomb": (XML_BOMB, 2, "limit on input amplification"),
    "COCO unknown category": (json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}], "categories": [],
        "annotations": [{"id": 3, "image_id": 1, "category_id": 9, "segmentation": [[0, 0, 3, 0, 3, 3]]}]}),
        2, "annotation 3 (image 'a.png'): category_id 9 is not in categories"),
}

# (members of the zip or raw bytes, expected exit code, text the single line must hold)
IMPORT_CASES = {
    "zip-slip": (archive({"../../evil/gtFine/a/x_gtFine_instanceIds.png": GOOD_PNG}), 2, "zip-slip"),
    "absolute member": (archive({"/tmp/gtFine/a/x_gtFine_instanceIds.png": GOOD_PNG}), 2, "zip-slip"),
    "zip bomb": (archive({MEMBER: b"\0" * (40 << 20)}, zipfile.ZIP_DEFLATED), 2, "zip bomb"),
    "decompression bomb png": (archive({MEMBER: png_of(Image.new("1", (20000, 20000)))}), 2,
                               "decompression bomb"),
    "rgb ids image": (archive({MEMBER: encode_png(np.zeros((4, 4, 3), np.uint8))}), 2, "8- or 16-bit grey"),
    "corrupt png": (archive({MEMBER: GOOD_PNG[:60]}), 2, "member 'gtFine/lindau/a_gtFine_instanceIds.png'"),
    "truncated zip": (archive({MEMBER: GOOD_PNG})[:-30], 2, "not a zip archive"),
    "not a zip": (b"just text", 2, "not a zip archive"),
    "no gtFine": (archive({"other/a.png": GOOD_PNG}), 2, "no gtFine"),
    "bad label_color line": (archive({"label_color.txt": b"0 0 background\n", MEMBER: GOOD_PNG}), 2,
                             "label_color.txt line 1"),
    "duplicate names in label_color": (archive({"label_color.txt": b"0 0 0 bg\n1 1 1 Car\n2 2 2 car\n",
                                                MEMBER: GOOD_PNG}), 2, "same label"),
    "ids outside the label map": (archive({MEMBER: encode_png(np.full((4, 4), 777, np.uint16))}), 0,
                                  "pixel value 777"),
}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "worker.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def check(run, out_dir, output, code, text):
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    if code:
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], run.stderr
        assert not output.exists()
        assert [p.name for p in out_dir.iterdir()] == []  # no partial file either
    else:
        assert any(text in line for line in lines), run.stderr
        assert output.exists()


def run_case(tmp_path, command, source_flag, data, output_name):
    source = tmp_path / "input"
    source.write_bytes(data)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = cli(command, source_flag, source, "--output", out_dir / output_name, "--jobs", "2")
    return run, out_dir, out_dir / output_name


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_export_of_broken_annotations(case, tmp_path):
    text, code, message = EXPORT_CASES[case]
    check(*run_case(tmp_path, "export", "--annotations", text.encode(), "o.zip"), code, message)


@pytest.mark.parametrize("case", IMPORT_CASES)
def test_import_of_hostile_archives(case, tmp_path):
    data, code, message = IMPORT_CASES[case]
    check(*run_case(tmp_path, "import", "--archive", data, "o.json"), code, message)
