"""The export job on the cluster: plan -> chord of chunks -> assemble.

    cityscapes.export          read and validate the manifest, stage one input per chunk (or,
                               with a run cache, take the run the cache keeps for a chunk whose
                               images are all unchanged: no task runs for it), and replace
                               itself with the chord (the callback inherits the job id)
    cityscapes.export_chunk    draw its images, keep its run of zip entries (in the run cache,
                               else in staging) and stage their records
    cityscapes.export_assemble join the runs into the output zip (S3 multipart: UploadPartCopy
                               of large runs, a kept run only while its ETag is the one seen),
                               write the central directory, clean the staging

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
    in_threads,
    replace_with_chunks,
    start_job,
)
from worker.celery import app
from worker.chunks import chunks_by_work
from worker.cityscapes.archive import CentralDirectory, EntryRecord
from worker.cityscapes.adapters import load_annotations
from worker.cityscapes.manifest import Manifest
from worker.cityscapes.panoptic import PanopticVariant, merge_runs, sorted_lines
from worker.errors import ClientError
from worker.export_steps import (
    ChunkRun,
    ImageJob,
    LazyShapes,
    chunk_input,
    kept_chunk,
    panoptic_run,
    read_chunk_input,
    stage_chunk,
)
from worker.run_cache import RunCache
from worker.specs import ExportSpec, parse_export_spec
from worker.storage import join_url, storage_for

log = logging.getLogger("cityscapes.export")
MAX_WARNINGS_PER_CHUNK = 200


def _copied_url(staging: str) -> str:
    """The results of the chunks the plan copied from the cache."""
    return join_url(staging, "copied.json")


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
    staging = start_job(job_id, "export", spec)
    staging_store = storage_for(staging)
    log.info("planning export of %s", spec.annotations, extra={"job_id": job_id})
    try:
        with tempfile.TemporaryDirectory(prefix="cityscapes-plan-") as workdir:
            path = Path(workdir) / "annotations.json"
            storage_for(spec.annotations).download(spec.annotations, path)
            cache = RunCache(settings.cache_prefix) if settings.cache_prefix and spec.cache else None
            manifest = load_annotations(
                path, workdir, spec.annotations_format, spec.annotations, spec.coco_rle_instances,
                recall=cache.recall_shapes if cache else None)
            if cache is not None and manifest.memo is not None:
                cache.keep_shapes(manifest.images_digest, manifest.memo)
            job = ImageJob.plan(spec, manifest)  # label map and zip paths checked now
            images = manifest.images
            chunks = chunks_by_work([i.width * i.height for i in images], settings.chunk_pixels,
                                    settings.chunk_size)
            copied = _kept_chunks(spec, job, manifest, chunks, staging, cache)
            inputs = ((index, [(images[i], manifest.shapes_of(i)) for i in indices])
                      for index, indices in enumerate(chunks)
                      if index not in copied)  # read here: SQLite, in order
            for _ in in_threads(lambda chunk: _stage_input(spec, manifest.labels, staging, *chunk),
                                inputs):
                pass
            manifest.store.close()
            if job.panoptic is not None:
                variants = [v.to_json() for v in job.panoptic.variants]
                staging_store.write(_panoptic_url(staging), json.dumps(variants).encode())
    except ClientError:
        staging_store.delete_prefix(staging)
        raise
    if copied:  # the assembly reads these chunks' results, which no task of theirs returns
        staging_store.write(_copied_url(staging), json.dumps(list(copied.values())).encode())
    warnings = manifest.warnings + job.job_warnings(spec)
    callback = export_assemble.s(job_id, spec.output, staging, warnings, bool(copied),
                                 spec.panoptic)
    replace_with_chunks(self, export_chunk, len(chunks), len(images), callback, spec.output,
                        staging, list(copied.values()))


def _kept_chunks(spec: ExportSpec, job: ImageJob, manifest: Manifest, chunks: list[list[int]],
                 staging: str, cache: RunCache | None) -> dict[int, dict]:
    """The chunks whose images are all unchanged and whose run the cache keeps: their records
    staged, their results (for the assembly) by chunk. Their shapes are never built: the keys
    need only the digests of their entries."""
    if cache is None:
        return {}

    def refs(index: int, indices: list[int]) -> tuple[int, list[int], list[str]]:
        lazy = [LazyShapes.stored(manifest.store, i) for i in indices]  # SQLite: this thread
        keys = [job.cache_key(manifest.images[i], shapes.identities())
                for i, shapes in zip(indices, lazy)]
        return index, [k for shapes in lazy for k in shapes.indices], keys

    def kept(chunk: tuple[int, list[int], list[str]]) -> dict | None:
        index, shape_indices, keys = chunk
        run = kept_chunk(job, index == 0, shape_indices, keys, cache)
        if run is None:
            return None
        _stage_records(spec, staging, index, run)
        return _chunk_result(index, len(keys), run)

    found = in_threads(kept, (refs(index, indices) for index, indices in enumerate(chunks)))
    return {result["chunk"]: result for result in found if result}


def _stage_input(spec: ExportSpec, labels: list, staging: str, index: int, items: list) -> None:
    """A chunk task's input: its images and their shapes."""
    storage_for(staging).write(chunk_input_url(staging, index),
                               chunk_input(spec, labels, items, index == 0))


