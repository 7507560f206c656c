"""Storage faults between the workers and S3 (a fault-injecting proxy in front of the moto server):
transient ones are retried and the job completes unchanged; permanent ones fail it at once,
naming the object."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import BUCKET, wait_until
from tests.integration.faulty_s3 import FaultySchedule, start_proxy
from tests.integration.test_export_cluster import keys
from tests.integration.test_reliability import Cluster, export_dataset

FAULTS = ["throttle", "reset", "error", "slow", "truncate"]


@pytest.fixture(scope="module")
def faulty(cluster_env, s3_endpoint, tmp_path_factory):
    schedule = FaultySchedule(every=0, faults=FAULTS, slow_seconds=3)
    endpoint, server = start_proxy(s3_endpoint, schedule)
    group = Cluster(cluster_env, tmp_path_factory.mktemp("fault-workers"), "faults", ("f1", "f2"),
                    AWS_ENDPOINT_URL=endpoint, CITYSCAPES_S3_READ_TIMEOUT="1.5",
                    CITYSCAPES_SOFT_TIME_LIMIT="40", CITYSCAPES_TIME_LIMIT="45",
                    CITYSCAPES_VISIBILITY_TIMEOUT="60", CITYSCAPES_STUCK_AFTER="90")
    group.ensure_running()
    yield group, schedule
    group.stop()
    server.shutdown()


def open_uploads(s3) -> list:
    return s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def test_transient_faults_are_retried_and_the_job_completes_unchanged(s3, faulty, tmp_path):
    from worker import client

    cluster, schedule = faulty
    spec, expected = export_dataset(s3, tmp_path, "faults-ok", 16)
    schedule.every = 4  # one request in four fails, each kind in turn
    try:
        job_id = cluster.submit("cityscapes.export", spec)
        final = client.wait(job_id, timeout=180)
    finally:
        schedule.every = 0
    print(f"{schedule.requests} requests, faults injected: {schedule.injected}")

    assert final["state"] == "SUCCESS", final
    assert s3.get_object(Bucket=BUCKET, Key="faults-ok/out.zip")["Body"].read() == expected
    assert set(schedule.injected) == set(FAULTS), schedule.injected
    assert sum(schedule.injected.values()) >= 10
    assert keys(s3, f".cityscapes-staging/{job_id}") == [] and open_uploads(s3) == []


@pytest.mark.parametrize("case", ["missing key", "missing bucket", "access denied"])
def test_permanent_faults_fail_the_job_at_once_naming_the_object(s3, faulty, tmp_path, case):
    from worker import client

    cluster, schedule = faulty
    spec, _ = export_dataset(s3, tmp_path, "faults-bad", 8)
    if case == "missing key":
        spec["annotations"] = f"s3://{BUCKET}/faults-bad/none.json"
        named = "faults-bad/none.json: no such object"
    elif case == "missing bucket":
        spec["images"] = "s3://no-such-bucket/images"
        named = "s3://no-such-bucket/images/"
    else:
        schedule.deny = ["faults-bad/images/"]
        named = "faults-bad/images/"
    try:
        started = time.monotonic()
        job_id = cluster.submit("cityscapes.export", spec)
        final = client.wait(job_id, timeout=60)
        took = time.monotonic() - started
    finally:
        schedule.deny = []
    print(f"{case}: failed after {took:.1f} s: {final.get('error')}")

    assert final["state"] == "FAILURE" and named in final["error"], final
    assert {"missing key": "no such object", "missing bucket": "no such bucket",
            "access denied": "access denied"}[case] in final["error"]
    assert took < 10  # not retried with backoff
    if case == "access denied":
        assert schedule.injected["deny"] <= 2  # each chunk that asked gave up at the first answer
    assert keys(s3, "faults-bad/out.zip") == []
    # The failure is recorded by the failing task; the chord's errback cleans up just after.
    wait_until(lambda: keys(s3, f".cityscapes-staging/{job_id}") == [], 10, "staging removed")
    assert open_uploads(s3) == []
