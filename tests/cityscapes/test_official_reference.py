"""Pixel equality with the official Cityscapes scripts (labelIds, instanceIds, color, trainIds)."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.official import official_images, reference_json
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("official")
    manifest = make_manifest(6, width=400, height=200, seed=7, objects=70, stuff_vertices=80)
    # A few hand-made hard cases on the first image: degenerate, tiny, on and past the border.
    first = manifest["images"][0]["id"]
    hard = [
        ("car", "polygon", [0, 0, 399, 0, 399, 199]),
        ("person", "polygon", [5, 5, 5, 5, 5, 5]),
        ("person", "polygon", [10.5, 10.5, 12.49, 10.5, 11, 12.5]),
        ("car", "polygon", [-50, 150, 450, 150, 200, 260]),
        ("bicycle", "rectangle", [390.2, 190.7, 420, 230]),
        ("road", "polygon", [20, 20, 60, 20, 100, 20, 140, 20]),
        ("car", "polygon", [1, 1]),
    ]
    for z, (label, kind, points) in enumerate(hard):
        manifest["shapes"].append(
            {"image": first, "label": label, "type": kind, "points": points,
             "z_order": z % 3, "attributes": {"is_crowd": z == 3}}
        )
    path = tmp / "manifest.json"
    path.write_text(json.dumps(manifest))
    out = tmp / "out.zip"
    result = run_export(
        parse_export_spec({"annotations": str(path), "output": str(out), "train_ids": True}),
        jobs=2,
    )
    return manifest, zipfile.ZipFile(out), result


def test_every_image_matches_the_official_scripts(exported):
    manifest, archive, result = exported
    assert result["images"] == len(manifest["images"])
    compared = 0
    for image in manifest["images"]:
        city, stem = image["name"].split("/")[0], image["name"].split("/")[1][:-4]
        base = f"gtFine/{image['subset']}/{city}/{stem}_gtFine_"
        ours_json = archive.read(base + "polygons.json")
        # The reference built from the manifest by the test, and the one read from our own file.
        for polygons in (reference_json(manifest, image), ours_json):
            reference = official_images(polygons)
            for kind, expected in reference.items():
                ours = read_png(archive.read(f"{base}{kind}.png"))
                assert ours.shape == expected.shape, (image["name"], kind)
                differing = int(np.count_nonzero(ours.astype(np.int64) != expected))
                assert differing == 0, f"{image['name']} {kind}: {differing} pixels differ"
                compared += 1
    assert compared == len(manifest["images"]) * 2 * 4


def test_instance_ids_use_the_official_encoding(exported):
    manifest, archive, _ = exported
    image = manifest["images"][0]
    city, stem = image["name"].split("/")[0], image["name"].split("/")[1][:-4]
    ids = read_png(archive.read(f"gtFine/{image['subset']}/{city}/{stem}_gtFine_instanceIds.png"))
    assert ids.dtype == np.uint16 or ids.dtype == np.int32
    values = np.unique(ids)
    instances = values[values >= 1000]
    assert len(instances) > 5
    assert set(instances // 1000) <= {24, 25, 26, 27, 28, 29, 30, 31, 32, 33}


def test_polygons_json_spells_labels_as_the_official_scripts(exported):
    manifest, archive, _ = exported
    names = set()
    for member in archive.namelist():
        if member.endswith("polygons.json"):
            names |= {o["label"] for o in json.loads(archive.read(member))["objects"]}
    assert "traffic light" in names and "license plate" in names
    assert "cargroup" in names or "persongroup" in names
    assert not names & {"trafficlight", "licenseplate"}


def test_shapes_reaching_far_past_the_border_match_the_official_scripts(tmp_path):
    """Loosely drawn stuff and objects scaled from another resolution: vertices up to ten image
    sizes out, and a triangle at +-1e6, written once as the official polygons.json (by hand, the
    format description's names) and once as a manifest; every PNG as the official scripts draw."""
    width, height = 549, 267
    rng = np.random.default_rng(19)
    w, h = 10 * width, 10 * height  # ten image sizes

    def across(y_left, y_right):
        """The far ends, ten image sizes out, of the line from (0, y_left) to (width, y_right)."""
        rise = y_right - y_left
        return [[-w, y_left - 10 * rise], [width + w, y_right + 10 * rise]]

    objects = [
        ("terrain", [[-10**6, -10**6], [10**6, -10**6], [0, 10**6]]),
        # Bands whose vertices lie ten image sizes out; their edges cross the frame aslant.
        ("sky", [[-w, -h], [width + w, -h], *across(100, 37)[::-1]]),
        ("building", [*across(60, 23), *across(150, 171)[::-1]]),
        ("road", [*across(190, 215), [width + w, height + h], [-w, height + h]]),
        ("vegetation", [[-w, -h], [150, 130], [-3 * w, height + h]]),
    ]
    for label in ("car", "person", "car", "bicycle", "car"):
        # An object in the frame with one vertex scaled ten image sizes away.
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        points = [[cx + int(dx), cy + int(dy)] for dx, dy in rng.integers(-40, 40, (5, 2))]
        points[2] = [int(rng.integers(-w, width + w)), int(rng.choice([-h, height + h]))]
        objects.append((label, points))
    official_json = json.dumps({
        "imgHeight": height, "imgWidth": width,
        "objects": [{"label": label, "polygon": polygon} for label, polygon in objects],
    }).encode()
    manifest = {
        "version": 1,
        "labels": [{"name": name} for name in sorted({label for label, _ in objects})],
        "images": [{"id": 1, "name": "lindau/lindau_000000_000019.png", "width": width,
                    "height": height, "subset": "val"}],
        "shapes": [{"image": 1, "label": label, "type": "polygon",
                    "points": [c for point in polygon for c in point]}
                   for label, polygon in objects],
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    out = tmp_path / "out.zip"
    result = run_export(parse_export_spec(
        {"annotations": str(path), "output": str(out), "train_ids": True}), jobs=1)
    assert result["warnings"] == []
    archive = zipfile.ZipFile(out)
    expected = official_images(official_json)
    labelled = 0
    for kind, pixels in expected.items():
        ours = read_png(archive.read(f"gtFine/val/lindau/lindau_000000_000019_gtFine_{kind}.png"))
        differing = int(np.count_nonzero(ours.astype(np.int64) != pixels))
        assert differing == 0, f"{kind}: {differing} pixels differ"
        labelled += 1
    assert labelled == 4
    # The far shapes did reach into the frame: several classes and car instances are drawn.
    ids = read_png(archive.read("gtFine/val/lindau/lindau_000000_000019_gtFine_instanceIds.png"))
    drawn = set(np.unique(ids))
    assert {23, 11, 21} <= drawn and len(drawn & set(range(26000, 27000))) >= 2, drawn


def _mask_polygons_json(tmp_path, mask: np.ndarray, label: str) -> tuple[bytes, np.ndarray]:
    """Our export of one mask shape: (its polygons.json, its labelIds)."""
    from worker.cityscapes.rle import encode_mask

    height, width = mask.shape
    manifest = {"version": 1, "labels": [{"name": label}],
                "images": [{"id": 1, "name": "m/m_000000_000000.png", "width": width,
                            "height": height}],
                "shapes": [{"image": 1, "label": label, "type": "mask", "rle": encode_mask(mask)}]}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    out = tmp_path / "out.zip"
    run_export(parse_export_spec({"annotations": str(path), "output": str(out)}), jobs=1)
    archive = zipfile.ZipFile(out)
    base = "gtFine/default/m/m_000000_000000_gtFine_"
    return archive.read(base + "polygons.json"), read_png(archive.read(base + "labelIds.png"))


def _blob(seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    mask = np.zeros((90, 120), np.uint8)
    for _ in range(3):
        center = (int(rng.integers(30, 90)), int(rng.integers(25, 65)))
        axes = (int(rng.integers(6, 25)), int(rng.integers(4, 18)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


@pytest.mark.parametrize("seed", range(6))
def test_mask_outlines_in_polygons_json_draw_the_mask_officially(tmp_path, seed):
    """polygons.json holds a mask as its outlines (the format has no masks): drawn by the
    official scripts they give the mask's own pixels back, exactly, for masks without holes."""
    mask = _blob(seed)
    document, label_ids = _mask_polygons_json(tmp_path, mask, "car")
    assert np.array_equal(label_ids == 26, mask)
    official = official_images(document)["labelIds"]
    assert np.array_equal(official == 26, mask), int(np.count_nonzero((official == 26) != mask))


def test_a_masks_holes_are_what_its_polygons_json_outline_cannot_hold(tmp_path):
    """Outlines are outer contours: the official drawing of a mask with a hole fills the hole,
    and differs from the mask by exactly the hole's pixels (documented in the README)."""
    mask = np.zeros((60, 80), bool)
    mask[10:50, 10:70] = True
    hole = np.zeros_like(mask)
    hole[20:35, 25:50] = True
    mask &= ~hole
    document, label_ids = _mask_polygons_json(tmp_path, mask, "car")
    assert np.array_equal(label_ids == 26, mask)
    official = official_images(document)["labelIds"] == 26
    assert np.array_equal(official, mask | hole)
