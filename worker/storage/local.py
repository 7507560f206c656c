"""Local files (plain paths or file:// URLs): the embedded default and shared-disk clusters."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO, Iterator

from worker.errors import (
    InputStreamError,
    OutputPathError,
    SourceChanged,
    StorageDenied,
    StorageNotFound,
)
from worker.storage.base import Source, Storage

SPOOL_CHUNK = 1 << 20
DEFAULT_SPOOL_LIMIT = 2 << 30
_RANDOM_CHARS = 8  # tempfile's random part of a name


def local_path(url: str) -> Path:
    return Path(url[len("file://") :]) if url.startswith("file://") else Path(url)


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that `folder`'s file system takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def staging_prefix(path: Path) -> str:
    """Where the hidden temporary names of `path` start, beside it: `.NAME.` when a whole
    temporary name (`.NAME.XXXXXXXX.part`) fits the file system, else NAME cut short with a hash
    of it, so that any name the file system takes can be an output."""
    name = os.fsencode(path.name)
    room = name_max(path.parent) - len(b"..") - _RANDOM_CHARS - len(b".part")
    if len(name) <= room:
        return f".{path.name}."
    digest = hashlib.sha1(name).hexdigest()[:12]
    return f".{os.fsdecode(name[: max(0, room - len(digest) - 1)])}~{digest}."


def _created(path: Path, prefix: str, suffix: str) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise OutputPathError(f"output {path}: cannot be written ({exc.strerror})") from None


@contextmanager
def atomic_output(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A file that appears at `path` only when the block ends without an error."""
    fd, tmp = _created(path, staging_prefix(path), ".part")
    try:
        with os.fdopen(fd, mode) as out:
            yield out
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_output(path: Path) -> Iterator[Path]:
    """A short hidden path beside `path` for a writer that makes its own temporary file from
    its target's name (ArchiveWriter): moved onto `path` when the block ends without an error,
    removed otherwise. Its name is short whatever the target's (the writer adds to it), and
    creating it first proves the folder writable."""
    digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:12]
    fd, tmp = _created(path, f".{digest}.", ".stage")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_path(url: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """The local path an output may be written to, or a one-line error naming it.

    What is at the path is replaced, so it must be a regular file or nothing; a symbolic link
    is refused rather than replaced (or followed), and so is any of `inputs`."""
    path = local_path(url)
    if url.endswith("/") or path.name in ("", ".", ".."):
        raise OutputPathError(f"output {url}: names a folder; name a file in it")
    if not path.parent.is_dir():
        raise OutputPathError(f"output {url}: folder {path.parent} does not exist")
    size, limit = len(os.fsencode(path.name)), name_max(path.parent)
    if size > limit:
        raise OutputPathError(
            f"output {url}: its file name is {size} bytes; the file system takes {limit}")
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise OutputPathError(f"output {url}: cannot be examined ({exc.strerror})") from None
    if stat.S_ISLNK(found.st_mode):
        raise OutputPathError(
            f"output {url}: is a symbolic link; name the file itself (an output is replaced,"
            " not written through a link)")
    if stat.S_ISDIR(found.st_mode):
        raise OutputPathError(f"output {url}: is a folder; name a file in it")
    if not stat.S_ISREG(found.st_mode):
        raise OutputPathError(
            f"output {url}: is not a regular file (a device, pipe or socket); name a file")
    for source in inputs:
        try:
            same = os.path.samefile(path, source)
        except OSError:
            continue
        if same:
            raise OutputPathError(
                f"output {url}: is the input {os.fspath(source)}; name another file")
    return path


def spool_limit() -> int:
    """Bytes an input read from a pipe or a device may hold: CITYSCAPES_SPOOL_LIMIT, 2 GiB by
    default (it is copied to the work folder, which may be memory)."""
    value = os.environ.get("CITYSCAPES_SPOOL_LIMIT", "")
    if not value:
        return DEFAULT_SPOOL_LIMIT
    if not value.isdigit():
        raise InputStreamError(f"CITYSCAPES_SPOOL_LIMIT={value!r}: not a number of bytes")
    return int(value)


def regular_input(
    url: str, what: str, spool_dir: str | os.PathLike, limit: int | None = None
) -> Path:
    """`url` as a regular file: itself, or when it is a pipe or a device (`<(...)`,
    /dev/stdin) its content copied once into `spool_dir`, up to `limit` bytes (default:
    spool_limit())."""
    path = local_path(url)
    try:
        found = os.stat(path)
    except OSError as exc:
        raise StorageNotFound(f"{what} {url}: cannot be read ({exc.strerror})") from None
    if stat.S_ISREG(found.st_mode):
        return path
    if stat.S_ISDIR(found.st_mode):
        raise StorageNotFound(f"{what} {url}: is a folder, not a file")
    spooled = Path(spool_dir) / f"spooled-{what.replace(' ', '-')}"
    limit = spool_limit() if limit is None else limit
    try:
        with open(path, "rb") as source:
            if source.isatty():
                raise InputStreamError(f"{what} {url}: is a terminal; give a file or a pipe")
            with open(spooled, "wb") as copy:
                copied = 0
                while chunk := source.read(SPOOL_CHUNK):
                    copied += len(chunk)
                    if copied > limit:
                        raise InputStreamError(
                            f"{what} {url}: more than {limit:,} bytes from a pipe or device;"
                            " write it to a file first (or raise CITYSCAPES_SPOOL_LIMIT)")
                    copy.write(chunk)
    except OSError as exc:
        spooled.unlink(missing_ok=True)
        raise StorageNotFound(f"{what} {url}: cannot be read ({exc.strerror})") from None
    except BaseException:
        spooled.unlink(missing_ok=True)
        raise
    return spooled


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

    def fingerprint(self, url: str) -> str:
        try:
            stat = local_path(url).stat()
        except FileNotFoundError:
            raise StorageNotFound(f"{url}: no such file") from None
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def write(self, url: str, data: bytes) -> None:
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as out:
            out.write(data)

    def upload(self, url: str, source: BinaryIO) -> None:
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as out:
            shutil.copyfileobj(source, out, 1 << 20)

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

    def compose(self, url: str, sources: list[Source], tail: bytes,
                scratch: str | None = None) -> int:
        path = local_path(url)
        with atomic_output(path) as out:
            for source, _, fingerprint in sources:
                if fingerprint is not None and self.fingerprint(source) != fingerprint:
                    raise SourceChanged(f"{source}: changed since the job looked at it")
                with local_path(source).open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
            out.write(tail)
        return path.stat().st_size

    def abort_uploads(self, url: str) -> int:
        path = local_path(url)
        prefix = staging_prefix(path)
        pattern = f"{glob.escape(prefix)}*.part"
        stale = list(path.parent.glob(pattern)) if path.parent.exists() else []
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)
