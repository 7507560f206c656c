"""The export job on the cluster: plan -> chord of chunks -> assemble.

    cityscapes.export          read and validate the manifest, stage one input per chunk, and
                               replace itself with the chord (the callback inherits the job id)
    cityscapes.export_chunk    draw its images, stage its run of zip entries and their records
    cityscapes.export_assemble join the runs into the output zip (S3 multipart: UploadPartCopy
                               of large runs), write the central directory, clean the staging

Only keys, counts and warnings cross the broker.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from config.settings import get_settings
from tasks.base import ChunkTask, JobTask
from tasks.lifecycle import (
    chunks_to_assemble,
    chunk_finished,
    chunk_input_url,
    chunk_may_run,
    chunk_part_url,
    finish_job,
    replace_with_chunks,
    start_job,
)
from worker.celery import app
from worker.chunks import chunks_by_work
from worker.cityscapes.archive import CentralDirectory, EntryRecord, encode_entries, join_runs
from worker.cityscapes.adapters import load_annotations
from worker.errors import ClientError
from worker.export_steps import ImageJob, chunk_input, read_chunk_input
from worker.run_cache import RunCache
from worker.specs import parse_export_spec
from worker.storage import join_url, storage_for

log = logging.getLogger("cityscapes.export")
MAX_WARNINGS_PER_CHUNK = 200


def _input_url(staging: str, index: int) -> str:
    return chunk_input_url(staging, index)


def _part_url(staging: str, index: int) -> str:
    return chunk_part_url(staging, index, "zip-run")


def _records_url(staging: str, index: int) -> str:
    return chunk_part_url(staging, index, "records.json")


@app.task(name="cityscapes.export", bind=True, base=JobTask)
def export(self, **raw_spec):
    job_id = self.request.id
    spec = parse_export_spec(raw_spec)
    settings = get_settings()
    staging = start_job(job_id, "export", spec)
    staging_store = storage_for(staging)
    log.info("planning export of %s", spec.annotations, extra={"job_id": job_id})
    try:
        with tempfile.TemporaryDirectory(prefix="cityscapes-plan-") as workdir:
            path = Path(workdir) / "annotations.json"
            storage_for(spec.annotations).download(spec.annotations, path)
            manifest = load_annotations(
                path, workdir, spec.annotations_format, spec.annotations, spec.coco_rle_instances)
            job = ImageJob.plan(spec, manifest)  # label map and zip paths checked now
            images = manifest.images
            chunks = chunks_by_work([i.width * i.height for i in images], settings.chunk_pixels,
                                    settings.chunk_size)
            for index, indices in enumerate(chunks):
                items = [(images[i], manifest.shapes_of(i)) for i in indices]
                staging_store.write(
                    _input_url(staging, index), chunk_input(spec, manifest.labels, items, index == 0)
                )
            manifest.store.close()
    except ClientError:
        staging_store.delete_prefix(staging)
        raise
    warnings = manifest.warnings + job.job_warnings(spec)
    callback = export_assemble.s(job_id, spec.output, staging, warnings)
    replace_with_chunks(self, export_chunk, len(chunks), len(images), callback, spec.output, staging)


@app.task(name="cityscapes.export_chunk", bind=True, base=ChunkTask)
def export_chunk(self, job_id: str, index: int, staging: str) -> dict:
    if not chunk_may_run(self, job_id, index):
        return {"chunk": index, "cancelled": True}
    store = storage_for(staging)
    spec, job, first, items = read_chunk_input(store.read(_input_url(staging, index)))
    prefix = get_settings().cache_prefix
    cache = RunCache(prefix) if prefix and spec.cache else None
    runs = [encode_entries([job.label_color_part()])] if first else []
    objects, cached, warnings = 0, 0, []
    for image, shapes in items:
        result = job.encode(image, shapes, cache)
        runs.append((result.blob, result.records))
        objects += result.objects
        cached += result.cached
        warnings.extend(result.warnings)
    blob, records = join_runs(runs)
    # Both writes overwrite: a chunk delivered twice leaves the same objects behind.
    store.write(_part_url(staging, index), blob)
    store.write(_records_url(staging, index), json.dumps([r.to_json() for r in records]).encode())
    if not chunk_finished(job_id, index, len(items), staging):
        return {"chunk": index, "cancelled": True}
    if len(warnings) > MAX_WARNINGS_PER_CHUNK:
        extra = len(warnings) - MAX_WARNINGS_PER_CHUNK
        warnings = warnings[:MAX_WARNINGS_PER_CHUNK] + [f"... and {extra} more in this chunk"]
    return {"chunk": index, "size": len(blob), "images": len(items), "objects": objects,
            "images_drawn": len(items) - cached, "images_cached": cached, "warnings": warnings}


@app.task(name="cityscapes.export_assemble", bind=True, base=JobTask)
def export_assemble(self, chunks: list[dict], job_id: str, output: str, staging: str,
                    warnings: list[str]) -> dict:
    chunks = chunks_to_assemble(job_id, chunks, staging)
    if chunks is None:
        return {"cancelled": True}
    store = storage_for(staging)
    # The central directory (~110 bytes an entry) goes to a file, then to staging, and is joined
    # like the runs: the assembly holds none of it in memory, however many entries.
    with tempfile.TemporaryFile() as spool:
        directory = CentralDirectory(spool)
        sources, offset = [], 0
        for chunk in chunks:
            run = json.loads(store.read(_records_url(staging, chunk["chunk"])))
            directory.add((EntryRecord(**r) for r in run), offset)
            sources.append((_part_url(staging, chunk["chunk"]), chunk["size"]))
            offset += chunk["size"]
        end = directory.end(offset)
        spool.write(end)
        spool.seek(0)
        store.upload(join_url(staging, "directory"), spool)
        sources.append((join_url(staging, "directory"), directory.size + len(end)))
    size = storage_for(output).compose(output, sources, b"", join_url(staging, "compose"))
    store.delete_prefix(staging)
    return finish_job(job_id, output, size, chunks, warnings,
                      ("objects", "images_drawn", "images_cached"))
