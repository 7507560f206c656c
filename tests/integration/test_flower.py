"""Flower, started against the same broker, shows a job's tasks and their states."""

import base64
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.integration.conftest import ROOT, free_port, node_name, wait_until
from tests.integration.test_export_cluster import put_dataset
from worker.synth import make_manifest

AUTH = "operator:s3cret"


def get(url):
    request = urllib.request.Request(url)
    request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def flower(cluster, tmp_path):
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}",
         "--address=127.0.0.1", f"--basic-auth={AUTH}"],
        cwd=ROOT, env={**os.environ, **cluster.env}, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: len(get(f"{url}/api/workers?refresh=1")) >= 2, 60, "flower")
    yield url
    proc.terminate()
    proc.wait(20)


def test_flower_lists_the_job_tasks_with_their_states(cluster, flower):
    from worker import client

    manifest = make_manifest(9, width=256, height=128, seed=3, objects=10, stuff_vertices=20)
    inputs = put_dataset(cluster, "fl", manifest, photos=False)
    job_id = client.submit_export({**inputs, "output": cluster.url("out/fl.zip")})
    assert client.wait(job_id, timeout=60)["state"] == "SUCCESS"

    def job_tasks():
        tasks = get(f"{flower}/api/tasks")
        mine = {tid: t for tid, t in tasks.items() if tid.startswith(job_id)}
        names = {t["name"] for t in mine.values()}
        done = all(t["state"] == "SUCCESS" for t in mine.values())
        if {"cityscapes.export_chunk", "cityscapes.export_assemble"} <= names and done:
            return mine
        return None

    mine = wait_until(job_tasks, 20, "the job's tasks in flower")
    chunks = [t for t in mine.values() if t["name"] == "cityscapes.export_chunk"]
    assert len(chunks) == 3
    assert {node_name(t["worker"]) for t in chunks} <= {"w1", "w2"}


def test_flower_refuses_requests_without_credentials(flower):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{flower}/api/tasks", timeout=5)
    assert info.value.code == 401


def test_a_secret_in_a_spec_is_shown_nowhere(cluster, flower):
    from worker import client

    job_id = client.submit_export({"annotations": "s3://user:hunter2@jobs/a.json",
                                   "output": cluster.url("out/secret.zip")})
    final = client.wait(job_id, timeout=30)
    assert final["state"] == "FAILURE" and "s3://user:***@jobs/a.json" in final["error"], final

    def shown():
        task = get(f"{flower}/api/task/info/{job_id}")
        return task if task.get("state") == "FAILURE" else None

    task = wait_until(shown, 20, "the failed job in flower")
    assert "user:***@jobs" in task["kwargs"] and "user:***@jobs" in task["exception"], task
    assert "hunter2" not in json.dumps(task) + final["error"]
