"""Manifest v1: the JSON annotations format of this service (export input, import output).

The file is read as a stream, shape by shape, and shapes are spooled to an SQLite file grouped by
image, so that a manifest of any size is read in flat memory and each image's shapes can be
fetched on their own by whichever process draws that image.
"""

from __future__ import annotations

import codecs
import json
import os
import posixpath
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import ijson
import numpy as np
import xxhash
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.cityscapes import quick_json, shape_memo
from worker.cityscapes.labels import Color, parse_color
from worker.cityscapes.quick_json import Entry, QuickValues, Unsure
from worker.cityscapes.rle import checked_runs, is_mask_size
from worker.cityscapes.shape_memo import MEMO_MAX_SHAPES, PendingIndex, PendingShapes, ShapeMemo
from worker.errors import LabelMapError, ManifestError

MANIFEST_VERSION = 1
MAX_IMAGE_SIDE = 32768
# An image's pixels, as drawn (the export holds a few full-size arrays of it) or as read back:
# 16384 x 16384, 128 times a Cityscapes frame; beyond, one image could take a worker's memory.
MAX_PIXELS = 1 << 28
MAX_PROBLEMS = 100

# Limits on what one file may ask of a worker, each refused with a message naming the place; the
# figures behind them are in the README ("Manifest v1").
MAX_DEPTH = 64  # JSON nesting (a manifest needs 5); refused while streaming, before any build
# One JSON token (a string or number) or a stretch of whitespace: yajl holds a token whole.
MAX_VALUE_BYTES = 32 << 20
# Pillow's fill walks every edge over each row it spans: a polygon costs its vertices plus the
# rows its edges cross. 500,000 vertices export in ~1.5 s; a hostile polygon whose every edge
# spans the image costs its rows, bounded per image by MAX_EDGE_ROWS (~2 s at the limit).
MAX_VERTICES = 500_000
MAX_EDGE_ROWS = 10_000_000
MAX_RLE_RUNS = 2 * MAX_VERTICES
MAX_SHAPES_PER_IMAGE = 100_000
# Values in one image, label or shape entry: a polygon's numbers, an RLE's runs, attributes.
MAX_ITEM_VALUES = 2 * MAX_VERTICES + 10_000
MAX_NAME_BYTES = 1024  # an image name, whole (a label name too)
MAX_NAME_PART_BYTES = 255  # one folder or file name of it, as file systems allow
INT64 = 1 << 63


