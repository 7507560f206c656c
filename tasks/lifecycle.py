"""What every job shares: where it stages its chunks, what its chunks are called, and how it
fails or is cancelled without leaving anything behind."""

from __future__ import annotations

import logging
import posixpath
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from celery import Signature, Task, chord, current_task, group

from config.settings import get_settings
from worker import progress
from worker.celery import app
from worker.errors import IncompleteJob, PoisonChunk
from worker.specs import ExportSpec, ImportSpec
from worker.storage import join_url, storage_for
from worker.storage.s3 import split_url
from worker.webhook import WebhookRefused, allowed_hosts, check_url, payload, post

log = logging.getLogger("cityscapes.jobs")
T = TypeVar("T")
R = TypeVar("R")


def staging_url(output: str, job_id: str) -> str:
    """Where a job's chunks wait: beside the output (same bucket, so S3 can copy in place)."""
    if output.startswith("s3://"):
        bucket, _ = split_url(output)
        return f"s3://{bucket}/{get_settings().staging_prefix}{job_id}"
    return join_url(posixpath.dirname(output) or ".", ".cityscapes-staging", job_id)


def in_threads(work: Callable[[T], R], items: Iterable[T], threads: int = 8) -> Iterator[R]:
    """work(item) for each item, in order, `threads` at a time (storage calls, which wait on the
    network); items are taken from `items` in this thread, and at most twice `threads` results
    are held ahead, so memory does not grow with the job."""
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) > 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def start_job(job_id: str, kind: str, spec: ExportSpec | ImportSpec) -> str:
    """The job's progress begun ("export" or "import") with what a cancel or a webhook needs to
    know; returns where its chunks will stage."""
    progress.start(job_id, kind)
    staging = staging_url(spec.output, job_id)
    progress.describe(job_id, output=spec.output, staging=staging,
                      **({"notify_url": spec.notify_url} if spec.notify_url else {}))
    return staging


def chunk_id(job_id: str, index: int) -> str:
    return f"{job_id}-chunk-{index:05d}"


def chunk_input_url(staging: str, index: int) -> str:
    """What the plan staged for one chunk."""
    return join_url(staging, "in", f"{index:05d}.json")


def chunk_part_url(staging: str, index: int, suffix: str) -> str:
    """What one chunk staged for the assembly (removed with "parts" by chunk_too_late)."""
    return join_url(staging, "parts", f"{index:05d}.{suffix}")


def replace_with_chunks(
    plan: Task, chunk_task: Task, chunks: int, images: int, callback: Signature,
    output: str, staging: str, done: list[dict] | None = None,
) -> None:
    """Replace the plan task with the chord of its chunks, but those `done` already (their
    results), which are counted now; the callback inherits the job id (and runs at once when
    no chunk is left)."""
    job_id = plan.request.id
    done = done or []
    finished = {result["chunk"] for result in done}
    header = group(
        chunk_task.si(job_id, number, staging).set(task_id=chunk_id(job_id, number))
        for number in range(chunks) if number not in finished
    )
    progress.planned(job_id, chunks, images)
    for result in done:
        progress.chunk_done(job_id, result["chunk"], result["images"])
    state = progress.read(job_id)
    announce(job_id, "task-progress", result=progress_text({**state, "total": chunks}))
    log.info("%d images in %d chunks (%d copied from the cache)", images, chunks, len(done),
             extra={"job_id": job_id})
    on_error = job_failed.s(job_id, output, staging)
    if len(finished) == chunks:
        raise plan.replace(callback.clone(args=([],)).on_error(on_error))  # args go first
    raise plan.replace(chord(header, callback.on_error(on_error)))


