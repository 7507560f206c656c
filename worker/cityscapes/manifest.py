"""Manifest v1: the JSON annotations format of this service (export input, import output).

The file is read as a stream, shape by shape, and shapes are spooled to an SQLite file grouped by
image, so that a manifest of any size is read in flat memory and each image's shapes can be
fetched on their own by whichever process draws that image.
"""

from __future__ import annotations

import json
import os
import posixpath
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import ijson
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.cityscapes.labels import Color, parse_color
from worker.errors import LabelMapError, ManifestError

MANIFEST_VERSION = 1
MAX_IMAGE_SIDE = 32768
# An image's pixels, as drawn (the export holds a few full-size arrays of it) or as read back:
# 16384 x 16384, 128 times a Cityscapes frame; beyond, one image could take a worker's memory.
MAX_PIXELS = 1 << 28
MAX_PROBLEMS = 100


def check_relative_path(value: str, what: str) -> str:
    """A name that may become a path inside an archive: relative, no '..', no control bytes."""
    if not value or "\x00" in value or "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} {value!r} is empty or holds control characters or '\\'")
    if value.startswith("/") or ":" in value.split("/")[0]:
        raise ValueError(f"{what} {value!r} is an absolute path")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{what} {value!r} has an empty, '.' or '..' path part")
    return value


class LabelSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    color: str = "#000000"


class ImageSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int | str
    name: str
    width: int = Field(gt=0, le=MAX_IMAGE_SIDE)
    height: int = Field(gt=0, le=MAX_IMAGE_SIDE)
    subset: str = "default"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_relative_path(value, "image name")

    @model_validator(mode="after")
    def _pixels(self) -> ImageSpec:
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(
                f"{self.width}x{self.height} is more than {MAX_PIXELS:,} pixels (16384x16384)"
            )
        return self

    @field_validator("subset")
    @classmethod
    def _subset(cls, value: str) -> str:
        check_relative_path(value, "subset")
        if "/" in value:
            raise ValueError(f"subset {value!r} holds '/'")
        return value


class ShapeSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: int | str
    label: str
    type: Literal["polygon", "rectangle", "mask"]
    points: list[FiniteFloat] = Field(default_factory=list)
    rle: dict[str, Any] | None = None
    # A mask given over a box of the image (as CVAT stores one): its rle covers that box only.
    box: tuple[int, int, int, int] | None = None  # left, top, width, height
    z_order: int = 0
    attributes: dict[str, Any] = Field(default_factory=dict)
    instance: int | None = Field(default=None, ge=0, le=999)

    @model_validator(mode="after")
    def _geometry(self) -> ShapeSpec:
        if self.type == "polygon" and len(self.points) % 2:
            raise ValueError(f"polygon has an odd number of coordinates ({len(self.points)})")
        if self.type == "rectangle" and len(self.points) != 4:
            raise ValueError(f"rectangle needs [x1, y1, x2, y2], got {len(self.points)} numbers")
        if self.type == "mask":
            if not self.rle or "size" not in self.rle or "counts" not in self.rle:
                raise ValueError("mask needs an rle with size and counts")
        return self

    @property
    def is_crowd(self) -> bool:
        return crowd_flag(self.attributes.get("is_crowd", False))


