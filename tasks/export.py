"""The export job on the cluster: plan -> chord of chunks -> assemble.

    cityscapes.export          read and validate the manifest, stage one input per chunk, and
                               replace itself with the chord (the callback inherits the job id)
    cityscapes.export_chunk    draw its images, stage its run of zip entries and their records
    cityscapes.export_assemble join the runs into the output zip (S3 multipart: UploadPartCopy
                               of large runs), write the central directory, clean the staging
    cityscapes.export_failed   errback: record the failure, abort uploads, clean the staging

Only keys, counts and warnings cross the broker.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile
from pathlib import Path

from celery import chord, group

from config.settings import get_settings
from tasks.base import ChunkTask, JobTask
from worker import progress
from worker.celery import app
from worker.cityscapes.archive import (
    EntryRecord,
    central_directory,
    encode_entries,
    join_runs,
    rebase,
)
from worker.cityscapes.manifest import read_manifest
from worker.errors import ClientError
from worker.jobs import parse_export_spec
from worker.pipeline import ImageJob, chunk_input, read_chunk_input
from worker.storage import join_url, storage_for
from worker.storage.s3 import split_url

log = logging.getLogger("cityscapes.export")
MAX_WARNINGS_PER_CHUNK = 200


def staging_url(output: str, job_id: str) -> str:
    """Where a job's chunks wait: beside the output (same bucket, so S3 can copy in place)."""
    if output.startswith("s3://"):
        bucket, _ = split_url(output)
        return f"s3://{bucket}/{get_settings().staging_prefix}{job_id}"
    return join_url(posixpath.dirname(output) or ".", ".cityscapes-staging", job_id)


def chunk_id(job_id: str, index: int) -> str:
    return f"{job_id}-chunk-{index:05d}"


def _input_url(staging: str, index: int) -> str:
    return join_url(staging, "in", f"{index:05d}.json")


def _part_url(staging: str, index: int) -> str:
    return join_url(staging, "parts", f"{index:05d}.zip-run")


def _records_url(staging: str, index: int) -> str:
    return join_url(staging, "parts", f"{index:05d}.records.json")


@app.task(name="cityscapes.export", bind=True, base=JobTask)
def export(self, **raw_spec):
    job_id = self.request.id
    spec = parse_export_spec(raw_spec)
    settings = get_settings()
    progress.start(job_id, "export")
    staging = staging_url(spec.output, job_id)
    progress.describe(job_id, output=spec.output, staging=staging)
    staging_store = storage_for(staging)
    log.info("planning export of %s", spec.annotations, extra={"job_id": job_id})
    try:
        with tempfile.TemporaryDirectory(prefix="cityscapes-plan-") as workdir:
            path = Path(workdir) / "annotations.json"
            storage_for(spec.annotations).download(spec.annotations, path)
            manifest = read_manifest(path, workdir)
            job = ImageJob.for_spec(spec, manifest.labels)  # validates the label map now
            images = manifest.images
            size = settings.chunk_size
            chunks = [range(start, min(start + size, len(images))) for start in range(0, len(images), size)]
            for index, indices in enumerate(chunks):
                items = [(images[i], manifest.shapes_of(i)) for i in indices]
                staging_store.write(
                    _input_url(staging, index), chunk_input(spec, manifest.labels, items, index == 0)
                )
            manifest.store.close()
    except ClientError:
        staging_store.delete_prefix(staging)
        raise
    header = group(
        export_chunk.si(job_id, index, staging).set(task_id=chunk_id(job_id, index))
        for index in range(len(chunks))
    )
    callback = export_assemble.s(job_id, spec.output, staging, job.job_warnings(spec)).on_error(
        export_failed.s(job_id, spec.output, staging)
    )
    progress.planned(job_id, len(chunks), len(images))
    log.info("%d images in %d chunks", len(images), len(chunks), extra={"job_id": job_id})
    raise self.replace(chord(header, callback))


@app.task(name="cityscapes.export_chunk", bind=True, base=ChunkTask)
def export_chunk(self, job_id: str, index: int, staging: str) -> dict:
    if progress.is_cancelled(job_id):
        return {"chunk": index, "cancelled": True}
    store = storage_for(staging)
    spec, job, first, items = read_chunk_input(store.read(_input_url(staging, index)))
    runs = [encode_entries([job.label_color_part()])] if first else []
    objects, warnings = 0, []
    for image, shapes in items:
        result = job.encode(image, shapes)
        runs.append((result.blob, result.records))
        objects += result.objects
        warnings.extend(result.warnings)
    blob, records = join_runs(runs)
    # Both writes overwrite: a chunk delivered twice leaves the same objects behind.
    store.write(_part_url(staging, index), blob)
    store.write(_records_url(staging, index), json.dumps([r.to_json() for r in records]).encode())
    if progress.is_cancelled(job_id):  # cancelled while drawing: leave nothing behind
        store.delete_prefix(join_url(staging, "parts"))
        return {"chunk": index, "cancelled": True}
    progress.chunk_done(job_id, index, len(items))
    if len(warnings) > MAX_WARNINGS_PER_CHUNK:
        extra = len(warnings) - MAX_WARNINGS_PER_CHUNK
        warnings = warnings[:MAX_WARNINGS_PER_CHUNK] + [f"... and {extra} more in this chunk"]
    return {"chunk": index, "size": len(blob), "images": len(items), "objects": objects,
            "warnings": warnings}


@app.task(name="cityscapes.export_assemble", bind=True, base=JobTask)
def export_assemble(self, chunks: list[dict], job_id: str, output: str, staging: str,
                    warnings: list[str]) -> dict:
    store = storage_for(staging)
    if progress.is_cancelled(job_id) or any(c.get("cancelled") for c in chunks):
        store.delete_prefix(staging)
        return {"cancelled": True}
    chunks = sorted(chunks, key=lambda c: c["chunk"])
    records: list[EntryRecord] = []
    sources, offset = [], 0
    for chunk in chunks:
        run = json.loads(store.read(_records_url(staging, chunk["chunk"])))
        records.extend(rebase([EntryRecord(**r) for r in run], offset))
        sources.append((_part_url(staging, chunk["chunk"]), chunk["size"]))
        offset += chunk["size"]
    size = storage_for(output).compose(output, sources, central_directory(records, offset))
    store.delete_prefix(staging)
    result = {
        "output": output,
        "images": sum(c["images"] for c in chunks),
        "objects": sum(c["objects"] for c in chunks),
        "bytes": size,
        "warnings": warnings + [w for c in chunks for w in c["warnings"]],
    }
    progress.finish(job_id, result)
    log.info("wrote %s (%d bytes)", output, size, extra={"job_id": job_id})
    return result


@app.task(name="cityscapes.export_failed")
def export_failed(request, exc, traceback, job_id: str, output: str, staging: str) -> None:
    """Errback of the chord: nothing half-written stays behind."""
    log.error("failed: %s", exc, extra={"job_id": job_id})
    if progress.read(job_id).get("state") not in progress.TERMINAL:
        progress.fail(job_id, str(exc))
    discard_job_files(output, staging)


def discard_job_files(output: str, staging: str) -> None:
    storage_for(output).abort_uploads(output)
    storage_for(staging).delete_prefix(staging)


@app.task(name="cityscapes.cleanup")
def cleanup(job_id: str) -> dict:
    """Remove what a cancelled job left behind."""
    state = progress.read(job_id)
    if "output" in state and "staging" in state:
        discard_job_files(state["output"], state["staging"])
    return {"job_id": job_id, "cleaned": True}
