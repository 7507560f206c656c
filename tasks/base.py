"""The base of every job task: sorts expected errors (bad input) from faults worth a retry."""

from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import Ignore

from config.settings import get_settings
from worker import leases, progress
from worker.errors import CityscapesWorkerError, ServerError

log = logging.getLogger("cityscapes.tasks")


class JobTask(Task):
    """A task that runs under its job's id: the plan task and the chord callback (which
    replaces it and inherits its id)."""

    abstract = True
    autoretry_for = (ServerError,)
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5

    def job_id(self, task_id: str, args: tuple) -> str:
        return task_id

    def __call__(self, *args, **kwargs):
        """Run under a lease on a Redis broker (see worker.leases): if the lease was taken over
        while this run went on (its worker stalled), the run that took over reports instead."""
        lease = self._take_lease()
        if lease is None:
            return super().__call__(*args, **kwargs)
        try:
            result = super().__call__(*args, **kwargs)
        except BaseException as exc:
            if not lease.release():
                self.taken_over(args, f"it failed after ({type(exc).__name__})")
                raise Ignore() from None
            raise
        if not lease.release():
            self.taken_over(args, "it finished after")
            raise Ignore()
        return result

    def taken_over(self, args: tuple, how: str) -> None:
        log.warning("task %s: taken over by another worker while it ran (%s); its run reports",
                    self.request.id, how, extra={"job_id": self.job_id(self.request.id, args)})

    def _take_lease(self) -> leases.Lease | None:
        settings = get_settings()
        tag = (getattr(self.request, "properties", None) or {}).get("delivery_tag")
        if self.request.is_eager or settings.broker_is_amqp or not tag:
            return None
        return leases.Lease(progress.redis_client(), tag, settings.lease_seconds)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        job_id = self.job_id(task_id, args)
        message = str(exc) if isinstance(exc, CityscapesWorkerError) else (
            f"unexpected {type(exc).__name__}: {exc}")
        log.error("task %s failed: %s", self.name, message, extra={"job_id": job_id})
        if progress.read(job_id).get("state") not in progress.TERMINAL:
            progress.fail(job_id, message)
        from tasks.lifecycle import job_ended

        job_ended(job_id)


class ChunkTask(JobTask):
    """A chunk of a job: the job id is its first argument."""

    abstract = True

    def job_id(self, task_id: str, args: tuple) -> str:
        return args[0]

    def taken_over(self, args: tuple, how: str) -> None:
        """What this run staged is the other run's to keep, or nobody's once the job ended."""
        from tasks.lifecycle import chunk_too_late

        super().taken_over(args, how)
        job_id, _, staging = args
        chunk_too_late(job_id, staging)