def crowd_flag(value: Any) -> bool:
    """An is_crowd attribute as tools write it: a bool, a number, or text ("true", as CVAT)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: int | str
    name: str  # "frankfurt/frankfurt_000000_000294.png": the folder is the city
    width: int
    height: int
    subset: str = "default"

    @property
    def city(self) -> str:
        return posixpath.dirname(self.name)

    @property
    def stem(self) -> str:
        return posixpath.splitext(posixpath.basename(self.name))[0]

    @property
    def item_name(self) -> str:
        return posixpath.splitext(self.name)[0]


SHAPE_KINDS = ("polygon", "rectangle", "mask")


@dataclass(slots=True)
class Shape:
    index: int  # position in the manifest's shapes list, for messages
    label: str
    kind: str
    z_order: int = 0
    is_crowd: bool = False
    instance: int | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros(0))  # flat x0, y0, x1, y1, ...
    rle: dict[str, Any] | None = None


def shape_to_row(shape: Shape) -> list:
    """A compact JSON form of a shape, for chunk inputs."""
    return [shape.index, shape.label, shape.kind, shape.z_order, shape.is_crowd, shape.instance,
            shape.points.tolist(), shape.rle]


def shape_from_row(row: list) -> Shape:
    index, label, kind, z_order, is_crowd, instance, points, rle = row
    return Shape(index, label, kind, z_order, is_crowd, instance, np.asarray(points, np.float64), rle)


def image_to_row(image: ImageRecord) -> list:
    return [image.id, image.name, image.width, image.height, image.subset]


def image_from_row(row: list) -> ImageRecord:
    return ImageRecord(*row)


def _format_error(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()
    )


class ShapeStore:
    """Shapes grouped by image in an SQLite file; each process opens its own connection."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = sqlite3.connect(self.path)
            self._pid = os.getpid()
        return self._conn

    def create(self) -> None:
        self._connection().execute(
            "CREATE TABLE shapes (image INTEGER, seq INTEGER, z INTEGER, label TEXT,"
            " kind INTEGER, crowd INTEGER, instance INTEGER, points BLOB, rle TEXT)"
        )

    def add(self, rows: list[tuple]) -> None:
        self._connection().executemany("INSERT INTO shapes VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def finish(self) -> None:
        conn = self._connection()
        conn.execute("CREATE INDEX by_image ON shapes (image, z, seq)")
        conn.commit()

    def shapes_of(self, image_index: int) -> list[Shape]:
        """The image's shapes in drawing order: ascending z_order, then input order."""
        rows = self._connection().execute(
            "SELECT seq, label, kind, z, crowd, instance, points, rle FROM shapes"
            " WHERE image = ? ORDER BY z, seq",
            (image_index,),
        )
        return [
            Shape(
                index=seq,
                label=label,
                kind=SHAPE_KINDS[kind],
                z_order=z,
                is_crowd=bool(crowd),
                instance=instance,
                points=np.frombuffer(points, np.float64),
                rle=json.loads(rle) if rle else None,
            )
            for seq, label, kind, z, crowd, instance, points, rle in rows
        ]

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None


@dataclass
class Manifest:
    labels: list[tuple[str, Color]]
    images: list[ImageRecord]
    store: ShapeStore
    shape_count: int
    warnings: list[str] = field(default_factory=list)  # from converting another format

    def shapes_of(self, image_index: int) -> list[Shape]:
        return self.store.shapes_of(image_index)


def _items(stream: BinaryIO, prefix: str) -> Iterator[Any]:
    stream.seek(0)
    return ijson.items(stream, prefix, use_float=True)


def read_manifest(path: str | os.PathLike, workdir: str | os.PathLike) -> Manifest:
    """Parse and validate a manifest; raise ManifestError listing every problem found.

    Shapes go to an SQLite file in `workdir`, which the caller owns and removes.
    """
    source = os.fspath(path)
    problems: list[str] = []

    def problem(text: str) -> None:
        problems.append(text)
        if len(problems) >= MAX_PROBLEMS:
            raise ManifestError(source, problems)

    try:
        stream = open(source, "rb")
    except OSError as exc:
        raise ManifestError(source, [f"cannot be read ({exc.strerror})"]) from None
    with stream:
        try:
            return _read(stream, source, Path(workdir), problem, problems)
        except ijson.JSONError as exc:
            detail = " ".join(str(exc).split())
            raise ManifestError(source, [f"is not valid JSON ({detail})"]) from None


_HEAD_KEYS = ("version", "labels", "images")
_CONTAINER_START = ("start_map", "start_array")
_CONTAINER_END = ("end_map", "end_array")


def _read_head(stream: BinaryIO) -> dict[str, list]:
    """version, labels and images in one pass that stops where the shapes begin, when they come
    last (as writers put them); otherwise it walks on past them."""
    stream.seek(0)
    found: dict[str, list] = {key: [] for key in _HEAD_KEYS}
    complete: set[str] = set()
    builder, depth, sink = None, 0, None
    for prefix, event, value in ijson.parse(stream, use_float=True):
        if builder is not None:
            builder.event(event, value)
            depth += (event in _CONTAINER_START) - (event in _CONTAINER_END)
            if depth == 0:
                sink.append(builder.value)
                builder = None
            continue
        if prefix == "" and event == "map_key":
            if value == "shapes" and complete >= set(_HEAD_KEYS):
                break
            complete.add(value)
        elif prefix == "version" and event not in _CONTAINER_START + _CONTAINER_END:
            found["version"].append(value)
        elif prefix in ("labels.item", "images.item"):
            sink = found[prefix.split(".")[0]]
            if event in _CONTAINER_START:
                builder, depth = ijson.ObjectBuilder(), 1
                builder.event(event, value)
            else:
                sink.append(value)
    return found


def _mask_mismatch(spec: ShapeSpec, image: ImageRecord) -> str | None:
    """What is wrong with where a mask lies, if anything: its rle covers the image, or its box,
    which lies within the image."""
    size = spec.rle["size"]
    if not (isinstance(size, list) and len(size) == 2
            and all(type(v) is int and v >= 0 for v in size)):
        return f"mask size {size!r} is not [height, width] in whole pixels"
    if spec.box is None:
        if size != [image.height, image.width]:
            return f"mask size {spec.rle['size']} is not the image size [{image.height}, {image.width}]"
        return None
    left, top, width, height = spec.box
    if size != [height, width]:
        return f"mask size {spec.rle['size']} is not its box's [height, width] [{height}, {width}]"
    if left < 0 or top < 0 or left + width > image.width or top + height > image.height:
        return f"mask box {list(spec.box)} does not lie within the {image.width}x{image.height} image"
    return None


def _read(stream, source, workdir, problem, problems) -> Manifest:
    head = _read_head(stream)
    versions = head["version"]
    if versions != [MANIFEST_VERSION]:
        found = versions[0] if versions else "none"
        raise ManifestError(source, [f"version is {found!r}; this service reads version 1"])

    labels: list[tuple[str, Color]] = []
    for i, raw in enumerate(head["labels"]):
        try:
            spec = LabelSpec.model_validate(raw)
            labels.append((spec.name, parse_color(spec.color, f"label {spec.name!r}")))
        except ValidationError as exc:
            problem(f"labels[{i}]: {_format_error(exc)}")
        except LabelMapError as exc:
            problem(f"labels[{i}]: {exc}")

    images: list[ImageRecord] = []
    index_of: dict[int | str, int] = {}
    seen_paths: dict[tuple[str, str], str] = {}
    for i, raw in enumerate(head["images"]):
        try:
            spec = ImageSpec.model_validate(raw)
        except ValidationError as exc:
            name = raw.get("name") if isinstance(raw, dict) else None
            problem(f"images[{i}] ({name!r}): {_format_error(exc)}")
            continue
        record = ImageRecord(spec.id, spec.name, spec.width, spec.height, spec.subset)
        key = (record.subset, record.item_name)
        if spec.id in index_of:
            problem(f"images[{i}] ({spec.name!r}): id {spec.id!r} is used twice")
            continue
        if key in seen_paths:
            problem(
                f"images[{i}] ({spec.name!r}): same output files as {seen_paths[key]!r}"
                f" in subset {record.subset!r}"
            )
            continue
        seen_paths[key] = spec.name
        index_of[spec.id] = len(images)
        images.append(record)
    if not images and not problems:
        problem("has no images")

    store = ShapeStore(workdir / "shapes.sqlite")
    store.create()
    batch: list[tuple] = []
    count = 0
    for i, raw in enumerate(_items(stream, "shapes.item")):
        count += 1
        try:
            spec = ShapeSpec.model_validate(raw)
        except ValidationError as exc:
            image = raw.get("image") if isinstance(raw, dict) else None
            problem(f"shapes[{i}] (image {image!r}): {_format_error(exc)}")
            continue
        image_index = index_of.get(spec.image)
        if image_index is None:
            problem(f"shapes[{i}]: image {spec.image!r} is not in the images list")
            continue
        record = images[image_index]
        points = np.asarray(spec.points, np.float64)
        rle = None
        if spec.rle is not None:
            mismatch = _mask_mismatch(spec, record)
            if mismatch:
                problem(f"shapes[{i}] (image {record.name!r}): {mismatch}")
                continue
            stored = {"size": spec.rle["size"], "counts": spec.rle["counts"]}
            if spec.box is not None:
                stored["box"] = spec.box
            rle = json.dumps(stored)
        batch.append(
            (
                image_index,
                i,
                spec.z_order,
                spec.label,
                SHAPE_KINDS.index(spec.type),
                spec.is_crowd,
                spec.instance,
                points.tobytes(),
                rle,
            )
        )
        if len(batch) >= 1000:
            store.add(batch)
            batch.clear()
    store.add(batch)
    store.finish()
    if problems:
        store.close()
        raise ManifestError(source, problems)
    return Manifest(labels, images, store, count)

