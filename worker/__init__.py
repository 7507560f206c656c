"""cityscapes-worker: Cityscapes export and import as a job-queue worker."""

from worker.runtime import tune_process

tune_process()
