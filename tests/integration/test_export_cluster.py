"""The export job on real parts: Redis broker and backend, S3 over HTTP, two celery workers."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import BROKERS, node_name, wait_until
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest, make_photo


def put_dataset(cluster, prefix, manifest, photos=True) -> dict:
    """The manifest (and a photo per image) in the cluster's bucket; returns the spec's inputs."""
    cluster.put(f"{prefix}/annotations.json", json.dumps(manifest).encode())
    if photos:
        for image in manifest["images"]:
            buffer = io.BytesIO()
            Image.fromarray(make_photo(image["id"], image["width"], image["height"])).save(buffer, "PNG")
            cluster.put(f"{prefix}/images/{image['name']}", buffer.getvalue())
    inputs = {"annotations": cluster.url(f"{prefix}/annotations.json")}
    return {**inputs, "images": cluster.url(f"{prefix}/images")} if photos else inputs


def failing_export(cluster, where: str) -> dict:
    """An export spec (photos saved) that fails at `where`: "planning" (a manifest of an unknown
    version) or "chunk" (the fifth image's photo missing)."""
    manifest = make_manifest(9, width=128, height=64, seed=7, objects=5, stuff_vertices=10)
    inputs = put_dataset(cluster, "bad", manifest)
    if where == "planning":
        inputs["annotations"] = cluster.put("bad/annotations.json", b'{"version": 3}')
    else:
        cluster.s3.delete_object(Bucket=cluster.bucket, Key=f"bad/images/{manifest['images'][4]['name']}")
    return {**inputs, "save_images": True, "output": cluster.url("bad.zip")}


def local_copy(cluster, prefix, manifest, tmp_path):
    """The dataset put by `put_dataset`, back on local files: (manifest path, images folder)."""
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    for image in manifest["images"]:
        path = tmp_path / "images" / image["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cluster.get(f"{prefix}/images/{image['name']}"))
    return tmp_path / "m.json", tmp_path / "images"


def chunk_states(job_id: str, chunks: int) -> dict[int, str]:
    from celery.result import AsyncResult

    from tasks.lifecycle import chunk_id
    from worker.celery import app

    return {n: AsyncResult(chunk_id(job_id, n), app=app).state for n in range(chunks)}


def chunk_nodes(job_id: str, chunks: int) -> dict[int, str]:
    """The worker (node name) each chunk of the job ran on."""
    from celery.result import AsyncResult

    from tasks.lifecycle import chunk_id
    from worker.celery import app

    return {n: node_name(AsyncResult(chunk_id(job_id, n), app=app)._get_task_meta()["worker"])
            for n in range(chunks)}


def assert_same_zip(theirs: bytes, ours: bytes) -> None:
    """Byte for byte; if not, the entries that differ are named first."""
    if theirs != ours:
        a, b = zipfile.ZipFile(io.BytesIO(theirs)), zipfile.ZipFile(io.BytesIO(ours))
        theirs_names = set(a.namelist())
        differing = [n for n in b.namelist() if n not in theirs_names or a.read(n) != b.read(n)]
        # Other pixels, or the same pixels compressed otherwise?
        pixels = {n: bool(n.endswith(".png") and n in a.namelist() and np.array_equal(
            np.asarray(Image.open(io.BytesIO(a.read(n)))), np.asarray(Image.open(io.BytesIO(b.read(n))))))
            for n in differing[:5]}
        assert differing == [] and a.namelist() == b.namelist(), f"differ (same pixels?): {pixels}"
        assert theirs == ours  # same entries, other bytes: the records


@pytest.mark.parametrize("cluster", BROKERS, indirect=True)
def test_cluster_export_equals_the_in_process_export(cluster, tmp_path):
    from worker import client

    manifest = make_manifest(30, width=1024, height=512, seed=5, objects=40, stuff_vertices=120)
    spec = {**put_dataset(cluster, "ds1", manifest), "save_images": True,
            "output": cluster.url("out/ds1.zip")}
    job_id = cluster.submit("cityscapes.export", spec)
    final = client.wait(job_id, timeout=120)
    assert final["state"] == "SUCCESS", final
    assert final["done"] == final["total"] == 10 and final["images_done"] == 30
    result = final["result"]
    assert result["images"] == 30 and result["objects"] > 0

    cluster_zip = cluster.get("out/ds1.zip")
    assert result["bytes"] == len(cluster_zip)
    # The same job in one process, on local copies of the same files.
    manifest_path, images = local_copy(cluster, "ds1", manifest, tmp_path)
    local = tmp_path / "local.zip"
    run_export(parse_export_spec({"annotations": str(manifest_path), "output": str(local),
                                  "images": str(images), "save_images": True}), jobs=1)
    assert zipfile.ZipFile(io.BytesIO(cluster_zip)).testzip() is None
    assert_same_zip(cluster_zip, local.read_bytes())
    assert cluster.staged(job_id) == []


def test_a_zip_of_more_parts_than_an_upload_holds_is_joined_in_two_levels(make_cluster, tmp_path):
    """CITYSCAPES_S3_MAX_PARTS lowers S3's 10,000 parts to 4: a zip of 6 or more 5 MiB parts is
    joined into intermediates in the job's staging, then those into the output."""
    from worker import client
    from worker.storage.s3 import MIN_PART

    cluster = make_cluster(CITYSCAPES_S3_MAX_PARTS="4", CITYSCAPES_CHUNK_SIZE="1")
    manifest = make_manifest(20, width=1024, height=512, seed=9, objects=10, stuff_vertices=40)
    spec = {**put_dataset(cluster, "two", manifest, photos=False), "save_images": True,
            "images": cluster.url("two/images"), "output": cluster.url("two/out.zip")}
    noise = np.random.default_rng(9)
    for image in manifest["images"]:  # noise does not compress: 1.5 MB a photo
        buffer = io.BytesIO()
        pixels = noise.integers(0, 256, (image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "PNG")
        cluster.put(f"two/images/{image['name']}", buffer.getvalue())
    job_id = cluster.submit("cityscapes.export", spec)
    final = client.wait(job_id, timeout=180)
    assert final["state"] == "SUCCESS", final

    # Runs of one image are under 5 MiB: one upload would take a part per 5 MiB, more than 4.
    cluster_zip = cluster.get("two/out.zip")
    assert len(cluster_zip) > 5 * MIN_PART
    etag = cluster.s3.head_object(Bucket=cluster.bucket, Key="two/out.zip")["ETag"]
    print(f"{len(cluster_zip)} bytes, ETag {etag}")
    assert int(etag.strip('"').rsplit("-", 1)[1]) <= 4, etag  # multipart ETags end in -parts
    manifest_path, images = local_copy(cluster, "two", manifest, tmp_path)
    local = tmp_path / "local.zip"
    run_export(parse_export_spec({"annotations": str(manifest_path), "output": str(local),
                                  "images": str(images), "save_images": True}), jobs=1)
    assert cluster_zip == local.read_bytes()
    assert cluster.staged(job_id) == [] and cluster.open_uploads() == []


def test_progress_shows_a_job_part_done_while_a_chunk_is_held_and_both_workers_share_it(
        make_cluster):
    """Chunk 5's input is held at S3: the worker that took it can do nothing else (one task at a
    time, none prefetched), so the other one runs the chunks after it, and progress must stand
    at 9 of 10 chunks until it is let go."""
    from worker import client

    cluster = make_cluster(proxy=True)
    manifest = make_manifest(30, width=256, height=128, seed=5, objects=10, stuff_vertices=20)
    spec = {**put_dataset(cluster, "ds", manifest, photos=False), "output": cluster.url("ds.zip")}
    cluster.schedule.hold("/in/00005.json")
    job_id = cluster.submit("cityscapes.export", spec)

    def nine_done():
        state = client.status(job_id)
        assert state["state"] in ("PLANNING", "RUNNING", "PENDING"), state
        return state if state["done"] == 9 else None

    mid = wait_until(nine_done, 60, "9 of 10 chunks done, chunk 5 held")
    assert (mid["state"], mid["total"], mid["images_done"], mid["images"]) == ("RUNNING", 10, 27, 30)
    cluster.schedule.release("/in/00005.json")
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "SUCCESS" and final["done"] == 10 and final["images_done"] == 30, final
    nodes = chunk_nodes(job_id, 10)
    # Chunks queued after 5 could only go to the worker that was not stuck in it.
    after = {nodes[n] for n in range(6, 10)}
    assert after == {"w1", "w2"} - {nodes[5]}, nodes


def test_a_bad_image_fails_the_job_naming_it_and_leaves_nothing(cluster):
    from worker import client

    manifest = make_manifest(12, width=256, height=128, seed=9, objects=10, stuff_vertices=20)
    inputs = put_dataset(cluster, "ds2", manifest)
    missing = manifest["images"][7]["name"]
    cluster.s3.delete_object(Bucket=cluster.bucket, Key=f"ds2/images/{missing}")
    job_id = client.submit_export({**inputs, "save_images": True,
                                   "output": cluster.url("out/ds2.zip")})
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "FAILURE" and missing in final["error"], final
    cluster.wait_cleaned(job_id)
    assert cluster.keys("out/") == [] and cluster.open_uploads() == []


def test_a_bad_or_missing_manifest_fails_at_planning_naming_it(cluster):
    from worker import client

    job_id = client.submit_export({"annotations": cluster.put("ds3/annotations.json", b'{"version": 3}'),
                                   "output": cluster.url("out/ds3.zip")})
    final = client.wait(job_id, timeout=30)
    assert final["state"] == "FAILURE" and "version is 3" in final["error"], final
    missing = client.submit_export({"annotations": cluster.url("nope.json"),
                                    "output": cluster.url("out/ds4.zip")})
    final = client.wait(missing, timeout=30)
    assert final["state"] == "FAILURE" and "nope.json" in final["error"], final
    assert cluster.keys("out/") == [] and cluster.keys(".cityscapes-staging/") == []


@pytest.mark.parametrize("broker", BROKERS)
def test_cancel_mid_job_stops_its_chunks_and_leaves_nothing(make_cluster, broker):
    """Both workers hold a chunk (their inputs held at S3) when the job is cancelled; let go,
    those chunks see the cancellation and remove what they staged, the others never run."""
    from worker import client

    cluster = make_cluster(proxy=True, broker=broker)
    manifest = make_manifest(60, width=256, height=128, seed=4, objects=10, stuff_vertices=20)
    spec = {**put_dataset(cluster, "ds5", manifest, photos=False), "output": cluster.url("ds5.zip")}
    cluster.schedule.hold("/in/")
    job_id = client.submit_export(spec)
    wait_until(lambda: all(cluster.held_chunk(name, job_id) for name in cluster.names), 60,
               "both workers in a chunk")
    assert client.status(job_id)["state"] == "RUNNING"
    assert client.cancel(job_id)["state"] == "CANCELLED"
    cluster.schedule.release("/in/")

    def every_chunk_ended():
        states = chunk_states(job_id, 20)
        return states if all(s in ("SUCCESS", "REVOKED") for s in states.values()) else None

    states = wait_until(every_chunk_ended, 60, "every chunk run or revoked")
    assert list(states.values()).count("SUCCESS") <= 2, states  # the two that were held
    final = client.status(job_id)
    assert final["state"] == "CANCELLED" and final["done"] == 0, final
    cluster.wait_cleaned(job_id)
    assert cluster.keys("ds5.zip") == [] and cluster.open_uploads() == []


def test_a_pickled_message_is_refused_unrun(cluster):
    from worker.celery import app

    refused = app.send_task("cityscapes.cleanup", args=["pickled-job"], serializer="pickle",
                            queue=cluster.queue)
    refusal = "Refusing to deserialize untrusted content of type pickle"
    wait_until(lambda: any(refusal in cluster.log(name) for name in cluster.names), 30,
               "the refusal logged")
    accepted = app.send_task("cityscapes.cleanup", args=["json-job"], queue=cluster.queue)
    assert accepted.get(timeout=30) == {"job_id": "json-job", "cleaned": True}
    assert refused.state == "PENDING"  # never run: the workers accept JSON only


def test_cvat_and_coco_jobs_equal_their_in_process_exports(cluster, tmp_path):
    from tests.cityscapes.test_adapters import CVAT_IMAGES, coco_document, cvat_document
    from worker import client

    for name, data in (("task.xml", cvat_document(CVAT_IMAGES)),
                       ("coco.json", json.dumps(coco_document()).encode())):
        job_id = client.submit_export({"annotations": cluster.put(f"formats/{name}", data),
                                       "output": cluster.url(f"formats/{name}.zip")})
        final = client.wait(job_id, timeout=60)
        assert final["state"] == "SUCCESS", final
        (tmp_path / name).write_bytes(data)
        local = run_export(parse_export_spec({"annotations": str(tmp_path / name),
                                              "output": str(tmp_path / f"{name}.zip")}), jobs=1)
        assert cluster.get(f"formats/{name}.zip") == (tmp_path / f"{name}.zip").read_bytes(), name
        assert final["result"]["warnings"] == local["warnings"], name
        assert ("skipped 1 <points>" in " ".join(local["warnings"])) == (name == "task.xml")


def test_a_reexport_through_the_cache_draws_only_the_edited_images_and_writes_the_same_zip(make_cluster):
    """CITYSCAPES_CACHE_PREFIX on the cluster: the second export of an edited task draws only
    the edited image and writes the zip a full export of the edited task writes; a job with
    "cache": false draws everything."""
    from worker import client

    cluster = make_cluster(CITYSCAPES_CACHE_PREFIX="s3://{bucket}/cache/")
    manifest = make_manifest(9, width=256, height=128, seed=8, objects=8, stuff_vertices=16)

    def run(name: str, scene: dict, **fields) -> tuple[dict, bytes]:
        spec = {**put_dataset(cluster, name, scene, photos=False), "output": cluster.url(f"{name}.zip"),
                **fields}
        final = client.wait(cluster.submit("cityscapes.export", spec), timeout=120)
        assert final["state"] == "SUCCESS", str(final)
        return final["result"], cluster.get(f"{name}.zip")

    first, _ = run("first", manifest)
    assert (first["images_drawn"], first["images_cached"]) == (9, 0)
    edited = json.loads(json.dumps(manifest))
    shape = next(s for s in edited["shapes"] if s["image"] == 5)
    shape["points"] = [p + 3 for p in shape["points"]]
    again, got = run("again", edited)
    assert (again["images_drawn"], again["images_cached"]) == (1, 8)
    full, expected = run("full", edited, cache=False)
    assert (full["images_drawn"], full["images_cached"]) == (9, 0)
    assert_same_zip(got, expected)


def test_unchanged_chunks_are_copied_inside_s3_and_a_changed_cached_run_is_never_copied(make_cluster):
    """Chunks whose images are all unchanged are copied from the cache's runs within S3, even
    with every image's own entry gone; a run replaced in the cache since it was described (its
    ETag no longer the one recorded) is not copied: its chunk is drawn again. Either way the zip
    is the one a full export writes. Three images a chunk (the tests' CITYSCAPES_CHUNK_SIZE)."""
    from worker import client

    cluster = make_cluster(CITYSCAPES_CACHE_PREFIX="s3://{bucket}/cache/")
    manifest = make_manifest(9, width=256, height=128, seed=4, objects=8, stuff_vertices=16)
    spec = put_dataset(cluster, "task", manifest, photos=False)

    def run(name: str, **fields) -> tuple[dict, bytes]:
        final = client.wait(cluster.submit("cityscapes.export", {
            **spec, "output": cluster.url(f"{name}.zip"), **fields}), timeout=120)
        assert final["state"] == "SUCCESS", final
        return final["result"], cluster.get(f"{name}.zip")

    first, expected = run("first")
    runs = [key for key in cluster.keys("cache/") if key.endswith(".zip-run")]
    assert (first["images_drawn"], len(runs)) == (9, 3)
    assert len([key for key in cluster.keys("cache/shapes/")]) == 1  # the manifest's memo
    final = client.wait(cluster.submit("cityscapes.export", {**spec, "output": cluster.url("same.zip")}),
                        timeout=120)  # nothing changed: the plan copies every chunk, none runs
    assert (final["state"], final["done"], final["total"]) == ("SUCCESS", 3, 3), final
    assert (final["result"]["images_cached"], final["result"]["bytes_moved"]) == (9, 0)
    assert cluster.get("same.zip") == expected
    for key in cluster.keys("cache/"):  # every image's own entry: only the runs remain
        if "/runs/" not in key:
            cluster.s3.delete_object(Bucket=cluster.bucket, Key=key)
    last_image = manifest["images"][8]["name"].rsplit(".", 1)[0]
    replaced = next(key for key in runs
                    if last_image in cluster.get(key.replace(".zip-run", ".json")).decode())
    body = bytearray(cluster.get(replaced))
    body[100] ^= 0xFF  # same length, other bytes: another ETag
    cluster.put(replaced, bytes(body))

    again, got = run("again")
    assert (again["images_drawn"], again["images_cached"]) == (3, 6)
    assert got == expected
    assert first["bytes_copied"] == 0 and first["bytes_moved"] > 0
    runs_bytes = again["bytes_copied"] + again["bytes_moved"]
    assert runs_bytes == first["bytes_moved"] and 0 < again["bytes_moved"] < runs_bytes / 2
    assert cluster.get(replaced) != bytes(body)  # drawn again, and the run put right


def test_two_jobs_filling_one_cache_at_once_both_write_the_full_export(make_cluster):
    """Two exports of one task submitted together, both filling the same empty cache (the same
    keys written by both, runs kept twice), and a third after them that takes everything from it:
    all three zips are the one a job without the cache writes."""
    from worker import client

    cluster = make_cluster(CITYSCAPES_CACHE_PREFIX="s3://{bucket}/cache/")
    manifest = make_manifest(9, width=256, height=128, seed=12, objects=8, stuff_vertices=16)
    spec = put_dataset(cluster, "task", manifest, photos=False)
    jobs = [cluster.submit("cityscapes.export", {**spec, "output": cluster.url(f"{n}.zip")})
            for n in ("a", "b")]
    finals = [client.wait(job, timeout=120) for job in jobs]
    assert [f["state"] for f in finals] == ["SUCCESS", "SUCCESS"], finals
    plain = client.wait(cluster.submit("cityscapes.export", {
        **spec, "output": cluster.url("plain.zip"), "cache": False}), timeout=120)
    assert plain["state"] == "SUCCESS", plain
    third = client.wait(cluster.submit("cityscapes.export", {
        **spec, "output": cluster.url("c.zip")}), timeout=120)
    assert (third["result"]["images_cached"], third["result"]["bytes_moved"]) == (9, 0)
    expected = cluster.get("plain.zip")
    assert [cluster.get(f"{n}.zip") for n in ("a", "b", "c")] == [expected] * 3
