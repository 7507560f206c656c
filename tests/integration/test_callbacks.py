"""Results pushed to the backend: a job sent with Celery's `link` and `link_error` calls the
backend's own tasks (by name, on its own queue, from an app that knows nothing of ours) exactly
once: with the job's result when it succeeds, with the job's id when it fails, however it
fails (at planning, in a chunk) and when it is cancelled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis
from celery import signature

from tests.integration.conftest import BROKERS, ROOT, wait_until
from tests.integration.test_export_cluster import failing_export, put_dataset
from worker.synth import make_manifest


class Backend:
    """The backend's worker (tests/integration/backend/app.py) and what its tasks recorded."""

    def __init__(self, cluster):
        self.queue = f"backend-{cluster.queue}"
        self.record = redis.Redis.from_url(cluster.env["CELERY_RESULT_BACKEND"], decode_responses=True)
        self.log = open(cluster.logdir / "backend.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.integration.backend.app", "worker",
             "-n", "backend@%h", "-c", "1", "-Q", self.queue, "--without-mingle",
             "--without-gossip", "-l", "INFO"],
            cwd=ROOT, env={**os.environ, **cluster.env,
                           "BACKEND_RECORD_URL": cluster.env["CELERY_RESULT_BACKEND"]},
            stdout=self.log, stderr=subprocess.STDOUT)
        self.marks = 0

    def callbacks(self) -> dict:
        return {"link": signature("backend.done", queue=self.queue),
                "link_error": signature("backend.failed", queue=self.queue)}

    def calls(self) -> list[dict]:
        """Every call so far, once the backend has worked through its queue: a marker sent now
        is taken after anything queued before it (one process, in order)."""
        from worker.celery import app

        self.marks += 1
        app.send_task("backend.done", args=[f"mark-{self.marks}"], queue=self.queue)
        mark = {"task": "done", "result": f"mark-{self.marks}", "args": []}

        def recorded():
            calls = [json.loads(c) for c in self.record.lrange("calls", 0, -1)]
            return calls if mark in calls else None

        seen = wait_until(recorded, 60, "the backend's marker")
        return [c for c in seen if not str(c.get("result", "")).startswith("mark-")]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def backend(cluster):
    running = Backend(cluster)
    yield running
    running.stop()


def send(cluster, backend, spec: dict) -> str:
    from worker.celery import app

    return app.send_task("cityscapes.export", kwargs=spec, queue=cluster.queue,
                         **backend.callbacks()).id


@pytest.mark.parametrize("cluster", BROKERS, indirect=True)
def test_a_successful_job_calls_the_backend_once_with_its_result(cluster, backend):
    from worker import client

    manifest = make_manifest(9, width=128, height=64, seed=7, objects=5, stuff_vertices=10)
    spec = {**put_dataset(cluster, "ok", manifest, photos=False), "output": cluster.url("ok.zip")}
    job_id = send(cluster, backend, spec)
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "SUCCESS", final
    calls = wait_until(lambda: backend.calls() or None, 60, "the backend called")
    assert calls == [{"task": "done", "result": final["result"], "args": []}]


@pytest.mark.parametrize("where", ["planning", "chunk"])
def test_a_failed_job_calls_the_backends_errback_once_with_its_id(cluster, backend, where):
    from worker import client

    job_id = send(cluster, backend, failing_export(cluster, where))
    assert client.wait(job_id, timeout=60)["state"] == "FAILURE"
    calls = wait_until(lambda: backend.calls() or None, 60, "the backend called")
    assert calls == [{"task": "failed", "args": [job_id]}]


def test_a_cancelled_job_calls_the_backends_errback_once(make_cluster):
    from worker import client

    cluster = make_cluster(proxy=True)
    backend = Backend(cluster)
    try:
        manifest = make_manifest(12, width=128, height=64, seed=7, objects=5, stuff_vertices=10)
        spec = {**put_dataset(cluster, "c", manifest, photos=False), "output": cluster.url("c.zip")}
        cluster.schedule.hold("/in/")
        job_id = send(cluster, backend, spec)
        wait_until(lambda: all(cluster.held_chunk(n, job_id) for n in cluster.names), 60,
                   "both workers in a chunk")
        client.cancel(job_id)
        cluster.schedule.release("/in/")
        calls = wait_until(lambda: backend.calls() or None, 60, "the backend called")
        assert calls == [{"task": "failed", "args": [job_id]}]
        assert client.status(job_id)["state"] == "CANCELLED"
    finally:
        backend.stop()
