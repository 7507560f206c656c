"""torchvision's `Cityscapes` dataset class, the loader many training scripts start from, reads our
zip extracted as it is when exported with `--layout cityscapes`: every sample, with the photo and
the semantic, instance, color and polygon targets we wrote. torchvision (and torch) live in a
cached venv of their own (bench/refenv.py); the product does not depend on them."""

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.refenv import TORCHVISION, reference_python
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest

BENCH = Path(__file__).parents[2] / "bench"


def digest(data: bytes) -> str:
    return hashlib.sha1(np.asarray(Image.open(io.BytesIO(data))).astype(np.int64).tobytes()).hexdigest()


def test_torchvision_loads_every_sample_of_a_cityscapes_layout_export(tmp_path, write_manifest,
                                                                        write_photos):
    manifest = make_manifest(5, width=320, height=160, seed=21, objects=25, stuff_vertices=40)
    out = tmp_path / "out.zip"
    run_export(parse_export_spec({"annotations": str(write_manifest(manifest)), "output": str(out),
                                  "images": str(write_photos(manifest)), "save_images": True,
                                  "layout": "cityscapes"}), jobs=1)
    root = tmp_path / "root"
    zipfile.ZipFile(out).extractall(root)

    python = reference_python("torchvision", TORCHVISION)
    run = subprocess.run([str(python), str(BENCH / "torchvision_read.py"), str(root), "train",
                          "val"], check=True, capture_output=True, text=True)
    loaded = {Path(sample["image"]).relative_to(root).as_posix(): sample
              for sample in json.loads(run.stdout)}

    archive = zipfile.ZipFile(out)
    assert len(loaded) == len(manifest["images"])
    for image in manifest["images"]:
        city_stem = image["name"][: -len(".png")]
        photo = f"leftImg8bit/{image['subset']}/{city_stem}_leftImg8bit.png"
        sample = loaded[photo]
        gt = f"gtFine/{image['subset']}/{city_stem}_gtFine_"
        assert sample["size"] == [image["width"], image["height"]]
        assert sample["semantic"] == digest(archive.read(gt + "labelIds.png"))
        assert sample["instance"] == digest(archive.read(gt + "instanceIds.png"))
        assert sample["color"] == digest(archive.read(gt + "color.png"))
        assert sample["objects"] == len(json.loads(archive.read(gt + "polygons.json"))["objects"]) > 0
