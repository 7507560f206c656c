"""Leases on running job tasks: how a dead worker's task is found in seconds on a Redis broker.

Redis has no connection per consumer to watch: a task whose worker died stays unacknowledged until
the visibility timeout (15 minutes by default). So each job task running on a Redis broker holds a
lease, renewed by a thread of the process that runs it; every worker looks for leases that lapsed
and puts their tasks' messages back in the queue, under a new delivery tag so that a late
acknowledgement of the old delivery cannot drop the new one.

A lease ends in one of two ways, decided by one atomic ZREM: its run releases it (and reports its
result), or a watcher takes it over (and the run, should it still be alive after all, reports
nothing when it ends). So a task is counted once in its chord, whichever run finishes first.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import redis

_EXPIRY = "cityscapes:leases"  # sorted set: lease -> when it lapses (Unix time)
_TAGS = "cityscapes:leases:tags"  # hash: lease -> [delivery tag of the task's message, start]
_RENEWALS = 5  # renewals per lease period: a lease lapses after several missed beats, not one


class Lease:
    """The lease of one run of a task; renewed until `release`."""

    def __init__(self, client: redis.Redis, tag: str, seconds: float) -> None:
        self.client, self.seconds = client, seconds
        self.name = uuid.uuid4().hex
        started = time.time()
        pipe = client.pipeline()
        pipe.zadd(_EXPIRY, {self.name: started + seconds})
        pipe.hset(_TAGS, self.name, json.dumps([tag, started]))
        pipe.execute()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._beat.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / _RENEWALS):
            try:
                # XX: a lease taken over is not brought back.
                self.client.zadd(_EXPIRY, {self.name: time.time() + self.seconds}, xx=True)
            except redis.RedisError:
                pass  # Redis away for a beat; the lease lapses only if it stays away

    def release(self) -> bool:
        """Stop renewing; True if the lease was still ours (then nobody took the task over)."""
        self._stop.set()
        self._beat.join()
        pipe = self.client.pipeline()
        pipe.zrem(_EXPIRY, self.name)
        pipe.hdel(_TAGS, self.name)
        return bool(pipe.execute()[0])


def take_lapsed(client: redis.Redis, now: float | None = None) -> list[tuple[str, float]]:
    """(delivery tag, start of the run) of each lease that lapsed, each handed to one caller."""
    lapsed = client.zrangebyscore(_EXPIRY, 0, time.time() if now is None else now)
    taken = []
    for name in lapsed:
        if client.zrem(_EXPIRY, name):  # ours to restore: no other watcher, no release
            entry = client.hget(_TAGS, name)
            client.hdel(_TAGS, name)
            if entry:
                tag, started = json.loads(entry)
                taken.append((tag, started))
    return taken


def redeliver(channel, tag: str, started: float) -> bool:
    """Put the unacknowledged message `tag` of a kombu Redis channel back at the head of its
    queue under a new delivery tag, in one transaction, if the delivery still waiting for its
    acknowledgement is the one whose run started at `started`. False if it was acknowledged, or
    delivered again since (Celery requeues a task whose pool process died, under the same tag).

    kombu's own restore keeps the tag, and acknowledging the old delivery (its run may still be
    alive) would then remove the new one from the unacknowledged set."""
    qos = channel.qos
    moved = []

    def move(pipe) -> None:
        moved.clear()
        raw = pipe.hget(qos.unacked_key, tag)
        delivered = pipe.zscore(qos.unacked_index_key, tag)
        if not raw or delivered is None or delivered > started:
            return
        pipe.multi()
        pipe.zrem(qos.unacked_index_key, tag)
        pipe.hdel(qos.unacked_key, tag)
        message, exchange, routing_key = json.loads(raw)
        message["properties"]["delivery_tag"] = str(uuid.uuid4())
        channel._do_restore_message(message, exchange, routing_key, pipe)  # noqa: SLF001
        moved.append(tag)

    with channel.conn_or_acquire() as client:
        client.transaction(move, qos.unacked_key, qos.unacked_index_key)
    return bool(moved)
