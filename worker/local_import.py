"""The import in one process on local files (the CLI's `import`): a pool of forked processes
decodes and traces the items; the parent streams the manifest out, so memory stays flat."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator

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
    ArchiveError,
    Item,
    archive_label_map,
    read_member,
    scan_archive,
)
from worker.errors import ClientError
from worker.jobs import ImportSpec
from worker.storage.local import atomic_output, local_path

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


def _imports(path: str, items: list[Item], settings: tuple, jobs: int) -> Iterator[ImportedImage]:
    if jobs <= 1 or len(items) <= 1:
        _init(path, *settings)
        yield from map(_import_one, items)
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(min(jobs, len(items)), _init, (path, *settings)) as pool:
        yield from pool.imap(_import_one, items, chunksize=1)


def open_archive(url: str) -> zipfile.ZipFile:
    """A local zip, or a one-line error naming it."""
    try:
        return zipfile.ZipFile(local_path(url))
    except (FileNotFoundError, IsADirectoryError):
        raise ClientError(f"{url}: no such file") from None
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{url}: not a zip archive ({exc})") from None


def run_import(spec: ImportSpec, jobs: int | None = None, progress: Progress | None = None) -> dict:
    started = time.perf_counter()
    archive_path = str(local_path(spec.archive))
    output = local_path(spec.output)
    if not output.parent.is_dir():
        raise ClientError(f"output {spec.output}: folder {output.parent} does not exist")
    with open_archive(spec.archive) as archive:
        index = scan_archive(archive)
        label_map = archive_label_map(archive, index.label_file)
    warnings: list[str] = []
    images: list[dict] = []
    shapes_written = changed = 0
    with tempfile.TemporaryFile("w+") as shapes_file, atomic_output(output, "w") as out:
        first = True
        settings = (label_map, spec.shapes, spec.format)
        results = _imports(archive_path, index.items, settings, jobs or os.cpu_count() or 1)
        task_labels = spec.task_labels()
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
