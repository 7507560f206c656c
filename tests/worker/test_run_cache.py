"""The run cache in process: a re-export draws only the images whose inputs changed, and writes
byte for byte the zip a full export without the cache writes for the same input; changes that
touch every image redraw every image; damaged entries and entries of another encoder version are
never shipped; two exports sharing one cache at once both come out whole."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from worker import run_cache
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest, make_photo

ROOT = Path(__file__).parents[2]
IMAGES = 6


@pytest.fixture
def scene():
    return make_manifest(IMAGES, width=256, height=128, seed=21, objects=8, stuff_vertices=16)


def export(tmp_path: Path, manifest: dict, name: str, cache: Path | None, jobs: int = 1,
           **spec) -> tuple[dict, bytes]:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(manifest))
    output = tmp_path / f"{name}.zip"
    result = run_export(parse_export_spec({"annotations": str(path), "output": str(output), **spec}),
                        jobs=jobs, cache=str(cache) if cache else None)
    return result, output.read_bytes()


def shapes_of(manifest: dict, image_id: int) -> list[dict]:
    return [s for s in manifest["shapes"] if s["image"] == image_id]


def moved(manifest: dict) -> None:
    shape = shapes_of(manifest, 3)[-1]
    shape["points"] = [p + 2 for p in shape["points"]]


def added(manifest: dict) -> None:
    manifest["shapes"].append({"image": 3, "label": "car", "type": "polygon",
                               "points": [10, 10, 60, 12, 30, 50]})


def removed(manifest: dict) -> None:
    manifest["shapes"].remove(shapes_of(manifest, 3)[-1])


def relabelled(manifest: dict) -> None:
    shape = next(s for s in shapes_of(manifest, 3) if s["label"] != "person")
    shape["label"] = "person"


@pytest.mark.parametrize("edit", [moved, added, removed, relabelled])
def test_a_reexport_draws_only_the_edited_image_and_writes_the_full_exports_bytes(tmp_path, scene, edit):
    cache = tmp_path / "cache"
    first, _ = export(tmp_path, scene, "first", cache)
    assert (first["images_drawn"], first["images_cached"]) == (IMAGES, 0)
    edited = copy.deepcopy(scene)
    edit(edited)
    again, got = export(tmp_path, edited, "again", cache)
    assert (again["images_drawn"], again["images_cached"]) == (1, IMAGES - 1)
    full, expected = export(tmp_path, edited, "full", None)
    assert got == expected and "images_cached" not in full
    assert again["objects"] == full["objects"] and again["warnings"] == full["warnings"]


@pytest.mark.parametrize("change", [
    {"train_ids": True}, {"polygons_json": False}, {"layout": "cityscapes"}, "a label map",
])
def test_an_option_or_label_map_that_changed_redraws_every_image(tmp_path, scene, change):
    if change == "a label map":  # the task's labels in another order: other ids
        change = {"label_map": [{"name": label["name"], "color": label["color"]}
                                for label in reversed(scene["labels"])]}
    cache = tmp_path / "cache"
    export(tmp_path, scene, "first", cache)
    again, got = export(tmp_path, scene, "again", cache, **change)
    assert (again["images_drawn"], again["images_cached"]) == (IMAGES, 0)
    assert got == export(tmp_path, scene, "full", None, **change)[1]


def test_a_label_colour_that_changed_redraws_every_image(tmp_path, scene):
    def label_map(car: str) -> list[dict]:
        return [{"name": label["name"], "color": car if label["name"] == "car" else label["color"]}
                for label in scene["labels"]]

    cache = tmp_path / "cache"
    export(tmp_path, scene, "first", cache, label_map=label_map("#010203"))
    again, got = export(tmp_path, scene, "again", cache, label_map=label_map("#030201"))
    assert again["images_drawn"] == IMAGES
    assert got == export(tmp_path, scene, "full", None, label_map=label_map("#030201"))[1]


def test_a_replaced_photo_is_drawn_again(tmp_path, scene):
    photos = tmp_path / "photos"
    for image in scene["images"]:
        path = photos / image["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_photo(image["id"], image["width"], image["height"])).save(path)
    cache, options = tmp_path / "cache", {"images": str(photos), "save_images": True}
    export(tmp_path, scene, "first", cache, **options)
    replaced = photos / scene["images"][2]["name"]
    Image.fromarray(make_photo(99, 256, 128)).save(replaced)
    os.utime(replaced, ns=(1, 1))  # another time too, whatever the size
    again, got = export(tmp_path, scene, "again", cache, **options)
    assert (again["images_drawn"], again["images_cached"]) == (1, IMAGES - 1)
    assert got == export(tmp_path, scene, "full", None, **options)[1]


def entries(cache: Path) -> list[Path]:
    """The images' entries (not the memo of the manifest's shapes, under shapes/)."""
    return sorted(p for p in cache.rglob("*") if p.is_file() and p.parent.name != "shapes")


def test_damaged_entries_are_drawn_again_and_replaced_never_shipped(tmp_path, scene):
    cache = tmp_path / "cache"
    _, expected = export(tmp_path, scene, "first", cache)
    stored = entries(cache)
    assert len(stored) == IMAGES
    truncated, flipped = stored[0], stored[1]
    truncated.write_bytes(truncated.read_bytes()[:-100])
    data = bytearray(flipped.read_bytes())
    data[-50] ^= 0xFF  # inside the entry's zip bytes: a digest mismatch
    flipped.write_bytes(bytes(data))
    again, got = export(tmp_path, scene, "again", cache)
    assert (again["images_drawn"], again["images_cached"]) == (2, IMAGES - 2)
    assert got == expected
    third, _ = export(tmp_path, scene, "third", cache)
    assert third["images_cached"] == IMAGES  # replaced by whole entries


def test_pool_processes_build_the_shapes_the_memo_left_unbuilt(tmp_path, scene):
    """With two processes, the edited image's shapes (two of them from the memo, left unbuilt
    in the manifest file) are built in a pool process, from the file the parent read."""
    cache = tmp_path / "cache"
    export(tmp_path, scene, "first", cache, jobs=2)
    edited = copy.deepcopy(scene)
    moved(edited)
    added(edited)
    again, got = export(tmp_path, edited, "again", cache, jobs=2)
    assert (again["images_drawn"], again["images_cached"]) == (1, IMAGES - 1)
    assert got == export(tmp_path, edited, "full", None, jobs=2)[1]


@pytest.mark.parametrize("damage", ["truncated", "flipped", "replaced by another memo"])
def test_a_damaged_shape_memo_costs_a_full_reading_never_a_wrong_zip(tmp_path, scene, damage):
    """The memo of the manifest's shapes (cache/shapes/) lets a re-export skip reading the
    shapes it vouches for; damaged, it is not used, and a memo that vouches for other entries
    leaves those of this manifest to be read."""
    cache = tmp_path / "cache"
    export(tmp_path, scene, "first", cache)
    (memo,) = (cache / "shapes").iterdir()
    data = memo.read_bytes()
    if damage == "truncated":
        memo.write_bytes(data[:-7])
    elif damage == "flipped":
        memo.write_bytes(data[:-7] + bytes([data[-7] ^ 1]) + data[-6:])
    else:
        other = make_manifest(IMAGES, width=256, height=128, seed=5, objects=8, stuff_vertices=16)
        export(tmp_path, {**other, "images": scene["images"]}, "other", tmp_path / "other")
        memo.write_bytes((tmp_path / "other" / "shapes" / memo.name).read_bytes())
    edited = copy.deepcopy(scene)
    moved(edited)
    again, got = export(tmp_path, edited, "again", cache)
    assert (again["images_drawn"], again["images_cached"]) == (1, IMAGES - 1)
    assert got == export(tmp_path, edited, "full", None)[1]


def test_an_entry_of_another_encoder_version_is_never_used(tmp_path, scene, monkeypatch):
    cache = tmp_path / "cache"
    _, expected = export(tmp_path, scene, "first", cache)
    # An entry whose header says another version is refused even where its key is looked up.
    entry = entries(cache)[0]
    data = bytearray(entry.read_bytes())
    data[5:7] = (run_cache.ENCODER_VERSION + 1).to_bytes(2, "big")
    assert run_cache.unpack(bytes(data)) is None
    # A new encoder version draws every image again, whatever the cache holds.
    monkeypatch.setattr(run_cache, "ENCODER_VERSION", run_cache.ENCODER_VERSION + 1)
    monkeypatch.setattr("worker.export_steps.ENCODER_VERSION", run_cache.ENCODER_VERSION)
    again, got = export(tmp_path, scene, "again", cache)
    assert again["images_drawn"] == IMAGES and got == expected


def test_two_exports_sharing_a_cache_at_once_both_write_the_full_bytes(tmp_path, scene):
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(scene))
    _, expected = export(tmp_path, scene, "full", None)
    cache = tmp_path / "cache"
    runs = [subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "export", "--annotations", str(path),
         "--output", str(tmp_path / f"twin{i}.zip"), "--cache", str(cache), "--jobs", "2", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    for i in range(2):
        assert (tmp_path / f"twin{i}.zip").read_bytes() == expected
    assert len(entries(cache)) == IMAGES


def test_a_chunk_run_is_found_only_while_unchanged(tmp_path):
    """A chunk's run kept in a local cache is found, with its records, while it is the file it
    was described as; rewritten (another modification time) or gone, it is not; and an output
    joined from it is refused once it changed."""
    from worker.cityscapes.archive import encode_entries
    from worker.cityscapes.export import ZipPart
    from worker.errors import SourceChanged
    from worker.storage import storage_for

    cache = run_cache.RunCache(str(tmp_path / "cache"))
    blob, records = encode_entries([ZipPart("a/b.txt", b"hello" * 50, compress=True)])
    kept = cache.put_run("ab" * 20, blob, records, 3, ["w"], [0, 1], [{"image_id": "x"}])
    found = cache.find_run("ab" * 20, [0, 1])
    assert found == kept and (found.size, found.records, found.objects) == (len(blob), records, 3)
    assert found.panoptic == [{"image_id": "x"}]
    assert Path(found.url).read_bytes() == blob
    assert cache.find_run("cd" * 20, [0, 1]) is None  # never kept
    out = str(tmp_path / "out.zip")
    assert storage_for(out).compose(out, [(found.url, found.size, found.fingerprint)], b"") == len(blob)
    os.utime(found.url, ns=(1, 1))  # the same bytes, rewritten: not the file described
    assert cache.find_run("ab" * 20, [0, 1]) is None
    with pytest.raises(SourceChanged):
        storage_for(out).compose(out, [(found.url, found.size, found.fingerprint)], b"")
    Path(found.url).unlink()
    assert cache.find_run("ab" * 20, [0, 1]) is None