def shown(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: its repr when short, else cut short or (a container)
    named by its type and length."""
    container = isinstance(value, (dict, list, tuple))
    text = repr(value) if not container or len(value) <= 8 else ""
    if container and (not text or len(text) > limit):
        return f"<{type(value).__name__} of {len(value)}>"
    return text if len(text) <= limit else text[: limit - 5] + "...'" + f" ({len(text):,} chars)"


def check_text(value: str, what: str, limit: int = MAX_NAME_BYTES) -> str:
    """Text that must be UTF-8 (a lone surrogate from a JSON escape is not) of bounded length."""
    try:
        size = len(value) if value.isascii() else len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} {shown(value)} holds a lone surrogate, not UTF-8 text") from None
    if size > limit:
        raise ValueError(f"{what} {shown(value)} is {size:,} bytes long, more than {limit:,}")
    return value


def check_relative_path(value: str, what: str) -> str:
    """A name that may become a path inside an archive: relative, no '..', no control bytes,
    UTF-8 of at most MAX_NAME_BYTES, each part at most MAX_NAME_PART_BYTES."""
    check_text(value, what)
    if not value or "\x00" in value or "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} {shown(value)} is empty or holds control characters or '\\'")
    if value.startswith("/") or ":" in value.split("/")[0]:
        raise ValueError(f"{what} {shown(value)} is an absolute path")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{what} {shown(value)} has an empty, '.' or '..' path part")
    longest = max(len(part.encode()) for part in parts)
    if longest > MAX_NAME_PART_BYTES:
        raise ValueError(
            f"{what} {shown(value)} has a part of {longest} bytes, more than {MAX_NAME_PART_BYTES}"
        )
    return value


Side = Annotated[int, Field(strict=True, gt=0, le=MAX_IMAGE_SIDE)]
Int64 = Annotated[int, Field(strict=True, ge=-INT64, lt=INT64)]
Coordinate = Annotated[float, Field(strict=True, allow_inf_nan=False)]
BoxInt = Annotated[int, Field(strict=True, ge=-INT64, lt=INT64)]
Key = Annotated[int, Field(strict=True)] | Annotated[str, Field(strict=True, max_length=1024)]


class LabelSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Annotated[str, Field(strict=True)]
    color: Annotated[str, Field(strict=True, max_length=64)] = "#000000"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_text(value, "label name")


class ImageSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Key
    name: Annotated[str, Field(strict=True)]
    width: Side
    height: Side
    subset: Annotated[str, Field(strict=True)] = "default"

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
    image: Key
    label: Annotated[str, Field(strict=True)]
    type: Literal["polygon", "rectangle", "mask"]
    points: list[Coordinate] = Field(default_factory=list)
    rle: dict[str, Any] | None = None
    # A mask given over a box of the image (as CVAT stores one): its rle covers that box only.
    box: tuple[BoxInt, BoxInt, BoxInt, BoxInt] | None = None  # left, top, width, height
    z_order: Int64 = 0
    attributes: dict[str, Any] = Field(default_factory=dict)
    instance: Annotated[int, Field(strict=True, ge=0, le=999)] | None = None

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        return check_text(value, "label")

    @model_validator(mode="after")
    def _geometry(self) -> ShapeSpec:
        crowd_flag(self.attributes.get("is_crowd", False))
        if len(self.points) > 2 * MAX_VERTICES:
            raise ValueError(
                f"polygon has {len(self.points) // 2:,} vertices, more than {MAX_VERTICES:,}"
            )
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


_CROWD_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False,
               "": False}


def crowd_flag(value: Any) -> bool:
    """An is_crowd attribute as tools write it: a bool, 0 or 1, or text ("true", as CVAT);
    ValueError for anything else, which no tool means as a flag."""
    if isinstance(value, str) and value.strip().lower() in _CROWD_TEXT:
        return _CROWD_TEXT[value.strip().lower()]
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"is_crowd {shown(value)} is not true or false (or 1 or 0)")


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
    digest: bytes = b""  # XXH3-128 of its entry's bytes in the manifest (entry_digest), if read


def shape_to_row(shape: Shape) -> list:
    """A compact JSON form of a shape, for chunk inputs (its points an array: orjson writes it
    with OPT_SERIALIZE_NUMPY as the list of its numbers, without making Python floats)."""
    return [shape.index, shape.label, shape.kind, shape.z_order, shape.is_crowd, shape.instance,
            shape.points, shape.rle, shape.digest.hex()]


def shape_identities(shapes: list[Shape]) -> list:
    """What decides each shape, for a cache key: its entry's digest, else (a shape not read
    from a manifest) its values."""
    return [s.digest.hex() if s.digest else shape_to_row(s)[1:-1] for s in shapes]


def shape_from_row(row: list) -> Shape:
    index, label, kind, z_order, is_crowd, instance, points, rle, digest = row
    return Shape(index, label, kind, z_order, is_crowd, instance, np.asarray(points, np.float64),
                 rle, bytes.fromhex(digest))


def image_to_row(image: ImageRecord) -> list:
    return [image.id, image.name, image.width, image.height, image.subset]


def image_from_row(row: list) -> ImageRecord:
    return ImageRecord(*row)


def _format_error(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()
    )


class ShapeStore:
    """Shapes grouped by image in an SQLite file; each process opens its own connection. The
    entries a reading took from a memo unbuilt (shape_memo) are pending beside it, and built
    from `source` when their image's shapes are wanted."""

    def __init__(self, path: Path, source: str | None = None):
        self.path = Path(path)
        self.source = source
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._pending: PendingIndex | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "source": self.source}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["source"])

    @property
    def pending_path(self) -> Path:
        return self.path.with_suffix(".pending.npz")

    def _pending_of(self, image_index: int) -> tuple[PendingIndex, slice] | None:
        if self._pending is None:
            if self.source is None or not self.pending_path.exists():
                return None
            self._pending = PendingIndex(self.pending_path)
        return self._pending, self._pending.of(image_index)

    def refs_of(self, image_index: int) -> tuple[list[int], list[str]]:
        """The image's shapes in drawing order, as their places in the manifest and their
        entries' digests (hex), without building any (what a cache key needs)."""
        rows = self._connection().execute(
            "SELECT z, seq, digest FROM shapes WHERE image = ? ORDER BY z, seq", (image_index,))
        refs = [(z, seq, digest.hex()) for z, seq, digest in rows]
        found = self._pending_of(image_index)
        if found is not None:
            pending, at = found
            refs += zip(pending.z[at].tolist(), pending.seq[at].tolist(),
                        [bytes(d).hex() for d in pending.digest[at]])
            refs.sort()
        return [seq for _, seq, _ in refs], [digest for _, _, digest in refs]

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = sqlite3.connect(self.path)
            self._pid = os.getpid()
        return self._conn

    def create(self) -> None:
        # A scratch file, read back by this job only: no journal, no waiting for the disk.
        self._connection().executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        self._connection().execute(
            "CREATE TABLE shapes (image INTEGER, seq INTEGER, z INTEGER, label TEXT,"
            " kind INTEGER, crowd INTEGER, instance INTEGER, points BLOB, rle TEXT, digest BLOB)"
        )

    def add(self, rows: list[tuple]) -> None:
        self._connection().executemany("INSERT INTO shapes VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def finish(self) -> None:
        conn = self._connection()
        conn.execute("CREATE INDEX by_image ON shapes (image, z, seq)")
        conn.commit()

    def shapes_of(self, image_index: int) -> list[Shape]:
        """The image's shapes in drawing order: ascending z_order, then input order."""
        rows = self._connection().execute(
            "SELECT seq, label, kind, z, crowd, instance, points, rle, digest FROM shapes"
            " WHERE image = ? ORDER BY z, seq",
            (image_index,),
        )
        shapes = [
            Shape(
                index=seq,
                label=label,
                kind=SHAPE_KINDS[kind],
                z_order=z,
                is_crowd=bool(crowd),
                instance=instance,
                points=np.frombuffer(points, np.float64),
                rle=json.loads(rle) if rle else None,
                digest=digest,
            )
            for seq, label, kind, z, crowd, instance, points, rle, digest in rows
        ]
        pending = self._built_pending(image_index)
        if not pending:
            return shapes  # in drawing order already
        return sorted(shapes + pending, key=lambda shape: (shape.z_order, shape.index))

    def _built_pending(self, image_index: int) -> list[Shape]:
        """The image's pending entries, read again from the manifest and built. They were valid
        when read; their bytes must still be those read."""
        found = self._pending_of(image_index)
        if found is None:
            return []
        pending, at = found
        shapes = []
        with open(self.source, "rb") as stream:
            for seq, offset, size, digest in zip(pending.seq[at].tolist(),
                                                 pending.offset[at].tolist(),
                                                 pending.size[at].tolist(), pending.digest[at]):
                data = entry_bytes(stream.fileno(), offset, size, bytes(digest), self.source,
                                   f"shapes[{seq}]")
                spec = ShapeSpec.model_validate(json.loads(data))
                shapes.append(Shape(seq, spec.label, spec.type, spec.z_order, spec.is_crowd,
                                    spec.instance, np.asarray(spec.points, np.float64), None,
                                    bytes(digest)))
        return shapes

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
    memo: ShapeMemo | None = None  # what the reading learnt, when it was asked to (recall)
    images_digest: bytes = b""  # what a memo is kept under

    def shapes_of(self, image_index: int) -> list[Shape]:
        return self.store.shapes_of(image_index)


class JsonGuard:
    """The file as ijson reads it: malformed UTF-8, nesting past MAX_DEPTH, one value past
    MAX_VALUE_BYTES and an entry of a top-level list with more than MAX_ITEM_VALUES values are
    refused as they come, naming the place, before yajl or a builder takes them whole."""

    def __init__(self, stream: BinaryIO, source: str):
        self._stream = stream
        self.source = source
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.offset = 0  # bytes read
        self.quiet = 0  # bytes read since the last event
        self.section, self.index = "", -1  # the top-level list entry being read, for messages
        self._carry = b""  # the end of the last read, when an escape may go on past it
        self._held = b""  # the rest of a deeply nested read, handed out in small pieces

    def _check_escapes(self, data: bytes) -> None:
        """yajl turns a \\u escape of a lone UTF-16 surrogate into '?': refuse it instead."""
        window = self._carry + data
        base = self.offset - len(self._carry)
        self._carry = b""
        high, tail = None, 0  # high: where a high surrogate's escape ended, awaiting its low
        for match in _ESCAPE.finditer(window):
            tail = match.end()
            if len(match[1]) % 2 == 0:
                continue  # an escaped backslash, then the letter u
            unit, start = int(match[2], 16), match.end() - 6
            if high is not None and start == high and 0xDC00 <= unit <= 0xDFFF:
                high = None
            elif high is not None or 0xDC00 <= unit <= 0xDFFF:
                raise self._lone_surrogate(base + (start if high is None else high - 6))
            elif 0xD800 <= unit <= 0xDBFF:
                high = match.end()
        if high is not None:
            if not data or not _ESCAPE_START.fullmatch(window, high):
                raise self._lone_surrogate(base + high - 6)
            self._carry = window[high - 6 :]  # its low half may come with the next read
        elif data and b"\\" in window[max(tail, len(window) - 5) :]:
            self._carry = window[max(tail, len(window) - 16) :]  # an escape may begin there

    def _lone_surrogate(self, at: int) -> ManifestError:
        return self.refuse(f"holds a lone UTF-16 surrogate (a \\u escape) near byte {at:,}")

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing, to learn whether the file gives bytes
            return b""
        if self._held:
            data, self._held = self._held[:_SMALL_READ], self._held[_SMALL_READ:]
            return data
        data = self.read_checked(size)
        if data.count(b"[") + data.count(b"{") > _SMALL_READ and _nesting(data) > _SMALL_READ:
            # ijson builds the events of a whole read, each with its path, before they reach
            # the depth check: 50,000 levels in one read would take gigabytes of paths.
            data, self._held = data[:_SMALL_READ], data[_SMALL_READ:]
        return data

    def read_checked(self, size: int) -> bytes:
        """Bytes of the file, their UTF-8, escapes and length of values checked."""
        data = self._stream.read(size if 0 < size <= 1 << 20 else 1 << 16)
        try:
            self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            at = max(self.offset + exc.start - 3, 0)
            raise self.refuse(f"holds malformed UTF-8 ({exc.reason}) near byte {at:,}") from None
        if self._carry or b"\\u" in data or b"\\" in data[-5:]:
            self._check_escapes(data)
        self.offset += len(data)
        self.quiet += len(data)
        if self.quiet > MAX_VALUE_BYTES:
            raise self.refuse(
                f"holds a single value (or blank stretch) of more than {MAX_VALUE_BYTES >> 20} MiB"
                f" near byte {self.offset:,}"
            )
        return data

    def place(self) -> str:
        return f"{self.section}[{self.index}]" if self.section else "top level"

    def refuse(self, text: str) -> ManifestError:
        return ManifestError(self.source, [f"{self.place()}: {text}"])

    def events(self) -> Iterator[tuple[str, str, Any]]:
        depth = values = 0
        for prefix, event, value in ijson.parse(self, use_float=True):
            self.quiet = 0
            step = _DEPTH_STEP.get(event, 0)
            if step > 0 and depth == 2:  # an entry of a top-level list begins
                section = prefix.removesuffix(".item")
                self.index = self.index + 1 if section == self.section else 0
                self.section = section
            depth += step
            if depth > 2:
                values += 1
                if values > MAX_ITEM_VALUES:
                    raise self.refuse(
                        f"holds more than {MAX_ITEM_VALUES:,} values (a polygon may have"
                        f" {MAX_VERTICES:,} vertices, a mask {MAX_RLE_RUNS:,} runs)"
                    )
                if depth > MAX_DEPTH:
                    raise self.refuse(f"is nested more than {MAX_DEPTH} levels deep")
            else:
                values = 0
                if depth < 0 or depth > MAX_DEPTH:  # cannot happen at 2; kept for the root
                    raise self.refuse(f"is nested more than {MAX_DEPTH} levels deep")
            yield prefix, event, value


_ESCAPE = re.compile(rb"(\\+)u([0-9a-fA-F]{4})")
_ESCAPE_START = re.compile(rb"(\\(u[0-9a-fA-F]{0,3})?)?")  # what may begin one
_SMALL_READ = 256


def _nesting(data: bytes) -> int:
    """How deep brackets nest within `data` (those in strings too: an upper bound)."""
    codes = np.frombuffer(data, np.uint8)
    step = (codes == 91).astype(np.int32) + (codes == 123) - (codes == 93) - (codes == 125)
    return int(np.cumsum(step).max(initial=0))


_DEPTH_STEP = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}


