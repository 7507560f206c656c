"""Job progress as data in Redis: one hash per job, updated atomically, expiring with a TTL.

Fields: state (PLANNING, RUNNING, SUCCESS, FAILURE, CANCELLED), done and total (chunks), images_done,
images, error, result (JSON). Any process can read it while the job runs.

Jobs not yet ended are also kept in one sorted set, scored by the time of their last sign of life
(a write here, a chunk starting or ending), which is where the reaper looks for stuck jobs.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from config.settings import get_settings
from worker.logs import redact

_PREFIX = "cityscapes:job:"
_ACTIVE = "cityscapes:jobs:active"
TERMINAL = ("SUCCESS", "FAILURE", "CANCELLED")
STOPPED = ("FAILURE", "CANCELLED")
_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """The Redis holding progress (and leases): one client per process and URL."""
    url = get_settings().progress_redis_url
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, decode_responses=True)
    return _clients[url]


def _write(job_id: str, fields: dict[str, Any]) -> None:
    key = _PREFIX + job_id
    pipe = redis_client().pipeline()
    pipe.hset(key, mapping={k: v if isinstance(v, (str, int)) else json.dumps(v) for k, v in fields.items()})
    pipe.expire(key, get_settings().progress_ttl)
    if fields.get("state") in TERMINAL:
        pipe.zrem(_ACTIVE, job_id)
    else:
        pipe.zadd(_ACTIVE, {job_id: time.time()})
    pipe.execute()


def start(job_id: str, kind: str) -> None:
    _write(job_id, {"state": "PLANNING", "kind": kind, "done": 0, "total": 0, "images_done": 0})


def describe(job_id: str, **fields: str) -> None:
    """Locations a later cleanup needs (output, staging)."""
    _write(job_id, fields)


def planned(job_id: str, chunks: int, images: int) -> None:
    _write(job_id, {"state": "RUNNING", "total": chunks, "images": images})


def chunk_done(job_id: str, chunk: int, images: int) -> None:
    """Counts a chunk once, however often it is delivered."""
    key = _PREFIX + job_id
    client = redis_client()
    if client.sadd(key + ":chunks", chunk):
        pipe = client.pipeline()
        pipe.hincrby(key, "done", 1)
        pipe.hincrby(key, "images_done", images)
        pipe.expire(key + ":chunks", get_settings().progress_ttl)
        pipe.zadd(_ACTIVE, {job_id: time.time()}, xx=True)
        pipe.execute()


def check_in(job_id: str) -> bool:
    """A task of the job starts: note the sign of life; False if the job was stopped (cancelled,
    or failed by another task or by the reaper) and the task should not run."""
    pipe = redis_client().pipeline()
    pipe.zadd(_ACTIVE, {job_id: time.time()}, xx=True)
    pipe.hget(_PREFIX + job_id, "state")
    return pipe.execute()[1] not in STOPPED


def delivery(job_id: str, chunk: int, attempt: int) -> int:
    """How many times this attempt of the chunk has been handed to a worker, this one included
    (more than once only when a worker died holding it)."""
    key = f"{_PREFIX}{job_id}:deliveries"
    pipe = redis_client().pipeline()
    pipe.hincrby(key, f"{chunk}:{attempt}", 1)
    pipe.expire(key, get_settings().progress_ttl)
    return pipe.execute()[0]


def claim_notification(job_id: str) -> bool:
    """True once per job, for the first caller that reports its end."""
    return bool(redis_client().hsetnx(_PREFIX + job_id, "notified", 1))


def forget(job_id: str) -> None:
    """Take an ended (or expired) job out of the reaper's view."""
    redis_client().zrem(_ACTIVE, job_id)


def claim(name: str, seconds: int) -> bool:
    """True for one caller per `seconds` across the cluster."""
    return bool(redis_client().set(f"cityscapes:claim:{name}", 1, nx=True, ex=seconds))


def quiet_before(cutoff: float) -> list[str]:
    """Jobs not ended whose last sign of life came before `cutoff` (a Unix time)."""
    return redis_client().zrangebyscore(_ACTIVE, 0, cutoff)


def finish(job_id: str, result: dict) -> None:
    _write(job_id, {"state": "SUCCESS", "result": result})


def fail(job_id: str, error: str) -> None:
    _write(job_id, {"state": "FAILURE", "error": redact(error)})


def cancel(job_id: str) -> None:
    _write(job_id, {"state": "CANCELLED", "error": "cancelled"})


def read(job_id: str) -> dict[str, Any]:
    raw = redis_client().hgetall(_PREFIX + job_id)
    out: dict[str, Any] = {}
    for field, value in raw.items():
        if field in ("done", "total", "images_done", "images"):
            out[field] = int(value)
        elif field == "result":
            out[field] = json.loads(value)
        else:
            out[field] = value
    return out
