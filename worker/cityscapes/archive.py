"""Writing the output zip.

Entries are encoded on their own (local header + data), so that any process can write a run of
them (a chunk of images) and another can later join the runs and write the central directory,
ZIP64 where sizes or counts need it. The same code writes a local zip, so an archive made in one
process and one assembled on the cluster hold the same bytes.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from typing import BinaryIO
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from worker.cityscapes.export import ZipPart

LABEL_COLOR_FILE = "label_color.txt"
# Every entry is dated 1980-01-01 00:00 (DOS date 0x21): the same input gives the same bytes.
_DOS_TIME, _DOS_DATE = 0, (1 << 5) | 1
_UTF8_FLAG = 0x800
_ZIP64_LIMIT = 0xFFFFFFFF
_ENTRY_COUNT_LIMIT = 0xFFFF
_MADE_BY = (3 << 8) | 45  # Unix, spec 4.5
_FILE_MODE = 0o100644 << 16


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """What the central directory says of one entry; `offset` counts from the run's start."""

    name: str
    crc: int
    compressed_size: int
    size: int
    method: int
    offset: int

    def to_json(self) -> dict:
        return asdict(self)


def encode_entry(part: ZipPart, offset: int = 0) -> tuple[bytes, EntryRecord]:
    """A local file header and the entry's data (raw deflate for compressible parts)."""
    data = part.data
    if part.compress:
        packer = zlib.compressobj(1, zlib.DEFLATED, -15)
        payload = packer.compress(data) + packer.flush()
        method = zipfile.ZIP_DEFLATED
    else:
        payload, method = data, zipfile.ZIP_STORED
    if len(payload) >= _ZIP64_LIMIT or len(data) >= _ZIP64_LIMIT:
        raise ValueError(f"{part.path}: entries of 4 GiB or more are not supported")
    record = EntryRecord(part.path, zlib.crc32(data), len(payload), len(data), method, offset)
    return _local_header(record) + payload, record


def _local_header(record: EntryRecord) -> bytes:
    name = record.name.encode("utf-8")
    flags = 0 if name.isascii() else _UTF8_FLAG
    return struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, flags, record.method, _DOS_TIME, _DOS_DATE,
        record.crc, record.compressed_size, record.size, len(name), 0,
    ) + name


def write_entry_stream(out: BinaryIO, path: str, pieces: Iterable[bytes], offset: int = 0
                       ) -> EntryRecord:
    """A compressed entry whose data comes in pieces (a document too large to hold), written to
    `out` (seekable) at `offset` in its run: the header is filled in once sizes and CRC are known."""
    start = out.tell()
    out.write(bytes(len(_local_header(EntryRecord(path, 0, 0, 0, 0, 0)))))
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    crc = size = compressed = 0
    for piece in pieces:
        crc, size = zlib.crc32(piece, crc), size + len(piece)
        payload = packer.compress(piece)
        out.write(payload)
        compressed += len(payload)
    payload = packer.flush()
    out.write(payload)
    compressed += len(payload)
    if compressed >= _ZIP64_LIMIT or size >= _ZIP64_LIMIT:
        raise ValueError(f"{path}: entries of 4 GiB or more are not supported")
    record = EntryRecord(path, crc, compressed, size, zipfile.ZIP_DEFLATED, offset)
    end = out.tell()
    out.seek(start)
    out.write(_local_header(record))
    out.seek(end)
    return record


def encode_entries(parts: Iterable[ZipPart], offset: int = 0) -> tuple[bytes, list[EntryRecord]]:
    """A run of entries, as a chunk of the archive; offsets count from `offset`."""
    blobs, records = [], []
    for part in parts:
        blob, record = encode_entry(part, offset)
        blobs.append(blob)
        records.append(record)
        offset += len(blob)
    return b"".join(blobs), records


def write_stream_run(out: BinaryIO, documents: Iterable[tuple[str, Iterable[bytes]]]
                     ) -> list[EntryRecord]:
    """Streamed entries (path, pieces) one after another in `out`, as a run: offsets from where
    `out` stood."""
    start = out.tell()
    return [write_entry_stream(out, path, pieces, out.tell() - start) for path, pieces in documents]


