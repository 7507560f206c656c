"""The storage interface the tasks use; each scheme implements it beside this module."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


Source = tuple[str, int, str | None]  # url, size, fingerprint (see Storage.compose)


class Storage(ABC):
    """Whole objects addressed by URL. Errors: worker.errors.StorageNotFound and
    StorageDenied for the input's fault (no retry), ServerError for the service's."""

    @abstractmethod
    def read(self, url: str) -> bytes: ...

    @abstractmethod
    def read_range(self, url: str, start: int, length: int) -> bytes: ...

    @abstractmethod
    def size(self, url: str) -> int: ...

    @abstractmethod
    def fingerprint(self, url: str) -> str:
        """What changes whenever the object does (size and ETag; size and modification time),
        without reading it."""

    @abstractmethod
    def write(self, url: str, data: bytes) -> None: ...

    @abstractmethod
    def download(self, url: str, path: Path) -> None: ...

    @abstractmethod
    def upload(self, url: str, source: BinaryIO) -> None:
        """Write `url` from a file, read in pieces (not held in memory whole)."""

    @abstractmethod
    def delete_prefix(self, url: str) -> int:
        """Remove every object under `url` (a folder-like prefix), and abort unfinished uploads
        there; returns how many objects."""

    @abstractmethod
    def compose(self, url: str, sources: list[Source], tail: bytes,
                scratch: str | None = None) -> int:
        """Write `url` as the concatenation of `sources` (url, size, and the fingerprint the
        source must still have, or None) followed by `tail`; SourceChanged if one has another.

        The object appears whole or not at all. Returns its size in bytes. A store that joins
        in steps keeps what it joined so far under `scratch` (a prefix the caller removes with
        its staging) and deletes it before it returns or raises.
        """

    @abstractmethod
    def abort_uploads(self, url: str) -> int:
        """Abort unfinished compositions of `url`; returns how many."""