def json_events(stream: BinaryIO, source: str) -> Iterator[tuple[str, str, Any]]:
    """ijson's parse events of `stream` from its start, within the limits of JsonGuard."""
    stream.seek(0)
    return JsonGuard(stream, source).events()


def read_manifest(path: str | os.PathLike, workdir: str | os.PathLike,
                  recall: Recall | None = None) -> Manifest:
    """Parse and validate a manifest; raise ManifestError listing every problem found.

    Shapes go to an SQLite file in `workdir`, which the caller owns and removes. With `recall`
    (images digest -> the memo an earlier reading left, or None), shape entries it vouches for
    are neither built nor validated again, and the manifest carries its own memo to keep; the
    file must then stay as it is while its shapes are read (it is checked).
    """
    source = os.fspath(path)
    try:
        stream = open(source, "rb")
    except OSError as exc:
        raise ManifestError(source, [f"cannot be read ({exc.strerror})"]) from None
    with stream:
        try:
            return _ManifestReader(stream, source, Path(workdir), quick=True, recall=recall).read()
        except Unsure:
            (Path(workdir) / _SHAPES_FILE).unlink(missing_ok=True)
        try:
            return _ManifestReader(stream, source, Path(workdir), quick=False).read()
        except ijson.JSONError as exc:
            raise invalid_json(source, exc) from None


