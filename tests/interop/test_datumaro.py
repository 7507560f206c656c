"""Datumaro (the engine behind CVAT's Cityscapes support) reads our zip.

Datumaro 1.13 reads only part of the format: it wants the photos in `leftImg8bit/<subset>` at the
root (our `cityscapes` layout; the default `cvat` one writes `imgsFine/leftImg8bit`, as CVAT does,
and the test moves them for it), reads `label_colors.txt` (we write the
format's `label_color.txt`, so it falls back to its built-in Cityscapes table) and keeps only
pixels whose value is a class id, dropping instance pixels (>= 1000). The test gives it what it
can read and checks that it finds every image and every class region it is able to see.
"""

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.refenv import DATUMARO, reference_python
from worker.cityscapes.labels import LabelMap
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest

HERE = Path(__file__).parent


@pytest.mark.parametrize("layout", ["cvat", "cityscapes"])
def test_datumaro_imports_every_image_and_class_region(tmp_path, write_manifest, write_photos,
                                                       layout):
    manifest = make_manifest(5, width=320, height=160, seed=11, objects=30, stuff_vertices=50)
    out = tmp_path / "out.zip"
    run_export(
        parse_export_spec(
            {"annotations": str(write_manifest(manifest)), "output": str(out),
             "images": str(write_photos(manifest)), "save_images": True, "layout": layout}
        ),
        jobs=1,
    )
    root = tmp_path / "extracted"
    zipfile.ZipFile(out).extractall(root)
    if layout == "cvat":
        shutil.copytree(root / "imgsFine" / "leftImg8bit", root / "leftImg8bit")

    python = reference_python("datumaro", DATUMARO)
    found = json.loads(
        subprocess.run(
            [str(python), str(HERE.parent.parent / "bench" / "datumaro_read.py"), str(root)],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    official = {label.id: label for label in LabelMap.cityscapes().labels}
    items = found["items"]
    assert len(items) == len(manifest["images"])
    for image in manifest["images"]:
        item_id = image["name"][: -len(".png")]
        assert item_id in items, f"Datumaro did not find {item_id}"
        item = items[item_id]
        assert item["subset"] == image["subset"] and item["has_image"]
        with zipfile.ZipFile(out) as archive:
            city, stem = item_id.split("/")
            data = archive.read(f"gtFine/{image['subset']}/{city}/{stem}_gtFine_instanceIds.png")
        ids = np.asarray(Image.open(io.BytesIO(data)))
        values, counts = np.unique(ids[(ids > 0) & (ids < 1000)], return_counts=True)
        expected = {
            official[int(v)].name.replace(" ", ""): int(c) for v, c in zip(values, counts)
        }
        assert item["masks"] == expected, item_id
        assert len(expected) >= 3
