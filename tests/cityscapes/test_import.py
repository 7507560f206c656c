"""Import: round trips through export, layouts of other tools, and archives not to be trusted."""

import io
from pathlib import Path
import json
import zipfile

import numpy as np
from cityscapesscripts.helpers.labels import id2label
import pytest
from PIL import Image

from worker.cityscapes.png import encode_png
from worker.cityscapes.reader import ArchiveError, scan_archive
from worker.export_local import run_export
from worker.import_local import run_import
from worker.specs import parse_export_spec, parse_import_spec
from worker.synth import jagged_polygons_json, make_manifest


def pixels(archive: zipfile.ZipFile, suffix: str) -> dict[str, np.ndarray]:
    return {n: np.asarray(Image.open(io.BytesIO(archive.read(n))))
            for n in archive.namelist() if n.endswith(suffix)}


def export(manifest_path, out, **extra):
    run_export(parse_export_spec({"annotations": str(manifest_path), "output": str(out), **extra}), jobs=1)
    return zipfile.ZipFile(out)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import")
    manifest = make_manifest(4, width=320, height=160, seed=21, objects=40, stuff_vertices=40, masks=3)
    path = tmp / "m.json"
    path.write_text(json.dumps(manifest))
    return tmp, export(path, tmp / "src.zip", polygons_json=False)


@pytest.mark.parametrize("shapes", ["polygon", "mask"])
def test_round_trip_reproduces_every_pixel(source, shapes):
    tmp, original = source
    result = run_import(parse_import_spec({"archive": original.filename, "output": str(tmp / f"{shapes}.json"),
                                           "shapes": shapes}), jobs=2)
    assert result["images"] == 4 and result["changed_pixels"] == 0
    again = export(tmp / f"{shapes}.json", tmp / f"again-{shapes}.zip", polygons_json=False)
    for suffix in ("instanceIds.png", "labelIds.png", "color.png"):
        before, after = pixels(original, suffix), pixels(again, suffix)
        assert before.keys() == after.keys() and len(before) == 4
        for name in before:
            assert np.array_equal(before[name], after[name]), (name, int((before[name] != after[name]).sum()))


