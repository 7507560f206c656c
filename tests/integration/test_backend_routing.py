"""The README's backend snippet, run as a backend runs it, and the client's refusal to send a
job that no worker would take (a job in an unconsumed queue stays PENDING, unseen)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import uuid

import pytest

from tests.integration.conftest import ROOT
from worker.errors import NoConsumer
from worker.export_local import run_export
from worker.specs import parse_export_spec

SAMPLE = ROOT / "examples" / "sample" / "manifest.json"


def readme_backend_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [block for block in blocks if 'send_task("cityscapes.export"' in block]
    assert len(found) == 1, "README.md should hold one backend snippet"
    return found[0]


def test_the_readme_snippet_runs_a_job_from_a_plain_celery_app(make_cluster, tmp_path):
    snippet = readme_backend_snippet()
    queue = re.search(r'queue="([^"]+)"', snippet)[1]
    # Workers on the snippet's queue (in databases of this test's), and the snippet's own
    # locations, made for it in a bucket of its name.
    cluster = make_cluster(queue=queue)
    bucket = re.search(r'"annotations": "s3://([^/]+)/([^"]+)"', snippet)
    output_key = re.search(r'"output": "s3://[^/]+/([^"]+)"', snippet)[1]
    cluster.s3.create_bucket(Bucket=bucket[1])
    try:
        cluster.s3.put_object(Bucket=bucket[1], Key=bucket[2], Body=SAMPLE.read_bytes())
        script = tmp_path / "backend.py"
        script.write_text(snippet + (
            "\nimport sys\n"
            "print('ours:', sorted(m for m in sys.modules"
            " if m.split('.')[0] in ('worker', 'tasks', 'config')))\n"))
        env = {"PATH": os.environ["PATH"], "CELERY_BROKER_URL": cluster.env["CELERY_BROKER_URL"],
               "CELERY_RESULT_BACKEND": cluster.env["CELERY_RESULT_BACKEND"]}
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        printed, ours = done.stdout.strip().splitlines()
        assert ours == "ours: []"  # a plain Celery app: nothing of this project imported
        result = ast.literal_eval(printed)
        assert result["output"] == f"s3://{bucket[1]}/{output_key}" and result["images"] == 4
        cluster_zip = cluster.s3.get_object(Bucket=bucket[1], Key=output_key)["Body"].read()
        local_zip = tmp_path / "local.zip"
        run_export(parse_export_spec({"annotations": str(SAMPLE), "output": str(local_zip)}),
                   jobs=1)
        assert cluster_zip == local_zip.read_bytes()
    finally:
        for item in cluster.s3.list_objects_v2(Bucket=bucket[1]).get("Contents", []):
            cluster.s3.delete_object(Bucket=bucket[1], Key=item["Key"])
        cluster.s3.delete_bucket(Bucket=bucket[1])


@pytest.fixture
def unconsumed_queue(monkeypatch, cluster):
    """CITYSCAPES_QUEUE set to a queue no worker reads (nothing is ever sent to it)."""
    from config.settings import get_settings

    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CITYSCAPES_QUEUE", queue)
    get_settings.cache_clear()
    yield queue
    get_settings.cache_clear()


def test_the_client_sends_nothing_when_no_worker_consumes_the_queue(cluster, unconsumed_queue):
    from worker import client

    assert client.consumers(cluster.queue) == sorted(
        f"{proc.node}@{os.uname().nodename}" for proc in cluster.procs.values())
    spec = {"annotations": "s3://jobs/a.json", "output": "s3://jobs/out/a.zip"}
    with pytest.raises(NoConsumer, match=f"no running worker consumes the queue '{unconsumed_queue}'"):
        client.submit_export(spec)
    with pytest.raises(NoConsumer):
        client.submit_import({"archive": "s3://jobs/a.zip", "output": "s3://jobs/a.json"})


def test_submit_exits_2_naming_the_queue_no_worker_consumes(cluster, unconsumed_queue):
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "submit", "export", "--annotations", "s3://jobs/a.json",
         "--output", "s3://jobs/out/a.zip", "--wait"],
        cwd=ROOT, env={**os.environ, "CITYSCAPES_QUEUE": unconsumed_queue},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and f"'{unconsumed_queue}'" in done.stderr
    assert done.stdout == ""
