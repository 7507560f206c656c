"""cityscapes-worker: Cityscapes export and import as a job-queue worker."""
