"""The export pipeline's steps, shared by the in-process run and the Celery tasks.

plan (read and validate the manifest, choose the label map) -> per image (draw and encode,
photo when asked) -> assemble (the archive). Where the steps run is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property, partial

import orjson

from worker.cityscapes.archive import (
    LABEL_COLOR_FILE,
    EntryRecord,
    encode_entries,
    join_runs,
    write_stream_run,
)
from worker.cityscapes.export import (
    ExportOptions,
    ImageExport,
    ZipLayout,
    ZipPart,
    export_image,
    gt_path,
)
from worker.cityscapes.images import left_image_part
from worker.cityscapes.labels import Color, LabelMap
from worker.cityscapes.manifest import (
    ImageRecord,
    Manifest,
    Shape,
    ShapeStore,
    image_from_row,
    image_to_row,
    shape_from_row,
    shape_identities,
    shape_to_row,
)
from worker.cityscapes.panoptic import (
    PanopticScheme,
    PanopticVariant,
    check_png_paths,
    panoptic_scheme,
    subset_documents,
)
from worker.errors import ClientError, ImageSourceError, StorageNotFound
from worker.run_cache import ENCODER_VERSION, RunCache, chunk_key, image_key
from worker.specs import ExportSpec, build_label_map
from worker.storage import join_url, storage_for


@dataclass
class ImageRun:
    """One image's zip entries, encoded where the image was drawn."""

    blob: bytes
    records: list[EntryRecord]
    objects: int
    warnings: list[str]
    panoptic: dict | None = None  # the image's record for its subset's panoptic JSON
    cached: bool = False  # taken from the run cache, not drawn


@dataclass
class ExportTally:
    """What the images encoded so far add up to. Their entries and panoptic records go where
    the executor keeps them (an archive and a spool file, a chunk's run and its records)."""

    objects: int = 0
    cached: int = 0
    warnings: list[str] = field(default_factory=list)

    def add(self, run: ImageRun) -> None:
        self.objects += run.objects
        self.cached += run.cached
        self.warnings.extend(run.warnings)


@dataclass
class LazyShapes:
    """An image's shapes as a cache key needs them (places in the manifest, and identities
    made when asked for, in drawing order), and how to build them should the image be drawn."""

    indices: list[int]
    identities: Callable[[], list]
    build: Callable[[], list[Shape]]

    @classmethod
    def of(cls, shapes: list[Shape]) -> LazyShapes:
        return cls([s.index for s in shapes], partial(shape_identities, shapes), lambda: shapes)

    @classmethod
    def stored(cls, store: ShapeStore, image_index: int) -> LazyShapes:
        indices, identities = store.refs_of(image_index)
        return cls(indices, lambda: identities, partial(store.shapes_of, image_index))


