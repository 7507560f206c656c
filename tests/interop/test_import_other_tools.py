"""Zips written by other tools import, and re-exporting the import reproduces their masks."""

import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from bench.refenv import DATUMARO, reference_python
from worker.cityscapes.labels import color_hex, parse_label_color_txt
from worker.export_local import run_export
from worker.import_local import run_import
from worker.specs import parse_export_spec, parse_import_spec
from worker.synth import make_manifest

ROOT = Path(__file__).parents[2]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def ids_of(archive: zipfile.ZipFile, suffix: str) -> dict[str, np.ndarray]:
    """Item name (city/stem) -> pixels, whatever the layout."""
    out = {}
    for name in archive.namelist():
        if name.endswith(suffix):
            city, file = name.split("/")[-2:]
            out[f"{city}/{file[: -len(suffix)]}"] = np.asarray(Image.open(io.BytesIO(archive.read(name))))
    return out


def reexport(archive_path: Path, tmp: Path, shapes: str, label_map="source") -> zipfile.ZipFile:
    manifest = tmp / f"imported-{shapes}.json"
    run_import(parse_import_spec({"archive": str(archive_path), "output": str(manifest),
                                  "shapes": shapes}), jobs=1)
    out = tmp / f"again-{shapes}.zip"
    run_export(parse_export_spec({"annotations": str(manifest), "output": str(out),
                                  "label_map": label_map}), jobs=1)
    return zipfile.ZipFile(out)


@pytest.fixture(scope="module")
def polygons(tmp_path_factory):
    """polygons.json files (the official format) from our own export of synthetic scenes."""
    tmp = tmp_path_factory.mktemp("other")
    manifest = make_manifest(3, width=320, height=160, seed=31, objects=30, stuff_vertices=40)
    (tmp / "m.json").write_text(json.dumps(manifest))
    run_export(parse_export_spec({"annotations": str(tmp / "m.json"), "output": str(tmp / "p.zip")}),
               jobs=1)
    archive = zipfile.ZipFile(tmp / "p.zip")
    return tmp, manifest, {n: archive.read(n) for n in archive.namelist() if n.endswith("polygons.json")}


@pytest.mark.parametrize("shapes", ["polygon", "mask"])
def test_zip_made_by_the_official_scripts(polygons, shapes):
    tmp, _, documents = polygons
    path = tmp / "official.zip"
    with zipfile.ZipFile(path, "w") as archive:  # the seed's layout: gtFine/<city>/..., no label file
        for name, document in documents.items():
            annotation = Annotation()
            annotation.fromJsonText(document.decode())
            city, file = name.split("/")[-2:]
            stem = file[: -len("_gtFine_polygons.json")]
            labels = createLabelImage(annotation, "ids")
            instances = np.asarray(createInstanceImage(annotation, "ids")).astype(np.uint16)
            archive.writestr(f"gtFine/{city}/{stem}_gtFine_labelIds.png", png(labels))
            archive.writestr(f"gtFine/{city}/{stem}_gtFine_instanceIds.png", png(Image.fromarray(instances)))
    theirs = zipfile.ZipFile(path)
    again = reexport(path, tmp, shapes)
    for suffix in ("_gtFine_instanceIds.png", "_gtFine_labelIds.png"):
        expected, got = ids_of(theirs, suffix), ids_of(again, suffix)
        assert expected.keys() == got.keys() and len(expected) == 3
        for item in expected:
            assert np.array_equal(expected[item], got[item]), (item, suffix)


def test_zip_exported_by_datumaro_as_cvat_does(polygons):
    tmp, manifest, _ = polygons
    path = tmp / "datumaro.zip"
    python = reference_python("datumaro", DATUMARO)
    subprocess.run([str(python), str(ROOT / "bench" / "datumaro_export.py"), str(tmp / "m.json"),
                    str(path)], check=True, capture_output=True)
    theirs = zipfile.ZipFile(path)
    colors = theirs.read(next(n for n in theirs.namelist() if n.endswith("label_colors.txt")))
    # Their ids follow the task's label order (label_colors.txt): export back with that map.
    their_map = [{"name": name, "color": color_hex(color)}
                 for name, color in parse_label_color_txt(colors.decode())]
    again = reexport(path, tmp, "mask", their_map)
    expected, got = ids_of(theirs, "_gtFine_instanceIds.png"), ids_of(again, "_gtFine_instanceIds.png")
    assert expected.keys() == got.keys() and len(expected) == 3
    for item in expected:
        assert np.array_equal(expected[item].astype(np.int64), got[item].astype(np.int64)), item
