import json

import numpy as np
import pytest

from worker.cityscapes.manifest import read_manifest
from worker.errors import ManifestError


def base(**overrides):
    manifest = {
        "version": 1,
        "labels": [{"name": "car", "color": "#00008e"}],
        "images": [{"id": 1, "name": "frankfurt/a.png", "width": 100, "height": 50}],
        "shapes": [{"image": 1, "label": "car", "type": "polygon", "points": [1, 1, 20, 1, 10, 9]}],
    }
    manifest.update(overrides)
    return manifest


def shape(**overrides):
    value = {"image": 1, "label": "car", "type": "polygon", "points": [1, 1, 20, 1, 10, 9]}
    value.update(overrides)
    return value


def image(**overrides):
    value = {"id": 1, "name": "frankfurt/a.png", "width": 100, "height": 50}
    value.update(overrides)
    return value


BAD = {
    "wrong version": (base(version=2), "version is 2"),
    "no version": ({k: v for k, v in base().items() if k != "version"}, "version is 'none'"),
    "no images": (base(images=[], shapes=[]), "has no images"),
    "unknown image": (base(shapes=[shape(image=9)]), "image 9 is not in the images list"),
    "odd coordinates": (base(shapes=[shape(points=[1, 2, 3])]), "odd number"),
    "rectangle arity": (base(shapes=[shape(type="rectangle", points=[1, 2, 3])]), "rectangle needs"),
    "unknown type": (base(shapes=[shape(type="cuboid")]), "shapes[0]"),
    "mask without rle": (base(shapes=[shape(type="mask", points=[])]), "mask needs an rle"),
    "mask of wrong size": (
        base(shapes=[shape(type="mask", rle={"size": [5, 5], "counts": [25]})]), "mask size"),
    "duplicate ids": (base(images=[image(), image(name="b.png")]), "used twice"),
    "duplicate names": (base(images=[image(), image(id=2)]), "same output files"),
    "dot-dot name": (base(images=[image(name="../etc/a.png")]), "'..'"),
    "absolute name": (base(images=[image(name="/etc/a.png")]), "absolute"),
    "nul in name": (base(images=[image(name="a\x00.png")]), "control"),
    "zero width": (base(images=[image(width=0)]), "width"),
    "bad subset": (base(images=[image(subset="a/b")]), "subset"),
    "bad colour": (base(labels=[{"name": "car", "color": "red"}]), "#rrggbb"),
    "instance out of range": (base(shapes=[shape(instance=1000)]), "instance"),
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
    path.write_text(json.dumps(base(shapes=[shape(points=[1, 1, float("nan"), 1, 10, 9])])))
    with pytest.raises(ManifestError):
        read_manifest(path, tmp_path)


def test_every_problem_is_reported_at_once(write_manifest, tmp_path):
    manifest = base(shapes=[shape(image=9), shape(points=[1]), shape(type="x")])
    with pytest.raises(ManifestError) as info:
        read_manifest(write_manifest(manifest), tmp_path)
    assert [p.split(":")[0][:9] for p in info.value.problems] == ["shapes[0]", "shapes[1]", "shapes[2]"]


def test_shapes_come_back_per_image_in_drawing_order(write_manifest, tmp_path):
    manifest = base(
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
    reordered = {k: manifest[k] for k in ("shapes", "labels", "images", "version")}
    parsed = read_manifest(write_manifest(reordered), tmp_path)
    assert [i.name for i in parsed.images] == ["frankfurt/a.png", "b.png"]
    assert parsed.images[0].city == "frankfurt" and parsed.images[1].city == ""
    assert parsed.images[1].subset == "val" and parsed.images[0].subset == "default"
    shapes = parsed.shapes_of(0)
    assert [(s.label, s.index) for s in shapes] == [("lowest", 4), ("low", 2), ("top", 0), ("top2", 3)]
    assert shapes[1].is_crowd and not shapes[2].is_crowd and shapes[3].instance == 4
    assert np.array_equal(shapes[0].points, [0, 0, 5, 5])
    assert [s.index for s in parsed.shapes_of(1)] == [1]
