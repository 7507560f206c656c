"""The export in one process on local files: the CLI's embedded default (no Redis, no S3).

Images are drawn by a pool of forked processes (one per core by default); the parent streams
their parts into the archive in image order, so memory stays flat however many images there are.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from typing import Callable, Iterator

from worker.cityscapes.archive import ArchiveWriter
from worker.cityscapes.export import ImageExport
from worker.cityscapes.manifest import ImageRecord, ShapeStore, read_manifest
from worker.errors import ClientError
from worker.jobs import ExportSpec
from worker.pipeline import ImageJob
from worker.storage.local import local_path

Progress = Callable[[int, int], None]

_pool_state: tuple[ImageJob, ShapeStore] | None = None


def _init_pool(job: ImageJob, store: ShapeStore) -> None:
    global _pool_state
    _pool_state = (job, store)


def _run_one(item: tuple[int, ImageRecord]) -> ImageExport:
    assert _pool_state is not None
    job, store = _pool_state
    index, image = item
    return job.run(image, store.shapes_of(index))


def _exports(job: ImageJob, store: ShapeStore, images: list[ImageRecord], jobs: int) -> Iterator[ImageExport]:
    if jobs <= 1 or len(images) <= 1:
        for index, image in enumerate(images):
            yield job.run(image, store.shapes_of(index))
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(min(jobs, len(images)), _init_pool, (job, store)) as pool:
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
        manifest = read_manifest(local_path(_local_only(spec.annotations)), workdir)
        job = ImageJob.for_spec(spec, manifest.labels)
        warnings = job.job_warnings(spec)
        total, objects = len(manifest.images), 0
        with ArchiveWriter(output) as archive:
            archive.add([job.label_color_part()])
            results = _exports(job, manifest.store, manifest.images, jobs or os.cpu_count() or 1)
            for done, result in enumerate(results, 1):
                archive.add(result.parts)
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
