"""Flower, started against the same broker, shows a job's tasks and their states."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

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


def chromium() -> str:
    """Debian's chromium, installed by this test when the machine lacks it."""
    if shutil.which("chromium") is None:
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=True)
            subprocess.run(install, capture_output=True, check=True)
    return shutil.which("chromium")


def browse(url: str, screenshot: Path) -> str:
    """The page's text as headless Chromium renders it (credentials from AUTH); a screenshot is
    kept beside the test's files."""
    user, password = AUTH.split(":")
    url = url.replace("http://", f"http://{user}:{password}@")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={screenshot.parent / 'chromium-profile'}"]
    subprocess.run([chromium(), *flags, f"--screenshot={screenshot}", "--window-size=1280,1400",
                    url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([chromium(), *flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 0
    return re.sub(r"<[^>]+>", " ", dom)


class Flower:
    """`celery flower` against a cluster's broker, behind basic auth."""

    def __init__(self, cluster, tmp_path):
        port = free_port()
        self.log = open(tmp_path / "flower.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}",
             "--address=127.0.0.1", f"--basic-auth={AUTH}"],
            cwd=ROOT, env={**os.environ, **cluster.env}, stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(get(f"{self.url}/api/workers?refresh=1")) >= 2, 60, "flower")

    def task(self, task_id: str) -> dict:
        return get(f"{self.url}/api/task/info/{task_id}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def flower(cluster, tmp_path):
    running = Flower(cluster, tmp_path)
    yield running.url
    running.stop()


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


def test_flower_shows_the_job_in_progress_then_its_result(make_cluster, tmp_path):
    """Chunk 5 of 10 held at S3: Flower shows the job's own task (id: the job id) in state
    PROGRESS with 9 of 10 chunks done; let go, SUCCESS with the job's result."""
    from worker import client

    cluster = make_cluster(proxy=True)
    flower = Flower(cluster, tmp_path)
    try:
        manifest = make_manifest(30, width=128, height=64, seed=3, objects=5, stuff_vertices=10)
        spec = {**put_dataset(cluster, "p", manifest, photos=False), "output": cluster.url("p.zip")}
        cluster.schedule.hold("/in/00005.json")
        job_id = client.submit_export(spec)

        def in_progress():
            task = flower.task(job_id)
            return task if task.get("result") == "chunks 9/10, images 27/30" else None

        task = wait_until(in_progress, 60, "the job at 9 of 10 chunks in flower")
        assert task["state"] == "PROGRESS" and task["name"] == "cityscapes.export", task
        # The task page as an operator sees it: a real browser, with basic auth.
        page = browse(f"{flower.url}/task/{job_id}", tmp_path / "flower-task-progress.png")
        assert "PROGRESS" in page and "chunks 9/10, images 27/30" in page and job_id in page
        cluster.schedule.release("/in/00005.json")
        final = client.wait(job_id, timeout=60)
        assert final["state"] == "SUCCESS", final
        done = wait_until(lambda: (t := flower.task(job_id))["state"] == "SUCCESS" and t, 30,
                          "the job's success in flower")
        assert cluster.url("p.zip") in done["result"] and "'images': 30" in done["result"], done
    finally:
        flower.stop()


def test_flower_shows_a_failed_job_with_its_one_line_error(cluster, flower):
    from worker import client

    manifest = make_manifest(9, width=128, height=64, seed=3, objects=5, stuff_vertices=10)
    inputs = put_dataset(cluster, "f", manifest)
    missing = manifest["images"][4]["name"]
    cluster.s3.delete_object(Bucket=cluster.bucket, Key=f"f/images/{missing}")
    job_id = client.submit_export({**inputs, "save_images": True, "output": cluster.url("f.zip")})
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "FAILURE", final
    task = wait_until(lambda: (t := get(f"{flower}/api/task/info/{job_id}"))["state"] == "FAILURE"
                      and t, 30, "the job's failure in flower")
    assert task["exception"] == final["error"] and missing in task["exception"], task
    assert "\n" not in task["exception"]