def png_file(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")  # as the official scripts save them
    return out.getvalue()


def test_jagged_scenes_drawn_by_the_official_scripts_come_back_pixel_for_pixel(tmp_path):
    """The benchmark's jagged scenes (200 polygons of 6 to 300 vertices), drawn by
    json2labelImg and json2instanceImg rather than by our exporter: imported as polygons and
    exported again, instanceIds, labelIds and color are the official images'."""
    from tests.official import official_images

    official = {}
    with zipfile.ZipFile(tmp_path / "official.zip", "w") as archive:
        for seed in (0, 1):
            stem = f"gtFine/train/aachen/aachen_{seed:06d}_000019_gtFine_"
            official[stem] = official_images(json.dumps(jagged_polygons_json(seed)).encode())
            official[stem]["instanceIds"] = official[stem]["instanceIds"].astype(np.uint16)
            for kind in ("instanceIds", "labelIds", "color"):
                archive.writestr(f"{stem}{kind}.png", png_file(official[stem][kind]))
    result = run_import(parse_import_spec({"archive": str(tmp_path / "official.zip"),
                                           "output": str(tmp_path / "m.json")}), jobs=1)
    assert result["images"] == 2 and result["changed_pixels"] == 0 and result["warnings"] == []
    assert result["shapes"] > 1000  # hundreds of components an image, and their fixes
    again = export(tmp_path / "m.json", tmp_path / "again.zip", polygons_json=False)
    for stem, images in official.items():
        for kind, theirs in images.items():
            if kind == "labelTrainIds":
                continue
            ours = np.asarray(Image.open(io.BytesIO(again.read(f"{stem}{kind}.png"))))
            if kind == "color":  # theirs RGBA, opaque
                assert (theirs[..., 3] == 255).all()
                theirs, ours = theirs[..., :3], ours[..., :3]
            assert np.array_equal(ours, theirs), (stem, kind, int((ours != theirs).sum()))


def test_image_names_are_item_names(source):
    tmp, original = source
    run_import(parse_import_spec({"archive": original.filename, "output": str(tmp / "n.json")}), jobs=1)
    manifest = json.loads((tmp / "n.json").read_text())
    names = sorted(i["name"] for i in manifest["images"])
    assert names[0].startswith("frankfurt/frankfurt_") and not names[0].endswith(".png")
    shape = next(s for s in manifest["shapes"] if "instance" in s)
    assert shape["attributes"]["is_crowd"] is False and 0 <= shape["instance"] < 1000


@pytest.mark.parametrize("layout", ["cvat", "cityscapes"])
def test_both_layouts_import_with_their_photos_and_export_again_alike(
    tmp_path, write_manifest, write_photos, layout
):
    manifest = make_manifest(2, width=96, height=48, seed=3, objects=8, stuff_vertices=12)
    manifest["images"][1]["name"] = "aachen_000001_000019.png"  # no folder: city from the name
    original = export(write_manifest(manifest), tmp_path / "a.zip", layout=layout,
                      images=str(write_photos(manifest)), save_images=True)
    photos = "leftImg8bit/" if layout == "cityscapes" else "imgsFine/leftImg8bit/"
    index = scan_archive(original)
    assert all(item.photo and item.photo.startswith(photos) for item in index.items)
    flat = "aachen/aachen_000001_000019" if layout == "cityscapes" else "aachen_000001_000019"
    assert [i.name for i in index.items] == [flat, "frankfurt/frankfurt_000000_000019"]

    spec = {"archive": original.filename, "output": str(tmp_path / "m.json")}
    run_import(parse_import_spec(spec), jobs=1)
    again = export(tmp_path / "m.json", tmp_path / "b.zip", layout=layout)
    for suffix in ("instanceIds.png", "labelIds.png", "color.png"):
        before, after = pixels(original, suffix), pixels(again, suffix)
        assert before.keys() == after.keys() and len(before) == 2
        assert all(np.array_equal(before[name], after[name]) for name in before)


def zip_of(members: dict[str, bytes]) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return zipfile.ZipFile(buffer)


IDS = np.zeros((8, 12), np.uint16)
IDS[1:4, 1:5] = 26001
IDS[5:7, 2:9] = 7
PNG = encode_png(IDS)


def test_seed_layout_with_a_top_folder_and_label_colors_txt(tmp_path):
    archive = zip_of({
        "export/label_colors.txt": b"0 0 0 background\n128 64 128 road\n",
        "export/gtFine/lindau/lindau_000000_000019_gtFine_instanceIds.png": PNG,
    })
    index = scan_archive(archive)
    assert [(i.subset, i.name) for i in index.items] == [("default", "lindau/lindau_000000_000019")]
    assert index.label_file == "export/label_colors.txt"


@pytest.mark.parametrize(
    "member, message",
    [
        ("../evil/gtFine/a/x_gtFine_instanceIds.png", "zip-slip"),
        ("/abs/gtFine/a/x_gtFine_instanceIds.png", "zip-slip"),
        ("gtFine\\a\\x_gtFine_instanceIds.png", "zip-slip"),
        ("other/x.png", "no gtFine"),
    ],
)
def test_hostile_or_foreign_member_names_are_refused(member, message):
    with pytest.raises(ArchiveError, match=message):
        scan_archive(zip_of({member: PNG}))


def test_zip_bombs_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("gtFine/a/x_gtFine_instanceIds.png", b"\0" * (64 << 20))
    with pytest.raises(ArchiveError, match="zip bomb"):
        scan_archive(zipfile.ZipFile(buffer))


def test_decompression_bomb_png_and_wrong_depth_are_refused(tmp_path):
    from worker.cityscapes.reader import decode_ids_png

    big = io.BytesIO()
    Image.new("1", (20000, 20000)).save(big, "PNG")
    with pytest.raises(ArchiveError, match="decompression bomb"):
        decode_ids_png(big.getvalue(), "gtFine/a/x_gtFine_instanceIds.png")
    with pytest.raises(ArchiveError, match="8- or 16-bit grey"):
        decode_ids_png(encode_png(np.zeros((4, 4, 3), np.uint8)), "m")
    with pytest.raises(ArchiveError, match="not a readable PNG"):
        decode_ids_png(PNG[:40], "m")


@pytest.mark.parametrize("shapes", ["polygon", "mask"])
def test_coco_output_loads_in_pycocotools_and_matches_the_masks(source, shapes):
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO

    tmp, original = source
    out = tmp / f"coco-{shapes}.json"
    result = run_import(parse_import_spec({"archive": original.filename, "output": str(out),
                                           "format": "coco", "shapes": shapes}), jobs=1)
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 4 == result["images"]
    instances = pixels(original, "instanceIds.png")
    crowds = 0
    for image in coco.loadImgs(coco.getImgIds()):
        city, stem = image["file_name"].split("/")
        ids = next(v for k, v in instances.items() if k.endswith(f"/{city}/{stem}_gtFine_instanceIds.png"))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert len(anns) == len(set(np.unique(ids)) - {0})
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            assert ann["area"] == int(ann["area"]) and ann["bbox"][2] > 0
            # exact, polygons too: pycocotools draws all pixels of one value of the ids image
            values = np.unique(ids[mask])
            assert len(values) == 1 and np.array_equal(mask, ids == values[0])
            assert values[0] // 1000 == ann["category_id"] or values[0] == ann["category_id"]
            # Crowd, by the pixels and the official table, not by our output: a value below 1000
            # of a class that has instances.
            crowd = values[0] < 1000 and id2label[int(values[0])].hasInstances
            assert ann["iscrowd"] == int(crowd), (image["file_name"], values[0])
            crowds += crowd
            rle_expected = shapes == "mask" or crowd
            assert isinstance(ann["segmentation"], dict if rle_expected else list)
            rle = coco.annToRLE(ann)
            assert mask_api.area(rle) == ann["area"] == mask.sum()
            assert mask_api.toBbox(rle).tolist() == ann["bbox"]
    assert crowds > 0  # the data holds crowd regions, so the check above can fail


def test_shapes_map_onto_the_task_labels(source):
    tmp, original = source
    task = [{"name": "Road", "color": "#804080"}, {"name": "Car", "color": "#00008e"}]
    out = tmp / "task.json"
    result = run_import(parse_import_spec({"archive": original.filename, "output": str(out),
                                           "labels": task}), jobs=1)
    manifest = json.loads(out.read_text())
    assert manifest["labels"] == task
    assert {s["label"] for s in manifest["shapes"]} <= {"Road", "Car", "unlabeled"}
    assert any("'sky', which the task labels lack" in w for w in result["warnings"])


def test_traced_outlines_redraw_as_the_export_rasterizer_draws_them(source):
    """redraw (OpenCV) and the export's paint_indices (Pillow) agree on traced outlines."""
    from worker.cityscapes.export import lookup, paint_indices
    from worker.cityscapes.trace import redraw, trace_regions

    _, original = source
    for ids in pixels(original, "instanceIds.png").values():
        ids = ids.astype(np.int32)
        regions = trace_regions(ids) + trace_regions(np.where(ids % 7 == 0, ids, -1), skip=(-1,))
        index = paint_indices(ids.shape[1], ids.shape[0], [r.polygon for r in regions])
        table = np.zeros(max(256, len(regions) + 1), np.int32)
        table[1 : len(regions) + 1] = [r.value for r in regions]
        assert np.array_equal(lookup(index, table), redraw(ids.shape, regions))


def test_ids_outside_the_label_map_are_reported_not_guessed(tmp_path):
    ids = IDS.copy()
    ids[0, 0:3] = 99  # class 99: not in the Cityscapes table
    path = tmp_path / "u.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("gtFine/lindau/x_gtFine_instanceIds.png", encode_png(ids))
    result = run_import(parse_import_spec({"archive": str(path), "output": str(tmp_path / "u.json")}), jobs=1)
    assert any("pixel value 99" in w and "3 pixels" in w for w in result["warnings"])
    manifest = json.loads((tmp_path / "u.json").read_text())
    assert {s["label"] for s in manifest["shapes"]} == {"car", "road"}


@pytest.mark.parametrize("kind", ["labelIds", "color"])
def test_fallbacks_to_label_ids_and_colors_warn(tmp_path, kind):
    from worker.cityscapes.labels import LabelMap

    classes = np.where(IDS >= 1000, IDS // 1000, IDS).astype(np.uint8)
    if kind == "color":
        colors = {label.id: label.color for label in LabelMap.cityscapes().drawn()}
        data = encode_png(np.array([[colors[v] for v in row] for row in classes], np.uint8))
    else:
        data = encode_png(classes)
    path = tmp_path / f"{kind}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"gtFine/lindau/x_gtFine_{kind}.png", data)
    result = run_import(parse_import_spec({"archive": str(path), "output": str(tmp_path / "o.json")}), jobs=1)
    assert len(result["warnings"]) == 1 and ("labelIds" in result["warnings"][0] or "colour" in result["warnings"][0])
    shapes = json.loads((tmp_path / "o.json").read_text())["shapes"]
    assert {s["label"] for s in shapes} == {"car", "road"}
    assert all("instance" not in s for s in shapes)


def test_ranged_reads_fetch_only_what_a_member_needs(source, tmp_path):
    from worker.cityscapes.reader import read_member
    from worker.storage.local import LocalStorage
    from worker.storage.ranged import RangedFile, open_ranged

    _, original = source
    raw = RangedFile(LocalStorage(), original.filename, Path(original.filename).stat().st_size)
    fetched = []
    real = raw.storage.read_range
    raw.storage.read_range = lambda url, start, length: fetched.append(length) or real(url, start, length)
    import io as _io

    with zipfile.ZipFile(_io.BufferedReader(raw, 4096)) as archive:  # blocks small beside the zip
        index = scan_archive(archive)
        read_member(archive, index.items[0].members["instanceIds"], 1 << 30)
    assert sum(fetched) < Path(original.filename).stat().st_size / 2
    assert open_ranged(LocalStorage(), original.filename).read(4) == b"PK\x03\x04"
