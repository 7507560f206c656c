"""The panoptic core on small arrays and records, and `export --panoptic` in one process: label
maps that are not the official table, the cache, the order of records, refused names."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from worker.cityscapes import panoptic
from worker.cityscapes.labels import Label, LabelMap
from worker.cityscapes.panoptic import (
    RecordSpool,
    panoptic_from_instance_ids,
    panoptic_scheme,
    segments_info,
    subset_documents,
)
from worker.errors import ClientError
from worker.specs import parse_export_spec, parse_import_spec
from worker.export_local import run_export
from worker.import_local import run_import
from worker.synth import make_manifest

OFFICIAL = LabelMap.cityscapes()
CUSTOM = LabelMap.from_task([("background", (0, 0, 0)), ("tree", (0, 255, 0)),
                             ("cat", (9, 8, 7))])


def test_segments_of_an_official_instance_ids_image_counted_by_hand():
    ids = np.zeros((6, 8), np.uint16)
    ids[0:2, :] = 7  # road: stuff
    ids[2:4, 1:3] = 26000  # a car
    ids[2, 6] = 26000  # ... of two parts
    ids[3:5, 4:6] = 26001
    ids[5, 0:3] = 26  # a crowd of cars
    ids[4, 0] = 4  # static: not evaluated
    ids[5, 7] = 29000  # a caravan: a thing, not evaluated either
    ids[4, 7] = 24999  # a person, the last instance id
    rgb, found = panoptic_from_instance_ids(ids, panoptic_scheme(OFFICIAL))
    assert found == [
        # id, area, x, y, width, height, iscrowd
        [7, 16, 0, 0, 8, 2, 0],
        [26, 3, 0, 5, 3, 1, 1],
        [24999, 1, 7, 4, 1, 1, 0],
        [26000, 5, 1, 2, 6, 2, 0],
        [26001, 4, 4, 3, 2, 2, 0],
    ]
    wide = rgb.astype(np.int64)
    decoded = wide[..., 0] + 256 * wide[..., 1] + 65536 * wide[..., 2]
    void = np.isin(ids, [0, 4, 29000])
    assert np.array_equal(decoded[~void], ids[~void]) and not decoded[void].any()
    assert (rgb[4, 7] == [24999 % 256, 24999 // 256, 0]).all()
    # In the train-id variant the same segments carry train ids.
    train = panoptic_scheme(OFFICIAL, train_ids=True).variants[1]
    assert [s["category_id"] for s in segments_info(found, train)] == [0, 13, 11, 13, 13]


def test_a_task_label_map_gives_its_labels_as_categories_and_things_by_their_instances():
    scheme = panoptic_scheme(CUSTOM, train_ids=True)
    assert len(scheme.variants) == 1  # train ids are the official table's
    assert list(scheme.variants[0].categories) == [
        {"color": [0, 255, 0], "id": 1, "isthing": 1, "name": "tree", "supercategory": "tree"},
        {"color": [9, 8, 7], "id": 2, "isthing": 1, "name": "cat", "supercategory": "cat"},
    ]
    ids = np.array([[0, 1, 1000, 1001], [2, 2, 2001, 0]], np.uint16)
    _, found = panoptic_from_instance_ids(ids, scheme)
    # A value below 1000 of a label with instances is a crowd region; the background is void.
    assert [(s[0], s[-1]) for s in found] == [(1, 1), (2, 1), (1000, 0), (1001, 0), (2001, 0)]
    stuff = LabelMap([Label("void", 0, (0, 0, 0), False), Label("sky", 1, (1, 2, 3), False)],
                     official=False)
    (sky,) = panoptic_scheme(stuff).variants[0].categories
    assert sky["isthing"] == 0
    _, found = panoptic_from_instance_ids(np.array([[1, 0]], np.uint16), panoptic_scheme(stuff))
    assert found == [[1, 1, 0, 0, 1, 1, 0]]  # stuff is never a crowd


def record(subset, key, image_id, segments, width=10, height=5):
    return {"subset": subset, "key": key, "id": image_id, "width": width, "height": height,
            "segments": segments}


@pytest.mark.parametrize("label_map", [OFFICIAL, CUSTOM,
                                       LabelMap.from_task([("background", (0, 0, 0))])])
def test_documents_are_the_text_json_dump_writes(label_map):
    """Each subset's document, written piece by piece, is json.dump(sort_keys, indent=4) of the
    document built here: non-ASCII names escaped, empty lists (segments, categories) as []."""
    records = [
        record("train", "a", "aachen_1", [[7, 12, 0, 0, 4, 3, 0], [26001, 5, 1, 2, 3, 4, 0]]),
        record("train", "b", "zürich_\"2\"", []),
        record("val", "c", "x", [[26, 3, 2, 1, 1, 3, 1]], 33, 44),
    ]
    if not label_map.official:
        for r in records:
            r["segments"] = [[s[0] % 1000 // 10 or 1, *s[1:]] for s in r["segments"]]
    scheme = panoptic_scheme(label_map, train_ids=True)
    seen = []
    for document in subset_documents(records, scheme.variants):
        mine = [r for r in records if r["subset"] == document.subset]
        expected = {
            "annotations": [{"file_name": f"{r['id']}_gtFine_panoptic.png", "image_id": r["id"],
                             "segments_info": segments_info(r["segments"], document.variant)}
                            for r in mine],
            "categories": list(document.variant.categories),
            "images": [{"file_name": f"{r['id']}_gtFine_leftImg8bit.png", "height": r["height"],
                        "id": r["id"], "width": r["width"]} for r in mine],
        }
        assert b"".join(document.pieces()) == json.dumps(expected, sort_keys=True, indent=4).encode()
        seen.append(document.path)
    suffixes = [v.suffix for v in scheme.variants]
    assert seen == [f"gtFine/cityscapes_panoptic_{s}{x}.json" for s in ("train", "val")
                    for x in suffixes]


def test_records_in_any_order_come_out_sorted_through_runs_and_merges(tmp_path, monkeypatch):
    monkeypatch.setattr(panoptic, "_RUN_RECORDS", 3)
    monkeypatch.setattr(panoptic, "_MERGE_FAN_IN", 2)
    rng = np.random.default_rng(3)
    records = [record(str(rng.choice(["val", "train", "test"])), f"k{int(k):04d}", "i", [])
               for k in rng.permutation(40)]
    spool = RecordSpool(str(tmp_path))
    for r in records:
        spool.add(r)
    merged = list(spool.sorted_records())
    assert len(spool.runs) == 14
    assert merged == sorted(records, key=lambda r: (r["subset"], r["key"]))


def write(tmp_path, manifest, name="m.json"):
    path = tmp_path / name
    path.write_text(json.dumps(manifest))
    return str(path)


def test_a_task_label_map_export_is_consistent_with_its_own_instance_ids(tmp_path):
    """The rule for task label maps, checked against the zip's instanceIds and label_color.txt
    by the test's own reading; train ids are asked for but only the official table has them."""
    manifest = make_manifest(3, width=160, height=80, seed=2, objects=25, stuff_vertices=20)
    manifest["labels"].append({"name": "lamppost", "color": "#010203", "attributes": []})
    out = tmp_path / "o.zip"
    result = run_export(parse_export_spec({"annotations": write(tmp_path, manifest),
                                           "output": str(out), "panoptic": True,
                                           "train_ids": True}), jobs=1)
    assert any("nor panoptic trainId" in w for w in result["warnings"])
    archive = zipfile.ZipFile(out)
    names = archive.namelist()
    assert not any("_trainId" in n or "labelTrainIds" in n for n in names)
    document = json.loads(archive.read("gtFine/cityscapes_panoptic_train.json"))
    lines = [line.split(" ", 3) for line in archive.read("label_color.txt").decode().splitlines()
             if not line.startswith("#")]
    assert [(c["id"], c["name"], c["color"], c["isthing"]) for c in document["categories"]] == [
        (i, name, [int(r), int(g), int(b)], 1) for i, (r, g, b, name) in enumerate(lines) if i]
    crowds = 0
    for annotation in document["annotations"]:
        stem = annotation["image_id"]
        ids_name = next(n for n in names if n.endswith(f"/{stem}_gtFine_instanceIds.png"))
        ids = np.asarray(Image.open(io.BytesIO(archive.read(ids_name)))).astype(np.int64)
        rgb = np.asarray(Image.open(io.BytesIO(archive.read(
            f"gtFine/cityscapes_panoptic_train/{stem}_gtFine_panoptic.png")))).astype(np.int64)
        expected = []
        for value in np.unique(ids[ids > 0]).tolist():
            ys, xs = np.nonzero(ids == value)
            expected.append({"area": len(xs), "bbox": [int(xs.min()), int(ys.min()),
                                                       int(xs.max() - xs.min() + 1),
                                                       int(ys.max() - ys.min() + 1)],
                             "category_id": value // 1000 or value, "id": value,
                             "iscrowd": int(value < 1000)})
        assert annotation["segments_info"] == expected
        assert np.array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], ids)
        crowds += sum(s["iscrowd"] for s in expected)
    assert crowds > 0


