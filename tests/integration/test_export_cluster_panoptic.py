"""`"panoptic": true` on real workers: chunks stage their images' segment records, the chord's
callback merges them into each subset's JSON, and the zip is the in-process one byte for byte."""

import io
import json
import zipfile

from tests.cityscapes.test_panoptic_official import panoptic_manifest
from tests.integration.test_export_cluster import assert_same_zip, put_dataset
from worker.specs import parse_export_spec
from worker.export_local import run_export


def test_cluster_panoptic_export_equals_the_in_process_export(cluster, tmp_path):
    from worker import client

    manifest = panoptic_manifest()  # 10 images of two subsets: 4 chunks of at most 3
    fields = {"panoptic": True, "train_ids": True, "layout": "cityscapes"}
    spec = {**put_dataset(cluster, "pan", manifest, photos=False), **fields,
            "output": cluster.url("pan/out.zip")}
    job_id = cluster.submit("cityscapes.export", spec)
    final = client.wait(job_id, timeout=120)
    assert final["state"] == "SUCCESS", final
    assert final["total"] == 4 and final["result"]["images"] == len(manifest["images"])
    cluster_zip = cluster.get("pan/out.zip")

    (tmp_path / "m.json").write_text(json.dumps(manifest))
    local = tmp_path / "local.zip"
    result = run_export(parse_export_spec({"annotations": str(tmp_path / "m.json"),
                                           "output": str(local), **fields}), jobs=2)
    assert final["result"]["warnings"] == result["warnings"]
    archive = zipfile.ZipFile(io.BytesIO(cluster_zip))
    assert archive.testzip() is None
    assert archive.namelist()[-4:] == [f"gtFine/cityscapes_panoptic_{s}{x}.json"
                                       for s in ("train", "val") for x in ("", "_trainId")]
    listed = json.loads(archive.read("gtFine/cityscapes_panoptic_train.json"))["images"]
    assert len(listed) == sum(i["subset"] == "train" for i in manifest["images"])
    assert_same_zip(cluster_zip, local.read_bytes())
    assert cluster.staged(job_id) == []


def test_a_panoptic_reexport_through_the_cache_writes_the_same_zip(make_cluster):
    """With a run cache, a second export of the same task runs no chunk (the plan takes every
    chunk's kept run, and stages its images' segment records from it): the subsets' JSONs, and
    the whole zip, are the first export's."""
    from worker import client

    cluster = make_cluster(CITYSCAPES_CACHE_PREFIX="s3://{bucket}/cache/")
    manifest = panoptic_manifest()
    spec = {**put_dataset(cluster, "pan", manifest, photos=False), "panoptic": True}
    results = []
    for name in ("first", "again"):
        final = client.wait(cluster.submit("cityscapes.export", {
            **spec, "output": cluster.url(f"pan/{name}.zip")}), timeout=120)
        assert final["state"] == "SUCCESS", str(final)
        results.append(final["result"])
    assert results[1]["images_drawn"] == 0 and results[1]["bytes_moved"] == 0
    assert cluster.get("pan/again.zip") == cluster.get("pan/first.zip")