class CentralDirectory:
    """The central directory, built as runs of entries are placed: each entry's record is
    encoded at once into `buffer` (memory, or a file for a big archive), a few dozen bytes an
    entry rather than an object, so that 400,000 entries stay small."""

    def __init__(self, buffer: BinaryIO | None = None):
        self.buffer = buffer if buffer is not None else io.BytesIO()
        self.count = self.size = 0

    def add(self, records: Iterable[EntryRecord], base: int) -> None:
        """Records whose offsets count from `base`, where their run lies in the archive."""
        for record in records:
            name = record.name.encode("utf-8")
            extra = b""
            offset, needed = record.offset + base, 20
            if offset >= _ZIP64_LIMIT:
                extra = struct.pack("<HHQ", 0x0001, 8, offset)
                offset, needed = _ZIP64_LIMIT, 45
            entry = struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, _MADE_BY, needed,
                0 if name.isascii() else _UTF8_FLAG, record.method, _DOS_TIME, _DOS_DATE,
                record.crc, record.compressed_size, record.size, len(name), len(extra),
                0, 0, 0, _FILE_MODE, offset,
            ) + name + extra
            self.buffer.write(entry)
            self.size += len(entry)
            self.count += 1

    def end(self, start: int) -> bytes:
        """The end records, for a directory that begins at `start` (ZIP64 where needed)."""
        count, size = self.count, self.size
        end = b""
        if count >= _ENTRY_COUNT_LIMIT or size >= _ZIP64_LIMIT or start >= _ZIP64_LIMIT:
            zip64_end = start + size
            end += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _MADE_BY, 45, 0, 0, count, count, size, start)
            end += struct.pack("<IIQI", 0x07064B50, 0, zip64_end, 1)
            count, size, start = (
                min(count, _ENTRY_COUNT_LIMIT), min(size, _ZIP64_LIMIT), min(start, _ZIP64_LIMIT)
            )
        return end + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, start, 0)


def central_directory(records: Iterable[EntryRecord], start: int) -> bytes:
    """Central directory and end records for entries whose offsets are final; `start` is where
    the directory itself begins."""
    directory = CentralDirectory()
    directory.add(records, 0)
    directory.buffer.write(directory.end(start))
    return directory.buffer.getvalue()


def rebase(records: list[EntryRecord], offset: int) -> list[EntryRecord]:
    return [replace(r, offset=r.offset + offset) for r in records]


def join_runs(runs: Iterable[tuple[bytes, list[EntryRecord]]]) -> tuple[bytes, list[EntryRecord]]:
    """Runs encoded apart (each with offsets from its own start) as one run."""
    blobs, records, offset = [], [], 0
    for blob, run_records in runs:
        blobs.append(blob)
        records.extend(rebase(run_records, offset))
        offset += len(blob)
    return b"".join(blobs), records


def copy_range(source_fd: int, target_fd: int, offset: int, size: int) -> None:
    """Append `size` bytes of `source_fd` from `offset` to `target_fd` (at its position)."""
    while size > 0:
        try:
            copied = os.copy_file_range(source_fd, target_fd, size, offset)
        except OSError:  # another file system, or no such call: copy through memory
            copied = os.write(target_fd, os.pread(source_fd, min(size, 1 << 24), offset))
        if copied <= 0:
            raise OSError(f"copy of {size} bytes at {offset} stopped")
        offset += copied
        size -= copied


class ArchiveWriter:
    """A local zip that appears at `path` only once complete; on error nothing is left."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._directory = CentralDirectory(tempfile.TemporaryFile(dir=self.path.parent))
        self._offset = 0

    def add(self, parts: Iterable[ZipPart]) -> None:
        self.add_run(*encode_entries(parts))

    def add_run(self, blob: bytes, records: list[EntryRecord]) -> None:
        """Entries encoded elsewhere (offsets from the run's start)."""
        self._file.write(blob)
        self._directory.add(records, self._offset)
        self._offset += len(blob)

    def add_spooled(self, path: str, offset: int, size: int, records: list[EntryRecord]) -> None:
        """A run that another process wrote to a file: copied by the kernel, not through Python."""
        self._file.flush()
        with open(path, "rb") as source:
            copy_range(source.fileno(), self._file.fileno(), offset, size)
        self._file.seek(0, os.SEEK_END)
        self._directory.add(records, self._offset)
        self._offset += size

    def commit(self) -> int:
        """Write the central directory and move the archive into place; returns its size."""
        self._directory.buffer.seek(0)
        shutil.copyfileobj(self._directory.buffer, self._file, 1 << 20)
        self._directory.buffer.close()
        self._file.write(self._directory.end(self._offset))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        self._file.close()
        self._directory.buffer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

