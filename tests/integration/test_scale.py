"""A 20,000-image job on real workers with the default chunking (the smaller sibling of
bench/bench_scale.py's 100,000): 80,001 entries, so the directory is ZIP64 (past 65,535
entries); Python's zipfile (every CRC) and Info-ZIP's unzip -t read it whole, and it is byte for
byte the in-process export of the same manifest."""

from __future__ import annotations

import subprocess
import zipfile

from bench.bench_inputs import write_inputs
from tests.cityscapes.test_archive_external_readers import tool
from tests.integration.test_export_cluster import assert_same_zip
from worker.export_local import run_export
from worker.specs import parse_export_spec

IMAGES = 20_000


def test_a_20000_image_job_is_the_in_process_zip_and_external_readers_read_it_whole(
    make_cluster, tmp_path
):
    from worker import client

    manifest = write_inputs(tmp_path / "input", IMAGES, 64, 32, 3, ("manifest",))["manifest"]
    cluster = make_cluster(CITYSCAPES_CHUNK_SIZE="1000")  # the default (the fixture's is 3)
    spec = {"annotations": cluster.put("scale/annotations.json", manifest.read_bytes()),
            "output": cluster.url("scale/out.zip")}
    job_id = cluster.submit("cityscapes.export", spec)
    final = client.wait(job_id, timeout=600)
    assert final["state"] == "SUCCESS", final
    assert (final["total"], final["images_done"]) == (IMAGES // 1000, IMAGES)

    got = tmp_path / "cluster.zip"
    got.write_bytes(cluster.get("scale/out.zip"))
    local = tmp_path / "local.zip"
    run_export(parse_export_spec({"annotations": str(manifest), "output": str(local)}), jobs=2)
    assert_same_zip(got.read_bytes(), local.read_bytes())
    with zipfile.ZipFile(got) as archive:
        assert len(archive.namelist()) == 4 * IMAGES + 1
        assert archive.testzip() is None
    checked = subprocess.run([tool("unzip", "unzip"), "-tqq", str(got)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert cluster.staged(job_id) == []
