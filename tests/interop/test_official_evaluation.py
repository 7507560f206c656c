"""The official benchmark script scores our labelIds, taken as predictions, against ground truth
that the official scripts drew from the same polygons: every class present scores IoU 1.0."""

import importlib
import json
import math
import sys
import zipfile

import numpy as np

from tests.official import official_images, reference_json
from worker.cityscapes.png import encode_png
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest


def test_official_evaluation_scores_our_label_ids_perfect(tmp_path, write_manifest, monkeypatch):
    manifest = make_manifest(3, width=256, height=128, seed=5, objects=25, stuff_vertices=40)
    for image in manifest["images"]:
        image["subset"] = "val"  # the script evaluates gtFine/val
    out = tmp_path / "ours.zip"
    run_export(parse_export_spec({"annotations": str(write_manifest(manifest)), "output": str(out),
                                  "layout": "cityscapes"}), jobs=1)

    dataset, results = tmp_path / "dataset", tmp_path / "results"
    present: set[int] = set()
    with zipfile.ZipFile(out) as archive:
        for image in manifest["images"]:
            city, stem = image["name"][: -len(".png")].split("/")
            truth = official_images(reference_json(manifest, image))
            present |= set(np.unique(truth["labelIds"]).tolist())
            folder = dataset / "gtFine" / "val" / city
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{stem}_gtFine_labelIds.png").write_bytes(encode_png(truth["labelIds"]))
            instances = truth["instanceIds"].astype(np.uint16)
            (folder / f"{stem}_gtFine_instanceIds.png").write_bytes(encode_png(instances))
            prediction = results / city / f"{stem}_gtFine_labelIds.png"
            prediction.parent.mkdir(parents=True, exist_ok=True)
            prediction.write_bytes(archive.read(f"gtFine/val/{city}/{stem}_gtFine_labelIds.png"))

    monkeypatch.setenv("CITYSCAPES_DATASET", str(dataset))
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(results))
    monkeypatch.setattr(sys, "argv", ["evalPixelLevelSemanticLabeling"])
    script = importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    # Its settings were read from the environment when it was first imported: set them again.
    args = script.args
    monkeypatch.setattr(args, "cityscapesPath", str(dataset))
    monkeypatch.setattr(args, "groundTruthSearch",
                        str(dataset / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png"))
    monkeypatch.setattr(args, "exportFile", str(tmp_path / "scores.json"))
    monkeypatch.setattr(args, "predictionPath", None)  # found again from CITYSCAPES_RESULTS
    monkeypatch.setattr(args, "predictionWalk", None)
    monkeypatch.setattr(args, "quiet", True)
    # Its instance scores call np.in1d, which NumPy 2.4 removed; np.isin is the same test.
    if not hasattr(np, "in1d"):
        in1d = lambda a, b, invert=False: np.isin(a, b, invert=invert).ravel()  # noqa: E731
        monkeypatch.setattr(np, "in1d", in1d, raising=False)
    script.main()

    scores = json.loads((tmp_path / "scores.json").read_text())
    evaluated = {name: score for name, score in scores["classScores"].items()
                 if not math.isnan(score)}
    scored = {script.id2label[i].name for i in present if not script.id2label[i].ignoreInEval}
    assert set(evaluated) == scored and len(scored) >= 10
    assert all(score == 1.0 for score in evaluated.values()), evaluated
    instance_scores = [s for s in scores["classInstScores"].values() if not math.isnan(s)]
    assert len(instance_scores) >= 5 and all(s == 1.0 for s in instance_scores)
    matrix = np.array(scores["confMatrix"])
    assert matrix.sum() == 3 * 256 * 128 and matrix.sum() == np.trace(matrix)
