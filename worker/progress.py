"""Job progress as data in Redis: one hash per job, updated atomically, expiring with a TTL.

Fields: state (PLANNING, RUNNING, SUCCESS, FAILURE, CANCELLED), done and total (chunks), images_done,
images, error, result (JSON). Any process can read it while the job runs.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from config.settings import get_settings

_PREFIX = "cityscapes:job:"
TERMINAL = ("SUCCESS", "FAILURE", "CANCELLED")
_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = get_settings().progress_redis_url
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, decode_responses=True)
    return _clients[url]


def _write(job_id: str, fields: dict[str, Any]) -> None:
    key = _PREFIX + job_id
    pipe = _redis().pipeline()
    pipe.hset(key, mapping={k: v if isinstance(v, (str, int)) else json.dumps(v) for k, v in fields.items()})
    pipe.expire(key, get_settings().progress_ttl)
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
    client = _redis()
    if client.sadd(key + ":chunks", chunk):
        pipe = client.pipeline()
        pipe.hincrby(key, "done", 1)
        pipe.hincrby(key, "images_done", images)
        pipe.expire(key + ":chunks", get_settings().progress_ttl)
        pipe.execute()


def finish(job_id: str, result: dict) -> None:
    _write(job_id, {"state": "SUCCESS", "result": result})


def fail(job_id: str, error: str) -> None:
    _write(job_id, {"state": "FAILURE", "error": error})


def cancel(job_id: str) -> None:
    _write(job_id, {"state": "CANCELLED", "error": "cancelled"})


def read(job_id: str) -> dict[str, Any]:
    raw = _redis().hgetall(_PREFIX + job_id)
    out: dict[str, Any] = {}
    for field, value in raw.items():
        if field in ("done", "total", "images_done", "images"):
            out[field] = int(value)
        elif field == "result":
            out[field] = json.loads(value)
        else:
            out[field] = value
    return out


def is_cancelled(job_id: str) -> bool:
    return _redis().hget(_PREFIX + job_id, "state") == "CANCELLED"
