"""The export in one process on local files: the CLI's embedded default (no Redis, no S3).

Images are drawn by a pool of forked processes (one per core by default, at most one per core
and per image). Each writes the zip entries it encodes to a spool file of its own and sends back
only where they are; the parent copies them into the archive in image order (in the kernel), so
it stays out of the workers' way and memory stays flat however many images there are.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import BinaryIO

from worker.chunks import chunks_by_work
from worker.cityscapes.archive import ArchiveWriter, EntryRecord
from worker.cityscapes.adapters import load_annotations
from worker.cityscapes.manifest import ImageRecord, ShapeStore
from worker.cityscapes.panoptic import RecordSpool
from worker.errors import ClientError
from worker.export_steps import ExportTally, ImageJob, ImageRun, LazyShapes, panoptic_run
from worker.local_pool import ordered_map, pool_size
from worker.run_cache import RunCache
from worker.specs import ExportSpec
from worker.storage import join_url
from worker.storage.local import local_path, output_path, regular_input, staged_output

Progress = Callable[[int, int], None]
GROUP_PIXELS, GROUP_IMAGES = 2048 * 1024, 256  # work handed to a pool process at a time

@dataclass
class SpooledRun:
    """An image's entries as a pool process left them in its spool file."""

    path: str
    offset: int
    size: int
    records: list[EntryRecord]
    objects: int
    warnings: list[str]
    panoptic: dict | None
    cached: bool


_pool_state: tuple[ImageJob, ShapeStore, BinaryIO | None, RunCache | None] | None = None


def _init_pool(job: ImageJob, store: ShapeStore, spool_dir: str | None, cache: str | None) -> None:
    global _pool_state
    spool = open(os.path.join(spool_dir, f"{os.getpid()}.run"), "wb") if spool_dir else None
    _pool_state = (job, store, spool, RunCache(cache) if cache else None)


def _run_one(item: tuple[int, ImageRecord]) -> ImageRun | SpooledRun:
    """One image encoded: in a pool process its entries go to that process's spool file and only
    where they lie comes back; in this process (no spool) the run itself."""
    assert _pool_state is not None
    job, store, spool, cache = _pool_state
    index, image = item
    if cache is None:
        run = job.encode(image, store.shapes_of(index))
    else:  # an image taken from the cache has its shapes neither fetched nor built
        run = job.encode(image, LazyShapes.stored(store, index), cache)
    if spool is None:
        return run
    offset = spool.tell()
    spool.write(run.blob)
    spool.flush()
    return SpooledRun(spool.name, offset, len(run.blob), run.records, run.objects, run.warnings,
                      run.panoptic, run.cached)


def _exports(
    job: ImageJob, store: ShapeStore, images: list[ImageRecord], jobs: int | None, spool_dir: str,
    cache: str | None,
) -> Iterator[ImageRun | SpooledRun]:
    """Each image drawn and encoded, in order; in pool processes when jobs > 1."""
    workers = pool_size(jobs, len(images))
    spool = spool_dir if workers > 1 else None
    # Small images go to the pool processes in groups: one at a time, the round trip would
    # cost more than drawing them (a 64x32 image with three shapes: about 0.4 ms).
    groups = chunks_by_work([i.width * i.height for i in images], GROUP_PIXELS, GROUP_IMAGES)
    return ordered_map(_run_one, list(enumerate(images)), workers, _init_pool,
                       (job, store, spool, cache), _image_name, spool_dir, groups)


def _image_name(item: tuple[int, ImageRecord]) -> str:
    return f"image {item[1].name!r}"


def _local_only(location: str) -> str:
    if "://" in location and not location.startswith("file://"):
        raise ClientError(f"{location}: only local paths run in one process; submit s3:// jobs")
    return location


def _photos_of(spec: ExportSpec, images: list[ImageRecord]) -> list[str]:
    """The photo files an export reads, which its output must not replace."""
    if not (spec.save_images and spec.images):
        return []
    return [str(local_path(join_url(spec.images, image.name))) for image in images]


def run_export(spec: ExportSpec, jobs: int | None = None, progress: Progress | None = None,
               cache: str | None = None) -> dict:
    """Export `spec` on local files; returns the job result of SPEC.md section 2. With `cache`
    (a folder), images whose inputs were exported before are taken from it (worker.run_cache)."""
    started = time.perf_counter()
    if spec.images:
        _local_only(spec.images)
    _local_only(spec.annotations)
    output = output_path(_local_only(spec.output), [local_path(spec.annotations)])
    with tempfile.TemporaryDirectory(prefix="cityscapes-export-") as workdir:
        annotations = regular_input(spec.annotations, "annotations", workdir)
        run_cache = RunCache(cache) if cache else None
        manifest = load_annotations(
            annotations, workdir, spec.annotations_format, name=spec.annotations,
            coco_rle_instances=spec.coco_rle_instances,
            recall=run_cache.recall_shapes if run_cache else None)
        if run_cache is not None and manifest.memo is not None:
            run_cache.keep_shapes(manifest.images_digest, manifest.memo)
        output_path(spec.output, _photos_of(spec, manifest.images))
        job = ImageJob.plan(spec, manifest)
        warnings = manifest.warnings + job.job_warnings(spec)
        total, tally = len(manifest.images), ExportTally()
        panoptic = RecordSpool(workdir)
        with staged_output(output) as staged, ArchiveWriter(staged) as archive:
            archive.add([job.label_color_part()])
            results = _exports(job, manifest.store, manifest.images, jobs, workdir, cache)
            with closing(results):
                for done, result in enumerate(results, 1):
                    if isinstance(result, SpooledRun):
                        archive.add_spooled(result.path, result.offset, result.size, result.records)
                    else:
                        archive.add_run(result.blob, result.records)
                    tally.add(result)
                    if result.panoptic is not None:
                        panoptic.add(result.panoptic)
                    if progress:
                        progress(done, total)
            if job.panoptic is not None:  # the subsets' JSONs, after every image
                path = os.path.join(workdir, "panoptic.run")
                size, entries = panoptic_run(job.panoptic.variants, panoptic.sorted_records(), path)
                archive.add_spooled(path, 0, size, entries)
            archive.commit()
        size = output.stat().st_size
        manifest.store.close()
    return {
        "output": spec.output,
        "images": total,
        "objects": tally.objects,
        **({"images_drawn": total - tally.cached, "images_cached": tally.cached} if cache else {}),
        "bytes": size,
        "warnings": warnings + tally.warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }
