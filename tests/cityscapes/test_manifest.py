import json

import numpy as np
import pytest

from tests.factories import image, manifest, shape
from worker.cityscapes.manifest import read_manifest
from worker.errors import ManifestError


BAD = {
    "wrong version": (manifest(version=2), "version is 2"),
    "no version": ({k: v for k, v in manifest().items() if k != "version"}, "version is 'none'"),
    "no images": (manifest(images=[], shapes=[]), "has no images"),
    "unknown image": (manifest(shapes=[shape(image=9)]), "image 9 is not in the images list"),
    "odd coordinates": (manifest(shapes=[shape(points=[1, 2, 3])]), "odd number"),
    "rectangle arity": (manifest(shapes=[shape(type="rectangle", points=[1, 2, 3])]), "rectangle needs"),
    "unknown type": (manifest(shapes=[shape(type="cuboid")]), "shapes[0]"),
    "mask without rle": (manifest(shapes=[shape(type="mask", points=[])]), "mask needs an rle"),
    "mask of wrong size": (
        manifest(shapes=[shape(type="mask", rle={"size": [5, 5], "counts": [25]})]), "mask size"),
    "mask box of wrong size": (
        manifest(shapes=[shape(type="mask", box=[0, 0, 5, 4], rle={"size": [5, 5], "counts": [25]})]),
        "is not its box's [height, width] [4, 5]"),
    "mask box past the image": (
        manifest(shapes=[shape(type="mask", box=[-1, 0, 5, 5], rle={"size": [5, 5], "counts": [25]})]),
        "mask box [-1, 0, 5, 5] does not lie within"),
    "mask size not numbers": (
        manifest(shapes=[shape(type="mask", rle={"size": [None, 64], "counts": [25]})]),
        "mask size [None, 64] is not [height, width] in whole pixels"),
    "mask counts true and false": (
        manifest(shapes=[shape(type="mask", rle={"size": [32, 64], "counts": [2046, True, True]})]),
        "mask RLE is broken (RLE counts are neither a string nor a list of numbers"),
    "duplicate ids": (manifest(images=[image(), image(name="b.png")]), "used twice"),
    "duplicate names": (manifest(images=[image(), image(id=2)]), "same output files"),
    "dot-dot name": (manifest(images=[image(name="../etc/a.png")]), "'..'"),
    "absolute name": (manifest(images=[image(name="/etc/a.png")]), "absolute"),
    "nul in name": (manifest(images=[image(name="a\x00.png")]), "control"),
    "zero width": (manifest(images=[image(width=0)]), "width"),
    "bad subset": (manifest(images=[image(subset="a/b")]), "subset"),
    "bad colour": (manifest(labels=[{"name": "car", "color": "red"}]), "#rrggbb"),
    "instance out of range": (manifest(shapes=[shape(instance=1000)]), "instance"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_manifests_name_the_problem(case, write_manifest, tmp_path):
    manifest, message = BAD[case]
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_manifest(write_manifest(manifest), tmp_path)


@pytest.mark.parametrize("text", ["{", "[1, 2", '{"version": 1, "images": [}', "", "NaN"])
def test_invalid_json_is_reported_as_such(text, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ManifestError):
        read_manifest(path, tmp_path)


def test_nan_coordinates_are_refused(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest(shapes=[shape(points=[1, 1, float("nan"), 1, 10, 9])])))
    with pytest.raises(ManifestError):
        read_manifest(path, tmp_path)


def test_every_problem_is_reported_at_once(write_manifest, tmp_path):
    broken = manifest(shapes=[shape(image=9), shape(points=[1]), shape(type="x")])
    with pytest.raises(ManifestError) as info:
        read_manifest(write_manifest(broken), tmp_path)
    assert [p.split(":")[0][:9] for p in info.value.problems] == ["shapes[0]", "shapes[1]", "shapes[2]"]


def test_shapes_come_back_per_image_in_drawing_order(write_manifest, tmp_path):
    data = manifest(
        images=[image(), image(id="b", name="b.png", subset="val")],
        shapes=[
            shape(z_order=2, label="top"),
            shape(image="b"),
            shape(z_order=0, label="low", attributes={"is_crowd": "true"}),
            shape(z_order=2, label="top2", instance=4),
            shape(z_order=-1, label="lowest", type="rectangle", points=[0, 0, 5, 5]),
        ],
    )
    # Keys in any order: shapes before images.
    reordered = {k: data[k] for k in ("shapes", "labels", "images", "version")}
    parsed = read_manifest(write_manifest(reordered), tmp_path)
    assert [i.name for i in parsed.images] == ["lindau/a.png", "b.png"]
    assert parsed.images[0].city == "lindau" and parsed.images[1].city == ""
    assert parsed.images[1].subset == "val" and parsed.images[0].subset == "default"
    shapes = parsed.shapes_of(0)
    assert [(s.label, s.index) for s in shapes] == [("lowest", 4), ("low", 2), ("top", 0), ("top2", 3)]
    assert shapes[1].is_crowd and not shapes[2].is_crowd and shapes[3].instance == 4
    assert np.array_equal(shapes[0].points, [0, 0, 5, 5])
    assert [s.index for s in parsed.shapes_of(1)] == [1]