@dataclass(frozen=True)
class ImageJob:
    """What every image of one export shares."""

    label_map: LabelMap
    options: ExportOptions
    images: str | None = None  # folder or URL prefix of the photos
    save_images: bool = False
    image_ext: str | None = None

    @classmethod
    def for_spec(cls, spec: ExportSpec, task_labels: list[tuple[str, Color]]) -> ImageJob:
        return cls(
            build_label_map(spec, task_labels),
            ExportOptions(
                polygons_json=spec.polygons_json,
                train_ids=spec.train_ids,
                layout=ZipLayout(spec.layout, spec.default_city),
                panoptic=spec.panoptic,
            ),
            spec.images,
            spec.save_images,
            spec.image_ext,
        )

    @classmethod
    def plan(cls, spec: ExportSpec, manifest: Manifest) -> ImageJob:
        """The job for a read manifest: its label map chosen and checked, and every image's
        files at paths of their own in the zip."""
        job = cls.for_spec(spec, manifest.labels)
        job.check_member_names(manifest.images)
        return job

    def check_member_names(self, images: list[ImageRecord]) -> None:
        """Two images whose files would land on one zip path (the layout's city folders and
        `default_city` can map different names there) are refused, naming both."""
        seen: dict[str, str] = {}
        for image in images:
            path = gt_path(image, "", self.options.layout)
            if path in seen:
                raise ClientError(
                    f"images {seen[path]!r} and {image.name!r} would both be written as"
                    f" {path}* in the {self.options.layout.name!r} layout; rename one"
                )
            seen[path] = image.name
        if self.panoptic is not None:
            check_png_paths(images, self.panoptic)

    def job_warnings(self, spec: ExportSpec) -> list[str]:
        if spec.train_ids and not self.label_map.official:
            return [
                "train ids were asked for, but the labels are not the Cityscapes table;"
                " no labelTrainIds written" + (" (nor panoptic trainId)" if spec.panoptic else "")
            ]
        return []

    def label_color_part(self) -> ZipPart:
        return ZipPart(LABEL_COLOR_FILE, self.label_map.to_label_color_txt().encode(), compress=True)

    def run(self, image: ImageRecord, shapes: list[Shape]) -> ImageExport:
        result = export_image(image, shapes, self.label_map, self.options)
        if self.save_images:
            photo = self.read_photo(image)
            result.parts.append(left_image_part(image, photo, self.image_ext, self.options.layout))
        return result

    def encode(self, image: ImageRecord, shapes: list[Shape] | LazyShapes,
               cache: RunCache | None = None, key: str | None = None) -> ImageRun:
        """The image's entries: from `cache` when its inputs were encoded before, else drawn
        (and left in the cache). `key`: the image's cache_key, when known already. Shapes
        given lazily are built only to be drawn."""
        lazy = shapes if isinstance(shapes, LazyShapes) else LazyShapes.of(shapes)
        if cache is not None:
            if key is None:  # the shapes' identities are made only for a key
                key = self.cache_key(image, lazy.identities())
            hit = cache.get(key, lazy.indices)
            if hit is not None:
                return ImageRun(*hit, cached=True)
        result = self.run(image, lazy.build())
        blob, records = encode_entries(result.parts)
        if cache is not None:
            cache.put(key, blob, records, result.objects, result.warnings, lazy.indices,
                      result.panoptic)
        return ImageRun(blob, records, result.objects, result.warnings, result.panoptic)

    @cached_property
    def panoptic(self) -> PanopticScheme | None:
        """The panoptic categories, when the job writes them."""
        if not self.options.panoptic:
            return None
        return panoptic_scheme(self.label_map, self.options.train_ids)

    @cached_property
    def recipe(self) -> bytes:
        """What decides the bytes of every image of the job, besides the image's own inputs."""
        return repr((ENCODER_VERSION, self.label_map.fingerprint(), self.options,
                     self.save_images, self.image_ext)).encode()

    def cache_key(self, image: ImageRecord, identities: list) -> str:
        """The image's key in the run cache; `identities`: its shapes' (shape_identities)."""
        photo = None
        if self.save_images and self.images is not None:
            url = join_url(self.images, image.name)
            try:
                photo = storage_for(url).fingerprint(url)
            except StorageNotFound:
                photo = "missing"  # drawing it fails, naming the image
        return image_key(self.recipe, image_to_row(image), identities, photo)

    def read_photo(self, image: ImageRecord) -> bytes:
        if self.images is None:
            raise ImageSourceError("save_images needs the images location (--images)")
        url = join_url(self.images, image.name)
        try:
            return storage_for(url).read(url)
        except StorageNotFound as exc:
            raise ImageSourceError(f"image {image.name!r}: cannot be read ({exc})") from None


@dataclass
class ChunkRun:
    """A chunk's run of zip entries, where it lies (in staging, or kept by the run cache, which
    `fingerprint` then pins: the assembly copies it only while it is that object)."""

    url: str
    fingerprint: str | None
    size: int
    records: list[EntryRecord]
    objects: int
    warnings: list[str]
    images_cached: int
    drawn: bool  # encoded by this chunk (its bytes passed through the worker), not found kept
    panoptic: list[dict]  # its images' records for their subsets' panoptic JSONs, if asked for

    def counts(self) -> dict[str, int]:
        """What the job result adds up: bytes of runs found kept (copied within the store into
        the output) and bytes that passed through workers (and of those, the photos')."""
        photos = sum(r.compressed_size for r in self.records if "_leftImg8bit." in r.name)
        return {"bytes_copied": 0 if self.drawn else self.size,
                "bytes_moved": self.size if self.drawn else 0,
                "photo_bytes_moved": photos if self.drawn else 0}


