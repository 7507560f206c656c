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
from tasks.jobs import (
    chunks_to_assemble,
    chunk_finished,
    chunk_may_run,
    finish_job,
    replace_with_chunks,
    staging_url,
)
from worker import progress
from worker.celery import app
from worker.cityscapes.archive import CentralDirectory, EntryRecord, encode_entries, join_runs
from worker.cityscapes.adapters import load_annotations
from worker.cityscapes.panoptic import PanopticVariant, merge_runs, sorted_lines
from worker.errors import ClientError
from worker.jobs import parse_export_spec
from worker.pipeline import ImageJob, chunk_input, chunks_by_work, panoptic_run, read_chunk_input
from worker.run_cache import RunCache
from worker.storage import join_url, storage_for

log = logging.getLogger("cityscapes.export")
MAX_WARNINGS_PER_CHUNK = 200


def _input_url(staging: str, index: int) -> str:
    return join_url(staging, "in", f"{index:05d}.json")


def _part_url(staging: str, index: int) -> str:
    return join_url(staging, "parts", f"{index:05d}.zip-run")


def _records_url(staging: str, index: int) -> str:
    return join_url(staging, "parts", f"{index:05d}.records.json")


def _panoptic_url(staging: str, index: int | None = None) -> str:
    """The job's panoptic categories (None), or a chunk's images' records, sorted."""
    if index is None:
        return join_url(staging, "panoptic.json")
    return join_url(staging, "parts", f"{index:05d}.panoptic.jsonl")


@app.task(name="cityscapes.export", bind=True, base=JobTask)
def export(self, **raw_spec):
    job_id = self.request.id
    spec = parse_export_spec(raw_spec)
    settings = get_settings()
    progress.start(job_id, "export")
    staging = staging_url(spec.output, job_id)
    progress.describe(job_id, output=spec.output, staging=staging,
                      **({"notify_url": spec.notify_url} if spec.notify_url else {}))
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
            if job.panoptic is not None:
                variants = [v.to_json() for v in job.panoptic.variants]
                staging_store.write(_panoptic_url(staging), json.dumps(variants).encode())
    except ClientError:
        staging_store.delete_prefix(staging)
        raise
    warnings = manifest.warnings + job.job_warnings(spec)
    callback = export_assemble.s(job_id, spec.output, staging, warnings, spec.panoptic)
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
    objects, cached, warnings, panoptic = 0, 0, [], []
    for image, shapes in items:
        result = job.encode(image, shapes, cache)
        runs.append((result.blob, result.records))
        if result.panoptic is not None:
            panoptic.append(result.panoptic)
        objects += result.objects
        cached += result.cached
        warnings.extend(result.warnings)
    blob, records = join_runs(runs)
    # Both writes overwrite: a chunk delivered twice leaves the same objects behind.
    store.write(_part_url(staging, index), blob)
    store.write(_records_url(staging, index), json.dumps([r.to_json() for r in records]).encode())
    if spec.panoptic:
        store.write(_panoptic_url(staging, index), sorted_lines(panoptic))
    if not chunk_finished(job_id, index, len(items), staging):
        return {"chunk": index, "cancelled": True}
    if len(warnings) > MAX_WARNINGS_PER_CHUNK:
        extra = len(warnings) - MAX_WARNINGS_PER_CHUNK
        warnings = warnings[:MAX_WARNINGS_PER_CHUNK] + [f"... and {extra} more in this chunk"]
    return {"chunk": index, "size": len(blob), "images": len(items), "objects": objects,
            "images_drawn": len(items) - cached, "images_cached": cached, "warnings": warnings}


@app.task(name="cityscapes.export_assemble", bind=True, base=JobTask)
def export_assemble(self, chunks: list[dict], job_id: str, output: str, staging: str,
                    warnings: list[str], panoptic: bool = False) -> dict:
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
        if panoptic:  # the subsets' JSONs, after every image
            url, size, entries = _panoptic_source(staging, chunks)
            directory.add(entries, offset)
            sources.append((url, size))
            offset += size
        end = directory.end(offset)
        spool.write(end)
        spool.seek(0)
        store.upload(join_url(staging, "directory"), spool)
        sources.append((join_url(staging, "directory"), directory.size + len(end)))
    size = storage_for(output).compose(output, sources, b"", join_url(staging, "compose"))
    store.delete_prefix(staging)
    return finish_job(job_id, output, size, chunks, warnings,
                      ("objects", "images_drawn", "images_cached"))


def _panoptic_source(staging: str, chunks: list[dict]) -> tuple[str, int, list[EntryRecord]]:
    """The panoptic JSONs as a staged run: the chunks' sorted records merged from local copies
    (memory holds a record per chunk), streamed into the entries. (url, size, entries)"""
    store = storage_for(staging)
    variants = tuple(PanopticVariant.from_json(v) for v in json.loads(
        store.read(_panoptic_url(staging))))
    with tempfile.TemporaryDirectory(prefix="cityscapes-panoptic-") as workdir:
        runs = []
        for chunk in chunks:
            run = Path(workdir) / f"{chunk['chunk']:05d}.jsonl"
            store.download(_panoptic_url(staging, chunk["chunk"]), run)
            runs.append(str(run))
        path = str(Path(workdir) / "panoptic.run")
        size, entries = panoptic_run(variants, merge_runs(runs, workdir), path)
        with open(path, "rb") as run:
            store.upload(join_url(staging, "panoptic.zip-run"), run)
    return join_url(staging, "panoptic.zip-run"), size, entries