def chunk_may_run(task: Task, job_id: str, number: int) -> bool:
    """A chunk starts: False if its job was stopped. A chunk whose worker died while running it
    (out of memory, a crash in a library) comes back; after CITYSCAPES_MAX_DELIVERIES such
    deliveries the job fails instead of taking down worker after worker."""
    if not progress.check_in(job_id):
        return False
    deliveries = progress.delivery(job_id, number, task.request.retries)
    limit = get_settings().max_deliveries
    if deliveries > limit:
        raise PoisonChunk(
            f"chunk {number}: its worker died each of the {limit} times it ran it (out of"
            " memory, or a crash in a library?); not run again"
        )
    return True


def announce(job_id: str, event: str, **fields: str) -> None:
    """A task event for the job's own task (its id is the job id): Flower reads events, not our
    progress, and shows an event type it does not know as the task's state (task-progress:
    PROGRESS). Never fails the caller: events are for watching."""
    task = current_task
    hostname = task.request.hostname if task and task.request.hostname else None
    try:
        with app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(event, uuid=job_id, **fields)
    except Exception as exc:  # noqa: BLE001 - the broker may be away; progress stays in Redis
        log.warning("event %s not sent: %s", event, exc, extra={"job_id": job_id})


def progress_text(state: dict) -> str:
    return (f"chunks {state.get('done', 0)}/{state.get('total', 0)},"
            f" images {state.get('images_done', 0)}/{state.get('images', 0)}")


def chunk_too_late(job_id: str, staging: str) -> bool:
    """True if the job was stopped or has ended while a chunk ran (a run that lost its lease,
    see worker.leases, may end after the run that took over and the assembly); what chunks
    staged is then removed (a cleanup may already have passed)."""
    if progress.read(job_id).get("state") in progress.TERMINAL:
        storage_for(staging).delete_prefix(join_url(staging, "parts"))
        return True
    return False


def chunk_finished(job_id: str, number: int, images: int, staging: str) -> bool:
    """Count a chunk's images, unless it came too late (chunk_too_late); says which."""
    if chunk_too_late(job_id, staging):
        return False
    progress.chunk_done(job_id, number, images)
    announce(job_id, "task-progress", result=progress_text(progress.read(job_id)))
    return True


def chunks_to_assemble(job_id: str, chunks: list[dict], staging: str,
                       more: Callable[[], list[dict]] | None = None) -> list[dict] | None:
    """The chord's chunk results, with `more()` (results no chunk task returned, read only
    while the job runs), one per chunk in order; None when the job was stopped (its staging is
    then removed). A chunk delivered twice counts once; a chunk missing (the chord fired early)
    fails the job rather than writing an incomplete output."""
    if not progress.check_in(job_id) or any(c.get("cancelled") for c in chunks):
        storage_for(staging).delete_prefix(staging)
        return None
    if more is not None:
        chunks = chunks + more()
    by_number = {c["chunk"]: c for c in chunks}
    total = progress.read(job_id).get("total", len(by_number))
    missing = sorted(set(range(total)) - set(by_number))
    if missing:
        raise IncompleteJob(f"chunks {missing[:10]} of {total} never reported; nothing was written")
    return [by_number[n] for n in range(total)]


def finish_job(job_id: str, output: str, size: int, chunks: list[dict], warnings: list[str],
               counted: tuple[str, ...]) -> dict:
    """The job's result from its chunks' counts, recorded as its progress' last state."""
    result = {
        "output": output,
        **{name: sum(c[name] for c in chunks) for name in ("images", *counted)},
        "bytes": size,
        "warnings": warnings + [w for c in chunks for w in c["warnings"]],
    }
    progress.finish(job_id, result)
    job_ended(job_id)
    log.info("wrote %s (%d bytes)", output, size, extra={"job_id": job_id})
    return result


def job_ended(job_id: str) -> None:
    """The job reached SUCCESS, FAILURE or CANCELLED: queue its webhook, if it asked for one,
    once however many of its tasks report the end."""
    if progress.read(job_id).get("notify_url") and progress.claim_notification(job_id):
        app.send_task("cityscapes.notify", args=[job_id], queue=get_settings().queue)