def kept_chunk(job: ImageJob, first: bool, indices: list[int], keys: list[str], cache: RunCache
               ) -> ChunkRun | None:
    """The chunk's run as the cache keeps it, when the whole chunk was encoded before (none of
    its bytes need pass through a worker); else None. `keys`: its images' cache keys;
    `indices`: the places of their shapes in the manifest, image by image in drawing order."""
    kept = cache.find_run(chunk_key(job.recipe, first, keys), indices)
    if kept is None:
        return None
    return ChunkRun(kept.url, kept.fingerprint, kept.size, kept.records, kept.objects,
                    kept.warnings, len(keys), drawn=False, panoptic=kept.panoptic)


def stage_chunk(job: ImageJob, first: bool, items: list[tuple[ImageRecord, list[Shape]]],
                cache: RunCache | None, staged: str) -> ChunkRun:
    """A chunk's run, its images encoded one by one (each from the cache where it can be) and
    the run kept in the cache for next time, or, without a cache, written to `staged`. The
    plan has looked for the chunk's kept run already (kept_chunk) and found none; looking
    again would cost a request for the rare chunk another job kept in the meantime."""
    keys: list[str | None] = [None] * len(items)
    if cache is not None:
        keys = [job.cache_key(image, shape_identities(shapes)) for image, shapes in items]
    runs = [encode_entries([job.label_color_part()])] if first else []
    tally, panoptic = ExportTally(), []
    for (image, shapes), key in zip(items, keys):
        result = job.encode(image, shapes, cache, key)
        runs.append((result.blob, result.records))
        tally.add(result)
        if result.panoptic is not None:
            panoptic.append(result.panoptic)
    blob, records = join_runs(runs)
    kept = None
    if cache is not None:
        indices = [shape.index for _, shapes in items for shape in shapes]
        kept = cache.put_run(chunk_key(job.recipe, first, keys), blob, records, tally.objects,
                             tally.warnings, indices, panoptic)
    if kept is None:
        storage_for(staged).write(staged, blob)
    url, fingerprint = (kept.url, kept.fingerprint) if kept else (staged, None)
    return ChunkRun(url, fingerprint, len(blob), records, tally.objects, tally.warnings,
                    tally.cached, drawn=True, panoptic=panoptic)


def panoptic_run(variants: tuple[PanopticVariant, ...], records: Iterable[dict], path: str
                 ) -> tuple[int, list[EntryRecord]]:
    """The subsets' panoptic JSONs, from the images' records in subset order, as a run of zip
    entries in the file at `path`, which goes after every image: (its size, its entries)."""
    with open(path, "wb") as out:
        documents = subset_documents(records, variants)
        entries = write_stream_run(out, ((d.path, d.pieces()) for d in documents))
        return out.tell(), entries




def chunk_input(
    spec: ExportSpec,
    task_labels: list[tuple[str, Color]],
    items: list[tuple[ImageRecord, list[Shape]]],
    first: bool,
) -> bytes:
    """What one chunk task needs, as JSON: the spec, the task labels, its images and shapes."""
    return orjson.dumps(
        {
            "spec": spec.model_dump(),
            "labels": [[name, list(color)] for name, color in task_labels],
            "first": first,
            "items": [[image_to_row(i), [shape_to_row(s) for s in shapes]] for i, shapes in items],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def read_chunk_input(data: bytes) -> tuple[ExportSpec, ImageJob, bool, list[tuple[ImageRecord, list[Shape]]]]:
    document = orjson.loads(data)
    spec = ExportSpec.model_validate(document["spec"])
    labels = [(name, tuple(color)) for name, color in document["labels"]]
    items = [
        (image_from_row(image), [shape_from_row(s) for s in shapes])
        for image, shapes in document["items"]
    ]
    return spec, ImageJob.for_spec(spec, labels), document["first"], items
