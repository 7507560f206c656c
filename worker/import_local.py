"""The import in one process on local files (the CLI's `import`): the steps of
worker.import_steps, with a pool of forked processes (at most one per core and per item) running
the per-item step; the parent streams the manifest out, so memory stays flat."""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from worker.cityscapes.importer import DOCUMENT_TAIL
from worker.cityscapes.reader import (
    Item,
    open_zip,
)
from worker.errors import ClientError
from worker.import_steps import ImportTally, ItemJob, ItemRun
from worker.local_pool import ordered_map, pool_size
from worker.specs import ImportSpec
from worker.storage.local import atomic_output, local_path, output_path, regular_input

Progress = Callable[[int, int], None]

_state: tuple[str, ItemJob] | None = None
_archive: zipfile.ZipFile | None = None


def _init(path: str, job: ItemJob) -> None:
    global _state, _archive
    _state = (path, job)
    _archive = None


def _import_one(entry: tuple[int, Item]) -> ItemRun:
    global _archive
    assert _state is not None
    path, job = _state
    if _archive is None:  # one handle per process: a shared one would share its file offset
        _archive = zipfile.ZipFile(path)
    image_id, item = entry
    return job.run(_archive, item, image_id)


def _imports(
    path: str, job: ItemJob, items: list[Item], jobs: int | None, spool_dir: str
) -> Iterator[ItemRun]:
    """Each item imported, in order, with its image id (from 1); in pool processes when jobs > 1."""
    return ordered_map(_import_one, list(enumerate(items, 1)), pool_size(jobs, len(items)), _init,
                       (path, job), lambda entry: f"image {entry[1].name!r}", spool_dir)


def open_archive(url: str, path: str | os.PathLike | None = None) -> zipfile.ZipFile:
    """A local zip (at `path` when it was spooled there), or a one-line error naming it."""
    try:
        return open_zip(path or local_path(url), url)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ClientError(f"{url}: no such file") from None
    except PermissionError:
        raise ClientError(f"{url}: permission denied") from None


def run_import(spec: ImportSpec, jobs: int | None = None, progress: Progress | None = None) -> dict:
    started = time.perf_counter()
    output = output_path(spec.output, [local_path(spec.archive)])
    with tempfile.TemporaryDirectory(prefix="cityscapes-import-") as workdir:
        archive_path = regular_input(spec.archive, "archive", workdir)
        return _run_import(spec, archive_path, output, workdir, jobs, progress, started)


def _run_import(spec: ImportSpec, archive_path: Path, output: Path, workdir: str,
                jobs: int | None, progress: Progress | None, started: float) -> dict:
    with open_archive(spec.archive, archive_path) as archive:
        job, items = ItemJob.plan(spec, archive)
    tally = ImportTally()
    with (
        tempfile.TemporaryFile("w+", dir=workdir) as shapes_file,
        atomic_output(output, "w") as out,
        closing(_imports(str(archive_path), job, items, jobs, workdir)) as runs,
    ):
        for number, run in enumerate(runs, 1):
            if run.records:
                shapes_file.write(("," if tally.shapes else "") + ",".join(run.records))
            tally.add(run)
            if progress:
                progress(number, len(items))
        out.write(job.head(tally.images))
        shapes_file.seek(0)
        while chunk := shapes_file.read(1 << 20):
            out.write(chunk)
        out.write(DOCUMENT_TAIL)
    return {
        "output": spec.output,
        "images": len(tally.images),
        "shapes": tally.shapes,
        "changed_pixels": tally.changed_pixels,
        "bytes": output.stat().st_size,
        "warnings": tally.warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }
