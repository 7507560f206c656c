"""The base of every job task: sorts expected errors (bad input) from faults worth a retry."""

from __future__ import annotations

import logging

from celery import Task

from worker import progress
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

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        job_id = self.job_id(task_id, args)
        message = str(exc) if isinstance(exc, CityscapesWorkerError) else (
            f"unexpected {type(exc).__name__}: {exc}")
        log.error("task %s failed: %s", self.name, message, extra={"job_id": job_id})
        if progress.read(job_id).get("state") not in progress.TERMINAL:
            progress.fail(job_id, message)
        from tasks.jobs import job_ended

        job_ended(job_id)


class ChunkTask(JobTask):
    """A chunk of a job: the job id is its first argument."""

    abstract = True

    def job_id(self, task_id: str, args: tuple) -> str:
        return args[0]
