"""The import job on the cluster: plan -> chord of chunks -> assemble.

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
    chunks_to_assemble,
    chunk_finished,
    chunk_may_run,
    finish_job,
    replace_with_chunks,
    staging_url,
)
from worker import progress
from worker.celery import app
from worker.chunks import chunks_by_work
from worker.cityscapes.importer import (
    DOCUMENT_TAIL,
    document_head,
    document_records,
    import_item,
    map_onto_task,
)
from worker.cityscapes.reader import (
    Item,
    archive_label_map,
    open_zip,
    read_member,
    scan_archive,
)
from worker.specs import ImportSpec, parse_import_spec
from worker.storage import join_url, storage_for
from worker.storage.ranged import open_ranged

log = logging.getLogger("cityscapes.import")


def _open_archive(url: str) -> zipfile.ZipFile:
    return open_zip(open_ranged(storage_for(url), url), url)


@app.task(name="cityscapes.import", bind=True, base=JobTask)
def import_(self, **raw_spec):
    job_id = self.request.id
    spec = parse_import_spec(raw_spec)
    progress.start(job_id, "import")
    staging = staging_url(spec.output, job_id)
    progress.describe(job_id, output=spec.output, staging=staging,
                      **({"notify_url": spec.notify_url} if spec.notify_url else {}))
    store = storage_for(staging)
    settings = get_settings()
    with _open_archive(spec.archive) as archive:
        index = scan_archive(archive)
        archive_label_map(archive, index.label_file)  # a broken label file fails the job now
        work = [sum(archive.getinfo(m).file_size for m in item.members.values()) for item in index.items]
    chunks = chunks_by_work(work, settings.chunk_bytes, settings.chunk_size)
    for number, indices in enumerate(chunks):
        items = [index.items[i] for i in indices]
        rows = [[i + 1, item.name, item.subset, item.members] for i, item in zip(indices, items)]
        document = {"spec": spec.model_dump(), "label_file": index.label_file, "items": rows}
        store.write(join_url(staging, "in", f"{number:05d}.json"), json.dumps(document).encode())
    callback = import_assemble.s(job_id, spec.output, staging, spec.model_dump(), index.label_file)
    replace_with_chunks(self, import_chunk, len(chunks), len(index.items), callback, spec.output, staging)


@app.task(name="cityscapes.import_chunk", bind=True, base=ChunkTask)
def import_chunk(self, job_id: str, number: int, staging: str) -> dict:
    if not chunk_may_run(self, job_id, number):
        return {"chunk": number, "cancelled": True}
    store = storage_for(staging)
    document = json.loads(store.read(join_url(staging, "in", f"{number:05d}.json")))
    spec = ImportSpec.model_validate(document["spec"])
    images, shapes, warnings, changed = [], [], [], 0
    with _open_archive(spec.archive) as archive:
        label_map = archive_label_map(archive, document["label_file"])
        for image_id, name, subset, members in document["items"]:
            item = Item(name, subset, members)
            files = {kind: read_member(archive, member)
                     for kind, member in members.items()}
            result = import_item(item, files, label_map, spec.shapes, spec.format)
            if spec.labels is not None:
                result = map_onto_task(result, spec.task_labels())
            images.append({"id": image_id, **result.image})
            shapes.extend(document_records(result, image_id, spec.format))
            warnings.extend(result.warnings)
            changed += result.changed_pixels
    part = ",".join(shapes).encode()
    store.write(join_url(staging, "parts", f"{number:05d}.shapes"), part)
    store.write(join_url(staging, "parts", f"{number:05d}.images.json"), json.dumps(images).encode())
    if not chunk_finished(job_id, number, len(images), staging):
        return {"chunk": number, "cancelled": True}
    return {"chunk": number, "images": len(images), "shapes": len(shapes), "size": len(part),
            "changed_pixels": changed, "warnings": warnings[:200]}


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
        images.extend(json.loads(store.read(join_url(staging, "parts", f"{chunk['chunk']:05d}.images.json"))))
    with _open_archive(spec.archive) as archive:
        label_map = archive_label_map(archive, label_file)
    head = document_head(spec.format, label_map, images, spec.task_labels())
    store.write(join_url(staging, "head.json"), head.encode())
    store.write(join_url(staging, "comma"), b",")
    sources: list[tuple[str, int]] = [(join_url(staging, "head.json"), len(head.encode()))]
    for chunk in (c for c in chunks if c["size"]):
        if len(sources) > 1:
            sources.append((join_url(staging, "comma"), 1))
        sources.append((join_url(staging, "parts", f"{chunk['chunk']:05d}.shapes"), chunk["size"]))
    size = storage_for(output).compose(output, sources, DOCUMENT_TAIL.encode(),
                                       join_url(staging, "compose"))
    store.delete_prefix(staging)
    return finish_job(job_id, output, size, chunks, [], ("shapes", "changed_pixels"))
