"""The client a backend (or the CLI) uses: submit, follow, cancel. Jobs are plain JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from config.settings import get_settings
from worker import progress
from worker.errors import NoConsumer
from worker.logs import redact
from worker.specs import parse_export_spec, parse_import_spec


def _app():
    from worker.celery import app

    return app


# A queue seen consumed is not asked about again for this long (a broadcast waits its timeout).
CONSUMERS_SEEN_FOR = 30.0
_consumed_at: dict[str, float] = {}


def consumers(queue: str, timeout: float = 1.0) -> list[str]:
    """The running workers that consume `queue`, by node name (a broadcast to every worker)."""
    replies = _app().control.inspect(timeout=timeout).active_queues() or {}
    return sorted(node for node, queues in replies.items()
                  if any(q.get("name") == queue for q in queues or []))


def require_consumer(queue: str) -> None:
    """Refuse to send a job that no worker would take: it would stay PENDING, unseen."""
    if time.monotonic() - _consumed_at.get(queue, -CONSUMERS_SEEN_FOR) < CONSUMERS_SEEN_FOR:
        return
    if not consumers(queue):
        raise NoConsumer(
            f"no running worker consumes the queue {queue!r}, so the job would wait there"
            f" unseen; start one with `celery -A worker worker -Q {queue}` (or set"
            " CITYSCAPES_QUEUE to the queue the workers consume); not sent"
        )
    _consumed_at[queue] = time.monotonic()


def _send(task: str, payload: dict[str, Any], job_id: str | None, check_workers: bool) -> str:
    queue = get_settings().queue
    if check_workers:
        require_consumer(queue)
    # Flower and the result backend show the arguments as this text: no secrets in it.
    shown = redact(repr(payload))
    return _app().send_task(task, kwargs=payload, task_id=job_id, kwargsrepr=shown,
                            queue=queue).id


def submit_export(spec: dict[str, Any], check_workers: bool = True) -> str:
    """Queue an export; returns the job id at once. The spec is checked here first, and (unless
    `check_workers` is false, for a cluster that starts its workers later) that a running worker
    consumes the queue: NoConsumer otherwise."""
    checked = parse_export_spec(spec)
    payload = checked.model_dump(exclude_none=True)
    return _send("cityscapes.export", payload, checked.job_id, check_workers)


def submit_import(spec: dict[str, Any], check_workers: bool = True) -> str:
    """Queue an import; returns the job id at once (checks as submit_export)."""
    checked = parse_import_spec(spec)
    payload = checked.model_dump(exclude_none=True)
    return _send("cityscapes.import", payload, checked.job_id, check_workers)


def status(job_id: str) -> dict[str, Any]:
    """{state, done, total, images_done, images, result | error}; state PENDING until a worker
    takes the job."""
    state = progress.read(job_id)
    if not state:
        return {"state": "PENDING", "done": 0, "total": 0}
    out = {k: state.get(k, 0) for k in ("state", "done", "total", "images_done", "images")}
    if "result" in state:
        out["result"] = state["result"]
    if state.get("state") in ("FAILURE", "CANCELLED"):
        out["error"] = state.get("error", "")
    return out


def cancel(job_id: str) -> dict[str, Any]:
    """Stop the job's remaining chunks and remove what it staged or half-uploaded."""
    from tasks.lifecycle import revoke_job

    state = progress.read(job_id)
    if state.get("state") in progress.TERMINAL:
        return status(job_id)
    progress.cancel(job_id)
    revoke_job(job_id, state.get("total", 0))
    _app().send_task("cityscapes.cleanup", args=[job_id])
    return status(job_id)


def wait(
    job_id: str,
    timeout: float | None = None,
    poll: float = 0.2,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Block until the job ends (or `timeout` seconds pass); returns its last status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = status(job_id)
        if on_progress:
            on_progress(current)
        if current["state"] in progress.TERMINAL:
            return current
        if deadline is not None and time.monotonic() > deadline:
            return current
        time.sleep(poll)
