"""Panoptic output against the official `createPanopticImgs.py` run on our own instanceIds: the
same JSON (every value, and every byte) and the same PNG pixels, with label ids and train ids."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from PIL import Image

from worker.specs import parse_export_spec
from worker.export_local import run_export
from worker.synth import make_manifest

# Names the official glob sorts: '-' sorts before '/', so aachen-2/ comes before aachen/.
CITIES = ("aachen", "aachen-2", "zürich", "bremen")


def panoptic_manifest() -> dict:
    """Street scenes (crowds, masks, stuff) and hard cases: classes the evaluation ignores (a
    thing among them), an image with no shape, one with ignored classes only."""
    manifest = make_manifest(8, width=320, height=160, seed=11, objects=60, stuff_vertices=60,
                             masks=2, cities=CITIES)
    first, second = manifest["images"][0]["id"], manifest["images"][1]["id"]
    hard = [
        (first, "caravan", [10, 10, 90, 10, 90, 60, 10, 60], False),  # a thing, ignoreInEval
        (first, "caravan", [100, 10, 150, 10, 150, 60], True),
        (first, "parking", [0, 150, 319, 150, 319, 159, 0, 159], False),
        (first, "polegroup", [200, 20, 210, 20, 210, 100, 200, 100], False),
        (first, "static", [250, 30, 300, 30, 300, 70], False),
        (first, "car", [30, 100, 80, 100, 80, 140, 30, 140], True),  # crowd regions of car
        (first, "car", [60, 120, 120, 120, 120, 150, 60, 150], True),
        (second, "static", [0, 0, 319, 0, 319, 159, 0, 159], False),  # covers everything
    ]
    for image, label, points, crowd in hard:
        manifest["shapes"].append({"image": image, "label": label, "type": "polygon",
                                   "points": points, "z_order": 5,
                                   "attributes": {"is_crowd": crowd}})
    manifest["images"].append({"id": 99, "name": "bremen/bremen_000099_000019.png",
                               "width": 64, "height": 48, "subset": "val"})
    # Listed by its path (bremen/...), not by its name, which sorts first.
    manifest["images"].append({"id": 100, "name": "bremen/aaa_000100_000019.png",
                               "width": 64, "height": 48, "subset": "train"})
    manifest["shapes"].append({"image": 100, "label": "car", "type": "rectangle",
                               "points": [3, 4, 20, 30], "attributes": {"is_crowd": False}})
    return manifest


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("panoptic")
    manifest = panoptic_manifest()
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    out = tmp / "ours.zip"
    run_export(parse_export_spec({"annotations": str(tmp / "manifest.json"), "output": str(out),
                                  "panoptic": True, "train_ids": True, "layout": "cityscapes"}),
               jobs=2)
    archive = zipfile.ZipFile(out)
    # Our instanceIds, laid out as the official script expects: gtFine/<subset>/<city>/.
    gt = tmp / "gtFine"
    for name in archive.namelist():
        if name.endswith("_gtFine_instanceIds.png"):
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    subsets = sorted({image["subset"] for image in manifest["images"]})
    official = {}
    for train_ids in (False, True):
        folder = tmp / ("official-trainId" if train_ids else "official")
        folder.mkdir()
        convert2panoptic(str(gt), str(folder), train_ids, subsets)
        official[train_ids] = folder
    return manifest, archive, official, subsets


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("train_ids", [False, True])
def test_subset_json_is_the_official_scripts(exported, train_ids):
    manifest, archive, official, subsets = exported
    suffix = "_trainId" if train_ids else ""
    for subset in subsets:
        name = f"cityscapes_panoptic_{subset}{suffix}.json"
        theirs = (official[train_ids] / name).read_bytes()
        ours = archive.read(f"gtFine/{name}")
        expected, got = json.loads(theirs), json.loads(ours)
        assert got.keys() == expected.keys()
        assert got["categories"] == expected["categories"]
        assert got["images"] == expected["images"]
        assert len(got["annotations"]) == len(expected["annotations"])
        for mine, reference in zip(got["annotations"], expected["annotations"]):
            assert mine == reference, reference["image_id"]
        assert ours == theirs  # and written as json.dump(sort_keys=True, indent=4) writes it
    every = [a for s in subsets for a in json.loads(
        archive.read(f"gtFine/cityscapes_panoptic_{s}{suffix}.json"))["annotations"]]
    assert len(every) == len(manifest["images"])
    # The hard cases are in it: crowd regions, things and stuff, an image without segments.
    segments = [s for a in every for s in a["segments_info"]]
    assert any(s["iscrowd"] for s in segments) and any(s["id"] >= 1000 for s in segments)
    assert any(not a["segments_info"] for a in every)
    assert not any(s["id"] // 1000 in (29, 30) for s in segments)  # caravan: ignoreInEval


@pytest.mark.parametrize("train_ids", [False, True])
def test_every_panoptic_png_has_the_official_pixels(exported, train_ids):
    _, archive, official, subsets = exported
    suffix = "_trainId" if train_ids else ""
    compared = 0
    for subset in subsets:
        folder = official[train_ids] / f"cityscapes_panoptic_{subset}{suffix}"
        theirs = sorted(p.name for p in folder.iterdir())
        prefix = f"gtFine/cityscapes_panoptic_{subset}{suffix}/"
        ours = sorted(n[len(prefix):] for n in archive.namelist() if n.startswith(prefix))
        assert ours == theirs
        for name in theirs:
            expected = np.asarray(Image.open(folder / name))
            got = read_png(archive.read(prefix + name))
            assert got.shape == expected.shape and got.dtype == np.uint8, name
            differing = int(np.count_nonzero(np.any(got != expected, axis=-1)))
            assert differing == 0, f"{name}: {differing} pixels differ"
            compared += 1
    assert compared == 10


def test_zip_order_keeps_each_images_files_together_and_the_jsons_last(exported):
    _, archive, _, subsets = exported
    names = archive.namelist()
    jsons = [f"gtFine/cityscapes_panoptic_{s}{x}.json" for s in subsets for x in ("", "_trainId")]
    assert names[-len(jsons):] == jsons
    first = names.index("gtFine/train/aachen/aachen_000000_000019_gtFine_polygons.json")
    assert names[first + 1:first + 3] == [
        "gtFine/cityscapes_panoptic_train/aachen_000000_000019_gtFine_panoptic.png",
        "gtFine/cityscapes_panoptic_train_trainId/aachen_000000_000019_gtFine_panoptic.png",
    ]


def test_images_are_listed_in_the_official_order_not_the_manifests(exported):
    manifest, archive, _, _ = exported
    listed = [i["id"] for i in json.loads(archive.read("gtFine/cityscapes_panoptic_train.json"))["images"]]
    ours = [Path(i["name"]).stem for i in manifest["images"] if i["subset"] == "train"]
    assert listed != ours and sorted(listed) == sorted(ours)
    assert listed[0].startswith("aachen-2_")  # "aachen-2/" sorts before "aachen/"
    assert listed.index("aaa_000100_000019") > listed.index("aachen_000000_000019")
