"""The command line as a user runs it: exit codes, one-line errors, never a partial zip."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.synth import make_manifest, make_photo

SAMPLE = Path(__file__).parents[2] / "examples" / "sample"


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd,
    )


def test_bundled_sample_exports_with_images(tmp_path):
    out = tmp_path / "sample.zip"
    run = cli("export", "--annotations", SAMPLE / "manifest.json", "--images", SAMPLE / "images",
              "--save-images", "--output", out)
    assert run.returncode == 0, run.stderr
    assert "4 images" in run.stdout and str(out) in run.stdout
    names = zipfile.ZipFile(out).namelist()
    assert names[0] == "label_color.txt"
    assert sum(n.startswith("imgsFine/leftImg8bit/") and n.endswith("_leftImg8bit.jpg") for n in names) == 4
    assert sum(n.endswith("_gtFine_instanceIds.png") for n in names) == 4
    assert not any("labelTrainIds" in n for n in names)
    assert list(tmp_path.iterdir()) == [out]


def test_json_result_and_train_ids_and_png_conversion(tmp_path):
    out = tmp_path / "o.zip"
    run = cli("export", "--annotations", SAMPLE / "manifest.json", "--images", SAMPLE / "images",
              "--save-images", "--image-ext", ".png", "--train-ids", "--json", "--jobs", "2",
              "--output", out)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["images"] == 4 and result["objects"] > 50 and result["bytes"] == out.stat().st_size
    names = zipfile.ZipFile(out).namelist()
    assert sum(n.endswith("_labelTrainIds.png") for n in names) == 4
    photos = [n for n in names if n.endswith("_leftImg8bit.png")]
    assert len(photos) == 4
    with zipfile.ZipFile(out).open(photos[0]) as f:
        assert Image.open(f).size == (480, 240)


def test_parallel_and_serial_exports_are_identical(tmp_path):
    outs = []
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}.zip"
        assert cli("export", "--annotations", SAMPLE / "manifest.json", "--jobs", jobs,
                   "--output", out).returncode == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_label_map_file(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("0 0 0 background\n70 130 180 sky\n0 0 142 car\n")
    out = tmp_path / "o.zip"
    run = cli("export", "--annotations", SAMPLE / "manifest.json", "--label-map", labels, "--output", out)
    assert run.returncode == 0, run.stderr
    archive = zipfile.ZipFile(out)
    assert archive.read("label_color.txt").decode().splitlines()[1:] == [
        "0 0 0 background", "70 130 180 sky", "0 0 142 car"]
    assert "not in the label map" in run.stderr  # road, person, ... drawn as background
    name = next(n for n in archive.namelist() if n.endswith("labelIds.png"))
    with archive.open(name) as f:
        assert set(np.unique(np.asarray(Image.open(f)))) <= {0, 1, 2}


def broken_cases(tmp_path):
    manifest = make_manifest(3, width=64, height=32, objects=5, stuff_vertices=10)
    bad_image = json.loads(json.dumps(manifest))
    bad_image["shapes"][0]["image"] = 99
    overflow = json.loads(json.dumps(manifest))
    overflow["shapes"] += [
        {"image": 3, "label": "car", "type": "polygon", "points": [0, 0, 5, 0, 5, 5],
         "attributes": {"is_crowd": False}} for _ in range(1001)]
    return {
        "not json": ("{oops", [], "is not valid JSON"),
        "unknown image": (json.dumps(bad_image), [], "image 99 is not in the images list"),
        "instance overflow": (json.dumps(overflow), [], "image 'munster/munster_000002_000019.png', shape"),
        "missing photo": (json.dumps(manifest), ["--save-images", "--images", tmp_path], "cannot be read"),
        "missing file": (None, [], "cannot be read"),
    }


@pytest.mark.parametrize("case", ["not json", "unknown image", "instance overflow", "missing photo", "missing file"])
def test_bad_input_fails_with_one_line_and_leaves_nothing(case, tmp_path):
    text, extra, message = broken_cases(tmp_path)[case]
    work = tmp_path / "work"
    work.mkdir()
    manifest = tmp_path / "m.json"
    if text is not None:
        manifest.write_text(text)
    out = work / "out.zip"
    run = cli("export", "--annotations", manifest, "--output", out, "--jobs", "2", *extra)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    assert list(work.iterdir()) == []  # no zip, no temporary part


def test_photo_of_the_wrong_size_is_refused(tmp_path):
    manifest = make_manifest(1, width=64, height=32, objects=3, stuff_vertices=10)
    name = manifest["images"][0]["name"]
    (tmp_path / "img" / name).parent.mkdir(parents=True)
    Image.fromarray(make_photo(0, 60, 30)).save(tmp_path / "img" / name)
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    run = cli("export", "--annotations", tmp_path / "m.json", "--output", tmp_path / "o.zip",
              "--images", tmp_path / "img", "--save-images")
    assert run.returncode == 2 and "is 60x30, the annotations say 64x32" in run.stderr
    assert not (tmp_path / "o.zip").exists()


def test_root_layout_export_then_preview(tmp_path):
    out = tmp_path / "root.zip"
    run = cli("export", "--annotations", SAMPLE / "manifest.json", "--images", SAMPLE / "images",
              "--save-images", "--layout", "cityscapes", "--output", out)
    assert run.returncode == 0, run.stderr
    names = zipfile.ZipFile(out).namelist()
    assert sum(n.startswith("leftImg8bit/train/") for n in names) == 4
    assert not any(n.startswith("imgsFine/") for n in names)

    overlay = tmp_path / "overlay.png"
    run = cli("preview", out, "--image", "lindau/lindau_000001_000019", "--output", overlay)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"{overlay}: train/lindau/lindau_000001_000019 over its photo")
    with Image.open(overlay) as picture:
        assert picture.size[0] > 480 and picture.size[1] >= 240

    missing = tmp_path / "missing.png"
    run = cli("preview", out, "--image", "nope", "--output", missing)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and not missing.exists()
    assert "image 'nope' is not in the archive; it has frankfurt/frankfurt_000000" in lines[0]


def test_default_city_must_be_one_folder_name(tmp_path):
    run = cli("export", "--annotations", SAMPLE / "manifest.json", "--default-city", "../up",
              "--output", tmp_path / "o.zip")
    assert run.returncode == 2 and "default_city" in run.stderr
    assert len(run.stderr.splitlines()) == 1
    assert not (tmp_path / "o.zip").exists()


@pytest.mark.parametrize("flags, names", [
    (["--layout", "cityscapes"], ["lindau_000000_000019.png", "lindau/lindau_000000_000019.png"]),
    (["--default-city", "x"], ["a.png", "x/a.png"]),
])
def test_two_images_landing_on_one_zip_path_are_refused_naming_both(tmp_path, flags, names):
    document = {"version": 1, "labels": [{"name": "car", "color": "#00008e"}],
                "images": [{"id": i, "name": n, "width": 8, "height": 8} for i, n in enumerate(names)],
                "shapes": []}
    (tmp_path / "m.json").write_text(json.dumps(document))
    out = tmp_path / "o.zip"
    run = cli("export", "--annotations", tmp_path / "m.json", "--output", out, *flags)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and all(repr(n) in run.stderr for n in names), run.stderr
    assert not out.exists()
    # Without the flag each image has its own path, and both are written.
    assert cli("export", "--annotations", tmp_path / "m.json", "--output", out).returncode == 0