def invalid_json(source: str, exc: ijson.JSONError) -> ManifestError:
    detail = " ".join(str(exc).split())[:200]
    return ManifestError(source, [f"is not valid JSON ({detail})"])


_HEAD_KEYS = ("version", "labels", "images")
_HEAD_PREFIXES = ("version", "labels.item", "images.item")
_CONTAINER_START = ("start_map", "start_array")


def top_level_values(
    events: Iterator[tuple[str, str, Any]], prefixes: tuple[str, ...]
) -> Iterator[tuple[str, Any]]:
    """(prefix, value) for each whole value at one of `prefixes` ("images.item": each image),
    and ("", key) for each key of the root object, so that a reader may stop early."""
    builder, depth, current = None, 0, ""
    for prefix, event, value in events:
        if builder is not None:
            builder.event(event, value)
            depth += _DEPTH_STEP.get(event, 0)
            if depth == 0:
                yield current, builder.value
                builder = None
        elif prefix in prefixes:
            if event in _CONTAINER_START:
                builder, depth, current = ijson.ObjectBuilder(), 1, prefix
                builder.event(event, value)
            elif _DEPTH_STEP.get(event, 0) == 0:
                yield prefix, value
        elif prefix == "" and event == "map_key":
            yield "", value


class TopLevelValues:
    """top_level_values of a file, whose `wanted` prefixes may change between values (a reader
    that stops at a key goes on, wanting others): exactly, event by event, or (quick) through
    QuickValues, which raises Unsure where only the exact reading may judge."""

    def __init__(self, stream: BinaryIO, source: str, wanted: tuple[str, ...], quick: bool):
        if quick:
            stream.seek(0)
            guard = JsonGuard(stream, source)
            self._values: Any = QuickValues(partial(_quick_read, guard), wanted, MAX_DEPTH,
                                            MAX_ITEM_VALUES, MAX_VALUE_BYTES, entries=True)
        else:
            self._events = json_events(stream, source)
            self._values = top_level_values(self._events, wanted)

    def want(self, wanted: tuple[str, ...], known: Callable[[bytes], bool] | None = None) -> None:
        """Go on wanting `wanted`; entries whose digest `known` accepts (valid before) may come
        unbuilt, their value None (only the quick reading leaves them so)."""
        if isinstance(self._values, QuickValues):
            self._values.want(wanted, known)
        else:
            self._values = top_level_values(self._events, wanted)

    def __iter__(self) -> TopLevelValues:
        return self

    def __next__(self) -> tuple[str, Any]:
        """(prefix, Entry) for an entry of a list, (prefix, value) for a scalar at a key,
        ("", key) for a key of the root."""
        prefix, value = next(self._values)
        if prefix.endswith(".item") and not isinstance(value, Entry):
            return prefix, Entry(value, value_digest(value), None, 0)
        return prefix, value


