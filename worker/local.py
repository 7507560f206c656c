"""The export in one process on local files: the CLI's embedded default (no Redis, no S3).

Images are drawn by a pool of forked processes (one per core by default); the parent streams
their parts into the archive in image order, so memory stays flat however many images there are.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from worker.cityscapes.archive import LABEL_COLOR_FILE, ArchiveWriter
from worker.cityscapes.export import ExportOptions, ImageExport, ZipPart, export_image
from worker.cityscapes.images import left_image_part
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.manifest import ImageRecord, ShapeStore, read_manifest
from worker.errors import ClientError, ImageSourceError
from worker.jobs import ExportSpec, build_label_map

Progress = Callable[[int, int], None]


def local_path(location: str) -> Path:
    """A plain path or a file:// URL."""
    if location.startswith("file://"):
        return Path(location[len("file://") :])
    if "://" in location:
        raise ClientError(f"{location}: only local paths run in one process; submit s3:// jobs")
    return Path(location)


@dataclass(frozen=True)
class ImageJob:
    """What every image of one export shares; sent once to each pool process."""

    store: ShapeStore
    label_map: LabelMap
    options: ExportOptions
    images_root: Path | None = None
    save_images: bool = False
    image_ext: str | None = None

    def run(self, index: int, image: ImageRecord) -> ImageExport:
        result = export_image(image, self.store.shapes_of(index), self.label_map, self.options)
        if self.save_images:
            result.parts.append(left_image_part(image, self._read_photo(image), self.image_ext))
        return result

    def _read_photo(self, image: ImageRecord) -> bytes:
        if self.images_root is None:
            raise ImageSourceError("save_images needs an images folder (--images)")
        try:
            return (self.images_root / image.name).read_bytes()
        except OSError as exc:
            raise ImageSourceError(
                f"image {image.name!r}: cannot be read from {self.images_root} ({exc.strerror})"
            ) from None


_job: ImageJob | None = None


def _init_pool(job: ImageJob) -> None:
    global _job
    _job = job


def _run_one(item: tuple[int, ImageRecord]) -> ImageExport:
    assert _job is not None
    return _job.run(*item)


def _exports(job: ImageJob, images: list[ImageRecord], jobs: int) -> Iterator[ImageExport]:
    if jobs <= 1 or len(images) <= 1:
        for index, image in enumerate(images):
            yield job.run(index, image)
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(min(jobs, len(images)), _init_pool, (job,)) as pool:
        yield from pool.imap(_run_one, enumerate(images), chunksize=1)


def run_export(spec: ExportSpec, jobs: int | None = None, progress: Progress | None = None) -> dict:
    """Export `spec` on local files; returns the job result of SPEC.md section 2."""
    started = time.perf_counter()
    output = local_path(spec.output)
    if not output.parent.is_dir():
        raise ClientError(f"output {spec.output}: folder {output.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="cityscapes-export-") as workdir:
        manifest = read_manifest(local_path(spec.annotations), workdir)
        label_map = build_label_map(spec, manifest.labels)
        warnings = []
        if spec.train_ids and not label_map.official:
            warnings.append(
                "train ids were asked for, but the labels are not the Cityscapes table;"
                " no labelTrainIds written"
            )
        job = ImageJob(
            manifest.store,
            label_map,
            ExportOptions(polygons_json=spec.polygons_json, train_ids=spec.train_ids),
            local_path(spec.images) if spec.images else None,
            spec.save_images,
            spec.image_ext,
        )
        total, objects = len(manifest.images), 0
        with ArchiveWriter(output) as archive:
            colors = label_map.to_label_color_txt().encode()
            archive.add([ZipPart(LABEL_COLOR_FILE, colors, compress=True)])
            for done, result in enumerate(_exports(job, manifest.images, jobs or os.cpu_count() or 1), 1):
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
