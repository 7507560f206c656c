"""Local files (plain paths or file:// URLs): the embedded default and shared-disk clusters."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from worker.errors import StorageDenied, StorageNotFound
from worker.storage.base import Storage


def local_path(url: str) -> Path:
    return Path(url[len("file://") :]) if url.startswith("file://") else Path(url)


@contextmanager
def atomic_output(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A file that appears at `path` only when the block ends without an error."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as out:
            yield out
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStorage(Storage):
    def read(self, url: str) -> bytes:
        try:
            return local_path(url).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StorageNotFound(f"{url}: no such file") from None
        except PermissionError:
            raise StorageDenied(f"{url}: permission denied") from None

    def read_range(self, url: str, start: int, length: int) -> bytes:
        try:
            with local_path(url).open("rb") as f:
                f.seek(start)
                return f.read(length)
        except FileNotFoundError:
            raise StorageNotFound(f"{url}: no such file") from None

    def size(self, url: str) -> int:
        try:
            return local_path(url).stat().st_size
        except FileNotFoundError:
            raise StorageNotFound(f"{url}: no such file") from None

    def write(self, url: str, data: bytes) -> None:
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as out:
            out.write(data)

    def download(self, url: str, path: Path) -> None:
        try:
            shutil.copyfile(local_path(url), path)
        except FileNotFoundError:
            raise StorageNotFound(f"{url}: no such file") from None

    def delete_prefix(self, url: str) -> int:
        root = local_path(url)
        if not root.exists():
            return 0
        count = sum(1 for p in root.rglob("*") if p.is_file())
        shutil.rmtree(root, ignore_errors=True)
        return count

    def compose(self, url: str, sources: list[tuple[str, int]], tail: bytes) -> int:
        path = local_path(url)
        with atomic_output(path) as out:
            for source, _ in sources:
                with local_path(source).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
            out.write(tail)
        return path.stat().st_size

    def abort_uploads(self, url: str) -> int:
        path = local_path(url)
        stale = list(path.parent.glob(f".{path.name}.*.part")) if path.parent.exists() else []
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)
