"""A read-only, seekable file over any storage's ranged reads, so that zipfile can read an
archive's central directory and single members without downloading the whole archive."""

from __future__ import annotations

import io

from worker.storage.base import Storage

READ_BLOCK = 1 << 20  # bytes per ranged GET at the least


class RangedFile(io.RawIOBase):
    def __init__(self, storage: Storage, url: str, size: int):
        self.storage, self.url, self.size = storage, url, size
        self.position = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        length = min(len(buffer), self.size - self.position)
        if length <= 0:
            return 0
        data = self.storage.read_range(self.url, self.position, length)
        self.requests += 1
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def open_ranged(storage: Storage, url: str) -> io.BufferedReader:
    return io.BufferedReader(RangedFile(storage, url, storage.size(url)), READ_BLOCK)