def export_bytes(tmp_path, manifest, name, jobs=1, cache_dir=None, **fields):
    out = tmp_path / f"{name}.zip"
    result = run_export(parse_export_spec({"annotations": write(tmp_path, manifest),
                                           "output": str(out), **fields}), jobs=jobs,
                        cache=cache_dir)
    return result, out.read_bytes()


def test_one_or_two_processes_and_many_sorted_runs_write_the_same_zip(tmp_path, monkeypatch):
    manifest = make_manifest(11, width=96, height=48, seed=4, objects=10, stuff_vertices=12)
    _, one = export_bytes(tmp_path, manifest, "one", jobs=1, panoptic=True, train_ids=True)
    monkeypatch.setattr(panoptic, "_RUN_RECORDS", 2)
    monkeypatch.setattr(panoptic, "_MERGE_FAN_IN", 2)
    _, two = export_bytes(tmp_path, manifest, "two", jobs=2, panoptic=True, train_ids=True)
    assert one == two
    _, plain = export_bytes(tmp_path, manifest, "plain", jobs=1, train_ids=True)
    # Without --panoptic the zip is the one written before panoptic output existed.
    assert not any("panoptic" in n for n in zipfile.ZipFile(io.BytesIO(plain)).namelist())


def test_the_run_cache_keeps_panoptic_output_apart_and_gives_the_same_bytes(tmp_path):
    manifest = make_manifest(5, width=96, height=48, seed=6, objects=10, stuff_vertices=12)
    cache = str(tmp_path / "cache")
    _, full = export_bytes(tmp_path, manifest, "full", panoptic=True)
    _, plain = export_bytes(tmp_path, manifest, "plain")
    first, cold = export_bytes(tmp_path, manifest, "cold", panoptic=True, cache_dir=cache)
    again, warm = export_bytes(tmp_path, manifest, "warm", panoptic=True, cache_dir=cache)
    other, without = export_bytes(tmp_path, manifest, "without", cache_dir=cache)
    assert (first["images_cached"], again["images_cached"], other["images_cached"]) == (0, 5, 0)
    assert cold == warm == full and without == plain
    edited = json.loads(json.dumps(manifest))
    edited["shapes"][-1]["points"] = [p + 2 for p in edited["shapes"][-1]["points"]]
    result, redrawn = export_bytes(tmp_path, edited, "edited", panoptic=True, cache_dir=cache)
    _, expected = export_bytes(tmp_path, edited, "expected", panoptic=True)
    assert result["images_drawn"] == 1 and redrawn == expected


