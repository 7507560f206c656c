"""The official panoptic evaluation (evalPanopticSemanticLabeling) scores our panoptic output,
taken as predictions, against the official createPanopticImgs run on our instanceIds: PQ 100.
The same score drops when one segment of ours is taken away, so the comparison can fail.

The evaluation runs as its own command: it forks a multiprocessing pool, which can hang when
forked from this process once other tests have left threads in it."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from PIL import Image

from tests.cityscapes.test_panoptic_official import panoptic_manifest
from worker.specs import parse_export_spec
from worker.export_local import run_export

SUBSET = "train"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(the official ground truth folder, ours as predictions) of the subset."""
    tmp = tmp_path_factory.mktemp("pq")
    (tmp / "m.json").write_text(json.dumps(panoptic_manifest()))
    out = tmp / "ours.zip"
    run_export(parse_export_spec({"annotations": str(tmp / "m.json"), "output": str(out),
                                  "panoptic": True, "layout": "cityscapes"}), jobs=1)
    with zipfile.ZipFile(out) as archive:
        for name in archive.namelist():
            if name.endswith("_gtFine_instanceIds.png") or "cityscapes_panoptic_" in name:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(archive.read(name))
    official = tmp / "official"
    official.mkdir()
    convert2panoptic(str(tmp / "gtFine"), str(official), False, [SUBSET])
    return official, tmp / "gtFine"


def score(folders, predictions, tmp_path) -> dict:
    official, _ = folders
    name = f"cityscapes_panoptic_{SUBSET}"
    run = subprocess.run(
        [sys.executable, "-m", "cityscapesscripts.evaluation.evalPanopticSemanticLabeling",
         "--gt-json-file", str(official / f"{name}.json"),
         "--prediction-json-file", str(predictions / f"{name}.json"),
         "--results_file", str(tmp_path / "pq.json")],
        capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads((tmp_path / "pq.json").read_text())


def test_official_evaluation_scores_our_panoptic_output_pq_100(folders, tmp_path):
    results = score(folders, folders[1], tmp_path)
    assert results["All"]["n"] >= 10 and results["Things"]["n"] >= 4 and results["Stuff"]["n"] >= 4
    # Averages over the classes present: 1 only if every one of them scores 1.
    for group in ("All", "Things", "Stuff"):
        assert (results[group]["pq"], results[group]["sq"], results[group]["rq"]) == (1, 1, 1)


def test_the_score_drops_without_one_of_our_segments(folders, tmp_path):
    _, ours = folders
    name = f"cityscapes_panoptic_{SUBSET}"
    document = json.loads((ours / f"{name}.json").read_text())
    annotation = next(a for a in document["annotations"] if any(
        s["id"] >= 1000 for s in a["segments_info"]))
    dropped = next(s for s in annotation["segments_info"] if s["id"] >= 1000)
    annotation["segments_info"].remove(dropped)
    changed = tmp_path / "changed"
    (changed / name).mkdir(parents=True)
    (changed / f"{name}.json").write_text(json.dumps(document))
    for png in (ours / name).iterdir():
        rgb = np.array(Image.open(png))
        if png.name == annotation["file_name"]:
            ids = rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)
            rgb[ids == dropped["id"]] = 0
        Image.fromarray(rgb).save(changed / name / png.name)
    results = score(folders, changed, tmp_path)
    assert results["Things"]["pq"] < 1 and results["Stuff"]["pq"] == 1
