"""The export in one process on local files: the CLI's embedded default (no Redis, no S3).

Images are drawn by a pool of forked processes (one per core by default). Each writes the zip
entries it encodes to a spool file of its own and sends back only where they are; the parent
copies them into the archive in image order (in the kernel), so it stays out of the workers' way
and memory stays flat however many images there are.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from worker.cityscapes.archive import ArchiveWriter, EntryRecord
from worker.cityscapes.adapters import load_annotations
from worker.cityscapes.manifest import ImageRecord, ShapeStore
from worker.errors import ClientError
from worker.jobs import ExportSpec
from worker.pipeline import ImageJob, ImageRun
from worker.storage.local import local_path

Progress = Callable[[int, int], None]

@dataclass
class SpooledRun:
    """An image's entries as a pool process left them in its spool file."""

    path: str
    offset: int
    size: int
    records: list[EntryRecord]
    objects: int
    warnings: list[str]


_pool_state: tuple[ImageJob, ShapeStore, BinaryIO] | None = None


def _init_pool(job: ImageJob, store: ShapeStore, spool_dir: str) -> None:
    global _pool_state
    spool = open(os.path.join(spool_dir, f"{os.getpid()}.run"), "wb")
    _pool_state = (job, store, spool)


def _run_one(item: tuple[int, ImageRecord]) -> SpooledRun:
    assert _pool_state is not None
    job, store, spool = _pool_state
    index, image = item
    run = job.encode(image, store.shapes_of(index))
    offset = spool.tell()
    spool.write(run.blob)
    spool.flush()
    return SpooledRun(spool.name, offset, len(run.blob), run.records, run.objects, run.warnings)


def _exports(
    job: ImageJob, store: ShapeStore, images: list[ImageRecord], jobs: int, spool_dir: str
) -> Iterator[ImageRun | SpooledRun]:
    """Each image drawn and encoded, in order; in pool processes when jobs > 1."""
    if jobs <= 1 or len(images) <= 1:
        for index, image in enumerate(images):
            yield job.encode(image, store.shapes_of(index))
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(min(jobs, len(images)), _init_pool, (job, store, spool_dir)) as pool:
        yield from pool.imap(_run_one, enumerate(images), chunksize=1)


def _local_only(location: str) -> str:
    if "://" in location and not location.startswith("file://"):
        raise ClientError(f"{location}: only local paths run in one process; submit s3:// jobs")
    return location


def run_export(spec: ExportSpec, jobs: int | None = None, progress: Progress | None = None) -> dict:
    """Export `spec` on local files; returns the job result of SPEC.md section 2."""
    started = time.perf_counter()
    output = local_path(_local_only(spec.output))
    if spec.images:
        _local_only(spec.images)
    if not output.parent.is_dir():
        raise ClientError(f"output {spec.output}: folder {output.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="cityscapes-export-") as workdir:
        annotations = local_path(_local_only(spec.annotations))
        manifest = load_annotations(
            annotations, workdir, spec.annotations_format,
            coco_rle_instances=spec.coco_rle_instances)
        job = ImageJob.for_spec(spec, manifest.labels)
        warnings = manifest.warnings + job.job_warnings(spec)
        total, objects = len(manifest.images), 0
        with ArchiveWriter(output) as archive:
            archive.add([job.label_color_part()])
            workers = jobs or os.cpu_count() or 1
            results = _exports(job, manifest.store, manifest.images, workers, workdir)
            for done, result in enumerate(results, 1):
                if isinstance(result, SpooledRun):
                    archive.add_spooled(result.path, result.offset, result.size, result.records)
                else:
                    archive.add_run(result.blob, result.records)
                objects += result.objects
                warnings.extend(result.warnings)
                if progress:
                    progress(done, total)
            size = archive.commit()
        manifest.store.close()
    return {
        "output": spec.output,
        "images": total,
        "objects": objects,
        "bytes": size,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }
