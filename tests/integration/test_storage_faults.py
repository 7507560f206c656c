"""Storage faults between the workers and S3 (a fault-injecting proxy in front of the moto server):
transient ones are retried and the job completes unchanged; permanent ones fail it at once,
naming the object."""

from __future__ import annotations

import pytest

from tests.integration.test_reliability import export_dataset

FAULTS = ["throttle", "reset", "error", "slow", "truncate"]
# A permanent fault is not retried: the object at fault is asked for at most twice by each of
# the job's two chunks (a retried call asks 8 times: CITYSCAPES_S3_MAX_ATTEMPTS).
PERMANENT_ASKS = 4


@pytest.fixture
def faulty(make_cluster):
    return make_cluster(names=("f1", "f2"), proxy=True, CITYSCAPES_S3_READ_TIMEOUT="1.5",
                        CITYSCAPES_SOFT_TIME_LIMIT="40", CITYSCAPES_TIME_LIMIT="45",
                        CITYSCAPES_VISIBILITY_TIMEOUT="60", CITYSCAPES_STUCK_AFTER="90",
                        CITYSCAPES_CHUNK_SIZE="4")


def test_transient_faults_are_retried_and_the_job_completes_unchanged(faulty, tmp_path):
    from worker import client

    cluster, schedule = faulty, faulty.schedule
    spec, expected = export_dataset(cluster, tmp_path, "faults-ok", 16)
    schedule.inject(4, FAULTS)  # one request in four fails, each kind in turn
    try:
        job_id = cluster.submit("cityscapes.export", spec)
        final = client.wait(job_id, timeout=180)
    finally:
        schedule.inject(0)
    print(f"{schedule.requests} requests, faults injected: {schedule.injected}")

    assert final["state"] == "SUCCESS", final
    assert cluster.get("faults-ok/out.zip") == expected
    assert set(schedule.injected) == set(FAULTS), schedule.injected
    assert sum(schedule.injected.values()) >= 10
    assert cluster.staged(job_id) == [] and cluster.open_uploads() == []


@pytest.mark.parametrize("case", ["missing key", "missing bucket", "access denied"])
def test_permanent_faults_fail_the_job_at_once_naming_the_object(faulty, tmp_path, case):
    from worker import client

    cluster, schedule = faulty, faulty.schedule
    spec, _ = export_dataset(cluster, tmp_path, "faults-bad", 8)
    if case == "missing key":
        spec["annotations"] = cluster.url("faults-bad/none.json")
        named, path = "faults-bad/none.json: no such object", "faults-bad/none.json"
    elif case == "missing bucket":
        spec["images"] = "s3://no-such-bucket/images"
        named, path = "s3://no-such-bucket/images/", "/no-such-bucket/"
    else:
        schedule.deny = ["faults-bad/images/"]
        named, path = "faults-bad/images/", "faults-bad/images/"
    job_id = cluster.submit("cityscapes.export", spec)
    final = client.wait(job_id, timeout=120)
    print(f"{case}: asked {schedule.requests_for(path)} times: {final.get('error')}")

    assert final["state"] == "FAILURE" and named in final["error"], final
    assert {"missing key": "no such object", "missing bucket": "no such bucket",
            "access denied": "access denied"}[case] in final["error"]
    # Not retried with backoff: each chunk (two here) that asked gave up at the first answer.
    assert 1 <= schedule.requests_for(path) <= PERMANENT_ASKS
    assert cluster.keys("faults-bad/out.zip") == []
    cluster.wait_cleaned(job_id)
    assert cluster.open_uploads() == []
