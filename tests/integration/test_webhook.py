"""Job-end webhooks on real workers: a signed JSON POST of the job's status to its notify_url on
SUCCESS, FAILURE or CANCELLED, once, retried while the backend answers 5xx, and never a request
to a host outside CITYSCAPES_WEBHOOK_HOSTS (redirects included). The receiver is a local HTTP
server of this test."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.conftest import wait_until
from tests.integration.test_export_cluster import failing_export, put_dataset
from worker.synth import make_manifest

SECRET = "whsec-4e1f-test"


class Receiver:
    """Records each POST; answers with the next of `answers` (then 200); may redirect."""

    def __init__(self, answers: list[int] | None = None, redirect: str | None = None):
        self.requests: list[dict] = []
        self.answers = list(answers or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(302 if redirect else status)
                if redirect:
                    self.send_header("Location", redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.server.shutdown()


def webhook_cluster(make_cluster, *hosts: str, **options):
    return make_cluster(CITYSCAPES_WEBHOOK_SECRET=SECRET, CITYSCAPES_WEBHOOK_HOSTS=",".join(hosts),
                        **options)


def small_job(cluster, name: str, **fields) -> dict:
    manifest = make_manifest(6, width=128, height=64, seed=7, objects=5, stuff_vertices=10)
    return {**put_dataset(cluster, name, manifest, photos=False),
            "output": cluster.url(f"{name}.zip"), **fields}


def test_a_finished_job_posts_its_status_once_signed(make_cluster, receiver):
    from worker import client

    cluster = webhook_cluster(make_cluster, receiver.host)
    job_id = client.submit_export(small_job(cluster, "ok", notify_url=receiver.url("/hooks/done?task=42")))
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "SUCCESS", final
    wait_until(lambda: receiver.requests, 60, "the webhook")
    # A later job's webhook arrives after anything this job could still have sent.
    later = client.submit_export(small_job(cluster, "later", notify_url=receiver.url("/later")))
    wait_until(lambda: len(receiver.requests) == 2, 60, "the later job's webhook")

    first = receiver.requests[0]
    assert first["path"] == "/hooks/done?task=42"
    assert json.loads(first["body"]) == {"job_id": job_id, **final}
    expected = "sha256=" + hmac.new(SECRET.encode(), first["body"], hashlib.sha256).hexdigest()
    assert first["headers"]["X-Cityscapes-Signature"] == expected
    assert first["headers"]["Content-Type"] == "application/json"
    assert [b["job_id"] for b in receiver.bodies()] == [job_id, later]


@pytest.mark.parametrize("where", ["planning", "chunk"])
def test_a_failed_job_posts_its_error_once(make_cluster, receiver, where):
    from worker import client

    cluster = webhook_cluster(make_cluster, receiver.host)
    job_id = client.submit_export({**failing_export(cluster, where), "notify_url": receiver.url("/hook")})
    final = client.wait(job_id, timeout=60)
    assert final["state"] == "FAILURE", final
    cluster.wait_cleaned(job_id)  # the chord's errback, which reports the end too, has run
    later = client.submit_export(small_job(cluster, "later", notify_url=receiver.url("/later")))
    wait_until(lambda: later in [b["job_id"] for b in receiver.bodies()], 60, "the later webhook")
    mine = [b for b in receiver.bodies() if b["job_id"] == job_id]
    assert mine == [{"job_id": job_id, **client.status(job_id)}]
    assert mine[0]["state"] == "FAILURE" and mine[0]["error"] == final["error"]


def test_a_backend_answering_503_is_called_again_until_it_takes_it(make_cluster):
    from worker import client

    receiver = Receiver(answers=[503, 503])
    try:
        cluster = webhook_cluster(make_cluster, receiver.host)
        job_id = client.submit_export(small_job(cluster, "retry", notify_url=receiver.url("/h")))
        assert client.wait(job_id, timeout=60)["state"] == "SUCCESS"
        wait_until(lambda: len(receiver.requests) == 3, 60, "three attempts")
        assert len({r["body"] for r in receiver.requests}) == 1  # the same signed body each time
    finally:
        receiver.server.shutdown()


def test_no_request_leaves_for_a_host_outside_the_list_nor_through_a_redirect(make_cluster):
    from worker import client

    outside = Receiver()
    redirecting = Receiver(redirect=outside.url("/stolen"))
    try:
        cluster = webhook_cluster(make_cluster, redirecting.host)
        job_id = client.submit_export(small_job(cluster, "a", notify_url=outside.url("/x")))
        assert client.wait(job_id, timeout=60)["state"] == "SUCCESS"  # the job is not failed
        wait_until(lambda: any(f"'{outside.host}' is not in CITYSCAPES_WEBHOOK_HOSTS" in
                               cluster.log(n) for n in cluster.names), 60, "the refusal logged")
        redirected = client.submit_export(small_job(cluster, "b", notify_url=redirecting.url("/r")))
        assert client.wait(redirected, timeout=60)["state"] == "SUCCESS"
        wait_until(lambda: redirecting.requests, 60, "the allowed host called")
        wait_until(lambda: any("webhook answered 302" in cluster.log(n) for n in cluster.names),
                   60, "the redirect taken as the answer")
        assert outside.requests == []
    finally:
        outside.server.shutdown()
        redirecting.server.shutdown()


def test_a_cancelled_job_posts_cancelled(make_cluster, receiver):
    from worker import client

    cluster = webhook_cluster(make_cluster, receiver.host, proxy=True)
    cluster.schedule.hold("/in/")
    job_id = client.submit_export(small_job(cluster, "c", notify_url=receiver.url("/c")))
    wait_until(lambda: all(cluster.held_chunk(n, job_id) for n in cluster.names), 60,
               "both workers in a chunk")
    client.cancel(job_id)
    cluster.schedule.release("/in/")
    wait_until(lambda: receiver.requests, 60, "the webhook")
    assert receiver.bodies()[0]["state"] == "CANCELLED"
    assert receiver.bodies()[0]["job_id"] == job_id
