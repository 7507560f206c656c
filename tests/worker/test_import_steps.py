"""The import's steps as a cluster runs them (items cut into chunks, each chunk's input through
JSON, the document joined from the chunks' parts) write what the in-process import writes."""

from __future__ import annotations

import json
import zipfile

import pytest

from worker.chunks import chunks_by_work
from worker.cityscapes.importer import DOCUMENT_TAIL
from worker.export_local import run_export
from worker.import_local import run_import
from worker.import_steps import ImportTally, ItemJob, chunk_input, read_chunk_input
from worker.specs import parse_export_spec, parse_import_spec
from worker.synth import make_manifest

TASK_LABELS = [{"name": "background", "color": "#000000"}, {"name": "car", "color": "#112233"}]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import-steps")
    manifest = make_manifest(7, width=160, height=80, seed=4, objects=12, stuff_vertices=20)
    (tmp / "m.json").write_text(json.dumps(manifest))
    run_export(parse_export_spec({"annotations": str(tmp / "m.json"), "output": str(tmp / "a.zip"),
                                  "polygons_json": False}), jobs=1)
    return tmp / "a.zip"


def chunked_import(spec, path, most: int) -> tuple[bytes, ImportTally]:
    """The document as tasks/imports.py makes it, chunks of at most `most` items."""
    with zipfile.ZipFile(path) as opened:
        job, items = ItemJob.plan(spec, opened)
    parts, tally = [], ImportTally()
    for chunk in chunks_by_work([1] * len(items), most, most):
        staged = chunk_input(spec, job.label_file, [(i + 1, items[i]) for i in chunk])
        chunk_spec, label_file, numbered = read_chunk_input(staged)
        with zipfile.ZipFile(chunk_spec.archive) as opened:
            chunk_job = ItemJob.for_archive(chunk_spec, opened, label_file)
            runs = [chunk_job.run(opened, item, image_id) for image_id, item in numbered]
        for run in runs:
            tally.add(run)
        parts.append(",".join(record for run in runs for record in run.records))
    body = ",".join(part for part in parts if part)
    return (job.head(tally.images) + body + DOCUMENT_TAIL).encode(), tally


@pytest.mark.parametrize("options", [
    {},
    {"shapes": "mask"},
    {"format": "coco"},
    {"labels": TASK_LABELS},
])
@pytest.mark.parametrize("most", [1, 3, 100])
def test_chunked_steps_write_the_in_process_document(archive, tmp_path, options, most):
    spec = parse_import_spec({"archive": str(archive), "output": str(tmp_path / "out.json"),
                              **options})
    result = run_import(spec, jobs=1)  # no fork: Celery clients of earlier tests live on here
    document, tally = chunked_import(spec, archive, most)
    assert document == (tmp_path / "out.json").read_bytes()
    assert (len(tally.images), tally.shapes, tally.changed_pixels, tally.warnings) == (
        result["images"], result["shapes"], result["changed_pixels"], result["warnings"])


def test_a_chunk_input_carries_the_items_and_their_ids(archive, tmp_path):
    spec = parse_import_spec({"archive": str(archive), "output": str(tmp_path / "x.json"),
                              "labels": TASK_LABELS})
    with zipfile.ZipFile(archive) as opened:
        job, items = ItemJob.plan(spec, opened)
    numbered = [(5, items[4]), (6, items[5])]
    assert read_chunk_input(chunk_input(spec, job.label_file, numbered)) == (
        spec, job.label_file, numbered)