@app.task(name="cityscapes.notify", bind=True, max_retries=6)
def notify(self: Task, job_id: str) -> str:
    """POST the job's status to its notify_url, signed; retried with backoff while the backend
    is away or answers 5xx. A separate task: it neither delays nor fails the job."""
    from worker.client import status

    settings = get_settings()
    url = progress.read(job_id).get("notify_url", "")
    try:
        check_url(url, allowed_hosts(settings.webhook_hosts))
    except WebhookRefused as exc:
        log.warning("%s", exc, extra={"job_id": job_id})
        return f"refused: {exc}"
    body = payload(status(job_id), job_id)
    try:
        answer: int | OSError = post(url, body, settings.webhook_secret, settings.webhook_timeout)
    except OSError as exc:
        answer = exc
    if isinstance(answer, int) and (answer < 400 or (answer < 500 and answer not in (408, 429))):
        log.info("webhook answered %d", answer, extra={"job_id": job_id})
        return f"answered {answer}"
    log.warning("webhook not delivered (%s); retrying", answer, extra={"job_id": job_id})
    raise self.retry(countdown=min(60, 2 ** self.request.retries))


@app.task(name="cityscapes.job_failed")
def job_failed(request, exc, traceback, job_id: str, output: str, staging: str) -> None:
    """Errback of the chord: nothing half-written stays behind."""
    log.error("failed: %s", exc, extra={"job_id": job_id})
    if progress.read(job_id).get("state") not in progress.TERMINAL:
        progress.fail(job_id, str(exc))
    # The chord's callback (the job's own task) never ran: say how the job ended.
    state = progress.read(job_id)
    announce(job_id, "task-failed", exception=state.get("error", str(exc)))
    job_ended(job_id)
    discard_job_files(output, staging)


def discard_job_files(output: str, staging: str) -> None:
    storage_for(output).abort_uploads(output)
    storage_for(staging).delete_prefix(staging)


def revoke_job(job_id: str, chunks: int) -> None:
    """Tell every worker to drop the job's tasks still queued."""
    app.control.revoke([job_id] + [chunk_id(job_id, n) for n in range(chunks)])


@app.task(name="cityscapes.cleanup")
def cleanup(job_id: str) -> dict:
    """Remove what a cancelled job left behind."""
    state = progress.read(job_id)
    if "output" in state and "staging" in state:
        discard_job_files(state["output"], state["staging"])
    if state.get("state") in progress.TERMINAL:
        job_ended(job_id)
    return {"job_id": job_id, "cleaned": True}


@app.task(name="cityscapes.reap")
def reap(sent_at: float | None = None) -> list[str]:
    """Fail the jobs that showed no sign of life for CITYSCAPES_STUCK_AFTER seconds (a chunk
    lost, its workers gone for good) and remove what they staged or half-uploaded. Workers send
    this task every CITYSCAPES_REAP_INTERVAL seconds, one of them at a time.

    Silence is counted up to `sent_at`, when this check was queued: it waits in the queue behind
    the chunks queued before it, so by the time it runs those have started (a sign of life) or
    are lost, while jobs planned after it was queued are not judged by it. A backlog thus delays
    the check instead of making healthy jobs look stuck."""
    quiet = get_settings().stuck_after
    cutoff = (time.time() if sent_at is None else sent_at) - quiet
    reaped = []
    for job_id in progress.quiet_before(cutoff):
        state = progress.read(job_id)
        if state.get("state") in progress.TERMINAL or not state:
            progress.forget(job_id)
            continue
        message = (f"stuck: no progress for {quiet} s (a chunk was lost or its workers are gone);"
                   " failed by the reaper")
        progress.fail(job_id, message)
        job_ended(job_id)
        revoke_job(job_id, state.get("total", 0))
        if "output" in state and "staging" in state:
            discard_job_files(state["output"], state["staging"])
        log.error(message, extra={"job_id": job_id})
        reaped.append(job_id)
    return reaped