def _stage_records(spec: ExportSpec, staging: str, index: int, run: ChunkRun) -> None:
    """What the assembly reads of a chunk's run: its entries' records, and the panoptic
    records of its images when the job asked for them. Both writes overwrite: a chunk delivered
    twice leaves the same objects behind."""
    store = storage_for(staging)
    store.write(chunk_part_url(staging, index, "records.json"),
                json.dumps([r.to_json() for r in run.records]).encode())
    if spec.panoptic:
        store.write(_panoptic_url(staging, index), sorted_lines(run.panoptic))


def _chunk_result(index: int, images: int, run: ChunkRun) -> dict:
    warnings = run.warnings
    if len(warnings) > MAX_WARNINGS_PER_CHUNK:
        extra = len(warnings) - MAX_WARNINGS_PER_CHUNK
        warnings = warnings[:MAX_WARNINGS_PER_CHUNK] + [f"... and {extra} more in this chunk"]
    return {"chunk": index, "size": run.size, "images": images, "objects": run.objects,
            "images_drawn": images - run.images_cached, "images_cached": run.images_cached,
            "run": run.url, "fingerprint": run.fingerprint, **run.counts(),
            "warnings": warnings}


@app.task(name="cityscapes.export_chunk", bind=True, base=ChunkTask)
def export_chunk(self, job_id: str, index: int, staging: str) -> dict:
    if not chunk_may_run(self, job_id, index):
        return {"chunk": index, "cancelled": True}
    store = storage_for(staging)
    spec, job, first, items = read_chunk_input(store.read(chunk_input_url(staging, index)))
    prefix = get_settings().cache_prefix
    cache = RunCache(prefix) if prefix and spec.cache else None
    run = stage_chunk(job, first, items, cache, chunk_part_url(staging, index, "zip-run"))
    _stage_records(spec, staging, index, run)
    if not chunk_finished(job_id, index, len(items), staging):
        return {"chunk": index, "cancelled": True}
    return _chunk_result(index, len(items), run)


@app.task(name="cityscapes.export_assemble", bind=True, base=JobTask)
def export_assemble(self, chunks: list[dict], job_id: str, output: str, staging: str,
                    warnings: list[str], copied: bool = False, panoptic: bool = False) -> dict:
    store = storage_for(staging)
    chunks = chunks_to_assemble(job_id, chunks, staging, (
        lambda: json.loads(store.read(_copied_url(staging)))) if copied else None)
    if chunks is None:
        return {"cancelled": True}
    # The central directory (~110 bytes an entry) goes to a file, then to staging, and is joined
    # like the runs: the assembly holds none of it in memory, however many entries.
    with tempfile.TemporaryFile() as spool:
        directory = CentralDirectory(spool)
        sources, offset = [], 0
        runs = in_threads(
            lambda c: store.read(chunk_part_url(staging, c["chunk"], "records.json")), chunks)
        for chunk, run in zip(chunks, runs):
            directory.add((EntryRecord(**r) for r in json.loads(run)), offset)
            sources.append((chunk["run"], chunk["size"], chunk["fingerprint"]))
            offset += chunk["size"]
        if panoptic:  # the subsets' JSONs, after every image
            url, size, entries = _panoptic_source(staging, chunks)
            directory.add(entries, offset)
            sources.append((url, size, None))
            offset += size
        end = directory.end(offset)
        spool.write(end)
        spool.seek(0)
        store.upload(join_url(staging, "directory"), spool)
        sources.append((join_url(staging, "directory"), directory.size + len(end), None))
    size = storage_for(output).compose(output, sources, b"", join_url(staging, "compose"))
    store.delete_prefix(staging)
    return finish_job(job_id, output, size, chunks, warnings,
                      ("objects", "images_drawn", "images_cached", "bytes_copied", "bytes_moved",
                       "photo_bytes_moved"))


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
