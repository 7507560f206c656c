"""What a manifest's reading learnt of its shape entries, so that reading the manifest of an
edited task again (a re-export) builds and validates only the entries whose bytes changed.

An entry's value is decided by its bytes, which the quick reader digests (XXH3-128). A
ShapeMemo keeps, for each entry that was valid on its own, what the checks across entries need:
the image id it names (as JSON text), its z_order, and the rows its polygon's edges cross in an
image of the height it was drawn for. Masks are not kept: whether one is valid depends on its
image's size. The pending entries of a reading are those taken from a memo unbuilt: where they
lie in the file, built only when an image's shapes are wanted (manifest.ShapeStore).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import xxhash

MEMO_MAX_SHAPES = 1_000_000  # past this no memo is kept (~150 bytes an entry in memory)
_MAGIC = b"CSSM1"
_HEADER = struct.Struct(">5sI")  # magic, length of the JSON head
_DIGEST = 16


class ShapeMemo:
    """Valid shape entries by the digest of their bytes."""

    def __init__(self) -> None:
        self.digests: list[bytes] = []
        self.images: list[bytes] = []  # the image id each names, as JSON text
        self.z: list[int] = []
        self.heights: list[int] = []
        self.rows: list[int] = []
        self._at: dict[bytes, int] | None = None

    def __len__(self) -> int:
        return len(self.digests)

    def add(self, digest: bytes, image: bytes, z: int, height: int, rows: int) -> None:
        self.digests.append(digest)
        self.images.append(image)
        self.z.append(z)
        self.heights.append(height)
        self.rows.append(rows)
        self._at = None

    def _index(self) -> dict[bytes, int]:
        if self._at is None:
            self._at = dict(zip(self.digests, range(len(self.digests))))
        return self._at

    def knows(self, digest: bytes) -> bool:
        return digest in self._index()

    def get(self, digest: bytes) -> tuple[bytes, int, int, int]:
        """(image id as JSON text, z_order, height, edge rows) of a known entry."""
        at = self._index()[digest]
        return self.images[at], self.z[at], self.heights[at], self.rows[at]

    def to_bytes(self) -> bytes:
        names = sorted(set(self.images))
        number = {name: k for k, name in enumerate(names)}
        payload = b"".join([
            b"".join(self.digests),
            np.asarray([number[i] for i in self.images], np.int64).tobytes(),
            np.asarray(self.z, np.int64).tobytes(),
            np.asarray(self.heights, np.int64).tobytes(),
            np.asarray(self.rows, np.int64).tobytes(),
        ])
        head = json.dumps({"count": len(self), "images": [n.decode() for n in names],
                           "size": len(payload), "digest": xxhash.xxh3_128_hexdigest(payload)})
        return _HEADER.pack(_MAGIC, len(head)) + head.encode() + payload

    @classmethod
    def from_bytes(cls, data: bytes) -> ShapeMemo | None:
        """The memo `to_bytes` wrote; None for anything else (damaged, cut short, another
        version), which costs only a full reading."""
        try:
            magic, length = _HEADER.unpack_from(data)
            if magic != _MAGIC:
                return None
            head = json.loads(data[_HEADER.size:_HEADER.size + length])
            payload = data[_HEADER.size + length:]
            count = head["count"]
            if (len(payload) != head["size"] or len(payload) != count * (_DIGEST + 32)
                    or xxhash.xxh3_128_hexdigest(payload) != head["digest"]):
                return None
            names = [n.encode() for n in head["images"]]
        except (struct.error, ValueError, KeyError, TypeError, AttributeError):
            return None
        memo = cls()
        end = count * _DIGEST
        memo.digests = [payload[k:k + _DIGEST] for k in range(0, end, _DIGEST)]
        columns = np.frombuffer(payload, np.int64, offset=end).reshape(4, count)
        if count and (columns[0].min() < 0 or columns[0].max() >= len(names)):
            return None
        memo.images = [names[k] for k in columns[0].tolist()]
        memo.z, memo.heights, memo.rows = (c.tolist() for c in columns[1:])
        return memo


class PendingShapes:
    """Entries taken from a memo unbuilt, by image in drawing order once `save`d: their image,
    place in the shapes list, z_order, and where their bytes lie (offset, size, digest)."""

    def __init__(self) -> None:
        self.columns: list[list[int]] = [[], [], [], [], []]  # image, seq, z, offset, size
        self.digests: list[bytes] = []

    def __len__(self) -> int:
        return len(self.digests)

    def add(self, image: int, seq: int, z: int, offset: int, size: int, digest: bytes) -> None:
        for column, value in zip(self.columns, (image, seq, z, offset, size)):
            column.append(value)
        self.digests.append(digest)

    def save(self, path: Path) -> None:
        image, seq, z, offset, size = (np.asarray(c, np.int64) for c in self.columns)
        order = np.lexsort((seq, z, image))
        digests = np.frombuffer(b"".join(self.digests), np.uint8).reshape(-1, _DIGEST)
        np.savez(path, image=image[order], seq=seq[order], z=z[order], offset=offset[order],
                 size=size[order], digest=digests[order])


class PendingIndex:
    """A saved PendingShapes, read back: each image's entries in drawing order."""

    def __init__(self, path: Path):
        with np.load(path) as saved:
            self.image, self.seq, self.z = saved["image"], saved["seq"], saved["z"]
            self.offset, self.size, self.digest = saved["offset"], saved["size"], saved["digest"]

    def of(self, image: int) -> slice:
        first, last = np.searchsorted(self.image, [image, image + 1])
        return slice(int(first), int(last))
