"""The import in one process on local files (the CLI's `import`): a pool of forked processes
(at most one per core and per item) decodes and traces the items; the parent streams the
manifest out, so memory stays flat."""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from worker.cityscapes.importer import (
    DOCUMENT_TAIL,
    ImportedImage,
    document_head,
    document_records,
    import_item,
    map_onto_task,
)
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.reader import (
    Item,
    archive_label_map,
    open_zip,
    read_member,
    scan_archive,
)
from worker.errors import ClientError
from worker.local_pool import ordered_map, pool_size
from worker.specs import ImportSpec
from worker.storage.local import atomic_output, local_path, output_path, regular_input

Progress = Callable[[int, int], None]

_state: tuple[str, LabelMap, str, str] | None = None
_archive: zipfile.ZipFile | None = None


def _init(path: str, label_map: LabelMap, shapes: str, output_format: str) -> None:
    global _state, _archive
    _state = (path, label_map, shapes, output_format)
    _archive = None


def _import_one(item: Item) -> ImportedImage:
    global _archive
    assert _state is not None
    path, label_map, shapes, output_format = _state
    if _archive is None:  # one handle per process: a shared one would share its file offset
        _archive = zipfile.ZipFile(path)
    files = {kind: read_member(_archive, member)
             for kind, member in item.members.items()}
    return import_item(item, files, label_map, shapes, output_format)


def _imports(
    path: str, items: list[Item], settings: tuple, jobs: int | None, spool_dir: str
) -> Iterator[ImportedImage]:
    return ordered_map(_import_one, items, pool_size(jobs, len(items)), _init, (path, *settings),
                       lambda item: f"image {item.name!r}", spool_dir)


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
        index = scan_archive(archive)
        label_map = archive_label_map(archive, index.label_file)
    warnings: list[str] = []
    images: list[dict] = []
    shapes_written = changed = 0
    settings = (label_map, spec.shapes, spec.format)
    task_labels = spec.task_labels()
    with (
        tempfile.TemporaryFile("w+", dir=workdir) as shapes_file,
        atomic_output(output, "w") as out,
        closing(_imports(str(archive_path), index.items, settings, jobs, workdir)) as results,
    ):
        first = True
        for number, result in enumerate(results, 1):
            if task_labels is not None:
                result = map_onto_task(result, task_labels)
            images.append({"id": number, **result.image})
            for record in document_records(result, number, spec.format):
                shapes_file.write(("" if first else ",") + record)
                first = False
                shapes_written += 1
            warnings.extend(result.warnings)
            changed += result.changed_pixels
            if progress:
                progress(number, len(index.items))
        out.write(document_head(spec.format, label_map, images, task_labels))
        shapes_file.seek(0)
        while chunk := shapes_file.read(1 << 20):
            out.write(chunk)
        out.write(DOCUMENT_TAIL)
    return {
        "output": spec.output,
        "images": len(images),
        "shapes": shapes_written,
        "changed_pixels": changed,
        "bytes": output.stat().st_size,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }
