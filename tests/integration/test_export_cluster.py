"""The export job on real parts: Redis broker and backend, S3 over HTTP, two celery workers."""

import io
import json
import time
import zipfile

from PIL import Image

from tests.integration.conftest import BUCKET
from worker.jobs import parse_export_spec
from worker.local import run_export
from worker.synth import make_manifest, make_photo


def put_dataset(s3, prefix, manifest, photos=True):
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/annotations.json", Body=json.dumps(manifest).encode())
    if photos:
        for image in manifest["images"]:
            buffer = io.BytesIO()
            Image.fromarray(make_photo(image["id"], image["width"], image["height"])).save(buffer, "PNG")
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/images/{image['name']}", Body=buffer.getvalue())


def local_copy(s3, prefix, manifest, tmp_path):
    """The dataset put by `put_dataset`, back on local files: (manifest path, images folder)."""
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    for image in manifest["images"]:
        path = tmp_path / "images" / image["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/images/{image['name']}")["Body"].read())
    return tmp_path / "m.json", tmp_path / "images"


def keys(s3, prefix):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_cluster_export_equals_the_in_process_export(s3, workers, tmp_path):
    from worker import client
    from worker.celery import app

    manifest = make_manifest(30, width=1024, height=512, seed=5, objects=40, stuff_vertices=120)
    put_dataset(s3, "ds1", manifest)
    spec = {
        "annotations": f"s3://{BUCKET}/ds1/annotations.json",
        "images": f"s3://{BUCKET}/ds1/images",
        "save_images": True,
        "output": f"s3://{BUCKET}/out/ds1.zip",
    }
    # As a backend would: by task name, plain JSON, without our client.
    job_id = app.send_task("cityscapes.export", kwargs=spec).id
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.status(job_id)
        seen.append(state)
        if state["state"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.02)
    assert state["state"] == "SUCCESS", state
    assert any(s["state"] == "RUNNING" and 0 < s["done"] < s["total"] for s in seen), seen[-5:]
    assert state["done"] == state["total"] == 10 and state["images_done"] == 30
    result = state["result"]
    assert result["images"] == 30 and result["objects"] > 0

    cluster_zip = s3.get_object(Bucket=BUCKET, Key="out/ds1.zip")["Body"].read()
    assert result["bytes"] == len(cluster_zip)
    # The same job in one process, on local copies of the same files.
    manifest_path, images = local_copy(s3, "ds1", manifest, tmp_path)
    local = tmp_path / "local.zip"
    run_export(parse_export_spec({"annotations": str(manifest_path), "output": str(local),
                                  "images": str(images), "save_images": True}), jobs=1)
    assert zipfile.ZipFile(io.BytesIO(cluster_zip)).testzip() is None
    if cluster_zip != local.read_bytes():  # name the entries that differ, then fail
        theirs, ours = zipfile.ZipFile(io.BytesIO(cluster_zip)), zipfile.ZipFile(local)
        differing = [n for n in ours.namelist()
                     if n not in theirs.namelist() or theirs.read(n) != ours.read(n)]
        assert differing == [] and theirs.namelist() == ours.namelist(), differing[:5]
        assert cluster_zip == local.read_bytes()  # same entries, other bytes: the records

    # Chunks ran on both workers; nothing is left in staging.
    from celery.result import AsyncResult

    from tasks.jobs import chunk_id

    hosts = {AsyncResult(chunk_id(job_id, i), app=app).result and
             AsyncResult(chunk_id(job_id, i), app=app)._get_task_meta().get("worker")
             for i in range(10)}
    assert {h.split("@")[0] for h in hosts if h} == {"w1", "w2"}
    assert keys(s3, ".cityscapes-staging/") == []


