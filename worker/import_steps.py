"""The import pipeline's steps, shared by the in-process run and the Celery tasks.

plan (scan the zip's directory into items, read its label file) -> per item (read its members,
trace them, map the shapes onto the task's labels, write the output's records) -> assemble (the
document's head, every item's records in order, its tail). Where the steps run, and how the zip
is reached (a local file, ranged reads of S3), is the caller's business.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

from worker.cityscapes.importer import (
    document_head,
    document_records,
    import_item,
    map_onto_task,
    source_kinds,
)
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.reader import Item, archive_label_map, read_member, scan_archive
from worker.specs import ImportSpec


@dataclass
class ItemRun:
    """One item imported: its entry in the document's images and its records (shapes or COCO
    annotations, JSON text) in the document's order."""

    image: dict[str, Any]
    records: list[str]
    warnings: list[str]
    changed_pixels: int


@dataclass
class ImportTally:
    """What the items imported so far add up to; their records go where the executor keeps
    them (a spool file, a staged part), so that memory stays flat."""

    images: list[dict[str, Any]] = field(default_factory=list)
    shapes: int = 0
    warnings: list[str] = field(default_factory=list)
    changed_pixels: int = 0

    def add(self, run: ItemRun) -> None:
        self.images.append(run.image)
        self.shapes += len(run.records)
        self.warnings.extend(run.warnings)
        self.changed_pixels += run.changed_pixels


@dataclass(frozen=True)
class ItemJob:
    """What every item of one import shares."""

    label_file: str | None
    label_map: LabelMap
    shapes: str
    output_format: str
    task_labels: list[dict[str, str]] | None

    @classmethod
    def for_archive(cls, spec: ImportSpec, archive: zipfile.ZipFile, label_file: str | None) -> ItemJob:
        return cls(label_file, archive_label_map(archive, label_file), spec.shapes, spec.format,
                   spec.task_labels())

    @classmethod
    def plan(cls, spec: ImportSpec, archive: zipfile.ZipFile) -> tuple[ItemJob, list[Item]]:
        """The job for an opened zip, and its items in order: the directory is checked and the
        label file read now, so that a broken zip fails before any item is traced."""
        index = scan_archive(archive)
        return cls.for_archive(spec, archive, index.label_file), index.items

    def run(self, archive: zipfile.ZipFile, item: Item, image_id: int) -> ItemRun:
        files = {kind: read_member(archive, item.members[kind])
                 for kind in source_kinds(item, self.shapes, self.output_format)}
        result = import_item(item, files, self.label_map, self.shapes, self.output_format)
        if self.task_labels is not None:
            result = map_onto_task(result, self.task_labels)
        return ItemRun({"id": image_id, **result.image},
                       document_records(result, image_id, self.output_format),
                       result.warnings, result.changed_pixels)

    def head(self, images: list[dict[str, Any]]) -> str:
        """The document up to its records; they follow, joined by commas, then DOCUMENT_TAIL."""
        return document_head(self.output_format, self.label_map, images, self.task_labels)


def chunk_input(spec: ImportSpec, label_file: str | None, items: list[tuple[int, Item]]) -> bytes:
    """What one chunk task needs, as JSON: the spec, the label file, its items and their ids."""
    rows = [[image_id, item.name, item.subset, item.members] for image_id, item in items]
    return json.dumps({"spec": spec.model_dump(), "label_file": label_file, "items": rows}).encode()


def read_chunk_input(data: bytes) -> tuple[ImportSpec, str | None, list[tuple[int, Item]]]:
    document = json.loads(data)
    items = [(image_id, Item(name, subset, members))
             for image_id, name, subset, members in document["items"]]
    return ImportSpec.model_validate(document["spec"]), document["label_file"], items