def test_two_images_with_one_panoptic_png_path_are_refused_naming_both(tmp_path):
    manifest = make_manifest(2, width=32, height=16, seed=1, objects=2, stuff_vertices=6)
    manifest["images"][1]["name"] = "lindau/x.png"
    manifest["images"][0]["name"] = "frankfurt/x.png"
    manifest["images"][1]["subset"] = manifest["images"][0]["subset"]
    export_bytes(tmp_path, manifest, "fine")  # without --panoptic: two cities, two folders
    with pytest.raises(ClientError, match="'frankfurt/x.png' and 'lindau/x.png'.*panoptic PNG"):
        export_bytes(tmp_path, manifest, "refused", panoptic=True)
    assert not (tmp_path / "refused.zip").exists()


def test_a_panoptic_zip_imports_as_the_same_zip_without_it(tmp_path):
    manifest = make_manifest(3, width=96, height=48, seed=8, objects=8, stuff_vertices=12)
    imported = []
    for fields in ({}, {"panoptic": True, "train_ids": True}):
        name = "p" if fields else "plain"
        export_bytes(tmp_path, manifest, name, **fields)
        out = tmp_path / f"{name}.json"
        run_import(parse_import_spec({"archive": str(tmp_path / f"{name}.zip"),
                                      "output": str(out)}), jobs=1)
        imported.append(json.loads(out.read_text()))
    assert imported[0] == imported[1]


def test_the_cli_option(tmp_path):
    manifest = make_manifest(2, width=64, height=32, seed=3, objects=4, stuff_vertices=8)
    out = tmp_path / "o.zip"
    run = subprocess.run([sys.executable, "-m", "worker.cli", "export", "--annotations",
                          write(tmp_path, manifest), "--output", str(out), "--panoptic"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "gtFine/cityscapes_panoptic_train.json" in zipfile.ZipFile(out).namelist()


def test_images_in_no_city_folder_are_listed_by_their_paths_too(tmp_path):
    """The cvat layout puts an image named without a folder at gtFine/<subset>/: the official
    glob (<subset>/*/) would miss it; we list it, in the order of the paths as they are."""
    manifest = make_manifest(3, width=48, height=24, seed=5, objects=3, stuff_vertices=6)
    for image, name in zip(manifest["images"], ("b/x.png", "b.png", "a.png")):
        image["name"], image["subset"] = name, "train"
    _, data = export_bytes(tmp_path, manifest, "flat", panoptic=True)
    archive = zipfile.ZipFile(io.BytesIO(data))
    listed = [i["id"] for i in json.loads(archive.read("gtFine/cityscapes_panoptic_train.json"))["images"]]
    # gtFine/train/a_..., gtFine/train/b/x_..., gtFine/train/b_...: '/' sorts before '_'.
    assert listed == ["a", "x", "b"]
    assert "gtFine/cityscapes_panoptic_train/x_gtFine_panoptic.png" in archive.namelist()
