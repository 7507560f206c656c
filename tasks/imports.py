"""The import job on the cluster: plan -> chord of chunks -> assemble, each step from
worker.import_steps.

    cityscapes.import          read the zip's central directory (ranged reads), stage one input
                               per chunk of items, replace itself with the chord
    cityscapes.import_chunk    read only its members (ranged reads), trace them, stage its shapes
    cityscapes.import_assemble join head, shapes and tail into the output manifest
"""

from __future__ import annotations

import json
import logging
import zipfile

from config.settings import get_settings
from tasks.base import ChunkTask, JobTask
from tasks.lifecycle import (
    chunk_finished,
    chunk_input_url,
    chunk_may_run,
    chunk_part_url,
    chunks_to_assemble,
    finish_job,
    replace_with_chunks,
    start_job,
)
from worker.celery import app
from worker.chunks import chunks_by_work
from worker.cityscapes.importer import DOCUMENT_TAIL
from worker.cityscapes.reader import open_zip
from worker.import_steps import ImportTally, ItemJob, chunk_input, read_chunk_input
from worker.specs import ImportSpec, parse_import_spec
from worker.storage import join_url, storage_for
from worker.storage.base import Source
from worker.storage.ranged import open_ranged

log = logging.getLogger("cityscapes.import")


def _open_archive(url: str) -> zipfile.ZipFile:
    return open_zip(open_ranged(storage_for(url), url), url)


def _shapes_url(staging: str, number: int) -> str:
    return chunk_part_url(staging, number, "shapes")


def _images_url(staging: str, number: int) -> str:
    return chunk_part_url(staging, number, "images.json")


@app.task(name="cityscapes.import", bind=True, base=JobTask)
def import_(self, **raw_spec):
    job_id = self.request.id
    spec = parse_import_spec(raw_spec)
    staging = start_job(job_id, "import", spec)
    store = storage_for(staging)
    settings = get_settings()
    with _open_archive(spec.archive) as archive:
        job, items = ItemJob.plan(spec, archive)  # a broken label file fails the job now
        work = [sum(archive.getinfo(m).file_size for m in item.members.values()) for item in items]
    chunks = chunks_by_work(work, settings.chunk_bytes, settings.chunk_size)
    for number, indices in enumerate(chunks):
        numbered = [(i + 1, items[i]) for i in indices]
        store.write(chunk_input_url(staging, number), chunk_input(spec, job.label_file, numbered))
    callback = import_assemble.s(job_id, spec.output, staging, spec.model_dump(), job.label_file)
    replace_with_chunks(self, import_chunk, len(chunks), len(items), callback, spec.output, staging)


@app.task(name="cityscapes.import_chunk", bind=True, base=ChunkTask)
def import_chunk(self, job_id: str, number: int, staging: str) -> dict:
    if not chunk_may_run(self, job_id, number):
        return {"chunk": number, "cancelled": True}
    store = storage_for(staging)
    spec, label_file, items = read_chunk_input(store.read(chunk_input_url(staging, number)))
    tally, records = ImportTally(), []
    with _open_archive(spec.archive) as archive:
        job = ItemJob.for_archive(spec, archive, label_file)
        for image_id, item in items:
            run = job.run(archive, item, image_id)
            tally.add(run)
            records.extend(run.records)
    part = ",".join(records).encode()
    store.write(_shapes_url(staging, number), part)
    store.write(_images_url(staging, number), json.dumps(tally.images).encode())
    if not chunk_finished(job_id, number, len(tally.images), staging):
        return {"chunk": number, "cancelled": True}
    return {"chunk": number, "images": len(tally.images), "shapes": tally.shapes,
            "size": len(part), "changed_pixels": tally.changed_pixels,
            "warnings": tally.warnings[:200]}


@app.task(name="cityscapes.import_assemble", bind=True, base=JobTask)
def import_assemble(self, chunks: list[dict], job_id: str, output: str, staging: str,
                    raw_spec: dict, label_file: str | None) -> dict:
    spec = ImportSpec.model_validate(raw_spec)
    chunks = chunks_to_assemble(job_id, chunks, staging)
    if chunks is None:
        return {"cancelled": True}
    store = storage_for(staging)
    images = []
    for chunk in chunks:
        images.extend(json.loads(store.read(_images_url(staging, chunk["chunk"]))))
    with _open_archive(spec.archive) as archive:
        job = ItemJob.for_archive(spec, archive, label_file)
    head = job.head(images)
    store.write(join_url(staging, "head.json"), head.encode())
    store.write(join_url(staging, "comma"), b",")
    sources: list[Source] = [(join_url(staging, "head.json"), len(head.encode()), None)]
    for chunk in (c for c in chunks if c["size"]):
        if len(sources) > 1:
            sources.append((join_url(staging, "comma"), 1, None))
        sources.append((_shapes_url(staging, chunk["chunk"]), chunk["size"], None))
    size = storage_for(output).compose(output, sources, DOCUMENT_TAIL.encode(),
                                       join_url(staging, "compose"))
    store.delete_prefix(staging)
    return finish_job(job_id, output, size, chunks, [], ("shapes", "changed_pixels"))
