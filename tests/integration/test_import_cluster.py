"""The import job on real parts: it reads the zip in S3 by ranges and writes the same manifest
as the in-process import."""

import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import BROKERS
from worker.export_local import run_export
from worker.import_local import run_import
from worker.specs import parse_export_spec, parse_import_spec
from worker.synth import make_manifest


def put_export(cluster, tmp_path, manifest, key, **options):
    """Export `manifest` in this process and put the zip at `key`; returns the local zip."""
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    archive = tmp_path / key.replace("/", "-")
    run_export(parse_export_spec({"annotations": str(tmp_path / "m.json"), "output": str(archive),
                                  **options}), jobs=1)
    cluster.put(key, archive.read_bytes())
    return archive


@pytest.mark.parametrize("cluster", BROKERS, indirect=True)
def test_cluster_import_equals_the_in_process_import(cluster, tmp_path):
    from worker import client

    manifest = make_manifest(10, width=512, height=256, seed=8, objects=25, stuff_vertices=60)
    archive = put_export(cluster, tmp_path, manifest, "imp/a.zip", polygons_json=False)

    job_id = client.submit_import({"archive": cluster.url("imp/a.zip"),
                                   "output": cluster.url("imp/out.json")})
    final = client.wait(job_id, timeout=120)
    assert final["state"] == "SUCCESS", final
    assert final["result"]["images"] == 10 and final["result"]["changed_pixels"] == 0
    run_import(parse_import_spec({"archive": str(archive), "output": str(tmp_path / "local.json")}), jobs=1)
    assert cluster.get("imp/out.json") == (tmp_path / "local.json").read_bytes()
    assert cluster.staged(job_id) == []


def test_import_of_a_missing_archive_fails_naming_it(cluster):
    from worker import client

    job_id = client.submit_import({"archive": cluster.url("imp/none.zip"),
                                   "output": cluster.url("imp/none.json")})
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "FAILURE" and "none.zip" in final["error"], final
    assert cluster.keys("imp/") == [] and cluster.staged(job_id) == []


def test_cluster_coco_import_equals_the_in_process_one(cluster, tmp_path):
    from worker import client

    manifest = make_manifest(5, width=256, height=128, seed=12, objects=12, stuff_vertices=30)
    archive = put_export(cluster, tmp_path, manifest, "imp/c.zip")
    job_id = client.submit_import({"archive": cluster.url("imp/c.zip"), "format": "coco",
                                   "output": cluster.url("imp/c.json")})
    assert client.wait(job_id, timeout=120)["state"] == "SUCCESS"
    run_import(parse_import_spec({"archive": str(archive), "output": str(tmp_path / "c.json"),
                                  "format": "coco"}), jobs=1)
    imported = cluster.get("imp/c.json")
    assert imported == (tmp_path / "c.json").read_bytes()
    assert len(json.loads(imported)["annotations"]) > 10


def test_cli_submits_and_follows_both_jobs(cluster):
    manifest = make_manifest(4, width=128, height=64, seed=2, objects=5, stuff_vertices=10)
    annotations = cluster.put("cli/m.json", json.dumps(manifest).encode())

    def cli(*args):
        run = subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True,
                             text=True, env=os.environ.copy(), timeout=120)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.strip().splitlines()
        return lines[0], json.loads(lines[-1])

    job, final = cli("submit", "export", "--annotations", annotations,
                     "--output", cluster.url("cli/out.zip"), "--wait", "--quiet")
    assert final["state"] == "SUCCESS" and final["result"]["images"] == 4
    _, later = cli("status", job)
    assert later["state"] == "SUCCESS" and later["done"] == later["total"]
    _, imported = cli("submit", "import", "--archive", cluster.url("cli/out.zip"),
                      "--output", cluster.url("cli/back.json"), "--wait", "--quiet")
    assert imported["state"] == "SUCCESS" and imported["result"]["images"] == 4
    assert json.loads(cluster.get("cli/back.json"))["images"][0]["width"] == 128
