"""Leases on a real redis-server with kombu's own Redis transport: a lapsed lease puts its task's
message back once, under a new delivery tag; a delivery made after the run began is left alone;
a run whose lease was taken over learns it when it releases."""

from __future__ import annotations

import time

import pytest
import redis
from kombu import Connection

from tests.integration.conftest import DATABASES
from worker.leases import Lease, redeliver, take_lapsed

LEASE = 1.0


@pytest.fixture
def broker(redis_url):
    """A kombu connection and a Redis client on a database no cluster uses, emptied after."""
    url = f"{redis_url}/{DATABASES - 1}"
    with Connection(url, transport_options={"visibility_timeout": 3600}) as connection:
        yield connection, redis.Redis.from_url(url, decode_responses=True)
    redis.Redis.from_url(url).flushdb()


def delivered(queue):
    """The next message, delivered and not acknowledged (as a worker running it holds it)."""
    return queue.get(timeout=5)


def dead(lease: Lease) -> Lease:
    """The lease of a run whose worker died: nobody renews it any more."""
    lease._stop.set()
    lease._beat.join()
    return lease


def test_a_lapsed_lease_puts_the_message_back_once_under_a_new_tag(broker):
    connection, client = broker
    queue = connection.SimpleQueue("lease-test")
    queue.put({"chunk": 7})
    first = delivered(queue)
    lease = dead(Lease(client, first.delivery_tag, LEASE))

    assert take_lapsed(client) == []  # not lapsed yet
    lapsed = take_lapsed(client, now=time.time() + 2 * LEASE)
    assert [tag for tag, _ in lapsed] == [first.delivery_tag]
    assert take_lapsed(client, now=time.time() + 2 * LEASE) == []  # handed out once
    (tag, started), = lapsed
    assert redeliver(connection.default_channel, tag, started)
    assert not redeliver(connection.default_channel, tag, started)  # nothing left to move

    again = delivered(queue)
    assert again.payload == {"chunk": 7} and again.delivery_tag != first.delivery_tag
    # The first run, alive after all, ends: it learns it was taken over, and its late
    # acknowledgement does not drop the new delivery from those awaiting one.
    assert lease.release() is False
    first.ack()
    assert client.hexists("unacked", again.delivery_tag)
    again.ack()
    queue.close()


def test_a_delivery_made_after_the_run_began_is_left_alone(broker):
    """Celery requeues a task whose pool process died under the same delivery tag; the dead run's
    lease, lapsing later, must not move the new delivery (it would then run twice)."""
    connection, client = broker
    queue = connection.SimpleQueue("lease-requeued")
    queue.put({"chunk": 3})
    first = delivered(queue)
    lease = dead(Lease(client, first.delivery_tag, LEASE))
    first.requeue()  # what task_reject_on_worker_lost does
    second = delivered(queue)
    assert second.delivery_tag == first.delivery_tag

    (tag, started), = take_lapsed(client, now=time.time() + 2 * LEASE)
    assert not redeliver(connection.default_channel, tag, started)
    assert client.hexists("unacked", second.delivery_tag)
    assert lease.release() is False
    second.ack()
    queue.close()


def test_a_run_that_keeps_its_lease_releases_it_and_nothing_is_delivered_again(broker):
    connection, client = broker
    queue = connection.SimpleQueue("lease-kept")
    queue.put({"chunk": 1})
    message = delivered(queue)
    lease = Lease(client, message.delivery_tag, LEASE)
    deadline = time.time() + 5 * LEASE
    while time.time() < deadline:  # renewed while it runs: never lapses
        assert take_lapsed(client) == []
        time.sleep(LEASE / 4)
    assert lease.release() is True
    assert take_lapsed(client, now=time.time() + 10 * LEASE) == []
    message.ack()
    assert client.llen("lease-kept") == 0 and client.hlen("unacked") == 0
    queue.close()
