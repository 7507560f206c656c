"""A content-addressed cache of each image's encoded zip entries, so that a re-export redraws only
the images whose inputs changed.

An entry's key is a digest of everything that decides the image's entries: the image record, its
shapes in drawing order, the label map, the export options, the photo's identity when photos are
saved (size and modification time of a local file, size and ETag of an S3 object), and
ENCODER_VERSION, which changes whenever the encoder's output could (PNG settings, zip records,
polygons.json). The same key therefore always stands for the same bytes: entries are written
whole (S3 PUT; a local write is renamed into place), and two jobs writing one entry write the same
thing. An entry is checked before use (its format version, the length and XXH3-128 digest of its
bytes); one that fails is drawn again and replaced, never shipped.

The cache lives under a prefix of any storage (a local folder, s3://bucket/prefix); nothing in it
is needed by a job, so an operator may expire it at will (an S3 lifecycle rule).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass

import orjson
import xxhash

from worker.cityscapes.archive import EntryRecord
from worker.cityscapes.shape_memo import ShapeMemo
from worker.errors import CityscapesWorkerError, StorageNotFound
from worker.storage import join_url, storage_for

log = logging.getLogger("cityscapes.cache")
# Bump whenever the bytes an image encodes to could change for the same inputs.
ENCODER_VERSION = 1
_MAGIC = b"CSRN2"  # 2: entries checked by XXH3-128 (BLAKE2b before: a tenth of a re-export's CPU)
_HEADER = struct.Struct(">5sHI")  # magic, encoder version, length of the JSON head


def image_key(recipe: bytes, image_row: list, shapes: list, photo: str | None) -> str:
    """The digest of one image's inputs; `recipe` is what every image of the job shares. Shapes
    are given in drawing order, each by what decides it: the digest of its entry's bytes in
    the manifest, or else its values; never by its place in the manifest (editing one image
    moves the later images' shapes there; see `unpack`)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(recipe)
    digest.update(orjson.dumps([image_row, shapes, photo], option=orjson.OPT_SERIALIZE_NUMPY))
    return digest.hexdigest()


def chunk_key(recipe: bytes, first: bool, image_keys: list[str]) -> str:
    """The digest of a chunk's run: its images' keys in order, and whether it opens the zip
    (the first run carries the label colors file)."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(recipe)
    digest.update(orjson.dumps([first, image_keys]))
    return digest.hexdigest()


@dataclass(frozen=True)
class KeptRun:
    """A chunk's run as the cache keeps it: where, and what it holds."""

    url: str
    fingerprint: str
    size: int
    records: list[EntryRecord]
    objects: int
    warnings: list[str]
    panoptic: list[dict]  # its images' panoptic records, when the job asked for them


def pack(blob: bytes, records: list[EntryRecord], objects: int, warnings: list[str],
         indices: list[int], panoptic: dict | None = None) -> bytes:
    """An entry; `indices` are the shapes' places in their manifest, which only warnings name;
    `panoptic` the image's record for its subset's panoptic JSON, when it has one."""
    head = json.dumps({
        "records": [r.to_json() for r in records], "objects": objects, "warnings": warnings,
        "panoptic": panoptic,
        "indices": indices if _names_shapes(warnings, indices) else [],
        "size": len(blob), "digest": xxhash.xxh3_128_hexdigest(blob),
    }).encode()
    return _HEADER.pack(_MAGIC, ENCODER_VERSION, len(head)) + head + blob


def _names_shapes(warnings: list[str], indices: list[int]) -> bool:
    """Whether a warning names a shape by its place in the manifest ("..., shape 17: ...")."""
    return any(f", shape {i}" in warning for warning in warnings for i in set(indices))


CachedRun = tuple[bytes, list[EntryRecord], int, list[str], dict | None]


def unpack(data: bytes, indices: list[int] | None = None) -> CachedRun | None:
    """An entry's run, or None if it is not a whole entry of this encoder version, or if its
    warnings name shapes by places in the manifest other than `indices` (when given)."""
    try:
        magic, version, length = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != ENCODER_VERSION:
            return None
        head = json.loads(data[_HEADER.size:_HEADER.size + length])
        blob = data[_HEADER.size + length:]
        if len(blob) != head["size"] or xxhash.xxh3_128_hexdigest(blob) != head["digest"]:
            return None
        if head["indices"] and indices is not None and head["indices"] != indices:
            return None
        records = [EntryRecord(**r) for r in head["records"]]
        return blob, records, int(head["objects"]), list(head["warnings"]), head.get("panoptic")
    except (struct.error, ValueError, KeyError, TypeError):
        return None


class RunCache:
    """Entries under `prefix` (a folder or an s3:// prefix), two levels deep by key."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.store = storage_for(prefix)

    def url(self, key: str) -> str:
        return join_url(self.prefix, f"v{ENCODER_VERSION}", key[:2], key)

    def get(self, key: str, indices: list[int]) -> CachedRun | None:
        """The entry's run; None if absent, damaged or unreadable (the image is drawn again)."""
        try:
            return unpack(self.store.read(self.url(key)), indices)
        except StorageNotFound:
            return None
        except CityscapesWorkerError as exc:  # the cache is an optimisation: never fail a job
            log.warning("cache entry %s not read: %s", key, exc)
            return None

    def _run_urls(self, key: str) -> tuple[str, str]:
        """A chunk's run and its description (records, counts, warnings, the run's fingerprint
        in the store), under runs/."""
        base = join_url(self.prefix, f"v{ENCODER_VERSION}", "runs", key[:2], key)
        return base + ".zip-run", base + ".json"

    def find_run(self, key: str, indices: list[int]) -> KeptRun | None:
        """The chunk run `key`, if it is kept and still the object it was described as (its
        fingerprint: size and ETag on S3); else None. Whoever joins it into an output checks
        the fingerprint again as it copies (Storage.compose)."""
        run_url, head_url = self._run_urls(key)
        try:
            head = json.loads(self.store.read(head_url))
            if head["version"] != ENCODER_VERSION or \
                    head["indices"] and head["indices"] != indices:
                return None
            if self.store.fingerprint(run_url) != head["fingerprint"]:
                return None
            return KeptRun(run_url, head["fingerprint"], int(head["size"]),
                           [EntryRecord(**r) for r in head["records"]], int(head["objects"]),
                           list(head["warnings"]), list(head["panoptic"]))
        except StorageNotFound:
            return None
        except (CityscapesWorkerError, ValueError, KeyError, TypeError) as exc:
            log.warning("kept run %s not used: %s", key, exc)
            return None

    def put_run(self, key: str, blob: bytes, records: list[EntryRecord], objects: int,
                warnings: list[str], indices: list[int], panoptic: list[dict]) -> KeptRun | None:
        """Keep a chunk's run under `key` (the run first, then its description); where it
        lies, or None if it could not be kept."""
        run_url, head_url = self._run_urls(key)
        try:
            self.store.write(run_url, blob)
            fingerprint = self.store.fingerprint(run_url)
            self.store.write(head_url, json.dumps({
                "version": ENCODER_VERSION, "size": len(blob), "fingerprint": fingerprint,
                "records": [r.to_json() for r in records], "objects": objects,
                "warnings": warnings,
                "indices": indices if _names_shapes(warnings, indices) else [],
                "panoptic": panoptic,
            }).encode())
        except (CityscapesWorkerError, OSError) as exc:
            log.warning("run %s not kept in the cache: %s", key, exc)
            return None
        return KeptRun(run_url, fingerprint, len(blob), records, objects, warnings, panoptic)

    def _memo_url(self, images_digest: bytes) -> str:
        return join_url(self.prefix, "shapes", images_digest.hex())

    def recall_shapes(self, images_digest: bytes) -> ShapeMemo | None:
        """The memo of valid shape entries that the last reading of a manifest with these
        images (and these rules of reading) left, if any and intact (shape_memo)."""
        try:
            return ShapeMemo.from_bytes(self.store.read(self._memo_url(images_digest)))
        except StorageNotFound:
            return None
        except CityscapesWorkerError as exc:
            log.warning("shape memo not read: %s", exc)
            return None

    def keep_shapes(self, images_digest: bytes, memo: ShapeMemo) -> None:
        try:
            self.store.write(self._memo_url(images_digest), memo.to_bytes())
        except (CityscapesWorkerError, OSError) as exc:
            log.warning("shape memo not kept: %s", exc)

    def put(self, key: str, blob: bytes, records: list[EntryRecord], objects: int,
            warnings: list[str], indices: list[int], panoptic: dict | None = None) -> None:
        try:
            self.store.write(self.url(key), pack(blob, records, objects, warnings, indices, panoptic))
        except (CityscapesWorkerError, OSError) as exc:
            log.warning("cache entry %s not written: %s", key, exc)
