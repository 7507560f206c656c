"""The client a backend (or the CLI) uses: submit, follow, cancel. Jobs are plain JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from worker import progress
from worker.logs import redact
from worker.jobs import parse_export_spec, parse_import_spec


def _app():
    from worker.celery import app

    return app


def _send(task: str, payload: dict[str, Any], job_id: str | None) -> str:
    # Flower and the result backend show the arguments as this text: no secrets in it.
    shown = redact(repr(payload))
    return _app().send_task(task, kwargs=payload, task_id=job_id, kwargsrepr=shown).id


def submit_export(spec: dict[str, Any]) -> str:
    """Queue an export; returns the job id at once. The spec is checked here first."""
    checked = parse_export_spec(spec)
    payload = checked.model_dump(exclude_none=True)
    return _send("cityscapes.export", payload, checked.job_id)


def submit_import(spec: dict[str, Any]) -> str:
    """Queue an import; returns the job id at once."""
    checked = parse_import_spec(spec)
    payload = checked.model_dump(exclude_none=True)
    return _send("cityscapes.import", payload, checked.job_id)


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
    from tasks.jobs import revoke_job

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