def test_a_bad_image_fails_the_job_naming_it_and_leaves_nothing(s3, workers):
    from worker import client

    manifest = make_manifest(12, width=256, height=128, seed=9, objects=10, stuff_vertices=20)
    put_dataset(s3, "ds2", manifest)
    missing = manifest["images"][7]["name"]
    s3.delete_object(Bucket=BUCKET, Key=f"ds2/images/{missing}")
    job_id = client.submit_export({
        "annotations": f"s3://{BUCKET}/ds2/annotations.json",
        "images": f"s3://{BUCKET}/ds2/images",
        "save_images": True,
        "output": f"s3://{BUCKET}/out/ds2.zip",
    })
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "FAILURE" and missing in final["error"], final
    deadline = time.monotonic() + 20
    while keys(s3, f".cityscapes-staging/{job_id}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert keys(s3, f".cityscapes-staging/{job_id}") == []
    assert keys(s3, "out/ds2.zip") == []
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == "out/ds2.zip"] == []


def test_a_bad_manifest_fails_at_planning(s3, workers):
    from worker import client

    s3.put_object(Bucket=BUCKET, Key="ds3/annotations.json", Body=b'{"version": 3}')
    job_id = client.submit_export({"annotations": f"s3://{BUCKET}/ds3/annotations.json",
                                   "output": f"s3://{BUCKET}/out/ds3.zip"})
    final = client.wait(job_id, timeout=30)
    assert final["state"] == "FAILURE" and "version is 3" in final["error"]
    missing = client.submit_export({"annotations": f"s3://{BUCKET}/nope.json",
                                    "output": f"s3://{BUCKET}/out/ds4.zip"})
    final = client.wait(missing, timeout=30)
    assert final["state"] == "FAILURE" and "nope.json" in final["error"]
    assert keys(s3, "out/ds3.zip") == [] and keys(s3, "out/ds4.zip") == []


def test_cancel_mid_job_stops_it_and_leaves_nothing(s3, workers):
    from worker import client

    manifest = make_manifest(60, width=1024, height=512, seed=4, objects=40, stuff_vertices=100)
    put_dataset(s3, "ds5", manifest, photos=False)
    job_id = client.submit_export({"annotations": f"s3://{BUCKET}/ds5/annotations.json",
                                   "output": f"s3://{BUCKET}/out/ds5.zip"})
    client.wait(job_id, timeout=60, poll=0.01,
                on_progress=lambda s: s["done"] >= 2 and client.cancel(job_id))
    state = client.wait(job_id, timeout=30)
    assert state["state"] == "CANCELLED" and state["done"] < state["total"]
    time.sleep(2)  # chunks that were running finish and see the cancellation
    deadline = time.monotonic() + 20
    while keys(s3, f".cityscapes-staging/{job_id}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert keys(s3, f".cityscapes-staging/{job_id}") == []
    assert keys(s3, "out/ds5.zip") == []


def test_pickled_messages_are_refused(workers):
    from worker.celery import app

    refused = app.send_task("cityscapes.cleanup", args=["pickled-job"], serializer="pickle")
    accepted = app.send_task("cityscapes.cleanup", args=["json-job"])
    assert accepted.get(timeout=30) == {"job_id": "json-job", "cleaned": True}
    time.sleep(1)
    assert refused.state == "PENDING"  # never run: the workers accept JSON only


def test_cvat_and_coco_jobs_equal_their_in_process_exports(s3, workers, tmp_path):
    from tests.cityscapes.test_adapters import CVAT_IMAGES, coco_document, cvat_document
    from worker import client

    for name, data in (("task.xml", cvat_document(CVAT_IMAGES)),
                       ("coco.json", json.dumps(coco_document()).encode())):
        s3.put_object(Bucket=BUCKET, Key=f"formats/{name}", Body=data)
        job_id = client.submit_export({"annotations": f"s3://{BUCKET}/formats/{name}",
                                       "output": f"s3://{BUCKET}/formats/{name}.zip"})
        final = client.wait(job_id, timeout=60)
        assert final["state"] == "SUCCESS", final
        (tmp_path / name).write_bytes(data)
        local = run_export(parse_export_spec({"annotations": str(tmp_path / name),
                                              "output": str(tmp_path / f"{name}.zip")}), jobs=1)
        cluster_zip = s3.get_object(Bucket=BUCKET, Key=f"formats/{name}.zip")["Body"].read()
        assert cluster_zip == (tmp_path / f"{name}.zip").read_bytes(), name
        assert final["result"]["warnings"] == local["warnings"], name
        assert ("skipped 1 <points>" in " ".join(local["warnings"])) == (name == "task.xml")