def entry_bytes(fd: int, offset: int, size: int, digest: bytes, source: str,
                place: str | None = None) -> bytes:
    """An entry's bytes read again from the file, refused unless they are the ones read."""
    data = os.pread(fd, size, offset)
    if xxhash.xxh3_128_digest(data) != digest:
        raise ManifestError(source, [f"{place}: changed while being read" if place
                                     else "changed while being read"])
    return data


def value_digest(value: Any) -> bytes:
    """The digest of a value the exact reading built, which has no bytes of its own: that of
    its JSON text, marked so that it never equals the digest of an entry's own bytes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return xxhash.xxh3_128_digest(b"\x00exact " + text.encode("utf-8", "surrogatepass"))


def _quick_read(guard: JsonGuard, size: int) -> bytes:
    """The guard's bytes (UTF-8 and escapes checked) for QuickValues, which bounds the length of
    values itself; a refusal is left to the exact reading, which names its place."""
    guard.quiet = 0
    try:
        return guard.read_checked(size)
    except ManifestError:
        raise Unsure from None


def _mask_mismatch(spec: ShapeSpec, image: ImageRecord) -> str | None:
    """What is wrong with a mask, if anything: its runs must cover its size exactly, and it
    covers the image, or its box, which lies within the image."""
    size = spec.rle["size"]
    if not is_mask_size(size):
        return f"mask size {shown(size)} is not [height, width] in whole pixels"
    try:
        height, width, runs = checked_runs(spec.rle)
    except ValueError as exc:
        return f"mask RLE is broken ({exc})"
    if len(runs) > MAX_RLE_RUNS:
        return f"mask has {len(runs):,} runs, more than {MAX_RLE_RUNS:,}"
    size = [height, width]
    if spec.box is None:
        if size != [image.height, image.width]:
            return f"mask size {size} is not the image size [{image.height}, {image.width}]"
        return None
    left, top, box_width, box_height = spec.box
    if size != [box_height, box_width]:
        return f"mask size {size} is not its box's [height, width] [{box_height}, {box_width}]"
    if left < 0 or top < 0 or left + box_width > image.width or top + box_height > image.height:
        return f"mask box {list(spec.box)} does not lie within the {image.width}x{image.height} image"
    return None


def edge_rows(polygons: list[np.ndarray], heights: list[int]) -> list[int]:
    """The image rows each polygon's edges cross, in all (what Pillow's fill walks for it), for
    many polygons in one numpy pass: flat x0, y0, x1, y1, ... each, in images of `heights`."""
    counts = np.array([len(p) // 2 for p in polygons], np.int64)
    result = np.zeros(len(polygons), np.int64)
    some = counts > 0
    if not some.any():
        return result.tolist()
    counts = counts[some]
    y = np.concatenate([p[1::2] for p, n in zip(polygons, some) if n])
    tops = np.repeat(np.asarray(heights, np.float64)[some], counts)
    y = np.clip(np.floor(y + 0.5), 0, tops)
    lasts = np.cumsum(counts) - 1
    firsts = lasts - counts + 1
    steps = np.abs(np.diff(y, append=0.0))
    steps[lasts] = 0.0  # not a step: the next polygon begins there
    ends = np.cumsum(steps)
    closing = np.abs(y[lasts] - y[firsts])
    result[some] = ends[lasts] - ends[firsts] + steps[firsts] + closing
    return result.tolist()


class _ImageIndex:
    """Image ids to their position, and the output files each image claims, kept compactly:
    a manifest may list millions of images."""

    def __init__(self) -> None:
        self.position: dict[int | str, int] = {}
        self._claims: dict[int, int] = {}  # hash of (subset, item name) -> position
        self._colliding: dict[tuple[str, str], int] = {}  # the rare pairs whose hashes meet

    def claimant(self, images: list[ImageRecord], record: ImageRecord) -> ImageRecord | None:
        """The earlier image writing the same files as `record`, else None (and `record`'s
        claim is kept, at position len(images))."""
        key = (record.subset, record.item_name)
        earlier = self._claims.get(hash(key))
        if earlier is None:
            self._claims[hash(key)] = len(images)
            return None
        if (images[earlier].subset, images[earlier].item_name) == key:
            return images[earlier]
        other = self._colliding.setdefault(key, len(images))
        return images[other] if other != len(images) else None


_shared: dict[Any, Any] = {}


def _share(value: Any) -> Any:
    """One object for the values images repeat (sizes, subsets): 1,000,000 images, 100 MB less."""
    if len(_shared) > 10_000:
        _shared.clear()
    return _shared.setdefault(value, value)


_SHAPES_FILE = "shapes.sqlite"


Recall = Callable[[bytes], "ShapeMemo | None"]  # the memo kept for a manifest's images, if any
# What a memo vouches for holds under the rules of reading it was made by: these modules' code.
_RULES = xxhash.xxh3_128_digest(b"".join(
    Path(module).read_bytes() for module in (__file__, quick_json.__file__, shape_memo.__file__)))


class _ManifestReader:
    def __init__(self, stream: BinaryIO, source: str, workdir: Path, quick: bool,
                 recall: Recall | None = None):
        self.stream, self.source, self.workdir = stream, source, workdir
        self.quick = quick
        self.problems: list[str] = []
        self.labels: list[tuple[str, Color]] = []
        self.images: list[ImageRecord] = []
        self.index = _ImageIndex()
        self.images_digest = xxhash.xxh3_128(_RULES)  # and of the image entries' digests
        self.recall = recall if quick else None
        self.old: ShapeMemo | None = None  # what an earlier reading learnt
        self.new: ShapeMemo | None = ShapeMemo() if self.recall else None  # and this one
        self.pending = PendingShapes()
        self._by_text: dict[bytes, int | None] = {}  # image ids as JSON text -> position
        self._texts: dict[int | str, bytes] = {}  # each image id's JSON text, made once

    def problem(self, text: str) -> None:
        self.problems.append(text)
        if len(self.problems) >= MAX_PROBLEMS:
            raise ManifestError(self.source, self.problems)

    def read(self) -> Manifest:
        versions, rest = self._read_head()
        if versions != [MANIFEST_VERSION]:
            found = shown(versions[0]) if versions else "'none'"
            raise ManifestError(
                self.source, [f"version is {found}; this service reads version 1"]
            )
        if len(self.problems) >= MAX_PROBLEMS:
            raise ManifestError(self.source, self.problems)
        if not self.images and not self.problems:
            self.problem("has no images")
        store = ShapeStore(self.workdir / _SHAPES_FILE, self.source)
        store.create()
        if self.recall is not None:
            self.old = self.recall(self.images_digest.digest())
        try:
            count = self._read_shapes(store, rest)
        except BaseException:
            store.close()
            raise
        store.finish()
        if self.problems:
            store.close()
            raise ManifestError(self.source, self.problems)
        if len(self.pending):
            self.pending.save(store.pending_path)
        return Manifest(self.labels, self.images, store, count,
                        memo=self.new, images_digest=self.images_digest.digest())

    def _values(self, wanted: tuple[str, ...]) -> TopLevelValues:
        return TopLevelValues(self.stream, self.source, wanted, self.quick)

    def _read_head(self) -> tuple[list[Any], TopLevelValues | None]:
        """version, labels and images in one pass that stops where the shapes begin, when they
        come last (as writers put them); otherwise it walks on past them. Problems are kept
        until the version is known (a file of another version fails on that alone)."""
        versions: list[Any] = []
        seen: set[str] = set()
        counts = {"labels.item": 0, "images.item": 0}
        values = self._values(_HEAD_PREFIXES)
        for prefix, value in values:
            if prefix == "":
                if value == "shapes" and seen >= set(_HEAD_KEYS):
                    return versions, values  # the shapes pass goes on from here
                seen.add(value)
            elif prefix == "version":
                versions.append(value)
            elif len(self.problems) < MAX_PROBLEMS:
                i = counts[prefix]
                (self._add_label if prefix == "labels.item" else self._add_image)(i, value.value)
                if prefix == "images.item":
                    self.images_digest.update(value.digest)
            if prefix in counts:
                counts[prefix] += 1
        return versions, None

    def _add_label(self, i: int, raw: Any) -> None:
        try:
            spec = LabelSpec.model_validate(raw)
            self.labels.append((spec.name, parse_color(spec.color, f"label {spec.name!r}")))
        except ValidationError as exc:
            self.problems.append(f"labels[{i}]: {_format_error(exc)}")
        except LabelMapError as exc:
            self.problems.append(f"labels[{i}]: {exc}")

    def _add_image(self, i: int, raw: Any) -> None:
        try:
            spec = ImageSpec.model_validate(raw)
        except ValidationError as exc:
            name = raw.get("name") if isinstance(raw, dict) else None
            self.problems.append(f"images[{i}] ({shown(name)}): {_format_error(exc)}")
            return
        if spec.id in self.index.position:
            self.problems.append(
                f"images[{i}] ({shown(spec.name)}): id {shown(spec.id)} is used twice"
            )
            return
        record = ImageRecord(
            spec.id, spec.name, _share(spec.width), _share(spec.height), _share(spec.subset)
        )
        earlier = self.index.claimant(self.images, record)
        if earlier is not None:
            self.problems.append(
                f"images[{i}] ({shown(spec.name)}): same output files as {shown(earlier.name)}"
                f" in subset {shown(record.subset)}"
            )
            return
        self.index.position[spec.id] = len(self.images)
        self.images.append(record)

    def _read_shapes(self, store: ShapeStore, rest: TopLevelValues | None) -> int:
        """Shapes, from where the head pass stopped (at the key "shapes") or from the start, a
        group at a time (validated together, edge rows counted in one numpy pass). An error of
        the file met while a group fills waits until the group's shapes are judged, so that the
        outcome is the one of taking them one by one."""
        shapes_of = np.zeros(len(self.images), np.int64)  # per image, for the limits
        rows_of = np.zeros(len(self.images), np.int64)
        count = 0
        values = self._values(("shapes.item",)) if rest is None else rest
        values.want(("shapes.item",), self.old.knows if self.old is not None else None)
        group: list[Entry] = []
        error = None
        while error is None:
            try:
                prefix, raw = next(values)
            except StopIteration:
                break
            except (ijson.JSONError, ManifestError) as exc:
                error = exc
                break
            if prefix == "":
                continue
            group.append(raw)
            if len(group) == _SHAPE_GROUP:
                count = self._add_shapes(store, group, count, shapes_of, rows_of)
                group = []
        count = self._add_shapes(store, group, count, shapes_of, rows_of)
        if error is not None:
            raise error
        return count

    def _add_shapes(self, store: ShapeStore, group: list[Entry], first: int,
                    shapes_of: np.ndarray, rows_of: np.ndarray) -> int:
        known = {k: self._known(entry) for k, entry in enumerate(group) if entry.value is None}
        for k in [k for k, found in known.items() if found is None]:
            group[k].value = self._built(group[k])  # valid before, for another image
            del known[k]
        built = [k for k in range(len(group)) if k not in known]
        specs = dict(zip(built, _validated_shapes([group[k].value for k in built])))
        images = {k: self.index.position.get(spec.image) if isinstance(spec, ShapeSpec) else None
                  for k, spec in specs.items()}
        drawn = [k for k, spec in specs.items() if images[k] is not None and spec.type != "mask"]
        points = {k: np.asarray(specs[k].points, np.float64) for k in drawn}
        rows = dict(zip(drawn, edge_rows([points[k] for k in drawn],
                                         [self.images[images[k]].height for k in drawn])))
        batch = []
        for k, entry in enumerate(group):
            if k in known:
                self._add_known(first + k, entry, *known[k], shapes_of, rows_of)
                continue
            row = self._shape_row(first + k, entry, specs[k], images[k], points.get(k),
                                  rows.get(k, 0), shapes_of, rows_of)
            if row is not None:
                batch.append(row)
        store.add(batch)
        if self.new is not None and len(self.new) > MEMO_MAX_SHAPES:
            self.new = None
        return first + len(group)

    def _known(self, entry: Entry) -> tuple[bytes, int, int, int] | None:
        """(image id text, image position, z_order, edge rows) of an entry the memo vouches
        for, when its image is here with the height it was counted for; else None."""
        assert self.old is not None
        text, z, height, rows = self.old.get(entry.digest)
        if text not in self._by_text:
            self._by_text[text] = self.index.position.get(json.loads(text))
        image_index = self._by_text[text]
        if image_index is None or self.images[image_index].height != height:
            return None
        return text, image_index, z, rows

    def _built(self, entry: Entry) -> Any:
        """An entry left unbuilt, read again and built."""
        assert entry.offset is not None
        return json.loads(entry_bytes(self.stream.fileno(), entry.offset, entry.size,
                                      entry.digest, self.source))

    def _add_known(self, i: int, entry: Entry, text: bytes, image_index: int, z: int,
                   edge_rows: int, shapes_of: np.ndarray, rows_of: np.ndarray) -> None:
        """A shape the memo vouches for: counted against its image's limits, and left pending
        (built when its image's shapes are wanted)."""
        if not self._within_limits(i, image_index, edge_rows, shapes_of, rows_of):
            return
        self.pending.add(image_index, i, z, entry.offset, entry.size, entry.digest)
        if self.new is not None:
            self.new.add(entry.digest, text, z, self.images[image_index].height, edge_rows)

    def _within_limits(self, i: int, image_index: int, edge_rows: int | None,
                       shapes_of: np.ndarray, rows_of: np.ndarray) -> bool:
        """Whether the image takes one more shape (whose polygon crosses `edge_rows`, None
        for a mask); the problem is kept when it does not."""
        record = self.images[image_index]
        shapes_of[image_index] += 1
        if shapes_of[image_index] > MAX_SHAPES_PER_IMAGE:
            if shapes_of[image_index] == MAX_SHAPES_PER_IMAGE + 1:
                self.problem(f"shapes[{i}] (image {shown(record.name)}): the image has more"
                             f" than {MAX_SHAPES_PER_IMAGE:,} shapes")
            return False
        if edge_rows is not None:
            rows_before = rows_of[image_index]
            rows_of[image_index] += edge_rows
            if rows_of[image_index] > MAX_EDGE_ROWS >= rows_before:
                self.problem(
                    f"shapes[{i}] (image {shown(record.name)}): the image's polygon edges cross"
                    f" more than {MAX_EDGE_ROWS:,} rows in all (each edge counts the rows it"
                    " spans), more than can be drawn in reasonable time"
                )
                return False
        return True

    def _shape_row(self, i: int, entry: Entry, spec: ShapeSpec | ValidationError,
                   image_index: int | None, points: np.ndarray | None, edge_rows: int,
                   shapes_of: np.ndarray, rows_of: np.ndarray) -> tuple | None:
        if isinstance(spec, ValidationError):
            raw = entry.value
            image = raw.get("image") if isinstance(raw, dict) else None
            self.problem(f"shapes[{i}] (image {shown(image)}): {_format_error(spec)}")
            return None
        if image_index is None:
            self.problem(f"shapes[{i}]: image {shown(spec.image)} is not in the images list")
            return None
        record = self.images[image_index]

        drawn = points is not None
        if not self._within_limits(i, image_index, edge_rows if drawn else None, shapes_of,
                                   rows_of):
            return None
        if points is None:
            points = np.asarray(spec.points, np.float64)
        rle = None
        if spec.rle is not None:
            mismatch = _mask_mismatch(spec, record)
            if mismatch:
                self.problem(f"shapes[{i}] (image {shown(record.name)}): {mismatch}")
                return None
            stored = {"size": spec.rle["size"], "counts": spec.rle["counts"]}
            if spec.box is not None:
                stored["box"] = spec.box
            rle = json.dumps(stored)
        elif self.new is not None:  # valid whatever its image's width: a memo may vouch for it
            text = self._texts.get(spec.image)
            if text is None:
                text = self._texts[spec.image] = json.dumps(spec.image).encode()
            self.new.add(entry.digest, text, spec.z_order, record.height, edge_rows)
        return (
            image_index,
            i,
            spec.z_order,
            spec.label,
            SHAPE_KINDS.index(spec.type),
            spec.is_crowd,
            spec.instance,
            points.tobytes(),
            rle,
            entry.digest,
        )


_SHAPE_GROUP = 1000
_SHAPE_LIST = TypeAdapter(list[ShapeSpec])


def _validated_shapes(group: list[Any]) -> list[ShapeSpec | ValidationError]:
    """Each shape's spec, or what is wrong with it: the group is validated in one call (half the
    cost of one call a shape) unless one of them fails."""
    try:
        return _SHAPE_LIST.validate_python(group)
    except ValidationError:
        pass
    specs: list[ShapeSpec | ValidationError] = []
    for raw in group:
        try:
            specs.append(ShapeSpec.model_validate(raw))
        except ValidationError as exc:
            specs.append(exc)
    return specs
